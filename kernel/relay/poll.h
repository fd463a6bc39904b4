/*
 * poll.h - asynchronous upstream tasks (ABI 1.4): the provider accepted a
 * task (parse_response returned LM_PENDING) and its answer is fetched by
 * polling (lm_provider.poll_request/poll_parse). Thread: the relay's worker.
 * The poll (r->poll) is calloc'd and owned by the relay; r->poll is non-NULL
 * exactly while the task is polled. Its transfer is r->up while a poll is
 * in flight; between polls only its timer runs, so the worker's event loop
 * never waits on a task.
 *
 * Decisions (also in docs/endpoints.md, "Asynchronous image tasks"):
 *   - The wait before each poll is the plugin's c->task_poll_ms, else 500 ms
 *     doubling to LM_POLL_MAX_MS. The task may take c->task_timeout_ms from
 *     the first LM_PENDING (else LM_POLL_TIMEOUT_MS); past it the client
 *     gets a 504 upstream_task_timeout. One poll is bounded by what is left
 *     of that and by the channel's request_timeout.
 *   - The submit was the attempt (channel health, in-flight slot); polls
 *     count for neither. A poll that gets no answer (connection failure) is
 *     tried again, LM_POLL_MAX_FAILS times in a row at most (then a 502).
 *   - The task's answer goes through the single path's end (scripts, the
 *     client's API, the ledger); an images answer bills the images it
 *     delivered (canon "n" is set to their number before settling).
 *   - A failed task is the failed attempt's error (no failover by the
 *     kernel: the upstream did take the request). A client that leaves
 *     does not stop the polling: the provider makes (and charges for) the
 *     task anyway, so it is polled on to its end or deadline and its answer
 *     is billed with the client_aborted mark, as a non-stream chat answer
 *     whose client left (QB-6); a failed task's row costs nothing. The same
 *     holds for a task accepted after its client left.
 */
#ifndef LM_RELAY_POLL_H
#define LM_RELAY_POLL_H
#include "relay/relay_int.h"

#define LM_POLL_FIRST_MS   500    /* the first wait without a plugin interval */
#define LM_POLL_MAX_MS     4000   /* the backoff's cap */
#define LM_POLL_TIMEOUT_MS 120000 /* a task's deadline without a plugin one */
#define LM_POLL_MAX_FAILS  3      /* polls in a row without an answer before a 502 */
#define LM_POLL_BODY_MAX   (4u * 1024 * 1024)

/* The single path's own steps, handed in by attempt.c (which includes this
 * header; poll.c cannot include attempt.h without an include cycle). */
typedef struct lm_poll_ops_s {
    /* The task answered: deliver out (stolen, malloc'd) as the whole answer. */
    void (*answer)(lm_relay_t *r, char *out, size_t out_len, const lm_usage *usage);
    /* The task failed: the attempt fails with e (r->status is set). */
    void (*failed)(lm_relay_t *r, lm_err *e);
} lm_poll_ops_t;

/* parse_response returned LM_PENDING for r's attempt: arm the first poll.
 * Returns 0 (polling, or the client was answered with an error). ops is
 * borrowed for the poll's life. */
int lm_poll_start(lm_relay_t *r, const lm_poll_ops_t *ops);
/* The client left (r->req is NULL): 1 when a task is being polled, which
 * goes on (its answer or failure then frees the relay through
 * lm_relay_maybe_free); 0 without one. */
int lm_poll_client_gone(lm_relay_t *r);
/* Free the poll: its timer stops. A poll transfer in flight is cancelled
 * too (never call this from inside that transfer's callbacks). Nothing is
 * recorded. No-op without one. */
void lm_poll_free(lm_relay_t *r);
#endif
