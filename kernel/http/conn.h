/*
 * conn.h - a worker thread's share of the HTTP front: its open client
 * connections (so shutdown can close what clients left open) and the sweep
 * that cuts off slow senders (IN-7). Touched only by the owning thread,
 * except the mailbox slots, which posters set atomically (front.c).
 */
#ifndef LM_HTTP_CONN_H
#define LM_HTTP_CONN_H
#include <evhtp/evhtp.h>
#include <stdatomic.h>
#include <stdint.h>

struct lm_http_front_s;
struct lm_http_conn_s;

#define LM_HTTP_MAIL_SLOTS 8
struct lm_http_task_s;

/* Per worker thread, the evthr's aux; allocated and freed by front.c. */
typedef struct lm_http_thread_s {
    struct lm_http_front_s *front;    /* borrowed; outlives its threads */
    atomic_int *draining;             /* the front's flag: replies then close their connection */
    void *user;                       /* the layer above's thread state (lm_http_thread_user) */
    struct lm_http_conn_s *conns;     /* open connections, owned */
    struct event *sweep;              /* closes connections past their deadlines, owned */
    int header_timeout_ms;            /* client_header_timeout */
    int body_timeout_ms;              /* client_body_timeout */
    int send_timeout_ms;              /* client_send_timeout */
    const _Atomic uint64_t *max_body; /* the front's [max_body_size, audio_max_bytes] (live) */
    /* Tasks posted by other threads (front.c): slots for distinct tasks,
     * run by mail_ev on this thread. A post never waits and is never lost. */
    int slot;              /* index in the front's thread table, -1 if none */
    struct event *mail_ev; /* owned */
    _Atomic(const struct lm_http_task_s *) mail[LM_HTTP_MAIL_SLOTS];
} lm_http_thread_t;

/* The thread state of the request's connection (borrowed), or NULL. */
lm_http_thread_t *lm_http_thread_of(evhtp_request_t *req);
/* Start the deadline sweep on the thread's loop: 0, or -1 (no sweep). */
int lm_http_conn_sweep_start(lm_http_thread_t *t, struct event_base *base);
/* Post-accept callback: track the connection on its thread. */
evhtp_res lm_http_conn_accept(evhtp_connection_t *conn, void *arg);
/* Headers complete: the request runs, no header deadline. */
void lm_http_conn_busy(evhtp_request_t *req);
/* A body piece arrived (body_done: the whole body is in). */
void lm_http_conn_body(evhtp_request_t *req, int body_done);
/* The next bytes queued on req's connection are a whole answer: written at
 * once (lm_gate_reply_now). */
void lm_http_conn_reply_now(evhtp_request_t *req);
/* A request ended (every request-fini hook must call this): a keep-alive
 * connection waits for the next one, which its gate may now let in. */
void lm_http_conn_idle(evhtp_request_t *req);
/* Thread exit: close every connection (their requests' fini hooks run
 * now) and stop the sweep. */
void lm_http_conn_close_all(lm_http_thread_t *t);
#endif
