/*
 * otel_enc.h - span records (otel_rec.h) as the body of one OTLP
 * ExportTraceServiceRequest, in protobuf (otel_pb.c, the default: what
 * collectors expect) or JSON (otel_enc.c). Written by hand into
 * one growing buffer that the exporter keeps from batch to batch: the
 * exporter's thread serialises every traced request, and a JSON tree of
 * some 80 values per span cost ~20 times more. Pure; any thread.
 */
#ifndef LM_OTEL_ENC_H
#define LM_OTEL_ENC_H
#include "relay/otel_rec.h"

#include <stddef.h>
#include <string.h>

/* An output buffer: p[0, len) written, the encoded body is p[off, len).
 * Owned by its user; free(p) at the end. A failed growth sets failed and
 * later appends do nothing. */
typedef struct lm_otel_buf_s {
    char *p;
    size_t off, len, cap;
    int failed;
} lm_otel_buf_t;

/* Room for n more bytes (sets failed when out of memory). */
void lm_otel_buf_grow(lm_otel_buf_t *b, size_t n);

static inline void lm_otel_put(lm_otel_buf_t *b, const void *p, size_t n)
{
    if (b->cap - b->len < n)
        lm_otel_buf_grow(b, n);
    if (b->failed)
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

/* What a batch shares: the resource's service.name (NULL reads as
 * "longmen") and the shift from the records' monotonic times to Unix
 * nanoseconds (CLOCK_REALTIME - CLOCK_MONOTONIC, read once per batch). */
typedef struct lm_otel_batch_s {
    const char *service_name;
    int64_t shift_ns;
} lm_otel_batch_t;

/* The length of the valid UTF-8 sequence at p (n > 0 bytes left, p[0] >=
 * 0x80), 0 if invalid: overlong, a surrogate, beyond U+10FFFF or cut. */
static inline size_t lm_otel_utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0xc2 ? 0 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : p[0] < 0xf5 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
        return 0;
    return len;
}

/* recs[0, n) as OTLP/protobuf (opentelemetry.proto.collector.trace.v1.
 * ExportTraceServiceRequest), replacing b's contents. 0, or -1 when out of
 * memory. Strings that are not valid UTF-8 get U+FFFD (proto3 strings must
 * be UTF-8: a collector refuses the whole batch otherwise). */
int lm_otel_encode_pb(lm_otel_buf_t *b, const lm_otel_rec_t *const *recs, size_t n,
                      const lm_otel_batch_t *batch);

/* recs[0, n) as OTLP/JSON, replacing b's contents (b->len = 0 first).
 * 0, or -1 when out of memory. Text that is not valid UTF-8 gets U+FFFD. */
int lm_otel_encode_json(lm_otel_buf_t *b, const lm_otel_rec_t *const *recs, size_t n,
                        const lm_otel_batch_t *batch);
#endif
