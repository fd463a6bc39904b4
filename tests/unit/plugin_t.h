/* What the plugin unit tests (tests/unit/test_plugin_*.c) share: loading the
 * plugin under test, readable JSON literals, folding a stream's chunks into
 * a summary. Each test is one translation unit, so everything is static
 * inline (a test that uses only part of it gets no unused-function warning).
 *
 * Define PT_PLUGIN (the plugin's file name without ".so") before including.
 * pt_so_path()'s string is static; pt_q()'s live until pt_q_free_all(). */
#ifndef LM_TESTS_PLUGIN_T_H
#define LM_TESTS_PLUGIN_T_H

#include "lmtest.h"
#include "t.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef PT_PLUGIN
#error "define PT_PLUGIN before including plugin_t.h"
#endif

/* build/plugins/<name>.so, or $PLUGIN_DIR/<name>.so (tests/run.sh sets it). */
static inline const char *pt_so_path(void)
{
    static char path[512];
    const char *dir = getenv("PLUGIN_DIR");
    snprintf(path, sizeof(path), "%s/%s.so", dir && *dir ? dir : "build/plugins", PT_PLUGIN);
    return path;
}

/* The plugin configured with `cfg` (NULL-terminated key, value pairs), or
 * NULL with the reason printed. Free with lmt_unload(). */
static inline lmt_plugin *pt_load(const char *const *cfg)
{
    char err[512];
    lmt_plugin *p = lmt_load(pt_so_path(), cfg, err, sizeof(err));
    if (p == NULL)
        printf("load failed: %s\n", err);
    return p;
}

/* The strings pt_q() made, kept for pt_q_free_all(). */
static inline char **pt_q_kept(size_t **n)
{
    static char *kept[512];
    static size_t nkept;
    *n = &nkept;
    return kept;
}

/* Test JSON is written with ' for " to keep it readable: a copy with the
 * quotes turned, valid until pt_q_free_all(). */
static inline const char *pt_q(const char *s)
{
    size_t *n;
    char **kept = pt_q_kept(&n);
    char *d = strdup(s);
    for (char *p = d; *p; p++)
        if (*p == '\'')
            *p = '"';
    if (*n < 512)
        kept[(*n)++] = d;
    return d;
}

/* At the end of main, so that a leak check sees only the plugin's leaks. */
static inline void pt_q_free_all(void)
{
    size_t *n;
    char **kept = pt_q_kept(&n);
    for (size_t i = 0; i < *n; i++)
        free(kept[i]);
    *n = 0;
}

/* A new reference (json_decref), NULL for NULL or bad JSON. */
static inline json_t *pt_jparse(const char *s)
{
    return s ? json_loads(s, 0, NULL) : NULL;
}

static inline int pt_same_json(const char *a, const char *b)
{
    json_t *x = pt_jparse(a), *y = pt_jparse(b);
    int r = x && y && json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return r;
}

static inline int pt_usage_is(const lm_usage *u, int64_t p, int64_t c, int64_t t)
{
    return u->prompt == p && u->completion == c && u->total == t;
}

/* The golden tool call's arguments, in any key order or spacing. */
static inline int pt_args_are_paris(const char *args)
{
    json_t *a = pt_jparse(args), *want = json_pack("{s:s}", "city", "Paris");
    int ok = a && json_equal(a, want);
    json_decref(a);
    json_decref(want);
    return ok;
}

static inline int pt_near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

/* Run `body` at split 0 (into *first) and at every split 1..len; every run
 * must give the identical result, and it must conform: one role and at most
 * one finish per choice, ordered tool calls, no usage chunk (what a client
 * library expects). */
static inline void pt_stream_all(lmt_plugin *p, const char *canon, const char *body,
                                 lmt_result *first)
{
    char why[256] = "";
    size_t bad = lmt_stream_every_split(p, canon, body, first);
    T_CHECK(bad == 0, "split %zu differs from split 0", bad);
    T_CHECK(lmt_stream_conforms(first, why, sizeof why), "stream does not conform: %s", why);
}

/* ---- folding a stream (lmt_result.json: the chunks as a JSON array) ---- */

static inline void pt_cat(char *dst, size_t n, const char *s)
{
    size_t l = strlen(dst);
    snprintf(dst + l, n - l, "%s", s ? s : "");
}

/* Choice 0 and tool call 0 of a stream, for single-answer golden cases. */
typedef struct pt_summary {
    char content[512];
    char args[512];  /* tool call index 0 arguments, concatenated */
    char finish[32]; /* last finish_reason */
    int nfinish;
    int nchunks;
    int ncontent;   /* chunks with non-empty content */
    int role_first; /* first chunk's delta.role == assistant */
    int nrole;      /* chunks carrying delta.role */
    int tc_heads;   /* tool call fragments with an id */
    int tc_names;   /* tool call fragments with a name */
    char tc_id[64];
    char tc_name[64];
    int ids_const; /* the chunk id is the same in every chunk */
} pt_summary;

static inline void pt_summarize_tool(json_t *tcs, pt_summary *s)
{
    json_t *tc;
    size_t k;
    json_array_foreach (tcs, k, tc) {
        json_t *fn = json_object_get(tc, "function");
        const char *a = json_string_value(json_object_get(fn, "arguments"));
        if (json_integer_value(json_object_get(tc, "index")) != 0)
            continue;
        if (json_object_get(tc, "id")) {
            s->tc_heads++;
            snprintf(s->tc_id, sizeof s->tc_id, "%s", json_string_value(json_object_get(tc, "id")));
        }
        if (json_object_get(fn, "name")) {
            s->tc_names++;
            snprintf(s->tc_name, sizeof s->tc_name, "%s",
                     json_string_value(json_object_get(fn, "name")));
        }
        if (a)
            pt_cat(s->args, sizeof s->args, a);
    }
}

static inline void pt_summarize(const char *json, pt_summary *s)
{
    json_t *arr = pt_jparse(json), *ch;
    size_t i;
    const char *id0 = NULL;
    memset(s, 0, sizeof *s);
    s->ids_const = 1;
    json_array_foreach (arr, i, ch) {
        json_t *c0 = json_array_get(json_object_get(ch, "choices"), 0);
        json_t *d = json_object_get(c0, "delta");
        json_t *fr = json_object_get(c0, "finish_reason");
        json_t *ct = json_object_get(d, "content");
        const char *role = json_string_value(json_object_get(d, "role"));
        const char *id = json_string_value(json_object_get(ch, "id"));
        s->nchunks++;
        if (i == 0)
            id0 = id;
        else if (!id0 || !id || strcmp(id0, id) != 0)
            s->ids_const = 0;
        if (role) {
            s->nrole++;
            if (i == 0 && strcmp(role, "assistant") == 0)
                s->role_first = 1;
        }
        if (json_is_string(ct) && json_string_length(ct) > 0) {
            s->ncontent++;
            pt_cat(s->content, sizeof s->content, json_string_value(ct));
        }
        pt_summarize_tool(json_object_get(d, "tool_calls"), s);
        if (json_is_string(fr)) {
            s->nfinish++;
            snprintf(s->finish, sizeof s->finish, "%s", json_string_value(fr));
        }
    }
    json_decref(arr);
}

/* One choice of a stream with all its tool calls (up to 8). */
typedef struct pt_tool_agg {
    char id[128], name[64], args[1024];
    int nid, ntype;
} pt_tool_agg;

typedef struct pt_agg {
    char content[4096], reasoning[4096], finish[64];
    int nfinish, nchunks, role_first, ntools, same_ids, content_after_finish;
    pt_tool_agg tools[8];
} pt_agg;

static inline void pt_aggregate_tools(json_t *tcs, pt_agg *a)
{
    json_t *tc;
    size_t k;
    json_array_foreach (tcs, k, tc) {
        json_int_t ix = json_integer_value(json_object_get(tc, "index"));
        json_t *fn = json_object_get(tc, "function");
        pt_tool_agg *t;
        if (ix < 0 || ix >= 8)
            continue;
        t = &a->tools[ix];
        if ((int)ix + 1 > a->ntools)
            a->ntools = (int)ix + 1;
        if (json_is_string(json_object_get(tc, "id"))) {
            t->nid++;
            pt_cat(t->id, sizeof(t->id), json_string_value(json_object_get(tc, "id")));
        }
        if (json_is_string(json_object_get(tc, "type")))
            t->ntype++;
        pt_cat(t->name, sizeof(t->name), json_string_value(json_object_get(fn, "name")));
        pt_cat(t->args, sizeof(t->args), json_string_value(json_object_get(fn, "arguments")));
    }
}

/* Fold the stream chunks of choice `ci` into *a. */
static inline void pt_aggregate(const char *json, int ci, pt_agg *a)
{
    json_t *arr = pt_jparse(json), *ch;
    size_t i;
    const char *id0 = NULL;
    memset(a, 0, sizeof(*a));
    a->same_ids = 1;
    json_array_foreach (arr, i, ch) {
        const char *id = json_string_value(json_object_get(ch, "id"));
        json_t *c = json_array_get(json_object_get(ch, "choices"), 0);
        json_t *d = json_object_get(c, "delta");
        if (i == 0)
            id0 = id;
        else if (!id || !id0 || strcmp(id, id0) != 0)
            a->same_ids = 0;
        if (json_integer_value(json_object_get(c, "index")) != ci)
            continue;
        if (a->nchunks == 0)
            a->role_first = json_is_string(json_object_get(d, "role"));
        a->nchunks++;
        if (a->nfinish && json_object_size(d) > 0)
            a->content_after_finish = 1;
        pt_cat(a->content, sizeof(a->content), json_string_value(json_object_get(d, "content")));
        pt_cat(a->reasoning, sizeof(a->reasoning),
               json_string_value(json_object_get(d, "reasoning_content")));
        pt_aggregate_tools(json_object_get(d, "tool_calls"), a);
        if (json_is_string(json_object_get(c, "finish_reason"))) {
            a->nfinish++;
            snprintf(a->finish, sizeof(a->finish), "%s",
                     json_string_value(json_object_get(c, "finish_reason")));
        }
    }
    json_decref(arr);
}

#endif
