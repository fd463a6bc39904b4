/* jparse.c - a JSON object into a Jansson tree in place (lmjscan.h). The
 * scanner (lmjscan.h) validates each string (escapes, UTF-8) and finds its
 * end; a string without escapes becomes a Jansson string straight from the
 * input, one with escapes is decoded into a small buffer first. Nothing
 * here reports an error: any doubt returns NULL and Jansson decides. */
#include "lmjscan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end;
    int depth, max_depth;
} jp_t;

static json_t *value(jp_t *j);

static void ws(jp_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static unsigned hex4(const char *s)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v = (v << 4) | (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Escapes of a scanner-validated string body [s, e) decoded into o (at
 * most e - s bytes: no escape decodes longer than it is written). */
static size_t unescape(const char *s, const char *e, char *o)
{
    size_t n = 0;
    while (s < e) {
        if (*s != '\\') {
            o[n++] = *s++;
            continue;
        }
        char c = s[1];
        s += 2;
        switch (c) {
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            unsigned cp = hex4(s);
            s += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* the scanner checked the low half follows */
                cp = 0x10000 + ((cp - 0xD800) << 10) + (hex4(s + 2) - 0xDC00);
                s += 6;
            }
            n += put_utf8(o + n, cp);
            break;
        }
        default: o[n++] = c; break; /* " \ / */
        }
    }
    return n;
}

/* The string at j->p (its quote): *s and *len its decoded text, borrowed
 * from the input or from *heap (the caller frees it). Keys and values. */
static int string(jp_t *j, const char **s, size_t *len, char **heap)
{
    const char *q = lm_jscan_skip(j->p, j->end);
    *heap = NULL;
    if (q == NULL)
        return -1;
    const char *b = j->p + 1, *e = q - 1;
    j->p = q;
    if (memchr(b, '\\', (size_t)(e - b)) == NULL) {
        *s = b;
        *len = (size_t)(e - b);
        return 0;
    }
    if ((*heap = malloc((size_t)(e - b) + 1)) == NULL)
        return -1;
    *len = unescape(b, e, *heap);
    *s = *heap;
    return 0;
}

static json_t *str_value(jp_t *j)
{
    const char *s;
    size_t n;
    char *heap;
    if (string(j, &s, &n, &heap) < 0)
        return NULL;
    json_t *v = json_stringn_nocheck(s, n);
    free(heap);
    return v;
}

/* A number as Jansson reads it: no fraction or exponent -> integer
 * (refused beyond 64 bits), else a real (refused when it overflows). */
static json_t *number(jp_t *j)
{
    const char *s = j->p, *q = lm_jscan_skip(s, j->end);
    char buf[64];
    long long x;
    if (q == NULL)
        return NULL;
    j->p = q;
    lm_str t = {s, (size_t)(q - s)};
    if (memchr(s, '.', t.n) == NULL && memchr(s, 'e', t.n) == NULL && memchr(s, 'E', t.n) == NULL)
        return lm_jscan_int(t, &x) == 0 ? json_integer(x) : NULL;
    char *txt = t.n < sizeof(buf) ? buf : malloc(t.n + 1); /* strtod wants a NUL */
    if (txt == NULL)
        return NULL;
    memcpy(txt, s, t.n);
    txt[t.n] = '\0';
    double d = strtod(txt, NULL);
    if (txt != buf)
        free(txt);
    return isinf(d) ? NULL : json_real(d);
}

static json_t *object(jp_t *j)
{
    json_t *o = json_object();
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == '}') {
        j->p++;
        return o;
    }
    while (o != NULL) {
        const char *k;
        size_t kn;
        char *heap;
        if (j->p >= j->end || *j->p != '"' || string(j, &k, &kn, &heap) < 0)
            break;
        ws(j);
        json_t *v = NULL;
        if (j->p < j->end && *j->p == ':' && (j->p++, ws(j), 1) &&
            json_object_getn(o, k, kn) == NULL) /* a repeated key: Jansson says so */
            v = value(j);
        int rc = v ? json_object_setn_new_nocheck(o, k, kn, v) : -1;
        free(heap);
        if (rc < 0)
            break;
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            ws(j);
            continue;
        }
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            return o;
        }
        break;
    }
    json_decref(o);
    return NULL;
}

static json_t *array(jp_t *j)
{
    json_t *a = json_array();
    j->p++;
    ws(j);
    if (j->p < j->end && *j->p == ']') {
        j->p++;
        return a;
    }
    while (a != NULL) {
        json_t *v = value(j);
        if (v == NULL || json_array_append_new(a, v) < 0)
            break;
        ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            ws(j);
            continue;
        }
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            return a;
        }
        break;
    }
    json_decref(a);
    return NULL;
}

static json_t *value(jp_t *j)
{
    json_t *v;
    if (j->p >= j->end)
        return NULL;
    switch (*j->p) {
    case '{':
    case '[':
        if (++j->depth > j->max_depth)
            return NULL;
        v = *j->p == '{' ? object(j) : array(j);
        j->depth--;
        return v;
    case '"': return str_value(j);
    case 't':
        return j->end - j->p >= 4 && memcmp(j->p, "true", 4) == 0 ? (j->p += 4, json_true()) : NULL;
    case 'f':
        return j->end - j->p >= 5 && memcmp(j->p, "false", 5) == 0 ? (j->p += 5, json_false())
                                                                   : NULL;
    case 'n':
        return j->end - j->p >= 4 && memcmp(j->p, "null", 4) == 0 ? (j->p += 4, json_null()) : NULL;
    default: return number(j);
    }
}

json_t *lm_jparse_object(const char *p, size_t n, int max_depth)
{
    jp_t j = {p, p + n, 0, max_depth};
    ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return NULL;
    json_t *v = value(&j);
    ws(&j);
    if (v != NULL && j.p != j.end) {
        json_decref(v);
        return NULL;
    }
    return v;
}
