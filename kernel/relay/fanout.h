/*
 * fanout.h - an embeddings request with more inputs than the channel's
 * plugin takes in one upstream call (ABI 1.2 lm_provider.embed_max_inputs)
 * is split into concurrent calls of at most that many inputs; their answers
 * are joined in input order and billed once. Thread: the relay's worker.
 * The fan-out (r->fan), its parts and their transfers belong to the relay;
 * r->fan is non-NULL exactly while parts are in flight.
 *
 * Decisions (also in docs/architecture.md, "Split embeddings"):
 *   - The fan-out is one attempt on the channel: one in-flight slot and one
 *     health verdict, like the single call it replaces. LM_FANOUT_MAX_PARTS
 *     bounds the transfers one request opens; each part has the channel's
 *     connect, first-byte, idle and request timeouts of its own.
 *   - The first part to fail decides: the others are cancelled and that
 *     part's transfer is handed to the single path's end of transfer, so its
 *     error is mapped, retried (a refused credential), failed over (5xx, 429,
 *     no connection: the whole request goes to the next candidate, split
 *     again for that channel) and recorded exactly as one call's would be.
 *     Nothing is billed for the parts that had answered.
 *   - A client that leaves cancels every part (unlike a single non-stream
 *     call, QB-6): the parts already answered are billed, client_aborted.
 */
#ifndef LM_RELAY_FANOUT_H
#define LM_RELAY_FANOUT_H
#include "relay/relay_int.h"

#define LM_FANOUT_MAX_PARTS 64 /* upstream calls one request may open */

/* The single path's own steps, handed in by attempt.c (which includes this
 * header; fanout.c cannot include attempt.h without an include cycle). */
typedef struct lm_fanout_ops_s {
    /* A part's transfer ended and decides the request: r holds that part's
     * call, request, status and body as if it had been the only transfer. */
    void (*upstream_done)(lm_relay_t *r, int ok, int timeout, const char *why);
    /* Fail the attempt with e (may go to the next candidate). */
    void (*attempt_failed)(lm_relay_t *r, lm_err *e, int kernel_retry);
    /* The attempt is over for channel health (lm_attempt_route_end). */
    void (*route_end)(lm_relay_t *r, int outcome);
    /* Start the attempt on r->cands[r->cand] (lm_attempt_start). */
    int (*attempt_start)(lm_relay_t *r);
} lm_fanout_ops_t;

/* Whether the current attempt (r->route, r->canon) must be split: an
 * embeddings request whose `input` lists more inputs (strings or token
 * arrays) than the channel's plugin takes in one call. */
int lm_fanout_wanted(const lm_relay_t *r);
/* Build every part through the plugin and start their transfers; r->call
 * is the attempt's call (its raw_body is not used). Returns 0 (the client
 * was answered or the transfers are under way), or LM_AGAIN with
 * r->ureq.side filled: a part needs a side value, so the caller waits as
 * the single path does and builds the attempt again. ops is borrowed for
 * the fan-out's life. */
int lm_fanout_start(lm_relay_t *r, const lm_fanout_ops_t *ops);
/* The client left: cancel every part, bill the parts already answered
 * (client_aborted) and free the fan-out. No-op without one. */
void lm_fanout_client_gone(lm_relay_t *r);
/* Shutdown: cancel every part and free the fan-out; nothing is billed.
 * No-op without one. */
void lm_fanout_cancel(lm_relay_t *r);
#endif
