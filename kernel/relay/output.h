/*
 * output.h - what the client receives: error replies, the route header,
 * SSE events and the stream's end. Thread: the relay's worker. Every
 * function writes to r->req when the client is still there, else only
 * records the outcome; nothing returned is owned by the caller.
 */
#ifndef LM_RELAY_OUTPUT_H
#define LM_RELAY_OUTPUT_H
#include "relay/relay_int.h"

/* x-longmen-route: which channel answered and after how many attempts. */
void lm_out_route_header(lm_relay_t *r);
/* Answer e (secrets scrubbed) unless the reply is already complete.
 * Returns 0, so pipeline steps can `return lm_out_error(...)`. */
int lm_out_error(lm_relay_t *r, const lm_err *e);
/* lm_out_error with the error built from its parts (strings borrowed). */
int lm_out_err(lm_relay_t *r, int status, const char *type, const char *code, const char *msg);
/* Send the SSE bytes gathered in r->out. */
void lm_out_flush(lm_relay_t *r);
/* End a started stream: e as an error event (NULL: the usage chunk when
 * asked for), then [DONE]. Once per request. */
void lm_out_stream_end(lm_relay_t *r, const lm_err *e);
/* Emit sink (proto/stream.h): each canonical chunk becomes one SSE event
 * in r->out; arg is the relay. */
int lm_out_sse_sink(void *arg, const char *json, size_t len);
#endif
