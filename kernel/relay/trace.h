/*
 * trace.h - what a request records for its trace (otel.h) and its request
 * log row: ids, attempt times, finish reason, error code. The state
 * (trace_state.h) lives inline in the relay (no allocation when tracing is
 * off); the hooks below
 * are called from relay.c, attempt.c and output.c. Each is a no-op unless
 * the request is traced or logged. Thread: the relay's worker.
 */
#ifndef LM_TRACE_H
#define LM_TRACE_H
#include "relay/trace_state.h"

#include <stddef.h>
struct lm_ureq;
#include <stdint.h>

/* The request began: pick up an incoming traceparent, decide sampling. */
void lm_trace_begin(struct lm_relay_s *r);
/* An upstream transfer is about to start: a child span begins and the
 * traceparent naming it is added to r->ureq's headers. */
void lm_trace_attempt(struct lm_relay_s *r);
/* The current attempt failed with this status. */
void lm_trace_attempt_end(struct lm_relay_s *r, int status);
/* An asynchronous task is polled (poll.h): the submitting attempt's span
 * ends with r->status, the task's begins. */
void lm_trace_task_begin(struct lm_relay_s *r);
/* A poll of the task is about to be sent: a traceparent naming the task's
 * span is added to u's headers. */
void lm_trace_task_poll(struct lm_relay_s *r, struct lm_ureq *u);
/* The task ended after `polls` polls; outcome ("succeeded", "failed",
 * "timeout") is copied. */
void lm_trace_task_end(struct lm_relay_s *r, int polls, const char *outcome);
/* An answer (a whole JSON reply, or one canonical stream chunk) passed:
 * its finish reason, and with capture its text. Call only when
 * r->trace.collect (a branch at the call site keeps it free otherwise). */
void lm_trace_answer(struct lm_relay_s *r, const char *json, size_t n);
/* The client was answered with an error with this code. */
void lm_trace_error(struct lm_relay_s *r, const char *code);
/* The request is over: its record goes to the exporter (when sampled);
 * frees the trace's buffers. */
void lm_trace_end(struct lm_relay_s *r);
#endif
