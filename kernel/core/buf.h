/* buf.h - a growable byte buffer. Owner frees with lm_buf_free. */
#ifndef LM_BUF_H
#define LM_BUF_H
#include <stddef.h>

typedef struct lm_buf_s {
    char *p; /* owned; NUL-terminated when len > 0 or after lm_buf_cstr */
    size_t len;
    size_t cap;
} lm_buf_t;

/* Append n bytes. Returns 0, or -1 on allocation failure (buffer unchanged). */
int lm_buf_add(lm_buf_t *b, const void *p, size_t n);
int lm_buf_adds(lm_buf_t *b, const char *s);
/* Drop the first n bytes. */
void lm_buf_consume(lm_buf_t *b, size_t n);
/* NUL-terminated view (never NULL). Borrowed. */
const char *lm_buf_cstr(lm_buf_t *b);
void lm_buf_reset(lm_buf_t *b);
void lm_buf_free(lm_buf_t *b);
#endif
