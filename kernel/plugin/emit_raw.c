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

/* A container walked in place, once: each byte is validated by the one
 * walk that reaches it (nested members the bookkeeping reads are walked,
 * the rest skipped by the scanner), never scanned twice. */
typedef struct walk {
    const char *p, *end; /* p: the next key or element, or after the close */
    const char *key_at;  /* the current member's opening quote */
    const char *before;  /* the comma before it (NULL for the first) */
    const char *comma;   /* the last comma passed */
    const char *next;    /* after the current value: the next key, or NULL */
    char close;
    int done;
} walk_t;

static int walk_open(walk_t *w, const char *p, const char *end, char open)
{
    memset(w, 0, sizeof(*w));
    p = ws(p, end);
    if (p == end || *p != open)
        return -1;
    w->close = open == '{' ? '}' : ']';
    w->end = end;
    w->p = ws(p + 1, end);
    if (w->p < end && *w->p == w->close) {
        w->done = 1;
        w->p++;
    }
    return 0;
}

/* After a value ending at `after`: ',' (another follows) or the close. */
static int walk_sep(walk_t *w, const char *after)
{
    const char *p = ws(after, w->end);
    if (p < w->end && *p == ',') {
        w->comma = p;
        w->p = w->next = ws(p + 1, w->end);
        return w->p < w->end && *w->p != w->close ? 0 : -1;
    }
    if (p < w->end && *p == w->close) {
        w->done = 1;
        w->p = p + 1;
        w->next = NULL;
        return 0;
    }
    return -1;
}

/* 1 with the next member's key (raw, no quotes) and w->p at its value; 0
 * at the end; -1 invalid, or a key with an escape (its meaning is not its
 * bytes). */
static int walk_key(walk_t *w, lm_str *key)
{
    if (w->done)
        return 0;
    const char *p = w->p, *ke;
    if (p >= w->end || *p != '"' || (ke = lm_jscan_skip(p, w->end)) == NULL ||
        memchr(p, '\\', (size_t)(ke - p)) != NULL)
        return -1;
    w->key_at = p;
    w->before = w->comma;
    *key = (lm_str){p + 1, (size_t)(ke - p - 2)};
    p = ws(ke, w->end);
    if (p >= w->end || *p != ':')
        return -1;
    w->p = ws(p + 1, w->end);
    return w->p < w->end ? 1 : -1;
}

/* The value (or element) at w->p skipped by the scanner: its span. */
static int walk_skip(walk_t *w, lm_str *val)
{
    const char *ve = lm_jscan_skip(w->p, w->end);
    if (ve == NULL)
        return -1;
    *val = (lm_str){w->p, (size_t)(ve - w->p)};
    return walk_sep(w, ve);
}

static int key_is(lm_str k, const char *s)
{
    return k.n == strlen(s) && memcmp(k.p, s, k.n) == 0;
}

/* Index of k in names[n], or -1. */
static int key_index(lm_str k, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (key_is(k, names[i]))
            return i;
    return -1;
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
    if (tcs.p == NULL || walk_open(&w, tcs.p, tcs.p + tcs.n, '[') < 0)
        return 0; /* not an array: json_array_size() is 0 */
    while (!w.done && walk_skip(&w, &tc) == 0) {
        *any = 1;
        if (lm_jscan_get(tc, "function", &fn) == 1 && lm_jscan_get(fn, "arguments", &args) == 1)
            n += str_len(args);
    }
    return n;
}

/* The delta object at cw->p, walked in place: the members the bookkeeping
 * reads (role, content, tool_calls, reasoning_content) and their count. */
static int raw_delta(walk_t *cw, lm_str *d, size_t *nd)
{
    static const char *const names[] = {"role", "content", "tool_calls", "reasoning_content"};
    walk_t w;
    lm_str k, v;
    int rc;
    if (walk_open(&w, cw->p, cw->end, '{') < 0)
        return -1;
    while ((rc = walk_key(&w, &k)) > 0) {
        int i = key_index(k, names, 4);
        if (walk_skip(&w, &v) < 0 || (i >= 0 && d[i].p != NULL))
            return -1; /* invalid, or a repeated member (the tree keeps the last) */
        if (i >= 0)
            d[i] = v;
        (*nd)++;
    }
    return rc < 0 ? -1 : walk_sep(cw, w.p);
}

/* The choice at aw->p, walked in place: what normalise_choice would do to
 * it, on s (a copy of the stream state). 0 when it goes out unchanged (s
 * updated), -1 otherwise. */
static int raw_choice(raw_state_t *s, walk_t *aw)
{
    walk_t w;
    lm_str k, v, ix = {NULL, 0}, fin = {NULL, 0}, d[4] = {{NULL, 0}};
    size_t nd = 0;
    long long idx = 0;
    int rc, dobj = 0, dseen = 0, tools = 0;
    if (walk_open(&w, aw->p, aw->end, '{') < 0)
        return -1; /* not an object (dropped by the tree path) */
    while ((rc = walk_key(&w, &k)) > 0) {
        if (key_is(k, "delta") && dseen++)
            return -1;
        if (key_is(k, "delta") && *w.p == '{') {
            if (raw_delta(&w, d, &nd) < 0)
                return -1;
            dobj = 1;
            continue;
        }
        if (walk_skip(&w, &v) < 0)
            return -1;
        lm_str *slot = key_is(k, "index") ? &ix : key_is(k, "finish_reason") ? &fin : NULL;
        if (slot && slot->p)
            return -1;
        if (slot)
            *slot = v;
    }
    if (rc < 0 || walk_sep(aw, w.p) < 0)
        return -1;
    if (ix.p && lm_jscan_int(ix, &idx) < 0)
        return -1;
    if (fin.p && fin.p[0] != 'n' && (!is_str(fin) || memchr(fin.p, '\\', fin.n)))
        return -1;
    int fr = is_str(fin);
    uint32_t bit = idx >= 0 && idx < 32 ? 1u << idx : 0;
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
            if ((s->tools_seen & bit) && lm_jscan_str_is(fin, "stop"))
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
                                        "choices", "usage",  "error"};
    lm_str v[7] = {{NULL, 0}}, k, val;
    walk_t w, aw;
    const char *cut = NULL, *cut_end = NULL, *end = chunk.p + chunk.n;
    int rc, nchoices = 0;
    long long t;
    if (e == NULL || !e->raw_ok || chunk.p == NULL || chunk.n == 0 ||
        memchr(chunk.p, '\n', chunk.n) || memchr(chunk.p, '\r', chunk.n))
        return LM_DECLINED; /* a line break would end the client's SSE event */
    raw_state_t s = {e->role_sent, e->finished, e->tools_seen, 0, 0};
    if (walk_open(&w, chunk.p, end, '{') < 0)
        return LM_DECLINED;
    while ((rc = walk_key(&w, &k)) > 0) {
        int i = key_index(k, names, 7);
        if (i >= 0 && v[i].p != NULL)
            return LM_DECLINED;      /* a repeated member: the tree keeps the last */
        if (i == 4 && *w.p == '[') { /* the choices, walked in place */
            const char *start = w.p;
            if (walk_open(&aw, start, end, '[') < 0)
                return LM_DECLINED;
            for (; !aw.done; nchoices++)
                if (raw_choice(&s, &aw) < 0)
                    return LM_DECLINED;
            v[4] = (lm_str){start, (size_t)(aw.p - start)};
            if (walk_sep(&w, aw.p) < 0)
                return LM_DECLINED;
            continue;
        }
        if (walk_skip(&w, &val) < 0)
            return LM_DECLINED;
        if (i >= 0)
            v[i] = val;
        if (i == 5) { /* usage: the member, and a comma on one side */
            cut = w.next ? w.key_at : w.before ? w.before : w.key_at;
            cut_end = w.next ? w.next : val.p + val.n;
        }
    }
    if (rc < 0 || ws(w.p, end) != end || v[6].p != NULL)
        return LM_DECLINED; /* invalid (the plugin's parse says so), or an error */
    if (v[5].p && chunk.n > RAW_SPLICE_MAX)
        return LM_DECLINED;
    if (nchoices > 0 &&
        (!is_str(v[0]) || !is_str(v[1]) || !is_str(v[3]) || v[2].p == NULL ||
         lm_jscan_int(v[2], &t) < 0 || (!e->ids_adopted && adopt(e, v[0], t, v[3]) < 0)))
        return LM_DECLINED; /* the host would fill one in */
    /* Committed: from here on this is what the tree path would have done. */
    lm_usage u;
    if (v[5].p && lm_jscan_usage(v[5], &u)) {
        lm_usage_merge(&e->usage, &u, e->usage_mode);
        e->usage_seen = 1;
    }
    if (nchoices == 0)
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
