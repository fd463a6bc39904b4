/* server.c - the HTTP front: libevhtp's only home. */
#include "server/server.h"
#include "core/clock.h"

#include "admin/admin.h"
#include "conf/chanconf.h"
#include "core/errors.h"
#include "core/log.h"
#include "gov/auth.h"
#include "gov/authguard.h"
#include "gov/billing.h"
#include "http/http.h"
#include "lua/lua_host.h"
#include "relay/relay.h"
#include "relay/side_fetch.h"
#include "relay/upstream.h"
#include "relay/worker.h"
#include "route/metrics.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <evhtp/evhtp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LM_MAX_WORKERS 256

struct lm_server_s {
    lm_rt_t *rt; /* current generation: written by the control thread under rt_lock */
    pthread_mutex_t rt_lock;
    lm_rt_t *retired; /* generations whose last request ended; under rt_lock */
    struct event *retire_ev, *sig_hup;
    int retire_ev_dead; /* loop stopped: retire synchronously */
    lm_server_opts_t opts;
    lm_store_t *store;  /* NULL without data_dir */
    evhtp_t *admin_htp; /* admin listener (own thread); NULL without a store */
    lm_admin_env_t admin_env;
    struct event *reclaim_ev;  /* expired quota holds go back to their keys */
    lm_metrics_t *metrics;     /* process-wide registry */
    lm_authguard_t *authguard; /* failed logins per address (AU-4) */
    lm_metrics_std_t mstd;
    evthr_t *threads[LM_MAX_WORKERS]; /* set once by each worker's init */
    atomic_int draining;
    int cancel_sent;
    evhtp_t *htp;
    struct event_base *base;
    atomic_long inflight;
    /* what relays use (relay/services.h); filled before the workers start */
    lm_relay_services_t relay_svc;
    int header_timeout_ms; /* client_header_timeout at start (reload keeps it) */
    int body_timeout_ms;   /* client_body_timeout at start */
    atomic_int next_worker;
    struct event *sig_term, *sig_int, *drain_timer;
    struct timespec drain_deadline;
    int stopping;
    struct timespec stop_at; /* when the first stop signal arrived */
    /* lm_server_reload_wait: tickets handed out / reloads finished */
    pthread_mutex_t reload_mu;
    pthread_cond_t reload_cv; /* CLOCK_MONOTONIC */
    uint64_t reload_asked, reload_done, reload_gen;
    int reload_ok, reload_dead;
    char reload_err[1024];
};

long lm_server_inflight_add(lm_server_t *s, int delta)
{
    return atomic_fetch_add(&s->inflight, delta) + delta;
}

lm_authguard_t *lm_server_authguard(lm_server_t *s)
{
    return s->authguard;
}

lm_metrics_std_t *lm_server_metrics(lm_server_t *s)
{
    return s->metrics ? &s->mstd : NULL;
}

/* Gauges that change without requests (health, in-flight) are read at
 * scrape time from the current generation's routes. */
char *lm_server_metrics_render(lm_server_t *s, size_t *len)
{
    lm_rt_t *rt = lm_server_acquire_rt(s);
    int64_t now = (int64_t)lm_clock_ms();
    lm_metrics_put(s->mstd.generation, NULL, (int64_t)rt->gen);
    for (size_t i = 0; i < rt->ninsts; i++) {
        const lm_chan_conf_t *ch = rt->insts[i].chan;
        int inflight = 0, healthy = 1;
        for (size_t j = 0; rt->cstats && j < ch->nmodels; j++) {
            lm_route_snap_t snap;
            lm_route_stats_t *st = rt->cstats[rt->coff[i] + j];
            if (st == NULL)
                continue;
            lm_route_snapshot(st, now, &snap);
            inflight += snap.inflight;
            healthy &= snap.state == LM_ROUTE_CLOSED;
        }
        const char *labels[] = {ch->name};
        lm_metrics_put(s->mstd.inflight, labels, inflight);
        lm_metrics_put(s->mstd.healthy, labels, healthy);
    }
    lm_rt_unref(rt);
    return lm_metrics_render(s->metrics, len);
}

lm_store_t *lm_server_store(lm_server_t *s)
{
    return s->store;
}

void lm_server_reload(lm_server_t *s)
{
    (void)s;
    kill(getpid(), SIGHUP); /* reload runs on the control thread, like longmen -s reload */
}

lm_rt_t *lm_server_acquire_rt(lm_server_t *s)
{
    pthread_mutex_lock(&s->rt_lock);
    lm_rt_t *rt = s->rt;
    lm_rt_ref(rt);
    pthread_mutex_unlock(&s->rt_lock);
    return rt;
}

/* The relay's view of the server (relay/services.h). */
static lm_rt_t *svc_acquire_rt(void *arg)
{
    return lm_server_acquire_rt(arg);
}

static void svc_side_wake(void *arg)
{
    lm_server_side_wake(arg);
}

int lm_server_draining(lm_server_t *s)
{
    return atomic_load(&s->draining);
}

/* ---- lm_http_* (http.h) ---- */

static lm_worker_t *worker_of_conn(evhtp_request_t *req)
{
    return evthr_get_aux(req->conn->thread);
}

const char *lm_http_header(lm_http_req_t *r, const char *name)
{
    return r ? evhtp_header_find(r->headers_in, name) : NULL;
}

const struct sockaddr *lm_http_peer(lm_http_req_t *r)
{
    return r && r->conn ? r->conn->saddr : NULL;
}

void lm_http_add_header(lm_http_req_t *r, const char *name, const char *value)
{
    if (r)
        evhtp_headers_add_header(r->headers_out, evhtp_header_new(name, value, 1, 1));
}

lm_str lm_http_body(lm_http_req_t *r)
{
    size_t n = evbuffer_get_length(r->buffer_in);
    lm_str s = {"", 0};
    if (n) {
        s.p = (const char *)evbuffer_pullup(r->buffer_in, -1);
        s.n = n;
    }
    return s;
}

static void add_header(lm_http_req_t *r, const char *k, const char *v)
{
    evhtp_headers_add_header(r->headers_out, evhtp_header_new(k, v, 0, 1));
}

void lm_http_reply(lm_http_req_t *r, int status, const char *ctype, const char *body, size_t n,
                   const char *request_id)
{
    if (r == NULL)
        return;
    if (lm_server_draining(worker_of_conn(r)->srv))
        evhtp_request_set_keepalive(r, 0); /* close after the last in-flight reply */
    add_header(r, "Content-Type", ctype);
    if (request_id && *request_id)
        add_header(r, "X-Request-Id", request_id);
    evbuffer_add(r->buffer_out, body, n);
    evhtp_send_reply(r, (evhtp_res)status);
}

void lm_http_reply_error(lm_http_req_t *r, const lm_err *e, const char *request_id)
{
    char *body = lm_error_body(e);
    lm_http_reply(r, e->http_status ? e->http_status : 500, "application/json", body, strlen(body),
                  request_id);
    free(body);
}

void lm_http_stream_start(lm_http_req_t *r, const char *request_id)
{
    if (r == NULL)
        return;
    if (lm_server_draining(worker_of_conn(r)->srv))
        evhtp_request_set_keepalive(r, 0);
    add_header(r, "Content-Type", "text/event-stream");
    add_header(r, "Cache-Control", "no-cache");
    if (request_id && *request_id)
        add_header(r, "X-Request-Id", request_id);
    evhtp_send_reply_chunk_start(r, EVHTP_RES_OK);
}

void lm_http_stream_write(lm_http_req_t *r, const char *p, size_t n)
{
    if (r == NULL || n == 0)
        return;
    struct evbuffer *b = evbuffer_new();
    if (b == NULL)
        return;
    evbuffer_add(b, p, n);
    evhtp_send_reply_chunk(r, b);
    evbuffer_free(b);
}

void lm_http_stream_end(lm_http_req_t *r)
{
    if (r == NULL)
        return;
    if (lm_server_draining(worker_of_conn(r)->srv))
        evhtp_request_set_keepalive(r, 0);
    evhtp_send_reply_chunk_end(r);
}

size_t lm_http_out_pending(lm_http_req_t *r)
{
    evhtp_connection_t *c = r ? evhtp_request_get_connection(r) : NULL;
    struct bufferevent *bev = c ? evhtp_connection_get_bev(c) : NULL;
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

static void on_req_error(evhtp_request_t *req, evhtp_error_flags flags, void *arg)
{
    (void)req;
    (void)flags;
    lm_relay_client_gone(arg);
}

static void conn_idle(evhtp_request_t *req);
static void conn_busy(evhtp_request_t *req);
static void conn_body(evhtp_request_t *req, int body_done);

static evhtp_res on_req_fini(evhtp_request_t *req, void *arg)
{
    conn_idle(req);
    lm_relay_client_fini(arg);
    return EVHTP_RES_OK;
}

/* Output drained: resume a paused upstream of the connection's request. */
static evhtp_res on_conn_write(evhtp_connection_t *conn, void *arg)
{
    evhtp_request_t *req = conn->request;
    (void)arg;
    if (req && req->hooks && req->hooks->on_request_fini == on_req_fini)
        lm_relay_client_writable(req->hooks->on_request_fini_arg);
    return EVHTP_RES_OK;
}

static evhtp_res on_relay_body(evhtp_request_t *req, struct evbuffer *buf, void *arg);

void lm_http_bind_relay(lm_http_req_t *r, struct lm_relay_s *relay)
{
    evhtp_request_set_hook(r, evhtp_hook_on_read, (evhtp_hook)(void (*)(void))on_relay_body, relay);
    evhtp_request_set_hook(r, evhtp_hook_on_error, (evhtp_hook)(void (*)(void))on_req_error, relay);
    evhtp_request_set_hook(r, evhtp_hook_on_request_fini, (evhtp_hook)(void (*)(void))on_req_fini,
                           relay);
    evhtp_connection_set_hook(evhtp_request_get_connection(r), evhtp_hook_on_write,
                              (evhtp_hook)(void (*)(void))on_conn_write, NULL);
}

/* ---- routes ---- */

static lm_worker_t *worker_of(evhtp_request_t *req)
{
    return evthr_get_aux(req->conn->thread);
}

static void reply_simple(evhtp_request_t *req, int status, const char *type, const char *code,
                         const char *msg)
{
    lm_err e;
    lm_error_set(&e, -1, status, type, code, msg);
    lm_http_reply_error(req, &e, NULL);
}

static int require_method(evhtp_request_t *req, htp_method m)
{
    if (req->method == m)
        return 1;
    reply_simple(req, 405, "invalid_request_error", "method_not_allowed",
                 "method not allowed for this path");
    return 0;
}

static lm_relay_t *relay_of(evhtp_request_t *req)
{
    if (req->hooks && req->hooks->on_request_fini == on_req_fini)
        return req->hooks->on_request_fini_arg;
    return NULL;
}

/* Headers complete on a relay route: the relay exists from here on, so the
 * body can be capped as it arrives. */
/* A body framed two ways (Content-Length and Transfer-Encoding) or with
 * two lengths is how requests are smuggled past a proxy in front of us:
 * refuse it (the connection closes) rather than guess which framing the
 * proxy used (IN-6). */
static int ambiguous_framing(evhtp_headers_t *hdrs)
{
    int ncl = 0, nte = 0;
    evhtp_kv_t *kv;
    TAILQ_FOREACH(kv, hdrs, next)
    {
        if (kv->key && strcasecmp(kv->key, "Content-Length") == 0)
            ncl++;
        else if (kv->key && strcasecmp(kv->key, "Transfer-Encoding") == 0)
            nte++;
    }
    return ncl > 1 || nte > 1 || (ncl && nte);
}

static evhtp_res on_relay_headers(evhtp_request_t *req, evhtp_headers_t *hdrs, void *arg)
{
    conn_busy(req);
    if (ambiguous_framing(hdrs))
        return EVHTP_RES_BADREQ;
    conn_body(req, 0);
    lm_relay_begin(req, worker_of(req), (int)(intptr_t)arg);
    return EVHTP_RES_OK;
}

static evhtp_res on_relay_body(evhtp_request_t *req, struct evbuffer *buf, void *arg)
{
    size_t n = evbuffer_get_length(buf);
    conn_body(req, 0);
    int keep = lm_relay_body(arg, evbuffer_get_length(req->buffer_in), n);
    if (keep < 0)
        return EVHTP_RES_DATA_TOO_LONG;
    if (keep)
        evbuffer_add_buffer(req->buffer_in, buf);
    else
        evbuffer_drain(buf, n);
    return EVHTP_RES_OK;
}

static void route_relay(evhtp_request_t *req, void *arg)
{
    lm_relay_t *r = relay_of(req);
    (void)arg;
    conn_body(req, 1);
    if (r == NULL) {
        reply_simple(req, 500, "api_error", NULL, "out of memory");
        return;
    }
    lm_relay_run(r, req->method == htp_method_POST);
}

static int authorized(evhtp_request_t *req, const lm_rt_t *rt)
{
    if (lm_auth_check(rt->conf, lm_http_header(req, "Authorization")))
        return 1;
    reply_simple(req, 401, "invalid_request_error", "invalid_api_key",
                 "missing or invalid API key (send Authorization: Bearer <key>)");
    return 0;
}

static void models_reply(evhtp_request_t *req, const lm_rt_t *rt)
{
    const char *path = req->uri && req->uri->path ? req->uri->path->full : "/v1/models";
    if (strcmp(path, "/v1/models") == 0) {
        lm_http_reply(req, 200, "application/json", rt->models_json, strlen(rt->models_json), NULL);
        return;
    }
    const char *id = path + strlen("/v1/models/");
    const lm_route_t *route = lm_rt_route(rt, id);
    if (route == NULL) {
        reply_simple(req, 404, "invalid_request_error", "model_not_found",
                     "The model does not exist or you do not have access to it.");
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:i,s:s}", "id", id, "object", "model", "created", 0,
                          "owned_by", route->inst->chan->plugin);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body)
        lm_http_reply(req, 200, "application/json", body, strlen(body), NULL);
    else
        reply_simple(req, 500, "api_error", NULL, "out of memory");
    free(body);
}

static void route_models(evhtp_request_t *req, void *arg)
{
    lm_server_t *s = arg;
    if (!require_method(req, htp_method_GET))
        return;
    lm_rt_t *rt = lm_server_acquire_rt(s);
    if (authorized(req, rt))
        models_reply(req, rt);
    lm_rt_unref(rt);
}

static void route_health(evhtp_request_t *req, void *arg)
{
    (void)arg;
    static const char ok[] = "{\"status\":\"ok\"}";
    lm_http_reply(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

static void route_default(evhtp_request_t *req, void *arg)
{
    (void)arg;
    reply_simple(req, 404, "invalid_request_error", "not_found", "unknown path");
}

/* ---- connection tracking (so shutdown can close what clients left open) ---- */

typedef struct conn_node_s {
    evhtp_connection_t *conn;
    struct conn_node_s *prev, *next;
    lm_worker_t *w;
    int64_t waiting_since_ms; /* waiting for request headers since (0: a request is running) */
    int64_t body_read_ms;     /* reading a request body: its last piece came then (0: not) */
} conn_node_t;

static evhtp_res on_conn_fini(evhtp_connection_t *conn, void *arg);

static conn_node_t *node_of(evhtp_request_t *req)
{
    evhtp_connection_t *c = req ? req->conn : NULL;
    if (c == NULL || c->hooks == NULL || c->hooks->on_connection_fini != on_conn_fini)
        return NULL; /* not tracked, or already released */
    return c->hooks->on_connection_fini_arg;
}

/* Headers complete: the request runs, no header deadline. */
static void conn_busy(evhtp_request_t *req)
{
    conn_node_t *n = node_of(req);
    if (n)
        n->waiting_since_ms = 0;
}

/* A body piece arrived (body_done: the whole body is in). */
static void conn_body(evhtp_request_t *req, int body_done)
{
    conn_node_t *n = node_of(req);
    if (n)
        n->body_read_ms = body_done ? 0 : lm_clock_ms();
}

/* A request ended: a keep-alive connection waits for the next one. */
static void conn_idle(evhtp_request_t *req)
{
    conn_node_t *n = node_of(req);
    if (n) {
        n->waiting_since_ms = lm_clock_ms();
        n->body_read_ms = 0;
    }
}

static evhtp_res on_conn_headers(evhtp_request_t *req, evhtp_headers_t *hdrs, void *arg)
{
    (void)hdrs;
    (void)arg;
    conn_busy(req);
    return EVHTP_RES_OK;
}

static evhtp_res on_conn_req_fini(evhtp_request_t *req, void *arg)
{
    (void)arg;
    conn_idle(req);
    return EVHTP_RES_OK;
}

/* Slowloris (IN-7): a connection that has not completed its request
 * headers within client_header_timeout (from accept, or since its last
 * request ended) is closed; bytes trickling in do not extend it. A request
 * body must keep arriving: client_body_timeout between two pieces. */
static void on_conn_sweep(evutil_socket_t fd, short what, void *arg)
{
    lm_worker_t *w = arg;
    (void)fd;
    (void)what;
    int64_t now = lm_clock_ms(), limit = w->srv->header_timeout_ms;
    conn_node_t *n = w->conns;
    while (n) {
        conn_node_t *next = n->next;
        if ((n->waiting_since_ms > 0 && now - n->waiting_since_ms >= limit) ||
            (n->body_read_ms > 0 && now - n->body_read_ms >= w->srv->body_timeout_ms))
            evhtp_connection_free(n->conn); /* on_conn_fini unlinks and frees n */
        n = next;
    }
}

static evhtp_res on_conn_fini(evhtp_connection_t *conn, void *arg)
{
    conn_node_t *n = arg;
    /* libevhtp runs this before the request's fini hooks: they must not
     * find the node (node_of) once it is freed. */
    if (conn->hooks)
        conn->hooks->on_connection_fini_arg = NULL;
    if (n->prev)
        n->prev->next = n->next;
    else
        n->w->conns = n->next;
    if (n->next)
        n->next->prev = n->prev;
    free(n);
    return EVHTP_RES_OK;
}

/* Runs on the worker that owns the new connection. */
static evhtp_res on_accept(evhtp_connection_t *conn, void *arg)
{
    lm_worker_t *w = conn->thread ? evthr_get_aux(conn->thread) : NULL;
    (void)arg;
    if (w == NULL)
        return EVHTP_RES_OK;
    conn_node_t *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return EVHTP_RES_ERROR;
    n->conn = conn;
    n->w = w;
    n->next = w->conns;
    if (n->next)
        n->next->prev = n;
    w->conns = n;
    evhtp_connection_set_hook(conn, evhtp_hook_on_connection_fini,
                              (evhtp_hook)(void (*)(void))on_conn_fini, n);
    n->waiting_since_ms = lm_clock_ms();
    evhtp_connection_set_hook(conn, evhtp_hook_on_headers,
                              (evhtp_hook)(void (*)(void))on_conn_headers, NULL);
    evhtp_connection_set_hook(conn, evhtp_hook_on_request_fini,
                              (evhtp_hook)(void (*)(void))on_conn_req_fini, NULL);
    return EVHTP_RES_OK;
}

/* ---- workers ---- */

static void worker_init(evhtp_t *htp, evthr_t *thr, void *arg)
{
    lm_server_t *s = arg;
    lm_worker_t *w = calloc(1, sizeof(*w));
    (void)htp;
    if (w == NULL)
        abort(); /* no way to run a worker without its state */
    w->index = atomic_fetch_add(&s->next_worker, 1);
    w->base = evthr_get_base(thr);
    w->srv = s;
    w->svc = &s->relay_svc;
    w->up = lm_upstream_pool_new(w->base);
    if (w->up == NULL)
        abort();
    evthr_set_aux(thr, w);
    if (w->index < LM_MAX_WORKERS)
        s->threads[w->index] = thr;
    int every = s->header_timeout_ms / 4 < 1000 ? s->header_timeout_ms / 4 : 1000;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    w->conn_sweep = event_new(w->base, -1, EV_PERSIST, on_conn_sweep, w);
    if (w->conn_sweep)
        event_add(w->conn_sweep, &tv);
}

/* Runs on a worker thread (evthr_defer): a side value it may wait on was
 * fetched (or failed) by some worker. */
static void worker_side_wake(evthr_t *thr, void *cmd_arg, void *shared)
{
    (void)cmd_arg;
    (void)shared;
    lm_worker_t *w = evthr_get_aux(thr);
    if (w && w->side_waiters)
        lm_relay_side_wake(w);
}

void lm_server_side_wake(lm_server_t *s)
{
    for (int i = 0; i < LM_MAX_WORKERS && s->threads[i]; i++)
        evthr_defer(s->threads[i], worker_side_wake, NULL);
}

static void worker_exit(evhtp_t *htp, evthr_t *thr, void *arg)
{
    lm_worker_t *w = evthr_get_aux(thr);
    (void)htp;
    (void)arg;
    if (w == NULL)
        return;
    /* Close connections clients left open; their requests' fini hooks run
     * here, then every relay is released without the loop. */
    while (w->conns)
        evhtp_connection_free(((conn_node_t *)w->conns)->conn);
    if (w->conn_sweep)
        event_free(w->conn_sweep);
    lm_side_fetch_cancel_all(w);
    lm_relay_free_all(w);
    lm_lua_vm_release(w->vm);
    lm_upstream_pool_free(w->up);
    free(w);
}

/* ---- signals and drain ---- */

/* Runs on a worker thread (evthr_defer): end its in-flight requests. */
static void worker_cancel(evthr_t *thr, void *cmd_arg, void *shared)
{
    (void)cmd_arg;
    (void)shared;
    lm_worker_t *w = evthr_get_aux(thr);
    if (w)
        lm_relay_shutdown_all(w);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    lm_server_t *s = arg;
    struct timespec now;
    (void)fd;
    (void)what;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long n = atomic_load(&s->inflight);
    long late_ms = (now.tv_sec - s->drain_deadline.tv_sec) * 1000 +
                   (now.tv_nsec - s->drain_deadline.tv_nsec) / 1000000;
    if (n == 0 || late_ms >= 1000) {
        event_base_loopbreak(s->base);
    } else if (late_ms >= 0 && !s->cancel_sent) {
        /* Past the drain timeout: each worker ends its streams with an
         * error event (503 before the first byte); one more second lets
         * those last writes reach the clients. */
        lm_log(LM_LOG_WARN, "drain timeout: ending %ld in-flight requests", n);
        s->cancel_sent = 1;
        for (int i = 0; i < LM_MAX_WORKERS && s->threads[i]; i++)
            evthr_defer(s->threads[i], worker_cancel, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    lm_server_t *s = arg;
    (void)what;
    if (s->stopping) {
        /* The same stop often arrives twice (the supervisor forwards it and a
         * process-group kill delivers it too): only a signal a second or more
         * after the first means "stop now". */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - s->stop_at.tv_sec < 1)
            return;
        lm_log(LM_LOG_WARN, "second signal: stopping now");
        event_base_loopbreak(s->base);
        return;
    }
    s->stopping = 1;
    clock_gettime(CLOCK_MONOTONIC, &s->stop_at);
    atomic_store(&s->draining, 1);
    lm_log(LM_LOG_INFO,
           "signal %d: no longer accepting; draining %ld in-flight requests "
           "(up to %d ms)",
           (int)sig, atomic_load(&s->inflight), s->rt->conf->drain_timeout_ms);
    evhtp_unbind_socket(s->htp);
    if (s->admin_htp)
        evhtp_unbind_socket(s->admin_htp);
    clock_gettime(CLOCK_MONOTONIC, &s->drain_deadline);
    s->drain_deadline.tv_sec += s->rt->conf->drain_timeout_ms / 1000;
    s->drain_deadline.tv_nsec += (long)(s->rt->conf->drain_timeout_ms % 1000) * 1000000L;
    if (s->drain_deadline.tv_nsec >= 1000000000L) {
        s->drain_deadline.tv_sec++;
        s->drain_deadline.tv_nsec -= 1000000000L;
    }
    struct timeval tick = {0, 50000};
    s->drain_timer = event_new(s->base, -1, EV_PERSIST, on_drain_tick, s);
    event_add(s->drain_timer, &tick);
}

/* ---- generations: reload and retire (control thread) ---- */

/* Any thread: the last request of a generation ended. */
static void on_retire(lm_rt_t *rt, void *arg)
{
    lm_server_t *s = arg;
    pthread_mutex_lock(&s->rt_lock);
    rt->retired_next = s->retired;
    s->retired = rt;
    pthread_mutex_unlock(&s->rt_lock);
    if (s->retire_ev && !s->retire_ev_dead)
        event_active(s->retire_ev, 0, 0);
}

/* Control thread: fini every retired generation's channels, then unload. */
static void retire_now(lm_server_t *s)
{
    pthread_mutex_lock(&s->rt_lock);
    lm_rt_t *list = s->retired;
    s->retired = NULL;
    pthread_mutex_unlock(&s->rt_lock);
    while (list) {
        lm_rt_t *next = list->retired_next;
        lm_log(LM_LOG_INFO, "generation %llu retired: its last request ended",
               (unsigned long long)list->gen);
        lm_rt_free(list);
        list = next;
    }
}

static void on_retire_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    retire_now(arg);
}

lm_conf_t *lm_server_conf_file(lm_server_t *s, char *err, size_t errlen)
{
    lm_conf_t *conf = NULL;
    if (s->opts.conf_path == NULL) {
        lm_conf_parse("(built-in)", lm_conf_default_text, strlen(lm_conf_default_text), &conf, err,
                      errlen);
        return conf;
    }
    lm_conf_load(s->opts.conf_path, &conf, err, errlen);
    return conf;
}

/* The file plus the channels stored through the admin API (strict: one
 * that does not parse fails the reload, like a broken file would). */
static lm_conf_t *reload_conf(lm_server_t *s, char *err, size_t errlen)
{
    lm_conf_t *conf = lm_server_conf_file(s, err, errlen);
    if (conf && s->store && lm_chan_conf_apply(conf, s->store, NULL, 1, err, errlen) < 0) {
        lm_conf_free(conf);
        return NULL;
    }
    return conf;
}

/* SIGHUP: build the next generation completely (config, plugins from
 * private copies, channel inits); only then swap it in. Anything wrong
 * keeps the current generation serving. Requests in flight finish on the
 * generation they started with. */
static int reload_swap(lm_server_t *s, char *err, size_t errlen)
{
    lm_rt_t *cur = s->rt; /* only this thread swaps it */
    lm_conf_t *conf = reload_conf(s, err, errlen);
    if (conf == NULL) {
        lm_log(LM_LOG_ERROR, "reload failed, generation %llu keeps serving: %s",
               (unsigned long long)cur->gen, err);
        return -1;
    }
    if (strcmp(conf->listen_host, cur->conf->listen_host) ||
        conf->listen_port != cur->conf->listen_port || conf->workers != cur->conf->workers)
        lm_log(LM_LOG_WARN, "reload: listen and workers changes need a restart; ignored");
    lm_chan_secrets_t sec; /* a plugin's init message could quote one (AU-8) */
    int have_sec = lm_chan_secrets_collect(conf, &sec) == 0;
    lm_rt_t *next =
        lm_rt_build(conf, s->opts.plugin_dir, 1, s->opts.shared, s->opts.routes, err, errlen);
    if (have_sec) {
        lm_chan_secrets_scrub(&sec, err);
        lm_chan_secrets_free(&sec);
    }
    if (next == NULL) {
        lm_log(LM_LOG_ERROR, "reload failed, generation %llu keeps serving: %s",
               (unsigned long long)cur->gen, err);
        return -1;
    }
    next->gen = cur->gen + 1;
    next->retire = on_retire;
    next->retire_arg = s;
    lm_log_set_level(next->conf->log_level);
    pthread_mutex_lock(&s->rt_lock);
    s->rt = next;
    pthread_mutex_unlock(&s->rt_lock);
    for (size_t i = 0; i < next->nplugins; i++)
        lm_log(LM_LOG_INFO, "generation %llu: plugin %s %s", (unsigned long long)next->gen,
               next->plugins[i]->vt.name,
               next->plugins[i]->vt.version ? next->plugins[i]->vt.version : "?");
    lm_log(LM_LOG_INFO, "reloaded: generation %llu serves new requests (%zu channels, %zu models)",
           (unsigned long long)next->gen, next->ninsts, next->nroutes);
    lm_rt_unref(cur); /* the registry's reference; in-flight requests hold theirs */
    return 0;
}

/* Tell lm_server_reload_wait callers whose ticket is <= `ticket` how the
 * reload went (any thread). */
static void reload_report(lm_server_t *s, uint64_t ticket, int ok, const char *err)
{
    pthread_mutex_lock(&s->reload_mu);
    if (ticket > s->reload_done)
        s->reload_done = ticket;
    s->reload_ok = ok;
    s->reload_gen = s->rt->gen;
    snprintf(s->reload_err, sizeof(s->reload_err), "%s", ok ? "" : err);
    pthread_cond_broadcast(&s->reload_cv);
    pthread_mutex_unlock(&s->reload_mu);
}

static void reload(lm_server_t *s)
{
    char err[2048] = "";
    pthread_mutex_lock(&s->reload_mu);
    uint64_t ticket = s->reload_asked; /* every ticket asked so far is served by this reload */
    pthread_mutex_unlock(&s->reload_mu);
    int ok = reload_swap(s, err, sizeof(err)) == 0;
    reload_report(s, ticket, ok, err);
}

int lm_server_reload_wait(lm_server_t *s, int timeout_ms, uint64_t *gen, char *err, size_t errlen)
{
    struct timespec dl;
    int rc = -1;
    pthread_mutex_lock(&s->reload_mu);
    uint64_t ticket = ++s->reload_asked;
    pthread_mutex_unlock(&s->reload_mu);
    lm_server_reload(s);
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->reload_mu);
    while (s->reload_done < ticket && !s->reload_dead &&
           pthread_cond_timedwait(&s->reload_cv, &s->reload_mu, &dl) == 0)
        ;
    if (s->reload_done >= ticket) {
        rc = s->reload_ok;
        *gen = s->reload_gen;
        snprintf(err, errlen, "%s", s->reload_err);
    } else {
        snprintf(err, errlen, "%s",
                 s->reload_dead ? "the gateway is stopping" : "the reload did not finish in time");
    }
    pthread_mutex_unlock(&s->reload_mu);
    return rc;
}

/* lm_server_check_conf: a build run on the control thread for the admin. */
typedef struct check_call_s {
    lm_server_t *s;
    lm_conf_t *conf;
    char *err;
    size_t errlen;
    int rc, done;
} check_call_t;

static void on_check(evutil_socket_t fd, short what, void *arg)
{
    check_call_t *c = arg;
    (void)fd;
    (void)what;
    lm_lua_shared_t *sh = lm_lua_shared_new(0); /* the check must not touch live lm.shared */
    lm_rt_t *rt = lm_rt_build(c->conf, c->s->opts.plugin_dir, 1, sh, NULL, c->err, c->errlen);
    int rc = rt ? 0 : -1;
    lm_rt_free(rt); /* never served: its channels' fini run now */
    lm_lua_shared_free(sh);
    pthread_mutex_lock(&c->s->reload_mu);
    c->rc = rc;
    c->done = 1;
    pthread_cond_broadcast(&c->s->reload_cv);
    pthread_mutex_unlock(&c->s->reload_mu);
}

int lm_server_check_conf(lm_server_t *s, lm_conf_t *conf, char *err, size_t errlen)
{
    check_call_t c = {s, conf, err, errlen, -1, 0};
    struct timeval now = {0, 0};
    if (event_base_once(s->base, -1, EV_TIMEOUT, on_check, &c, &now) != 0) {
        lm_conf_free(conf);
        snprintf(err, errlen, "cannot reach the control thread");
        return -1;
    }
    pthread_mutex_lock(&s->reload_mu);
    while (!c.done && !s->reload_dead)
        pthread_cond_wait(&s->reload_cv, &s->reload_mu);
    int done = c.done;
    pthread_mutex_unlock(&s->reload_mu);
    if (done)
        return c.rc;
    /* the loop has ended: on_check never runs, the conf is still ours */
    lm_conf_free(conf);
    snprintf(err, errlen, "the gateway is stopping");
    return -1;
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    lm_server_t *s = arg;
    (void)sig;
    (void)what;
    if (!s->stopping) {
        reload(s);
        return;
    }
    pthread_mutex_lock(&s->reload_mu);
    uint64_t ticket = s->reload_asked;
    pthread_mutex_unlock(&s->reload_mu);
    reload_report(s, ticket, 0, "the gateway is stopping");
}

static void write_pid_file(lm_server_t *s)
{
    const char *path = s->rt->conf->pid_file;
    if (path == NULL || *path == '\0')
        return;
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        lm_log(LM_LOG_WARN, "cannot write pid file %s", path);
        return;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
}

static void remove_pid_file(lm_server_t *s)
{
    const char *path = s->rt ? s->rt->conf->pid_file : NULL;
    if (path && *path)
        unlink(path);
}

static void on_reclaim(evutil_socket_t fd, short what, void *arg)
{
    lm_server_t *s = arg;
    (void)fd, (void)what;
    size_t n = lm_billing_reclaim(s->store, lm_clock_ms());
    if (n)
        lm_log(LM_LOG_WARN, "billing: %zu expired quota holds released", n);
}

static void store_log(int level, const char *msg)
{
    lm_log(level, "store: %s", msg);
}

/* Channels stored through the admin API join the first generation before
 * anything is served: it is rebuilt from the file plus the store,
 * leniently like the first build (a stored channel that does not parse or
 * load is logged and left out). */
static void start_with_stored(lm_server_t *s)
{
    char err[2048];
    lm_conf_t *conf = lm_server_conf_file(s, err, sizeof(err));
    if (conf == NULL) {
        lm_log(LM_LOG_ERROR, "stored channels not loaded: %s", err);
        return;
    }
    size_t nfile = conf->nchans;
    int rc = lm_chan_conf_apply(conf, s->store, NULL, 0, err, sizeof(err));
    if (rc < 0)
        lm_log(LM_LOG_ERROR, "stored channels not loaded: %s", err);
    if (rc < 0 || conf->nchans == nfile) {
        lm_conf_free(conf);
        return;
    }
    lm_rt_t *rt =
        lm_rt_build(conf, s->opts.plugin_dir, 0, s->opts.shared, s->opts.routes, err, sizeof(err));
    if (rt == NULL) {
        lm_log(LM_LOG_ERROR, "stored channels not loaded: %s", err);
        return;
    }
    lm_rt_t *old = s->rt;
    rt->gen = old->gen;
    rt->retire = on_retire;
    rt->retire_arg = s;
    pthread_mutex_lock(&s->rt_lock);
    s->rt = rt;
    pthread_mutex_unlock(&s->rt_lock);
    old->retire = NULL; /* nothing has used it: free it now */
    lm_rt_unref(old);
    lm_log(LM_LOG_INFO, "%zu stored channels added", rt->conf->nchans - nfile);
}

/* The store opens (migrations included) before any listener, then the
 * admin API gets its own listener and thread. */
static int setup_store(lm_server_t *s, char *err, size_t errlen)
{
    const lm_conf_t *c = s->rt->conf;
    if (c->data_dir == NULL)
        return 0;
    lm_store_opts_t o = {.dir = c->data_dir, .log = store_log};
    s->store = lm_store_open(&o, err, errlen);
    if (s->store == NULL)
        return -1;
    start_with_stored(s);
    c = s->rt->conf; /* the generation may have been rebuilt */
    struct timeval every = {10, 0};
    s->reclaim_ev = event_new(s->base, -1, EV_PERSIST, on_reclaim, s);
    if (s->reclaim_ev)
        event_add(s->reclaim_ev, &every);
    if (c->admin_port == 0)
        return 0;
    s->admin_htp = evhtp_new(s->base, NULL);
    s->admin_env = (lm_admin_env_t){.store = s->store, .server = s};
    if (s->admin_htp == NULL || lm_admin_setup(s->admin_htp, &s->admin_env, err, errlen) < 0)
        return -1;
    if (evhtp_use_threads_wexit(s->admin_htp, NULL, NULL, 1, s) != 0 ||
        evhtp_bind_socket(s->admin_htp, c->admin_host, (uint16_t)c->admin_port, 64) != 0) {
        snprintf(err, errlen, "cannot listen on admin %s:%d", c->admin_host, c->admin_port);
        return -1;
    }
    lm_log(LM_LOG_INFO, "admin API on %s:%d", c->admin_host, c->admin_port);
    return 0;
}

static int setup(lm_server_t *s, char *err, size_t errlen)
{
    const lm_conf_t *c = s->rt->conf;
    long workers = c->workers ? c->workers : sysconf(_SC_NPROCESSORS_ONLN);
    if (workers < 1)
        workers = 1;
    s->base = event_base_new();
    s->htp = s->base ? evhtp_new(s->base, NULL) : NULL;
    if (s->htp == NULL) {
        snprintf(err, errlen, "cannot initialise the HTTP server");
        return -1;
    }
    if (setup_store(s, err, errlen) < 0)
        return -1;
    c = s->rt->conf; /* stored channels may have rebuilt the generation */
    evhtp_callback_t *chat = evhtp_set_cb(s->htp, "/v1/chat/completions", route_relay, s);
    evhtp_callback_t *emb = evhtp_set_cb(s->htp, "/v1/embeddings", route_relay, s);
    if (chat == NULL || emb == NULL) {
        snprintf(err, errlen, "cannot register routes");
        return -1;
    }
    evhtp_callback_set_hook(chat, evhtp_hook_on_headers,
                            (evhtp_hook)(void (*)(void))on_relay_headers,
                            (void *)(intptr_t)LM_OP_CHAT);
    evhtp_callback_set_hook(emb, evhtp_hook_on_headers,
                            (evhtp_hook)(void (*)(void))on_relay_headers,
                            (void *)(intptr_t)LM_OP_EMBED);
    evhtp_set_cb(s->htp, "/v1/models", route_models, s);
    evhtp_set_glob_cb(s->htp, "/v1/models/*", route_models, s);
    evhtp_set_cb(s->htp, "/healthz", route_health, s);
    evhtp_set_gencb(s->htp, route_default, s);
    evhtp_enable_flag(s->htp, EVHTP_FLAG_ENABLE_NODELAY);
    evhtp_set_post_accept_cb(s->htp, on_accept, s);
    s->header_timeout_ms = c->client_header_timeout_ms > 0 ? c->client_header_timeout_ms : 30000;
    s->body_timeout_ms = c->client_body_timeout_ms > 0 ? c->client_body_timeout_ms : 60000;
    s->relay_svc = (lm_relay_services_t){.store = s->store,
                                         .metrics = lm_server_metrics(s),
                                         .authguard = s->authguard,
                                         .inflight = &s->inflight,
                                         .acquire_rt = svc_acquire_rt,
                                         .side_wake = svc_side_wake,
                                         .arg = s};
    /* Threads start before bind (libevhtp #63). */
    if (evhtp_use_threads_wexit(s->htp, worker_init, worker_exit, (int)workers, s) != 0) {
        snprintf(err, errlen, "cannot start %ld worker threads", workers);
        return -1;
    }
    if (evhtp_bind_socket(s->htp, c->listen_host, (uint16_t)c->listen_port, 1024) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d", c->listen_host, c->listen_port);
        return -1;
    }
    s->retire_ev = event_new(s->base, -1, 0, on_retire_ev, s);
    s->sig_hup = evsignal_new(s->base, SIGHUP, on_hup, s);
    event_add(s->sig_hup, NULL);
    write_pid_file(s);
    s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
    event_add(s->sig_term, NULL);
    event_add(s->sig_int, NULL);
    lm_log(LM_LOG_INFO, "listening on %s:%d with %ld workers, %zu channels, %zu models",
           c->listen_host, c->listen_port, workers, s->rt->ninsts, s->rt->nroutes);
    return 0;
}

int lm_server_run(lm_rt_t *rt, const lm_server_opts_t *opts, char *err, size_t errlen)
{
    lm_server_t s;
    memset(&s, 0, sizeof(s));
    s.rt = rt;
    s.opts = *opts;
    pthread_mutex_init(&s.rt_lock, NULL);
    pthread_mutex_init(&s.reload_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s.reload_cv, &ca);
    pthread_condattr_destroy(&ca);
    rt->retire = on_retire;
    rt->retire_arg = &s;
    s.authguard = lm_authguard_new(rt->conf->auth_fail_limit); /* start-time setting */
    s.metrics = lm_metrics_new(0);
    if (s.metrics && lm_metrics_std_register(s.metrics, &s.mstd) < 0) {
        lm_metrics_free(s.metrics);
        s.metrics = NULL;
    }
    evthread_use_pthreads(); /* workers wake the control loop to retire generations */
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(0);
    int rc = lm_upstream_global_init();
    if (rc == 0)
        rc = setup(&s, err, errlen);
    if (rc == 0) {
        event_base_dispatch(s.base);
        lm_log(LM_LOG_INFO, "stopped");
    }
    pthread_mutex_lock(&s.reload_mu); /* an admin call waiting for a reload gives up */
    s.reload_dead = 1;
    pthread_cond_broadcast(&s.reload_cv);
    pthread_mutex_unlock(&s.reload_mu);
    if (s.htp)
        evhtp_free(s.htp); /* stops the workers; their relays drop their references */
    if (s.admin_htp)
        evhtp_free(s.admin_htp);
    if (s.store)
        lm_store_close(s.store); /* commits what workers queued */
    /* What workers retired, and the registry's own reference, go now. */
    s.retire_ev_dead = 1;
    retire_now(&s);
    remove_pid_file(&s);
    s.rt->retire = NULL;
    lm_rt_unref(s.rt);
    struct event *evs[] = {s.sig_term,    s.sig_int,   s.sig_hup,
                           s.drain_timer, s.retire_ev, s.reclaim_ev};
    for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
        if (evs[i])
            event_free(evs[i]);
    if (s.base)
        event_base_free(s.base);
    lm_metrics_free(s.metrics);
    lm_authguard_free(s.authguard);
    pthread_mutex_destroy(&s.rt_lock);
    pthread_cond_destroy(&s.reload_cv);
    pthread_mutex_destroy(&s.reload_mu);
    lm_upstream_global_cleanup();
    return rc;
}
