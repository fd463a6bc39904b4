/* json.c - small JSON conveniences and the growable buffer (lmsdk.h). */
#include "lmjscan.h"
#include "lmsdk.h"

/* Deeper answers go to Jansson (its own bound is 2048). */
#define LMS_PARSE_DEPTH 256

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *lms_jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int lms_nonempty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int lms_streq(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

int lms_oset(json_t *o, const char *key, json_t *v)
{
    return v == NULL ? -1 : json_object_set_new(o, key, v);
}

int lms_aadd(json_t *a, json_t *v)
{
    return v == NULL ? -1 : json_array_append_new(a, v);
}

json_t *lms_json_text(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *r = s ? json_string(s) : NULL;
    free(s);
    return r;
}

json_t *lms_parse_object(lm_str data, const char *what, lm_err *e)
{
    /* One pass in place; Jansson decides what the fast path refuses (a
     * repeated key is kept there, the last one winning). */
    json_t *j = lm_jparse_object(data.p, data.n, LMS_PARSE_DEPTH);
    if (j != NULL)
        return j;
    j = json_loadb(data.p, data.n, 0, NULL);
    if (json_is_object(j))
        return j;
    json_decref(j);
    lms_bad_upstream(e, "%s is not a JSON object", what);
    return NULL;
}

int lms_copy_params(const json_t *canon, json_t *body, const lms_rename *map)
{
    for (; map && map->from; map++) {
        json_t *v = json_object_get(canon, map->from);
        if (v != NULL && !json_is_null(v) &&
            json_object_set(body, map->to ? map->to : map->from, v) < 0)
            return -1;
    }
    return 0;
}

/* ---- buffer ---- */

void lms_buf_add(lms_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void lms_buf_adds(lms_buf *b, const char *s)
{
    lms_buf_add(b, s, strlen(s));
}

void lms_buf_addf(lms_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        lms_buf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    lms_buf_add(b, big, (size_t)n);
    free(big);
}

void lms_buf_free(lms_buf *b)
{
    free(b->p);
    *b = (lms_buf){0};
}

json_t *lms_buf_json(const lms_buf *b)
{
    if (b->oom)
        return NULL;
    return json_stringn(b->n ? b->p : "", b->n);
}
