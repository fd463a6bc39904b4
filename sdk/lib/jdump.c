/* jdump.c - a Jansson tree to compact JSON text, byte for byte what
 * json_dumps(v, JSON_COMPACT) writes (lmjscan.h), in one growing buffer
 * with no per-value callbacks (Jansson's dump is most of a streamed
 * event's cost). Anything Jansson would refuse (invalid UTF-8, a NaN or
 * infinite real) makes it return NULL: the caller asks Jansson. */
#include "lmjscan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *p;
    size_t n, cap;
} jd_t;

static int grow(jd_t *b, size_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024; /* one allocation for a typical chunk */
    while (cap < b->n + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int add(jd_t *b, const char *s, size_t n)
{
    if (grow(b, n) < 0)
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

/* Bytes of the valid UTF-8 sequence at s (at most n long), 0 if invalid
 * (what Jansson's utf8_check_full refuses). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], need, cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 2, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 3, cp = c & 0x07;
    else
        return 0;
    if (n <= need)
        return 0;
    for (unsigned i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return need + 1;
}

static int str(jd_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    if (grow(b, n + 2) < 0)
        return -1;
    b->p[b->n++] = '"';
    while (i < n) {
        unsigned c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_len(u + i, n - i);
            if (k == 0)
                return -1;
            i += k;
            continue;
        }
        if (add(b, s + run, i - run) < 0)
            return -1;
        char esc[8];
        const char *t = esc;
        switch (c) {
        case '"': t = "\\\""; break;
        case '\\': t = "\\\\"; break;
        case '\b': t = "\\b"; break;
        case '\f': t = "\\f"; break;
        case '\n': t = "\\n"; break;
        case '\r': t = "\\r"; break;
        case '\t': t = "\\t"; break;
        default: snprintf(esc, sizeof(esc), "\\u%04X", c); break;
        }
        if (add(b, t, strlen(t)) < 0)
            return -1;
        run = ++i;
    }
    if (add(b, s + run, n - run) < 0)
        return -1;
    return add(b, "\"", 1);
}

/* Jansson's jsonp_dtostr at its default precision (17). */
static int real(jd_t *b, double d)
{
    char buf[100];
    if (isnan(d) || isinf(d))
        return -1;
    int ret = snprintf(buf, sizeof(buf), "%.17g", d);
    if (ret < 0 || (size_t)ret >= sizeof(buf) - 3)
        return -1;
    size_t len = (size_t)ret;
    if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
        memcpy(buf + len, ".0", 3);
        len += 2;
    }
    char *start = strchr(buf, 'e');
    if (start) {
        start++;
        char *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - buf));
            len -= (size_t)(end - start);
        }
    }
    return add(b, buf, len);
}

/* "%lld" without snprintf (a chunk has several integers). */
static int integer(jd_t *b, json_int_t x)
{
    char num[24], *e = num + sizeof(num), *p = e;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do
        *--p = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (x < 0)
        *--p = '-';
    return add(b, p, (size_t)(e - p));
}

static int value(jd_t *b, const json_t *v, int depth)
{
    if (depth > 2048)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        /* insertion order and key lengths, as Jansson's dump without JSON_SORT_KEYS */
        void *it = json_object_iter((json_t *)v);
        if (add(b, "{", 1) < 0)
            return -1;
        for (int first = 1; it; first = 0, it = json_object_iter_next((json_t *)v, it))
            if ((!first && add(b, ",", 1) < 0) ||
                str(b, json_object_iter_key(it), json_object_iter_key_len(it)) < 0 ||
                add(b, ":", 1) < 0 || value(b, json_object_iter_value(it), depth + 1) < 0)
                return -1;
        return add(b, "}", 1);
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        if (add(b, "[", 1) < 0)
            return -1;
        json_array_foreach (v, i, x)
            if ((i && add(b, ",", 1) < 0) || value(b, x, depth + 1) < 0)
                return -1;
        return add(b, "]", 1);
    }
    case JSON_STRING: return str(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return integer(b, json_integer_value(v));
    case JSON_REAL: return real(b, json_real_value(v));
    case JSON_TRUE: return add(b, "true", 4);
    case JSON_FALSE: return add(b, "false", 5);
    case JSON_NULL: return add(b, "null", 4);
    default: return -1;
    }
}

char *lm_jdump(const json_t *v, size_t *len)
{
    jd_t b = {NULL, 0, 0};
    if (v == NULL || value(&b, v, 0) < 0 || add(&b, "", 1) < 0) {
        free(b.p);
        return NULL;
    }
    *len = b.n - 1;
    return b.p;
}
