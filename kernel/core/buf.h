/* buf.h - a growable byte buffer, the kernel's only one. Owner frees with
 * lm_buf_free. A failed append marks the buffer failed and refuses later
 * appends, so a long run of appends checks once at the end. */
#ifndef LM_BUF_H
#define LM_BUF_H
#include <stddef.h>

typedef struct lm_buf_s {
    char *p; /* owned; NUL-terminated when len > 0 or after lm_buf_cstr */
    size_t len;
    size_t cap;
    int failed; /* an append failed: later appends return -1 (cleared by reset/free) */
    int secret; /* set by the owner: old bytes are wiped when moved or freed */
} lm_buf_t;

/* Append n bytes. Returns 0, or -1 on allocation failure (buffer unchanged). */
int lm_buf_add(lm_buf_t *b, const void *p, size_t n);
int lm_buf_adds(lm_buf_t *b, const char *s);
/* Append printf-style text. Returns 0 or -1. */
__attribute__((format(printf, 2, 3))) int lm_buf_addf(lm_buf_t *b, const char *fmt, ...);
/* Drop the first n bytes. */
void lm_buf_consume(lm_buf_t *b, size_t n);
/* NUL-terminated view (never NULL). Borrowed. */
const char *lm_buf_cstr(lm_buf_t *b);
void lm_buf_reset(lm_buf_t *b);
void lm_buf_free(lm_buf_t *b);
/* Hand the bytes to the caller (free() them; NULL if the buffer failed or
 * is empty), *len = their length; the buffer is left empty. */
char *lm_buf_take(lm_buf_t *b, size_t *len);
#endif
