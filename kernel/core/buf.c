/* buf.c - growable byte buffer (buf.h). Any thread, one owner at a time;
 * the owner frees the bytes with lm_buf_free or takes them with lm_buf_take. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Grow to hold need bytes. A secret buffer never uses realloc, which could
 * leave a copy of the old bytes in freed memory. */
static int grow(lm_buf_t *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *np;
    if (b->secret) {
        np = malloc(cap);
        if (np && b->p) {
            memcpy(np, b->p, b->len + 1);
            explicit_bzero(b->p, b->cap);
            free(b->p);
        }
    } else {
        np = realloc(b->p, cap);
    }
    if (np == NULL)
        return -1;
    b->p = np;
    b->cap = cap;
    return 0;
}

int lm_buf_add(lm_buf_t *b, const void *p, size_t n)
{
    if (b->failed)
        return -1;
    if (b->len + n + 1 > b->cap && grow(b, b->len + n + 1) < 0) {
        b->failed = 1;
        return -1;
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int lm_buf_adds(lm_buf_t *b, const char *s)
{
    return lm_buf_add(b, s, strlen(s));
}

int lm_buf_addf(lm_buf_t *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof(tmp))
        return lm_buf_add(b, tmp, (size_t)n);
    /* Longer text: format straight into the buffer. */
    if (b->failed || (b->len + (size_t)n + 1 > b->cap && grow(b, b->len + (size_t)n + 1) < 0)) {
        b->failed = 1;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void lm_buf_consume(lm_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
    }
    if (b->p)
        b->p[b->len] = '\0';
}

const char *lm_buf_cstr(lm_buf_t *b)
{
    return b->p ? b->p : "";
}

void lm_buf_reset(lm_buf_t *b)
{
    b->len = 0;
    b->failed = 0;
    if (b->p)
        b->p[0] = '\0';
}

void lm_buf_free(lm_buf_t *b)
{
    if (b->secret && b->p)
        explicit_bzero(b->p, b->cap);
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

char *lm_buf_take(lm_buf_t *b, size_t *len)
{
    char *p = b->failed ? NULL : b->p;
    if (len)
        *len = p ? b->len : 0;
    if (p == NULL)
        lm_buf_free(b);
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}
