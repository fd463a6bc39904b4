/* redis_url.c - parse redis://[[user]:password@]host[:port][/db]
 * (redis_url.h). Pure; any thread. */
#include "core/redis_url.h"

#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

/* A decimal number in [lo, hi] made of the n bytes at p. */
static int number(const char *p, size_t n, long lo, long hi, int *out)
{
    long v = 0;
    if (n == 0 || n > 7)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int copy(char *dst, size_t cap, const char *p, size_t n)
{
    if (n >= cap)
        return -1;
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 0;
}

/* user:password before the last '@' of the authority. */
static int userinfo(const char *p, size_t n, lm_redis_url_t *out, char *err, size_t errlen)
{
    const char *colon = memchr(p, ':', n);
    if (colon == NULL) /* "redis://secret@host": redis-cli reads a lone word as the password */
        return copy(out->password, sizeof(out->password), p, n) < 0
                   ? fail(err, errlen, "redis URL: password too long")
                   : 0;
    if (copy(out->user, sizeof(out->user), p, (size_t)(colon - p)) < 0 ||
        copy(out->password, sizeof(out->password), colon + 1, n - (size_t)(colon - p) - 1) < 0)
        return fail(err, errlen, "redis URL: user or password too long");
    return 0;
}

static int hostport(const char *p, size_t n, lm_redis_url_t *out, char *err, size_t errlen)
{
    const char *port = NULL;
    size_t hn;
    if (n > 0 && p[0] == '[') {
        const char *close = memchr(p, ']', n);
        if (close == NULL || close == p + 1)
            return fail(err, errlen, "redis URL: unterminated [IPv6] host");
        if (copy(out->host, sizeof(out->host), p + 1, (size_t)(close - p - 1)) < 0)
            return fail(err, errlen, "redis URL: host too long");
        if (close + 1 < p + n) {
            if (close[1] != ':')
                return fail(err, errlen, "redis URL: junk after [IPv6] host");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', n);
        hn = colon ? (size_t)(colon - p) : n;
        if (hn == 0)
            return fail(err, errlen, "redis URL: no host");
        for (size_t i = 0; i < hn; i++) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_'))
                return fail(err, errlen, "redis URL: bad character in host");
        }
        if (copy(out->host, sizeof(out->host), p, hn) < 0)
            return fail(err, errlen, "redis URL: host too long");
        if (colon)
            port = colon + 1;
    }
    if (port && number(port, (size_t)(p + n - port), 1, 65535, &out->port) < 0)
        return fail(err, errlen, "redis URL: port must be 1..65535");
    return 0;
}

int lm_redis_url_parse(const char *s, lm_redis_url_t *out, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (s == NULL || strncmp(s, scheme, sizeof(scheme) - 1))
        return fail(err, errlen, "redis URL must start with redis://");
    const char *a = s + sizeof(scheme) - 1;
    const char *slash = strchr(a, '/');
    size_t an = slash ? (size_t)(slash - a) : strlen(a);
    const char *at = NULL;
    for (size_t i = 0; i < an; i++) /* the last '@': a password may hold one */
        if (a[i] == '@')
            at = a + i;
    if (at) {
        if (userinfo(a, (size_t)(at - a), out, err, errlen) < 0)
            return -1;
        an -= (size_t)(at + 1 - a);
        a = at + 1;
    }
    if (hostport(a, an, out, err, errlen) < 0)
        return -1;
    if (slash && slash[1] != '\0' && number(slash + 1, strlen(slash + 1), 0, 1000000, &out->db) < 0)
        return fail(err, errlen, "redis URL: the database after '/' must be a number 0..1000000");
    return 0;
}
