/* emit_raw.c - the verbatim stream chunk (ABI 1.4 emit_raw, host.h): an
 * upstream chunk that already is what the client gets goes out as its own
 * bytes. The stream bookkeeping h_emit_chunk does on a tree (ids, role,
 * one finish per choice, tool calls, usage, content count) is done here
 * with the scanner (lmjscan.h), in place and without allocating; whenever
 * the tree path would change the chunk in any other way than cutting out
 * its "usage" member, nothing is done and LM_DECLINED sends the plugin down
 * that path. Thread: the request's worker; the chunk is borrowed. */
#include "plugin/host.h"

#include "lmjscan.h"

#include <stdlib.h>
#include <string.h>

/* A chunk whose usage member is cut out is rebuilt here; larger ones take
 * the tree path (chunks are a few hundred bytes). */
#define RAW_SPLICE_MAX 4096

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Members of an object span in order. Each value is validated by the
 * scanner; a key is its raw text between the quotes. */
typedef struct walk {
    const char *p, *end;
    const char *key_at; /* the current member's opening quote */
    const char *before; /* the comma before it (NULL for the first) */
    const char *comma;  /* the last comma passed */
    const char *next;   /* after the value: the next key, or NULL when last */
    int done;
} walk_t;

static int walk_open(walk_t *w, lm_str o, char open)
{
    const char *end = o.p + o.n, *p = ws(o.p, end);
    memset(w, 0, sizeof(*w));
    if (p == end || *p != open)
        return -1;
    w->p = ws(p + 1, end);
    w->end = end;
    if (w->p < end && *w->p == (open == '{' ? '}' : ']')) {
        w->done = 1;
        w->p++;
    }
    return 0;
}

/* After a member or element: ',' (another follows) or the close. */
static int walk_sep(walk_t *w, const char *after, char close)
{
    const char *p = ws(after, w->end);
    if (p < w->end && *p == ',') {
        w->comma = p;
        w->p = w->next = ws(p + 1, w->end);
        return 1;
    }
    if (p < w->end && *p == close) {
        w->done = 1;
        w->p = p + 1;
        w->next = NULL;
        return 1;
    }
    return -1;
}

/* 1 with the next member's key (raw, no quotes) and value; 0 at the end;
 * -1 invalid, or a key with an escape (its meaning is not its bytes). */
static int walk_member(walk_t *w, lm_str *key, lm_str *val)
{
    if (w->done)
        return 0;
    const char *p = w->p, *ke, *vs, *ve;
    if (p >= w->end || *p != '"' || (ke = lm_jscan_skip(p, w->end)) == NULL ||
        memchr(p, '\\', (size_t)(ke - p)) != NULL)
        return -1;
    w->key_at = p;
    w->before = w->comma;
    *key = (lm_str){p + 1, (size_t)(ke - p - 2)};
    p = ws(ke, w->end);
    if (p >= w->end || *p != ':')
        return -1;
    vs = ws(p + 1, w->end);
    if ((ve = lm_jscan_skip(vs, w->end)) == NULL)
        return -1;
    *val = (lm_str){vs, (size_t)(ve - vs)};
    return walk_sep(w, ve, '}');
}

static int walk_elem(walk_t *w, lm_str *val)
{
    if (w->done)
        return 0;
    const char *ve = lm_jscan_skip(w->p, w->end);
    if (ve == NULL)
        return -1;
    *val = (lm_str){w->p, (size_t)(ve - w->p)};
    return walk_sep(w, ve, ']');
}

static int key_is(lm_str k, const char *s)
{
    return k.n == strlen(s) && memcmp(k.p, s, k.n) == 0;
}

/* The members named in names[] (NULL-terminated, at most 8) into vals;
 * *count the members seen. -1 when invalid or a named member repeats. */
static int members(lm_str o, const char *const *names, lm_str *vals, size_t *count)
{
    walk_t w;
    lm_str k, v;
    int rc;
    size_t n = 0;
    if (walk_open(&w, o, '{') < 0)
        return -1;
    for (size_t i = 0; names[i]; i++)
        vals[i] = (lm_str){NULL, 0};
    while ((rc = walk_member(&w, &k, &v)) > 0) {
        n++;
        for (size_t i = 0; names[i]; i++)
            if (key_is(k, names[i])) {
                if (vals[i].p != NULL)
                    return -1;
                vals[i] = v;
            }
    }
    if (count)
        *count = n;
    return rc;
}

static int is_str(lm_str v)
{
    return v.p != NULL && v.p[0] == '"';
}

/* json_string_length() of a string span: its bytes once unescaped. */
static uint64_t str_len(lm_str v)
{
    uint64_t n = 0;
    if (!is_str(v))
        return 0;
    for (size_t i = 1; i + 1 < v.n; i++, n++) {
        if (v.p[i] != '\\')
            continue;
        if (v.p[++i] != 'u')
            continue;
        unsigned cp = (unsigned)strtoul(
            (char[5]){v.p[i + 1], v.p[i + 2], v.p[i + 3], v.p[i + 4], 0}, NULL, 16);
        i += 4;
        if (cp >= 0xD800 && cp < 0xDC00) { /* a pair (the scanner refused lone ones) */
            n += 3;
            i += 6;
        } else {
            n += cp < 0x80 ? 0 : cp < 0x800 ? 1 : 2;
        }
    }
    return n;
}

/* What normalise_choice would do to one choice, on a copy of the state:
 * 0 when the choice goes out unchanged (state updated), -1 otherwise. */
typedef struct raw_state {
    uint32_t role_sent, finished, tools_seen;
    int finish_seen;
    uint64_t chars;
} raw_state_t;

static uint64_t tool_chars(lm_str tcs, int *any)
{
    walk_t w;
    lm_str tc, fn, args;
    uint64_t n = 0;
    *any = 0;
    if (tcs.p == NULL || walk_open(&w, tcs, '[') < 0)
        return 0; /* not an array: json_array_size() is 0 */
    while (walk_elem(&w, &tc) > 0) {
        *any = 1;
        if (lm_jscan_get(tc, "function", &fn) == 1 && lm_jscan_get(fn, "arguments", &args) == 1)
            n += str_len(args);
    }
    return n;
}

static int raw_choice(raw_state_t *s, lm_str c)
{
    static const char *const names[] = {"index", "delta", "finish_reason", NULL};
    static const char *const dnames[] = {"role", "content", "tool_calls", "reasoning_content",
                                         NULL};
    lm_str v[3], d[4];
    size_t nd = 0;
    long long idx = 0;
    int tools = 0;
    if (members(c, names, v, NULL) < 0)
        return -1; /* not an object (dropped by the tree path) */
    if (v[0].p && lm_jscan_int(v[0], &idx) < 0)
        return -1;
    if (v[2].p && v[2].p[0] != 'n' && (!is_str(v[2]) || memchr(v[2].p, '\\', v[2].n)))
        return -1;
    int fr = is_str(v[2]);
    uint32_t bit = idx >= 0 && idx < 32 ? 1u << idx : 0;
    int dobj = v[1].p && v[1].p[0] == '{';
    if (dobj && members(v[1], dnames, d, &nd) < 0)
        return -1;
    if (bit) {
        if ((s->finished & bit) || !dobj)
            return -1; /* dropped after its finish, or a delta to create */
        if ((d[0].p && nd == 1 && !fr && (s->role_sent & bit)) || (nd == 0 && !fr))
            return -1; /* a repeated bare role, or an empty delta: dropped */
    }
    uint64_t chars = dobj ? str_len(d[1]) + str_len(d[3]) + tool_chars(d[2], &tools) : 0;
    if (bit) {
        if (tools)
            s->tools_seen |= bit;
        if (!(s->role_sent & bit)) { /* the role (and content) would be written */
            if (!d[0].p || !lm_jscan_str_is(d[0], "assistant") || (!d[1].p && !d[2].p))
                return -1;
            s->role_sent |= bit;
        }
        if (fr) {
            s->finished |= bit;
            if ((s->tools_seen & bit) && lm_jscan_str_is(v[2], "stop"))
                return -1; /* becomes "tool_calls" */
        }
    }
    s->finish_seen |= fr;
    s->chars += chars;
    return 0;
}

/* The upstream's id/created/model become the stream's (adopt_ids). */
static int adopt(lm_emit_t *e, lm_str id, long long created, lm_str model)
{
    if (memchr(id.p, '\\', id.n) || memchr(model.p, '\\', model.n))
        return -1;
    if (id.n - 2 < sizeof(e->id))
        memcpy(e->id, id.p + 1, id.n - 2), e->id[id.n - 2] = '\0';
    if (model.n - 2 < sizeof(e->model))
        memcpy(e->model, model.p + 1, model.n - 2), e->model[model.n - 2] = '\0';
    e->created = created;
    e->ids_adopted = 1;
    return 0;
}

/* Send [p, p+n) without the bytes [cut, cut_end). */
static int deliver_raw(lm_emit_t *e, const char *p, size_t n, const char *cut, const char *cut_end)
{
    char tmp[RAW_SPLICE_MAX];
    const char *out = p;
    if (cut != NULL) {
        size_t a = (size_t)(cut - p), b = (size_t)(p + n - cut_end);
        memcpy(tmp, p, a);
        memcpy(tmp + a, cut_end, b);
        out = tmp;
        n = a + b;
    }
    if (e->sink(e->arg, out, n) != 0)
        return LM_ERR;
    e->nchunks++;
    return LM_OK;
}

int lm_emit_raw(lm_emit *e, lm_str chunk)
{
    static const char *const names[] = {"id",      "object", "created", "model",
                                        "choices", "usage",  "error",   NULL};
    lm_str v[7], c;
    walk_t w, cw;
    const char *cut = NULL, *cut_end = NULL;
    raw_state_t s;
    int rc;
    if (e == NULL || !e->raw_ok || chunk.p == NULL || chunk.n == 0 ||
        memchr(chunk.p, '\n', chunk.n) || memchr(chunk.p, '\r', chunk.n))
        return LM_DECLINED; /* a line break would end the client's SSE event */
    /* The top level, noting where "usage" sits so it can be cut out. */
    if (walk_open(&w, chunk, '{') < 0)
        return LM_DECLINED;
    for (size_t i = 0; names[i]; i++)
        v[i] = (lm_str){NULL, 0};
    lm_str k, val;
    while ((rc = walk_member(&w, &k, &val)) > 0)
        for (size_t i = 0; names[i]; i++) {
            if (!key_is(k, names[i]))
                continue;
            if (v[i].p != NULL)
                return LM_DECLINED; /* a repeated member: the tree keeps the last */
            v[i] = val;
            if (i == 5) { /* the member, and a comma on one side */
                cut = w.next ? w.key_at : w.before ? w.before : w.key_at;
                cut_end = w.next ? w.next : val.p + val.n;
            }
        }
    if (rc < 0 || ws(w.p, chunk.p + chunk.n) != chunk.p + chunk.n || v[6].p != NULL)
        return LM_DECLINED; /* invalid (the plugin's parse says so), or an error */
    if (v[5].p && chunk.n > RAW_SPLICE_MAX)
        return LM_DECLINED;
    long long t;
    int empty = v[4].p == NULL || walk_open(&cw, v[4], '[') < 0 || cw.done;
    if (!empty && (!is_str(v[0]) || !is_str(v[1]) || !is_str(v[3]) || v[2].p == NULL ||
                   lm_jscan_int(v[2], &t) < 0))
        return LM_DECLINED; /* the host would fill one in */
    s = (raw_state_t){e->role_sent, e->finished, e->tools_seen, 0, 0};
    while (!empty && (rc = walk_elem(&cw, &c)) > 0)
        if (raw_choice(&s, c) < 0)
            return LM_DECLINED;
    if (!empty && (rc < 0 || (!e->ids_adopted && adopt(e, v[0], t, v[3]) < 0)))
        return LM_DECLINED;
    /* Committed: from here on this is what the tree path would have done. */
    lm_usage u;
    if (v[5].p && lm_jscan_usage(v[5], &u)) {
        lm_usage_merge(&e->usage, &u, e->usage_mode);
        e->usage_seen = 1;
    }
    if (empty)
        return LM_OK; /* the usage-only chunk: never forwarded */
    e->role_sent = s.role_sent;
    e->finished = s.finished;
    e->tools_seen = s.tools_seen;
    e->finish_seen |= s.finish_seen;
    e->content_chars += s.chars;
    e->ncontent++;
    e->nraw++;
    return deliver_raw(e, chunk.p, chunk.n, cut, cut_end);
}
