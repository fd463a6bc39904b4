/* check.c - the kit's stream conformance checker and JSON assertions
 * (sdk/lmtest.h). Pure functions over the kit's results. */
#include "lmtest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXCH 32

typedef struct {
    int roles, finished, ncalls; /* per choice */
} choice_t;

static int fail(char *why, size_t n, const char *fmt, ...) LM_PRINTF(3, 4);
static int fail(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (why && n)
        vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return 0;
}

/* Tool-call fragments: a new call names itself and comes in index order. */
static int check_calls(choice_t *c, const json_t *calls, size_t k, char *why, size_t n)
{
    size_t j;
    json_t *tc;
    json_array_foreach (calls, j, tc) {
        json_t *ji = json_object_get(tc, "index");
        int idx = json_is_integer(ji) ? (int)json_integer_value(ji) : -1;
        if (idx < 0 || idx > c->ncalls)
            return fail(why, n, "chunk %zu: tool call index %d out of order", k, idx);
        if (idx == c->ncalls) {
            json_t *fn = json_object_get(tc, "function");
            if (!json_is_string(json_object_get(tc, "id")) ||
                !json_is_string(json_object_get(fn, "name")))
                return fail(why, n, "chunk %zu: tool call %d starts without id and name", k, idx);
            c->ncalls++;
        }
    }
    return 1;
}

static int check_choice(choice_t *cs, const json_t *ch, size_t k, char *why, size_t n)
{
    json_t *ji = json_object_get(ch, "index"), *d = json_object_get(ch, "delta");
    int idx = json_is_integer(ji) ? (int)json_integer_value(ji) : -1;
    if (idx < 0 || idx >= MAXCH)
        return fail(why, n, "chunk %zu: choice index missing or >= %d", k, MAXCH);
    choice_t *c = &cs[idx];
    if (c->finished)
        return fail(why, n, "chunk %zu: choice %d continues after its finish_reason", k, idx);
    int has_role = json_object_get(d, "role") != NULL;
    if (has_role && !json_is_string(json_object_get(d, "role")))
        return fail(why, n, "chunk %zu: role is not a string", k);
    if (has_role && strcmp(json_string_value(json_object_get(d, "role")), "assistant"))
        return fail(why, n, "chunk %zu: role is not assistant", k);
    if (c->roles == 0 && !has_role)
        return fail(why, n, "chunk %zu: choice %d's first delta has no role", k, idx);
    if (c->roles > 0 && has_role)
        return fail(why, n, "chunk %zu: choice %d repeats its role", k, idx);
    c->roles += has_role;
    if (!check_calls(c, json_object_get(d, "tool_calls"), k, why, n))
        return 0;
    json_t *fr = json_object_get(ch, "finish_reason");
    if (fr && !json_is_null(fr) && !json_is_string(fr))
        return fail(why, n, "chunk %zu: finish_reason is not a string", k);
    c->finished = json_is_string(fr);
    return 1;
}

int lmt_stream_conforms(const lmt_result *r, char *why, size_t whylen)
{
    choice_t cs[MAXCH] = {{0}};
    json_t *arr = r->json ? json_loads(r->json, 0, NULL) : NULL, *chunk, *ch;
    const char *id = NULL;
    size_t k, i;
    int ok = json_is_array(arr) ? 1 : fail(why, whylen, "no chunk array");
    json_array_foreach (arr, k, chunk) {
        if (!ok)
            break;
        const char *cid = json_string_value(json_object_get(chunk, "id"));
        const char *obj = json_string_value(json_object_get(chunk, "object"));
        if (!cid || !obj || strcmp(obj, "chat.completion.chunk"))
            ok = fail(why, whylen, "chunk %zu: not a chat.completion.chunk with an id", k);
        else if (id && strcmp(id, cid))
            ok = fail(why, whylen, "chunk %zu: id changes (%s, then %s)", k, id, cid);
        else if (json_object_get(chunk, "usage"))
            ok = fail(why, whylen, "chunk %zu: carries usage", k);
        id = cid;
        json_array_foreach (json_object_get(chunk, "choices"), i, ch)
            if (ok && !check_choice(cs, ch, k, why, whylen))
                ok = 0;
    }
    for (i = 0; ok && r->done && i < MAXCH; i++)
        if (cs[i].roles && !cs[i].finished)
            ok = fail(why, whylen, "choice %zu never finished", i);
    json_decref(arr);
    return ok;
}

/* ---- JSON assertions ---- */

json_t *lmt_json_at(const char *json, const char *path)
{
    json_t *root = json ? json_loads(json, JSON_DECODE_ANY, NULL) : NULL, *cur = root;
    char seg[128];
    while (cur && path && *path) {
        size_t n = strcspn(path, ".");
        snprintf(seg, sizeof(seg), "%.*s", (int)(n < sizeof(seg) ? n : sizeof(seg) - 1), path);
        char *end;
        long idx = strtol(seg, &end, 10);
        cur = json_is_array(cur) && *end == '\0' && end != seg ? json_array_get(cur, (size_t)idx)
                                                               : json_object_get(cur, seg);
        path += n + (path[n] == '.');
    }
    json_incref(cur);
    json_decref(root);
    return cur;
}

int lmt_json_str(const char *json, const char *path, const char *want)
{
    json_t *v = lmt_json_at(json, path);
    int ok = json_is_string(v) && want && strcmp(json_string_value(v), want) == 0;
    json_decref(v);
    return ok;
}

int lmt_json_int(const char *json, const char *path, long long want)
{
    json_t *v = lmt_json_at(json, path);
    int ok = json_is_integer(v) && json_integer_value(v) == want;
    json_decref(v);
    return ok;
}

int lmt_json_has(const char *json, const char *path)
{
    json_t *v = lmt_json_at(json, path);
    json_decref(v);
    return v != NULL;
}
