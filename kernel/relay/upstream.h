/*
 * upstream.h - libcurl's only home: one multi handle per worker driven by
 * that worker's event base, and the one factory for easy handles (no
 * redirects, http/https only). Thread: the owning worker.
 */
#ifndef LM_UPSTREAM_H
#define LM_UPSTREAM_H
#include "plugin/host.h"

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

/* A sink's on_data return value: keep the bytes and deliver them again
 * after lm_upstream_resume (the client is slow to read). */
#define LM_UP_PAUSE ((size_t)-1)

/* Who receives a transfer's bytes and its end (relay/attempt.c is the
 * contract: on_data returns n, 0 to abort, or LM_UP_PAUSE). */
typedef struct lm_upstream_sink_s {
    size_t (*on_data)(void *arg, int status, int whole_json, const char *p, size_t n);
    void (*on_done)(void *arg, int ok, int timeout, const char *why);
    /* Optional: the response carried Retry-After (seconds from now, >= 0). */
    void (*on_retry_after)(void *arg, int64_t seconds);
} lm_upstream_sink_t;

/* The outbound address policy (SS-7) is checked on every address a
 * transfer connects to, before the connection is opened, and again on a
 * reused connection before the request is sent: metadata and link-local
 * addresses are refused, loopback and private ones when u->chan says
 * private_refused (or u->chan is NULL). A refused transfer ends with
 * on_done(ok 0, timeout 0) and a `why` starting with LM_UP_REFUSED; the
 * refusal is logged with the channel and the address. */
#define LM_UP_REFUSED "upstream address refused"

/* Start a transfer for `u` delivering to sink(arg). Returns the transfer
 * (owned by the pool until it completes or is cancelled) or NULL with a
 * message in err. total_timeout_ms > 0 caps the whole transfer (side
 * calls); relays run their own timers instead. */
lm_upstream_t *lm_upstream_start(lm_upstream_pool_t *pool, const lm_ureq_t *u,
                                 int connect_timeout_ms, int total_timeout_ms,
                                 const lm_upstream_sink_t *sink, void *arg, char *err,
                                 size_t errlen);
/* Abort and free a transfer. Never call from inside a curl callback. */
void lm_upstream_cancel(lm_upstream_t *t);
/* The answer's Content-Type (borrowed until the next callback returns), or
 * NULL; call from the sink's on_data. */
const char *lm_upstream_content_type(lm_upstream_t *t);
/* Resume a transfer paused by LM_UP_PAUSE. */
void lm_upstream_resume(lm_upstream_t *t);
#endif
