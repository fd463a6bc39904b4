/*
 * front.h - the data-plane HTTP listener: its routes, worker threads,
 * connection deadlines and drain. The layer above plugs in through
 * lm_http_calls_t and route handlers; the front never names it.
 */
#ifndef LM_HTTP_FRONT_H
#define LM_HTTP_FRONT_H
#include "http/http.h"

#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct lm_http_front_s lm_http_front_t;

/* What the layer above does, all on the connection's worker thread. The
 * per-request calls get the context bound with lm_http_bind_relay. */
typedef struct lm_http_calls_s {
    void *arg; /* for thread_init and thread_exit */
    /* A worker thread starts: its state (lm_http_thread_user); NULL aborts. */
    void *(*thread_init)(struct event_base *base, void *arg);
    /* A worker thread ends, after its connections were closed. */
    void (*thread_exit)(void *user, void *arg);
    /* A body route's headers are complete (tag: lm_http_front_body_route's):
     * start the request and bind it (none bound: it is answered 500). */
    void (*begin)(lm_http_req_t *r, void *user, int tag);
    /* A body piece of n bytes arrived, `have` already kept: 1 keep it,
     * 0 drop it, -1 close the connection. */
    int (*body)(void *ctx, size_t have, size_t n);
    void (*run)(lm_http_req_t *r, void *ctx); /* the request is complete */
    void (*gone)(void *ctx);                  /* error on the connection */
    void (*fini)(void *ctx);                  /* the request object is being freed */
    void (*writable)(void *ctx);              /* output drained */
} lm_http_calls_t;

/* Answers a complete request (worker thread). */
typedef void (*lm_http_handler_fn)(lm_http_req_t *r, void *arg);
/* Work queued on every worker thread (static: must outlive the call). */
typedef struct lm_http_task_s {
    void (*run)(void *user); /* user: the thread's lm_http_calls_t state */
} lm_http_task_t;

/* Control thread, before lm_http_front_listen. calls is copied. Timeouts:
 * client_header_timeout, client_body_timeout and client_send_timeout in ms. NULL on failure;
 * free with lm_http_front_free. */
lm_http_front_t *lm_http_front_new(struct event_base *base, const lm_http_calls_t *calls,
                                   int header_timeout_ms, int body_timeout_ms, int send_timeout_ms);
/* Any thread: the request body limit (max_body_size) the front enforces
 * before reading a body; a reload sets the new generation's. */
void lm_http_front_set_max_body(lm_http_front_t *f, uint64_t max_body);
/* The same for requests to /v1/audio/... (audio_max_bytes). */
void lm_http_front_set_max_audio(lm_http_front_t *f, uint64_t max_audio);
/* A route answered once the request is complete. A path ending in * is a
 * prefix; NULL matches every other path. 0, or -1. */
int lm_http_front_route(lm_http_front_t *f, const char *path, lm_http_handler_fn fn, void *arg);
/* A route whose body goes to a per-request context as it arrives:
 * calls->begin, body..., run. Ambiguous framing is refused (IN-6). */
int lm_http_front_body_route(lm_http_front_t *f, const char *path, int tag);
/* Start `workers` threads, then listen (threads first: libevhtp #63).
 * 0, or -1 with a message in err. */
int lm_http_front_listen(lm_http_front_t *f, int workers, const char *host, int port, char *err,
                         size_t errlen);
/* Control thread: stop accepting; replies from now on close their
 * connection. */
void lm_http_front_drain(lm_http_front_t *f);
/* Any thread: queue task->run on every worker thread. */
void lm_http_front_each_thread(lm_http_front_t *f, const lm_http_task_t *task);
/* The worker thread's state (calls->thread_init) of the request (borrowed). */
void *lm_http_thread_user(lm_http_req_t *r);
/* Control thread, loop stopped: stop the workers (each closes its
 * connections, then calls->thread_exit) and free f. NULL is a no-op. */
void lm_http_front_free(lm_http_front_t *f);
#endif
