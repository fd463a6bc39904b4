/*
 * relay.h - one client request through the pipeline: auth, parse, route,
 * plugin translation, upstream transfer, response or stream, teardown.
 * Thread: the worker that accepted the connection.
 */
#ifndef LM_RELAY_H
#define LM_RELAY_H
#include "http/http.h"
#include "relay/worker.h"

typedef struct lm_relay_s lm_relay_t;

/* Created when the request headers are complete (op: LM_OP_CHAT or
 * LM_OP_EMBED); NULL when out of memory. Binds the request's hooks. */
lm_relay_t *lm_relay_begin(lm_http_req_t *req, lm_worker_t *w, int op);
/* A body piece of n bytes arrived with `have` already kept: 1 keep it,
 * 0 discard it (over the limit: the answer will be 413), -1 close the
 * connection (far over the limit). */
int lm_relay_body(lm_relay_t *r, size_t have, size_t n);
/* The request is complete: run the pipeline. method_ok is 0 for a wrong
 * method (405). */
void lm_relay_run(lm_relay_t *r, int method_ok);

/* From the HTTP front. */
void lm_relay_client_gone(lm_relay_t *r);     /* error on the connection */
void lm_relay_client_fini(lm_relay_t *r);     /* the request object is being freed */
void lm_relay_client_writable(lm_relay_t *r); /* output drained */

/* Worker thread: a side value changed; resume the relays waiting on it. */
void lm_relay_side_wake(lm_worker_t *w);

/* Drain timeout: end every live relay of the worker: an error event for a
 * started stream, 503 otherwise; upstream transfers are cancelled. */
void lm_relay_shutdown_all(lm_worker_t *w);
/* Thread exit (loop stopped, connections closed): free every relay. */
void lm_relay_free_all(lm_worker_t *w);
#endif
