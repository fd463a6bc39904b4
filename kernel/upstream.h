/*
 * upstream.h - libcurl's only home: one multi handle per worker driven by
 * that worker's event base, and the one factory for easy handles (no
 * redirects, http/https only). Thread: the owning worker.
 */
#ifndef LM_UPSTREAM_H
#define LM_UPSTREAM_H
#include "host.h"

struct event_base;
struct lm_relay_s;
typedef struct lm_upstream_pool_s lm_upstream_pool_t;
typedef struct lm_upstream_s lm_upstream_t;

/* Process-wide init/cleanup (main thread, before/after the workers). */
int lm_upstream_global_init(void);
void lm_upstream_global_cleanup(void);

lm_upstream_pool_t *lm_upstream_pool_new(struct event_base *base);
/* Cancels nothing: call after every transfer was cancelled. */
void lm_upstream_pool_free(lm_upstream_pool_t *pool);

/* Start a transfer for `u` on behalf of `relay`. Returns the transfer
 * (owned by the pool until it completes or is cancelled) or NULL with a
 * message in err. */
lm_upstream_t *lm_upstream_start(lm_upstream_pool_t *pool, const lm_ureq_t *u,
                                 int connect_timeout_ms, struct lm_relay_s *relay, char *err,
                                 size_t errlen);
/* Abort and free a transfer. Never call from inside a curl callback. */
void lm_upstream_cancel(lm_upstream_t *t);
/* Resume a transfer paused by LM_UP_PAUSE. */
void lm_upstream_resume(lm_upstream_t *t);
#endif
