/*
 * passthru.h - pass-through: a request in an inbound API that the
 * attempt's channel speaks natively (Claude for /v1/messages, an OpenAI
 * channel with `passthrough responses` for /v1/responses) goes upstream as
 * the client's bytes with only the model replaced, and the upstream's
 * answer or events go back as they came. Usage, the stream's end and
 * upstream error events are still read (proto/inbound_pt.h), so billing,
 * the ledger, health, failover and abort billing are those of chat.
 * Decided per attempt: a failover to a channel that does not speak the API
 * is translated as usual. Thread: the relay's worker.
 */
#ifndef LM_RELAY_PASSTHRU_H
#define LM_RELAY_PASSTHRU_H
#include "relay/relay_int.h"

/* After the plugin built its request (URL, auth headers): when this
 * attempt passes through, replace the body (and for Responses the path)
 * and set r->pt. Returns 1 passing through, 0 translated (not the native
 * API, a script rewrote the request or reads the answer, a body without a
 * string model), -1 with e on no memory. */
int lm_passthru_prepare(lm_relay_t *r, lm_err *e);
/* Upstream stream bytes: complete events go to r->out unchanged; usage and
 * the end are published in r->st.emit (what settle bills). Returns LM_OK,
 * LM_DONE or < 0 with r->st.err set, like lm_stream_feed. */
int lm_passthru_feed(lm_relay_t *r, const char *p, size_t n);
/* The upstream body ended: a last event without its blank line. Same
 * returns. */
int lm_passthru_finish(lm_relay_t *r);
/* The stream ends with e (scrubbed; NULL: a clean end adds nothing, the
 * upstream's own end marker went out): its error event in the API's shape
 * into r->out, unless the upstream's own error event was forwarded. */
void lm_passthru_end(lm_relay_t *r, const lm_err *e);
/* A whole 2xx answer: 0 with *out (a copy of body, free()) and *u, or
 * LM_EUPSTREAM with e (502) when it is not the API's answer. */
int lm_passthru_whole(lm_relay_t *r, lm_str body, char **out, size_t *out_len, lm_usage *u,
                      lm_err *e);
/* Forget the attempt's pass-through state (r->pt NULL afterwards). */
void lm_passthru_free(lm_relay_t *r);
#endif
