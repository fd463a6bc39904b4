/* front.c - the data-plane listener: routes, worker threads, body-route hooks,
 * the smuggling check. Thread: the control thread builds and drains it, hooks
 * run on the connection's worker. It owns its routes and thread states. */
#include "http/front.h"

#include "http/conn.h"
#include "http/http.h"

#include "core/log.h"

#include <event2/event.h>
#include <evhtp/evhtp.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

#define LM_HTTP_MAX_THREADS 256
#define LM_HTTP_MAX_ROUTES  16
/* How long the listener waits for a worker's hand-off queue to have room
 * before the old drop applies: far above one loop turn of a busy worker,
 * short enough that a wedged worker stalls nobody for long. */
#define LM_HTTP_HANDOFF_WAIT_MS 100

typedef struct lm_http_route_s {
    lm_http_handler_fn fn;
    void *arg;
} lm_http_route_t;

struct lm_http_front_s {
    evhtp_t *htp; /* its arg is this front */
    lm_http_calls_t calls;
    lm_http_route_t routes[LM_HTTP_MAX_ROUTES];
    int nroutes;
    int header_timeout_ms, body_timeout_ms, send_timeout_ms;
    atomic_int draining;
    _Atomic uint64_t max_body[2]; /* max_body_size, audio_max_bytes: read by every gate */
    atomic_int next_thread;
    /* Filled by each thread's init, emptied by its exit, read by posters,
     * all under mail_mu (so a thread never exits under a post). A slot may
     * be filled after a later one (inits run concurrently). */
    pthread_mutex_t mail_mu;
    lm_http_thread_t *threads[LM_HTTP_MAX_THREADS];
};

static lm_http_front_t *front_of(evhtp_request_t *req)
{
    return req->htp->arg;
}

/* ---- body routes: the request's events go to the bound context ---- */

static evhtp_res on_body(evhtp_request_t *req, struct evbuffer *buf, void *ctx);

static void on_req_error(evhtp_request_t *req, evhtp_error_flags flags, void *ctx)
{
    (void)flags;
    front_of(req)->calls.gone(ctx);
}

static evhtp_res on_req_fini(evhtp_request_t *req, void *ctx)
{
    lm_http_conn_idle(req);
    front_of(req)->calls.fini(ctx);
    return EVHTP_RES_OK;
}

/* The context bound to req, or NULL. */
static void *ctx_of(evhtp_request_t *req)
{
    if (req && req->hooks && req->hooks->on_request_fini == on_req_fini)
        return req->hooks->on_request_fini_arg;
    return NULL;
}

/* Output drained: resume a paused upstream of the connection's request. */
static evhtp_res on_conn_write(evhtp_connection_t *conn, void *arg)
{
    lm_http_front_t *f = arg;
    void *ctx = ctx_of(conn->request);
    if (ctx)
        f->calls.writable(ctx);
    return EVHTP_RES_OK;
}

void lm_http_bind_relay(lm_http_req_t *r, void *ctx)
{
    evhtp_request_set_hook(r, evhtp_hook_on_read, (evhtp_hook)(void (*)(void))on_body, ctx);
    evhtp_request_set_hook(r, evhtp_hook_on_error, (evhtp_hook)(void (*)(void))on_req_error, ctx);
    evhtp_request_set_hook(r, evhtp_hook_on_request_fini, (evhtp_hook)(void (*)(void))on_req_fini,
                           ctx);
    evhtp_connection_set_hook(evhtp_request_get_connection(r), evhtp_hook_on_write,
                              (evhtp_hook)(void (*)(void))on_conn_write, front_of(r));
}

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

/* The Content-Length the body buffer is reserved to, or 0 (chunked, none,
 * or over both caps: the gate refused those from the head already). */
static uint64_t reserved_len(evhtp_request_t *req)
{
    const char *v = evhtp_header_find(req->headers_in, "Content-Length");
    if (v == NULL || *v < '0' || *v > '9')
        return 0;
    char *end;
    unsigned long long cl = strtoull(v, &end, 10);
    lm_http_front_t *f = front_of(req);
    uint64_t cap = atomic_load(&f->max_body[0]), audio = atomic_load(&f->max_body[1]);
    if (audio > cap)
        cap = audio;
    return *end == '\0' && cl <= cap && cl < SIZE_MAX / 2 ? (uint64_t)cl : 0;
}

/* Headers complete on a body route: the context exists from here on, so
 * the body can be capped as it arrives. A body of known length gets one
 * chunk of that size up front, so that it arrives contiguous and the pull-up
 * to one piece (lm_http_body) copies nothing: the body is in memory once,
 * not once in the parser's pieces and again pulled up. */
static evhtp_res on_body_headers(evhtp_request_t *req, evhtp_headers_t *hdrs, void *arg)
{
    lm_http_conn_busy(req);
    if (ambiguous_framing(hdrs))
        return EVHTP_RES_BADREQ;
    lm_http_conn_body(req, 0);
    front_of(req)->calls.begin(req, lm_http_thread_user(req), (int)(intptr_t)arg);
    uint64_t cl = reserved_len(req);
    if (cl > 0 && evbuffer_get_length(req->buffer_in) == 0)
        evbuffer_expand(req->buffer_in, (size_t)cl); /* on failure: pieces, pulled up later */
    return EVHTP_RES_OK;
}

/* A piece of a body without a reservation (chunked) is copied to the end
 * of the request's buffer, which fills its last chain before it grows:
 * linked in, the parser's pieces sat in chains up to twice their size, so
 * the pull-up to one piece peaked at about 3x the body (now about 2x). */
static void copy_piece(struct evbuffer *in, struct evbuffer *buf)
{
    struct evbuffer_iovec v[8];
    int k = evbuffer_peek(buf, -1, NULL, v, 8);
    size_t done = 0;
    for (int i = 0; k <= 8 && i < k && evbuffer_add(in, v[i].iov_base, v[i].iov_len) == 0; i++)
        done += v[i].iov_len;
    evbuffer_drain(buf, done);
    evbuffer_add_buffer(in, buf); /* what was not copied (no memory, many chains): linked */
}

/* A body piece into the request's buffer: copied into the reserved chunk
 * when there is one (the parser's piece is freed at once), else copied to
 * the buffer's end (copy_piece) and pulled up later. */
static void keep_piece(evhtp_request_t *req, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    struct evbuffer_iovec v;
    if (reserved_len(req) == 0) {
        copy_piece(req->buffer_in, buf);
        return;
    }
    if (evbuffer_reserve_space(req->buffer_in, (ev_ssize_t)n, &v, 1) != 1) {
        evbuffer_add_buffer(req->buffer_in, buf);
        return;
    }
    v.iov_len = (size_t)evbuffer_remove(buf, v.iov_base, n);
    evbuffer_commit_space(req->buffer_in, &v, 1);
}

static evhtp_res on_body(evhtp_request_t *req, struct evbuffer *buf, void *ctx)
{
    size_t n = evbuffer_get_length(buf);
    lm_http_conn_body(req, 0);
    int keep = front_of(req)->calls.body(ctx, evbuffer_get_length(req->buffer_in), n);
    if (keep < 0)
        return EVHTP_RES_DATA_TOO_LONG;
    if (keep)
        keep_piece(req, buf);
    else
        evbuffer_drain(buf, n);
    return EVHTP_RES_OK;
}

static void on_body_complete(evhtp_request_t *req, void *arg)
{
    void *ctx = ctx_of(req);
    (void)arg;
    lm_http_conn_body(req, 1);
    if (ctx == NULL) {
        lm_http_reply_simple(req, 500, "api_error", NULL, "out of memory");
        return;
    }
    front_of(req)->calls.run(req, ctx);
}

/* ---- routes ---- */

static void on_route(evhtp_request_t *req, void *arg)
{
    lm_http_route_t *rt = arg;
    rt->fn(req, rt->arg);
}

int lm_http_front_route(lm_http_front_t *f, const char *path, lm_http_handler_fn fn, void *arg)
{
    if (f->nroutes == LM_HTTP_MAX_ROUTES)
        return -1;
    lm_http_route_t *rt = &f->routes[f->nroutes];
    *rt = (lm_http_route_t){fn, arg};
    size_t n = path ? strlen(path) : 0;
    if (path == NULL)
        evhtp_set_gencb(f->htp, on_route, rt);
    else if ((n && path[n - 1] == '*' ? evhtp_set_glob_cb(f->htp, path, on_route, rt)
                                      : evhtp_set_cb(f->htp, path, on_route, rt)) == NULL)
        return -1;
    f->nroutes++;
    return 0;
}

int lm_http_front_body_route(lm_http_front_t *f, const char *path, int tag)
{
    evhtp_callback_t *cb = evhtp_set_cb(f->htp, path, on_body_complete, f);
    if (cb == NULL)
        return -1;
    evhtp_callback_set_hook(cb, evhtp_hook_on_headers, (evhtp_hook)(void (*)(void))on_body_headers,
                            (void *)(intptr_t)tag);
    return 0;
}

/* ---- worker threads ---- */

static int is_unix_stream(int fd)
{
    int domain = 0, type = 0;
    socklen_t dl = sizeof(domain), tl = sizeof(type);
    return fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) == 0 &&
           getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && domain == AF_UNIX &&
           type == SOCK_STREAM;
}

/* libevhtp hands each accepted connection to a worker as a small command
 * on the worker's socketpair, sent non-blocking; when a burst of accepts
 * outruns the worker (a few hundred commands fill the pair), libevhtp
 * closes the connection and the client gets a reset with its request
 * unread. Let the send block for a bounded time instead: the listener waits
 * for the worker and the kernel's accept backlog holds the rest of the
 * burst. The pair is the first two fields of libevhtp 1.2's (private) evthr
 * struct; both are checked to be Unix stream sockets before use, and any
 * other layout leaves the old behaviour. */
static void thread_backpressure(evthr_t *thr)
{
    const int *fds = (const int *)(const void *)thr;
    int rdr = fds[0], wdr = fds[1];
    struct timeval tv = {.tv_sec = 0, .tv_usec = LM_HTTP_HANDOFF_WAIT_MS * 1000};
    if (rdr == wdr || !is_unix_stream(rdr) || !is_unix_stream(wdr)) {
        lm_log(LM_LOG_WARN, "worker hand-off: unknown libevhtp thread layout; bursts of "
                            "connections may be reset");
        return;
    }
    int fl = fcntl(wdr, F_GETFL);
    if (fl < 0 || setsockopt(wdr, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
        fcntl(wdr, F_SETFL, fl & ~O_NONBLOCK) != 0)
        lm_log(LM_LOG_WARN, "worker hand-off: cannot make it wait; bursts of connections may "
                            "be reset");
}

/* Worker thread: run what other threads posted (lm_http_front_each_thread). */
static void on_mail(evutil_socket_t fd, short what, void *arg)
{
    lm_http_thread_t *t = arg;
    (void)fd;
    (void)what;
    for (int i = 0; i < LM_HTTP_MAIL_SLOTS; i++) {
        const lm_http_task_t *task = atomic_exchange(&t->mail[i], NULL);
        if (task)
            task->run(t->user);
    }
}

/* The thread's table slot and mailbox event, or -1 (no way to post to it). */
static int mail_open(lm_http_front_t *f, lm_http_thread_t *t, struct event_base *base)
{
    t->slot = -1;
    if ((t->mail_ev = event_new(base, -1, 0, on_mail, t)) == NULL)
        return -1;
    int i = atomic_fetch_add(&f->next_thread, 1);
    if (i >= LM_HTTP_MAX_THREADS)
        return -1;
    pthread_mutex_lock(&f->mail_mu);
    f->threads[i] = t;
    t->slot = i;
    pthread_mutex_unlock(&f->mail_mu);
    return 0;
}

static void mail_close(lm_http_front_t *f, lm_http_thread_t *t)
{
    pthread_mutex_lock(&f->mail_mu);
    if (t->slot >= 0)
        f->threads[t->slot] = NULL;
    pthread_mutex_unlock(&f->mail_mu);
    if (t->mail_ev)
        event_free(t->mail_ev); /* also out of the active queue: nothing runs on freed state */
    t->mail_ev = NULL;
}

static void thread_init(evhtp_t *htp, evthr_t *thr, void *arg)
{
    lm_http_front_t *f = arg;
    lm_http_thread_t *t = calloc(1, sizeof(*t));
    (void)htp;
    if (t == NULL)
        abort(); /* no way to run a worker without its state */
    t->front = f;
    t->draining = &f->draining;
    t->header_timeout_ms = f->header_timeout_ms;
    t->body_timeout_ms = f->body_timeout_ms;
    t->send_timeout_ms = f->send_timeout_ms;
    t->max_body = f->max_body;
    t->user = f->calls.thread_init(evthr_get_base(thr), f->calls.arg);
    if (t->user == NULL)
        abort();
    evthr_set_aux(thr, t);
    if (mail_open(f, t, evthr_get_base(thr)) != 0)
        lm_log(LM_LOG_WARN,
               "worker thread %d: no mailbox; credential waits and drain "
               "cancels do not reach it",
               t->slot);
    (void)lm_http_conn_sweep_start(t, evthr_get_base(thr)); /* best effort, as before */
    thread_backpressure(thr);
}

static void thread_exit(evhtp_t *htp, evthr_t *thr, void *arg)
{
    lm_http_front_t *f = arg;
    lm_http_thread_t *t = evthr_get_aux(thr);
    (void)htp;
    if (t == NULL)
        return;
    mail_close(f, t); /* before the state its tasks use is released */
    /* Close connections clients left open; their requests' fini hooks run
     * here, then the layer above releases the rest without the loop. */
    lm_http_conn_close_all(t);
    f->calls.thread_exit(t->user, f->calls.arg);
    /* libevent frees a bufferevent from its loop (a finalizer): run the
     * loop once more, or the connections just closed would leak. */
    event_base_loop(evthr_get_base(thr), EVLOOP_NONBLOCK);
    evthr_set_aux(thr, NULL);
    free(t);
}

void *lm_http_thread_user(lm_http_req_t *r)
{
    lm_http_thread_t *t = lm_http_thread_of(r);
    return t ? t->user : NULL;
}

/* Post task in one of the slots: a free one, or the one where it still
 * waits. That one is written again (not just read) so that the run that
 * takes it sees what this poster did before posting. 0: every slot holds
 * another task. */
static int mail_put(lm_http_thread_t *t, const lm_http_task_t *task)
{
    for (int i = 0; i < LM_HTTP_MAIL_SLOTS; i++) {
        const lm_http_task_t *seen = atomic_load(&t->mail[i]);
        while (seen == NULL || seen == task)
            if (atomic_compare_exchange_weak(&t->mail[i], &seen, task))
                return 1;
    }
    return 0;
}

/* Before: a command on libevhtp's hand-off socketpair, which (made to wait
 * for room, thread_backpressure) could stall the poster's own loop, and was
 * dropped when the pair stayed full. A post now only sets a slot and wakes
 * the loop; several posts of one task before it runs make one run. */
void lm_http_front_each_thread(lm_http_front_t *f, const lm_http_task_t *task)
{
    pthread_mutex_lock(&f->mail_mu);
    for (int i = 0; i < LM_HTTP_MAX_THREADS; i++) {
        lm_http_thread_t *t = f->threads[i];
        if (t == NULL) /* a thread still starting has no work queued yet */
            continue;
        if (mail_put(t, task))
            event_active(t->mail_ev, EV_READ, 0);
        else
            lm_log(LM_LOG_ERROR, "worker thread %d: mailbox full; a task was not posted", i);
    }
    pthread_mutex_unlock(&f->mail_mu);
}

/* ---- lifecycle ---- */

void lm_http_front_set_max_body(lm_http_front_t *f, uint64_t max_body)
{
    atomic_store(&f->max_body[0], max_body);
}

void lm_http_front_set_max_audio(lm_http_front_t *f, uint64_t max_audio)
{
    atomic_store(&f->max_body[1], max_audio);
}

lm_http_front_t *lm_http_front_new(struct event_base *base, const lm_http_calls_t *calls,
                                   int header_timeout_ms, int body_timeout_ms, int send_timeout_ms)
{
    lm_http_front_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->calls = *calls;
    f->header_timeout_ms = header_timeout_ms;
    f->body_timeout_ms = body_timeout_ms;
    f->send_timeout_ms = send_timeout_ms;
    atomic_init(&f->max_body[0], UINT64_MAX);
    atomic_init(&f->max_body[1], UINT64_MAX);
    pthread_mutex_init(&f->mail_mu, NULL);
    f->htp = evhtp_new(base, f);
    if (f->htp == NULL) {
        pthread_mutex_destroy(&f->mail_mu);
        free(f);
        return NULL;
    }
    evhtp_enable_flag(f->htp, EVHTP_FLAG_ENABLE_NODELAY);
    evhtp_set_post_accept_cb(f->htp, lm_http_conn_accept, f);
    return f;
}

int lm_http_front_listen(lm_http_front_t *f, int workers, const char *host, int port, char *err,
                         size_t errlen)
{
    if (evhtp_use_threads_wexit(f->htp, thread_init, thread_exit, workers, f) != 0) {
        snprintf(err, errlen, "cannot start %d worker threads", workers);
        return -1;
    }
    if (evhtp_bind_socket(f->htp, host, (uint16_t)port, 1024) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d", host, port);
        return -1;
    }
    return 0;
}

void lm_http_front_drain(lm_http_front_t *f)
{
    atomic_store(&f->draining, 1);
    evhtp_unbind_socket(f->htp);
}

void lm_http_front_free(lm_http_front_t *f)
{
    if (f == NULL)
        return;
    evhtp_free(f->htp); /* stops the workers: thread_exit runs on each */
    pthread_mutex_destroy(&f->mail_mu);
    free(f);
}
