/*
 * attempt.h - upstream attempts: translate the request for a channel,
 * send it, read the answer, fail over to the next candidate. Thread: the
 * relay's worker. The transfer (r->up) belongs to the pool until it ends.
 */
#ifndef LM_RELAY_ATTEMPT_H
#define LM_RELAY_ATTEMPT_H
#include "relay/relay_int.h"

/* Start the next attempt on r->cands[r->cand]. Returns 0 (the outcome is
 * the client's reply or a transfer under way). */
int lm_attempt_start(lm_relay_t *r);
/* Translate and send for the current channel, from a clean call; also
 * re-entered after a side-value wait. Returns 0 like lm_attempt_start. */
int lm_attempt_build(lm_relay_t *r);
/* Forget what the previous attempt left (plugin request state, buffers). */
void lm_attempt_reset(lm_relay_t *r);
/* The attempt is over for channel health: once per begun attempt. */
void lm_attempt_route_end(lm_relay_t *r, int outcome);
/* The failed attempt's ledger row (it costs nothing). */
void lm_attempt_record_failed(lm_relay_t *r, int status);
/* The client left a non-stream request whose transfer is under way: the
 * transfer runs on, bounded by the channel's timeouts, so the answer the
 * provider bills is billed too (QB-6). Streams and speech are cancelled
 * instead (their row bills what the provider already has). */
int lm_attempt_background(const lm_relay_t *r);
/* Leave the worker's list of relays waiting for a side value, if on it. */
void lm_attempt_side_unlink(lm_relay_t *r);
#endif
