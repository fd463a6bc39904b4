/*
 * modcall.h - lm.moderate's side call: a script's on_request asks a
 * channel serving the moderation model for a verdict; the request stays
 * parked (state ROUTING, nothing held but the call's quota hold) while the
 * call runs on the worker's curl multi, and the script resumes with the
 * verdict. Thread: the relay's worker. The call (r->mod) belongs to the
 * relay; r->mod is non-NULL exactly while it runs.
 *
 * Decisions (docs/lua.md, "Side calls"):
 *   - The channel: the first candidate of the moderation model whose
 *     plugin serves /v1/moderations (ABI 1.3). No failover: a failed call
 *     is a missing verdict, and the script decides (the shipped guard
 *     fails closed). The call counts like an attempt for the channel's
 *     in-flight cap (refused at the cap) and health (5xx, 429, timeouts
 *     and lost connections are failures).
 *   - Bounds: LM_MODCALL_TIMEOUT_MS per call (the channel's
 *     request_timeout when shorter, connect included), at most
 *     LM_LUA_SIDE_MAX calls per request, answers above
 *     LM_MODCALL_BODY_MAX refused.
 *   - Billing: a call is held against the caller's quota before it starts
 *     (refused: nil, "insufficient quota ...") and billed as its own
 *     ledger row under the same key, request id "<id>-mod<n>", api
 *     "moderations", at the moderation channel's prices (per_1m_chars,
 *     tokens estimated at 4 characters when the provider reports none),
 *     once the channel answered 2xx. A failed, timed-out or cancelled call
 *     (the client left) bills nothing: no verdict was delivered.
 */
#ifndef LM_RELAY_MODCALL_H
#define LM_RELAY_MODCALL_H
#include "relay/relay_int.h"

#define LM_MODCALL_TIMEOUT_MS 10000         /* one side call, connect included */
#define LM_MODCALL_BODY_MAX   (256u * 1024) /* a moderation answer */

/* Lets r's scripts call lm.moderate (no-op without scripts). */
void lm_modcall_arm(lm_relay_t *r);
/* Cancels a running side call: the transfer, its plugin state and its
 * quota hold; nothing is billed and the script is not resumed. No-op
 * without one. */
void lm_modcall_cancel(lm_relay_t *r);
#endif
