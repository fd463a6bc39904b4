/*
 * count.h - POST /v1/messages/count_tokens as a relay request: the key,
 * limits and the brute-force guard are the relay's; the count is the
 * upstream's own where the model's first channel speaks Messages natively
 * (Claude: <base>/v1/messages/count_tokens with the client's body, model
 * replaced), else the gateway's estimate (proto/msgs.h). Nothing is billed.
 * Thread: the relay's worker.
 */
#ifndef LM_RELAY_COUNT_H
#define LM_RELAY_COUNT_H
#include "relay/relay_int.h"

/* The route tag's operation for count_tokens (kernel-only: never reaches a
 * plugin as lm_call.op). */
#define LM_OP_COUNT_TOKENS 0x7f

/* Run the count for r (authenticated, body complete). Returns 0: the client
 * is answered, or an upstream transfer is under way and answers it. */
int lm_count_run(lm_relay_t *r);
#endif
