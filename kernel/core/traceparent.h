/*
 * traceparent.h - the W3C Trace Context `traceparent` header: parse what a
 * client sent, format what goes upstream. Pure functions; any thread.
 *
 *   traceparent: 00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>
 *
 * Lowercase hex only; an all-zero trace or span id, version ff, or a
 * version-00 value of another length is invalid. A later version is read
 * by its first four fields, as the specification asks.
 */
#ifndef LM_TRACEPARENT_H
#define LM_TRACEPARENT_H
#include <stddef.h>
#include <stdint.h>

#define LM_TRACEPARENT_LEN 55 /* version 00, without a terminator */

typedef struct lm_traceparent_s {
    uint8_t trace_id[16];
    uint8_t span_id[8]; /* the caller's span: our request span's parent */
    uint8_t flags;      /* bit 0: sampled */
} lm_traceparent_t;

/* Parse s (n bytes, surrounding spaces and tabs allowed). Returns 0 with
 * *out filled, or -1 when the value is invalid (*out is then zeroed). */
int lm_traceparent_parse(const char *s, size_t n, lm_traceparent_t *out);
/* Write the version-00 value for trace/span/flags into out (at least
 * LM_TRACEPARENT_LEN + 1 bytes, NUL-terminated). */
void lm_traceparent_format(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags,
                           char *out);
/* n bytes as 2n lowercase hex digits plus a NUL into out (2n + 1 bytes). */
void lm_hex_encode(const uint8_t *p, size_t n, char *out);
#endif
