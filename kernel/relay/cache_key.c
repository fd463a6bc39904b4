/* cache_key.c - the response cache's key: the canonical request walked
 * into a length-prefixed byte string and hashed with SHA-256 (cache_key.h).
 * Threads: any. */
#include "relay/cache_key.h"

#include "core/buf.h"

#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_DEPTH_MAX 64 /* reqcheck already bounds nesting; this keeps the walk safe alone */

/* Fields that change nothing in the answer's content: how it is carried
 * (stream, stream_options: a cached stream is replayed with or without the
 * usage chunk) and who the end user is. */
static int ignored(const char *k)
{
    return !strcmp(k, "stream") || !strcmp(k, "stream_options") || !strcmp(k, "user");
}

/* One item: a type tag, a length, the bytes. Tags and lengths make the
 * encoding unambiguous without escaping anything. */
static int item(lm_buf_t *b, char tag, const void *p, size_t n)
{
    unsigned char h[9];
    uint64_t len = n;
    h[0] = (unsigned char)tag;
    memcpy(h + 1, &len, sizeof(len));
    return lm_buf_add(b, h, sizeof(h)) < 0 || (n && p && lm_buf_add(b, p, n) < 0) ? -1 : 0;
}

typedef struct pair_s {
    const char *k;
    size_t klen;
    json_t *v;
} pair_t;

static int by_key(const void *a, const void *b)
{
    const pair_t *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->k, y->k, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

static int walk(lm_buf_t *b, json_t *j, int depth, int top);

/* An object's members in key order (the request's own order must not
 * matter); at the top, the fields that change nothing are left out. */
static int walk_object(lm_buf_t *b, json_t *j, int depth, int top)
{
    pair_t stack[32], *v = stack;
    size_t n = json_object_size(j), m = 0;
    if (n > sizeof(stack) / sizeof(stack[0]) && (v = malloc(n * sizeof(*v))) == NULL)
        return -1;
    const char *k;
    json_t *val;
    json_object_foreach (j, k, val) {
        if (!top || !ignored(k))
            v[m++] = (pair_t){k, strlen(k), val};
    }
    qsort(v, m, sizeof(*v), by_key);
    int rc = item(b, '{', NULL, m);
    for (size_t i = 0; rc == 0 && i < m; i++)
        rc = item(b, 'k', v[i].k, v[i].klen) < 0 ? -1 : walk(b, v[i].v, depth + 1, 0);
    if (v != stack)
        free(v);
    return rc;
}

static int walk(lm_buf_t *b, json_t *j, int depth, int top)
{
    if (depth > KEY_DEPTH_MAX)
        return -1;
    switch (json_typeof(j)) {
    case JSON_OBJECT: return walk_object(b, j, depth, top);
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        if (item(b, '[', NULL, n) < 0)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (walk(b, json_array_get(j, i), depth + 1, 0) < 0)
                return -1;
        return 0;
    }
    case JSON_STRING: return item(b, 's', json_string_value(j), json_string_length(j));
    case JSON_INTEGER: {
        int64_t v = (int64_t)json_integer_value(j);
        return item(b, 'i', &v, sizeof(v));
    }
    case JSON_REAL: {
        double v = json_real_value(j);
        return item(b, 'r', &v, sizeof(v));
    }
    case JSON_TRUE: return item(b, 't', NULL, 0);
    case JSON_FALSE: return item(b, 'f', NULL, 0);
    default: return item(b, 'n', NULL, 0);
    }
}

int lm_cache_key(const json_t *canon, const char *api, int stream,
                 unsigned char out[LM_CACHE_KEY_LEN])
{
    lm_buf_t b = {0};
    const char *a = api ? api : "chat";
    int rc = item(&b, 'a', a, strlen(a)) < 0 || item(&b, stream ? 'S' : 'W', NULL, 0) < 0 ||
                     walk(&b, (json_t *)canon, 0, 1) < 0
                 ? -1
                 : 0;
    if (rc == 0)
        SHA256((const unsigned char *)b.p, b.len, out);
    lm_buf_free(&b);
    return rc;
}

int lm_cache_key_deterministic(const json_t *canon, int sampled)
{
    if (sampled)
        return 1;
    json_t *t = json_object_get(canon, "temperature");
    return json_is_number(t) && json_number_value(t) == 0.0;
}
