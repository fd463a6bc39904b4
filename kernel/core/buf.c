/* buf.c - growable byte buffer (buf.h). Any thread, one owner at a time;
 * the owner frees the bytes with lm_buf_free. */
#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

int lm_buf_add(lm_buf_t *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return -1;
        b->p = np;
        b->cap = cap;
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
    if (b->p)
        b->p[0] = '\0';
}

void lm_buf_free(lm_buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
