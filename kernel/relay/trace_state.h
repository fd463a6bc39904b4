/*
 * trace_state.h - a request's trace state, inline in the relay (relay_int.h)
 * so that tracing off costs no allocation; trace.h has the functions. Apart
 * from them so relay_int.h need not include trace.h (no include cycle).
 * Thread: the relay's worker.
 */
#ifndef LM_TRACE_STATE_H
#define LM_TRACE_STATE_H
#include "core/buf.h"

#include <stdint.h>

struct lm_route_s;

#define LM_TRACE_ATTEMPTS 4 /* attempt spans kept per request (more are not traced) */

struct lm_relay_s;
struct lm_route_s;

typedef struct lm_trace_att_s {
    uint8_t span_id[8];
    int64_t start_ns, end_ns; /* monotonic; end 0: still running */
    int status;
    const struct lm_route_s *route; /* borrowed from the relay's candidates */
} lm_trace_att_t;

/* An asynchronous task's polling (poll.h): one span from the first poll's
 * wait to the task's end. */
typedef struct lm_trace_task_s {
    uint8_t span_id[8];
    int64_t start_ns, end_ns; /* monotonic; start 0: no task, end 0: still polled */
    int polls;
    char outcome[16];
    const struct lm_route_s *route; /* borrowed from the relay's candidates */
} lm_trace_task_t;

typedef struct lm_trace_s {
    int on;      /* traced: ids exist, traceparent goes upstream */
    int sampled; /* the span is exported */
    int collect; /* answers are scanned (traced and sampled, or request-logged) */
    int capture; /* prompt and completion text are kept (otel_capture_content on) */
    int logged;  /* a request-log row is written at the end (request_log on) */
    int bodies;  /* -1 undecided, 0/1: the row keeps the bodies (request_log_bodies) */
    int has_parent, natt;
    uint8_t trace_id[16], span_id[8], parent_id[8];
    int64_t start_mono_ns;
    char finish[32];     /* the first finish_reason seen ("" none) */
    char error_code[48]; /* the error the client was answered with ("" none) */
    lm_buf_t completion; /* capture only */
    lm_buf_t answer;     /* the answer as sent (JSON, or chunks one a line): bodies only */
    lm_trace_att_t att[LM_TRACE_ATTEMPTS];
    lm_trace_task_t task;
} lm_trace_t;
#endif
