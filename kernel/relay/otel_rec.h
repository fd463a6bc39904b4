/*
 * otel_rec.h - one traced request as the exporter's queue holds it (otel.h)
 * and the encoders write it (otel_enc.h). Plain fixed-size data, no
 * pointers into the relay: the worker fills a slot of the exporter's ring
 * in place (no allocation) and the exporter's thread reads it later.
 */
#ifndef LM_OTEL_REC_H
#define LM_OTEL_REC_H
#include <stdint.h>

#define LM_OTEL_MAX_ATTEMPTS 4 /* child spans kept per request */

/* One upstream attempt: a CLIENT span under the request's span. */
typedef struct lm_otel_attempt_s {
    uint8_t span_id[8];
    int64_t start_ns, end_ns; /* monotonic (lm_clock_ns); the encoder shifts them */
    int status;               /* the upstream's HTTP status, 0: none */
    char channel[64], system[32], model[128];
} lm_otel_attempt_t;

/* An asynchronous task's polling (relay/poll.h): an INTERNAL span under
 * the request's span, after the attempt that submitted it. */
typedef struct lm_otel_task_s {
    uint8_t span_id[8];
    int64_t start_ns, end_ns; /* start 0: the request had no task */
    int polls;
    char outcome[16]; /* succeeded, failed, timeout, cancelled */
    char channel[64], system[32], model[128];
} lm_otel_task_t;

/* One request: a SERVER span plus its attempts. Everything is copied in
 * (the generation that named the channels may be gone by export time).
 * Times are monotonic nanoseconds: the exporter turns them into Unix time
 * with one clock reading per batch rather than one per span. */
typedef struct lm_otel_rec_s {
    uint8_t trace_id[16], span_id[8], parent_id[8];
    int has_parent;
    int64_t start_ns, end_ns;
    char request_id[40], api[16], operation[16], key_name[64], channel[64], system[32];
    char model_req[128], model_resp[128], finish[32], error_code[48];
    int64_t key_id, input_tokens, output_tokens, cost, generation, ttft_ms;
    int status, stream, nattempts;
    lm_otel_attempt_t attempts[LM_OTEL_MAX_ATTEMPTS]; /* [0, nattempts) are set */
    char *prompt, *completion;                        /* malloc'd, the exporter frees; only with
                                                       * otel_capture_content on, else NULL */
    lm_otel_task_t task;
} lm_otel_rec_t;

/* The spans of one record: the request's, its attempts', its task's. */
#define LM_OTEL_SPANS(r) (1 + (uint64_t)(r)->nattempts + ((r)->task.start_ns != 0))
#endif
