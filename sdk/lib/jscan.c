/* jscan.c - the zero-allocation JSON scanner (lmjscan.h). An explicit
 * stack of container kinds (one byte each) instead of recursion, so the
 * depth bound is a buffer size and a deep input cannot blow the C stack. */
#include "lmjscan.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int hex4(const char *p, const char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* One escape after the backslash at p[-1]; returns the byte after it. */
static const char *escape(const char *p, const char *end)
{
    unsigned u, lo;
    if (p >= end)
        return NULL;
    switch (*p) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't': return p + 1;
    case 'u': break;
    default: return NULL;
    }
    if (hex4(p + 1, end, &u) < 0 || u == 0)
        return NULL; /* Jansson refuses \u0000 without JSON_ALLOW_NUL */
    p += 5;
    if (u >= 0xDC00 && u <= 0xDFFF)
        return NULL; /* a low surrogate first */
    if (u < 0xD800 || u > 0xDBFF)
        return p;
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) < 0 || lo < 0xDC00 ||
        lo > 0xDFFF)
        return NULL;
    return p + 6;
}

/* One UTF-8 sequence of two or more bytes starting at p; the byte after. */
static const char *utf8(const char *p, const char *end)
{
    const unsigned char *s = (const unsigned char *)p;
    unsigned c = s[0], need, min, cp;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1, min = 0x80, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 2, min = 0x800, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 3, min = 0x10000, cp = c & 0x07;
    else
        return NULL;
    if ((size_t)(end - p) <= need)
        return NULL;
    for (unsigned i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return NULL;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return NULL;
    return p + 1 + need;
}

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
/* The first byte at or after p that is not plain ASCII text (a quote, a
 * backslash, a control or a non-ASCII byte), eight bytes a step: most of a
 * JSON text is string bytes, and this is most of a scan's instructions.
 * Each mask flags exactly its bytes from the lowest up to the first one
 * found, so the lowest flag is that byte. */
static const char *plain_run(const char *p, const char *end)
{
    while (end - p >= 8) {
        uint64_t x, q, b;
        memcpy(&x, p, 8);
        q = x ^ (ONES * '"');
        b = x ^ (ONES * '\\');
        uint64_t m = (x | ((x - ONES * 0x20) & ~x) | ((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGHS;
        if (m != 0)
            return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
    return p;
}
#else
static const char *plain_run(const char *p, const char *end)
{
    (void)end;
    return p;
}
#endif

/* A string whose opening quote is at p; returns the byte after the closing one. */
static const char *string(const char *p, const char *end)
{
    p++;
    while (p < end) {
        if ((p = plain_run(p, end)) >= end)
            break;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c == '\\')
            p = escape(p + 1, end);
        else if (c < 0x20)
            return NULL;
        else if (c < 0x80)
            p++;
        else
            p = utf8(p, end);
        if (p == NULL)
            return NULL;
    }
    return NULL;
}

static const char *digits(const char *p, const char *end)
{
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p == s ? NULL : p;
}

static const char *number(const char *p, const char *end)
{
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else if ((p = digits(p, end)) == NULL)
        return NULL;
    if (p < end && *p == '.' && (p = digits(p + 1, end)) == NULL)
        return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        p = digits(p, end);
    }
    return p;
}

static const char *word(const char *p, const char *end, const char *w, size_t n)
{
    return (size_t)(end - p) >= n && memcmp(p, w, n) == 0 ? p + n : NULL;
}

/* A scalar at p (not '{' or '['); the byte after it. */
static const char *scalar(const char *p, const char *end)
{
    switch (*p) {
    case '"': return string(p, end);
    case 't': return word(p, end, "true", 4);
    case 'f': return word(p, end, "false", 5);
    case 'n': return word(p, end, "null", 4);
    default: return (*p == '-' || (*p >= '0' && *p <= '9')) ? number(p, end) : NULL;
    }
}

const char *lm_jscan_skip(const char *p, const char *end)
{
    char stack[LM_JSCAN_MAX_DEPTH];
    size_t depth = 0;

    p = ws(p, end);
value:
    if (p >= end)
        return NULL;
    if (*p == '{' || *p == '[') {
        if (depth == sizeof(stack))
            return NULL;
        stack[depth++] = *p;
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1, end);
        if (p < end && *p == close) {
            p++;
            depth--;
            goto after;
        }
        if (close == ']')
            goto value;
        goto key;
    }
    if ((p = scalar(p, end)) == NULL)
        return NULL;
after:
    if (depth == 0)
        return p;
    p = ws(p, end);
    if (p >= end)
        return NULL;
    if (*p == ',') {
        p = ws(p + 1, end);
        if (stack[depth - 1] == '[')
            goto value;
        goto key;
    }
    if (*p != (stack[depth - 1] == '{' ? '}' : ']'))
        return NULL;
    p++;
    depth--;
    goto after;
key:
    if (p >= end || *p != '"' || (p = string(p, end)) == NULL)
        return NULL;
    p = ws(p, end);
    if (p >= end || *p != ':')
        return NULL;
    p = ws(p + 1, end);
    goto value;
}

int lm_jscan_valid(const char *p, size_t n)
{
    const char *end = p + n, *q = lm_jscan_skip(p, end);
    return q != NULL && ws(q, end) == end;
}

int lm_jscan_object(const char *p, size_t n)
{
    const char *end = p + n;
    return ws(p, end) < end && *ws(p, end) == '{' && lm_jscan_valid(p, n);
}

int lm_jscan_members(const char *p, size_t n, const char *const *keys, size_t nkeys, lm_str *vals)
{
    const char *end = p + n;
    for (size_t i = 0; i < nkeys; i++)
        vals[i] = (lm_str){NULL, 0};
    p = ws(p, end);
    if (p >= end || *p != '{')
        return -1;
    p = ws(p + 1, end);
    if (p < end && *p == '}')
        return ws(p + 1, end) == end ? 0 : -1;
    for (;;) {
        const char *k = p;
        if (p >= end || *p != '"' || (p = string(p, end)) == NULL)
            return -1;
        size_t kn = (size_t)(p - k) - 2;
        p = ws(p, end);
        if (p >= end || *p != ':')
            return -1;
        const char *v = ws(p + 1, end);
        if ((p = lm_jscan_skip(v, end)) == NULL)
            return -1;
        for (size_t i = 0; i < nkeys; i++)
            if (strlen(keys[i]) == kn && memcmp(keys[i], k + 1, kn) == 0)
                vals[i] = (lm_str){v, (size_t)(p - v)};
        p = ws(p, end);
        if (p < end && *p == ',') {
            p = ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}')
            return ws(p + 1, end) == end ? 0 : -1;
        return -1;
    }
}

int lm_jscan_get(lm_str obj, const char *key, lm_str *val)
{
    if (lm_jscan_members(obj.p, obj.n, &key, 1, val) < 0)
        return -1;
    return val->p != NULL;
}

int lm_jscan_int(lm_str v, long long *out)
{
    const char *p = v.p, *end = v.p + v.n;
    int neg = 0;
    unsigned long long x = 0, lim;
    if (p == NULL || p >= end)
        return -1;
    if (*p == '-')
        neg = 1, p++;
    if (p >= end || (*p == '0' && end - p > 1))
        return -1;
    lim = neg ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        unsigned d = (unsigned)(*p - '0');
        if (x > (lim - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = neg ? (long long)(0 - x) : (long long)x;
    return 0;
}

int lm_jscan_str_is(lm_str v, const char *s)
{
    size_t n = strlen(s);
    return v.p != NULL && v.n == n + 2 && v.p[0] == '"' && memcmp(v.p + 1, s, n) == 0 &&
           v.p[n + 1] == '"';
}

int lm_jscan_true(lm_str v)
{
    return v.p != NULL && v.n == 4 && memcmp(v.p, "true", 4) == 0;
}

/* A member that is an integer, else -1 (unknown), as lm_json_int_or_unknown. */
static int64_t int_or_unknown(lm_str v)
{
    long long x;
    return v.p != NULL && lm_jscan_int(v, &x) == 0 ? (int64_t)x : -1;
}

int lm_jscan_usage(lm_str u, lm_usage *out)
{
    static const char *const keys[] = {"prompt_tokens", "completion_tokens", "total_tokens",
                                       "prompt_tokens_details", "completion_tokens_details"};
    lm_str v[5], d;
    lm_usage r = LM_USAGE_UNKNOWN;
    *out = r;
    if (u.p == NULL || u.n == 0 || u.p[0] != '{' || lm_jscan_members(u.p, u.n, keys, 5, v) < 0)
        return 0;
    r.prompt = int_or_unknown(v[0]);
    r.completion = int_or_unknown(v[1]);
    r.total = int_or_unknown(v[2]);
    if (r.total < 0 && r.prompt >= 0 && r.completion >= 0)
        r.total = r.prompt + r.completion;
    if (r.completion < 0 && r.total >= 0 && r.prompt >= 0)
        r.completion = r.total - r.prompt;
    if (v[3].p && v[3].p[0] == '{' && lm_jscan_get(v[3], "cached_tokens", &d) == 1)
        r.cached = int_or_unknown(d);
    if (v[4].p && v[4].p[0] == '{' && lm_jscan_get(v[4], "reasoning_tokens", &d) == 1)
        r.reasoning = int_or_unknown(d);
    *out = r;
    return r.prompt >= 0 || r.completion >= 0 || r.total >= 0;
}
