/* gate.c - feeds libevhtp one complete request at a time and answers bad
 * heads itself, then lingers (gate.h). Thread: the connection's worker; the
 * gate is owned by the front's connection record. */
#include "http/gate.h"
#include "core/errors.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h> /* enabled, ev_write: the write-now path */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define GATE_PENDING_MAX (256 * 1024)       /* pipelined bytes held while a request runs */
#define GATE_LINGER_MS   5000               /* lingering close: total (nginx: 30 s) */
#define GATE_LINGER_IDLE 2000               /* lingering close: without client bytes */
#define GATE_LINGER_MAX  (64 * 1024 * 1024) /* lingering close: bytes discarded */

/*
 * States, one at a time:
 *   HEAD    collecting a request head in `pending`; nothing given to libevhtp
 *   BODY    the head was given; the body goes in as it arrives
 *   WAIT    the whole request was given; later bytes wait in `pending`
 *   LINGER  an error answer was written: input is discarded until the
 *           client closes or a linger limit closes the connection
 * HEAD -> BODY -> WAIT -> HEAD (request done), any -> LINGER.
 * A request that ends while its body is still arriving (an early answer)
 * sets `discard`: the rest of that body is dropped, then HEAD.
 */
typedef enum { GATE_HEAD, GATE_BODY, GATE_WAIT, GATE_LINGER } gate_state_t;

struct lm_gate_s {
    evhtp_connection_t *conn; /* borrowed: the gate lives as long as it */
    struct bufferevent *bev;
    bufferevent_data_cb evhtp_read, evhtp_write;
    bufferevent_event_cb evhtp_event;
    void *evhtp_arg;
    lm_head_limits_t lim;
    const _Atomic uint64_t *max_body; /* live values (reloads): [0] max_body, [1] audio; or NULL */
    uint64_t body_cap;                /* the request in flight's chunked-data cap */
    gate_state_t state;
    int discard;
    lm_head_t head;                   /* scan state of the head in `pending` */
    int body;                         /* LM_BODY_* of the request in flight */
    uint64_t left;                    /* LM_BODY_LENGTH: bytes still to come */
    lm_chunked_t chunked;             /* LM_BODY_CHUNKED framing */
    struct evbuffer *pending;         /* read from the socket, not given yet (owned) */
    struct evbuffer *feed;            /* scratch: what goes to libevhtp now (owned) */
    struct event *kick;               /* runs pump() from the loop (owned) */
    struct event *linger;             /* linger timer (owned) */
    struct event *flush;              /* runs write_now() later in this loop pass (owned) */
    struct evbuffer_cb_entry *on_out; /* output callback entry (removed on free) */
    int reply_next;                   /* the next bytes queued are a whole answer */
    int held;                         /* EV_WRITE taken off bev->enabled until flush */
    long lingered_ms, idle_ms;
    size_t discarded;
    int shut;
};

static void pump(lm_gate_t *g);

static const char *reason(int status)
{
    switch (status) {
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    default: return "Bad Request";
    }
}

static void close_now(lm_gate_t *g)
{
    evhtp_connection_free(g->conn); /* its fini hook frees g */
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    lm_gate_t *g = arg;
    (void)fd;
    (void)what;
    g->lingered_ms += 250;
    g->idle_ms += 250;
    if (g->lingered_ms >= GATE_LINGER_MS || g->idle_ms >= GATE_LINGER_IDLE ||
        g->discarded > GATE_LINGER_MAX)
        close_now(g);
}

/* Write the error answer and start lingering (RFC 9112 9.6; nginx's
 * lingering close): the client reads the answer instead of a reset. */
static void refuse(lm_gate_t *g, int status, const char *code, const char *message)
{
    lm_err e;
    char head[256];
    lm_error_set(&e, -1, status, NULL, code, message);
    char *body = lm_error_body(&e);
    size_t n = strlen(body);
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      status, reason(status), n);
    bufferevent_write(g->bev, head, (size_t)hn);
    bufferevent_write(g->bev, body, n);
    free(body);
    g->state = GATE_LINGER;
    g->discarded += evbuffer_get_length(g->pending);
    evbuffer_drain(g->pending, evbuffer_get_length(g->pending));
    bufferevent_enable(g->bev, EV_READ | EV_WRITE);
    struct timeval tick = {0, 250000};
    g->linger = event_new(bufferevent_get_base(g->bev), -1, EV_PERSIST, on_linger, g);
    if (g->linger == NULL || event_add(g->linger, &tick) < 0)
        close_now(g);
}

/* Give libevhtp what is in g->feed. Last thing a caller does: libevhtp may
 * free the connection, and the gate with it, before this returns. */
static void deliver(lm_gate_t *g)
{
    struct evbuffer *in = bufferevent_get_input(g->bev);
    /* libevent freezes the end of a socket bufferevent's input (only its
     * reads append there): thaw it for this append. */
    evbuffer_unfreeze(in, 0);
    evbuffer_add_buffer(in, g->feed);
    evbuffer_freeze(in, 0);
    g->evhtp_read(g->bev, g->evhtp_arg);
}

static void load_caps(lm_gate_t *g)
{
    g->lim.max_body = atomic_load_explicit(&g->max_body[0], memory_order_relaxed);
    g->lim.max_body_audio = atomic_load_explicit(&g->max_body[1], memory_order_relaxed);
}

/* Move the body bytes of the request in flight from pending to out (or
 * drop them when discarding). Returns 1 once the body is complete, 0 if
 * more is to come, -1 after refusing the connection. */
static int take_body(lm_gate_t *g, struct evbuffer *out)
{
    size_t have = evbuffer_get_length(g->pending), k = 0;
    int done = 0;
    if (g->body == LM_BODY_LENGTH) {
        k = have < g->left ? have : (size_t)g->left;
        g->left -= k;
        done = g->left == 0;
    } else if (g->body == LM_BODY_CHUNKED) {
        int too_big = 0;
        const char *p = have ? (const char *)evbuffer_pullup(g->pending, (ssize_t)have) : "";
        k = lm_chunked_feed(&g->chunked, p, have, g->body_cap, &done, &too_big);
        if (k == (size_t)-1) {
            if (too_big)
                refuse(g, 413, "request_too_large", "request body is larger than max_body_size");
            else
                refuse(g, 400, "invalid_chunked_body", "malformed chunked request body");
            return -1;
        }
    } else {
        done = 1;
    }
    if (g->discard)
        evbuffer_drain(g->pending, k);
    else
        evbuffer_remove_buffer(g->pending, out, k);
    return done;
}

/* A complete head is at the front of pending: queue it and what has come
 * of its body in g->feed. Returns 0, or -1 after refusing. */
static int take_request(lm_gate_t *g)
{
    lm_head_t h = g->head;
    memset(&g->head, 0, sizeof(g->head));
    evbuffer_drain(g->pending, h.skip);
    evbuffer_remove_buffer(g->pending, g->feed, h.head_len - h.skip);
    g->body = h.body;
    g->left = h.content_length;
    g->body_cap = h.audio ? g->lim.max_body_audio : g->lim.max_body;
    memset(&g->chunked, 0, sizeof(g->chunked));
    g->discard = 0;
    int rc = take_body(g, g->feed);
    if (rc < 0)
        return -1;
    g->state = rc ? GATE_WAIT : GATE_BODY;
    return 0;
}

static void pump(lm_gate_t *g)
{
    size_t have = evbuffer_get_length(g->pending);
    if (g->state == GATE_LINGER || (g->state == GATE_HEAD && have == 0))
        return;
    if (g->state == GATE_WAIT) {
        if (have > GATE_PENDING_MAX) /* a pipelining client waits for answers */
            bufferevent_disable(g->bev, EV_READ);
        return;
    }
    if (g->state == GATE_BODY) {
        int rc = take_body(g, g->feed);
        if (rc < 0)
            return;
        if (rc)
            g->state = g->discard ? GATE_HEAD : GATE_WAIT;
        if (g->discard) {
            g->discard = !rc;
            if (rc)
                pump(g);
            return;
        }
        if (evbuffer_get_length(g->feed))
            deliver(g);
        return;
    }
    if (g->max_body && g->head.pos == 0)
        load_caps(g);
    size_t look = have < g->lim.max_head + 1 ? have : g->lim.max_head + 1;
    const char *p = (const char *)evbuffer_pullup(g->pending, (ssize_t)look);
    int rc = lm_head_scan(p, look, &g->lim, &g->head);
    if (rc == LM_HEAD_BAD)
        refuse(g, g->head.status, g->head.code, g->head.message);
    else if (rc == LM_HEAD_DONE && take_request(g) == 0)
        deliver(g);
}

/* The common case: nothing pending and the read holds one whole request
 * head and no more than its Content-Length body. It is checked in place and
 * libevhtp reads it where it is, with no copy through `pending`. Returns 1
 * if it did so (the gate may be gone), 0 to take the general path; the
 * head scan state stays valid for it (same bytes, same offsets). */
static int fast_path(lm_gate_t *g, struct evbuffer *in)
{
    size_t have = evbuffer_get_length(in);
    if (g->state != GATE_HEAD || evbuffer_get_length(g->pending) != 0 || have == 0)
        return 0;
    if (g->max_body && g->head.pos == 0)
        load_caps(g);
    size_t look = have < g->lim.max_head + 1 ? have : g->lim.max_head + 1;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)look);
    lm_head_t h = g->head;
    if (lm_head_scan(p, look, &g->lim, &h) != LM_HEAD_DONE || h.skip != 0 ||
        h.body == LM_BODY_CHUNKED || have - h.head_len > h.content_length)
        return 0; /* g->head unchanged: the general path scans again */
    memset(&g->head, 0, sizeof(g->head));
    g->body = h.body;
    g->left = h.content_length - (have - h.head_len);
    g->discard = 0;
    g->state = g->left ? GATE_BODY : GATE_WAIT;
    g->evhtp_read(g->bev, g->evhtp_arg);
    return 1;
}

static void gate_read(struct bufferevent *bev, void *arg)
{
    lm_gate_t *g = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (g->state == GATE_LINGER) {
        g->discarded += evbuffer_get_length(in);
        g->idle_ms = 0;
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (fast_path(g, in))
        return;
    evbuffer_add_buffer(g->pending, in);
    pump(g);
}

static void gate_write(struct bufferevent *bev, void *arg)
{
    lm_gate_t *g = arg;
    if (g->state != GATE_LINGER) {
        g->evhtp_write(bev, g->evhtp_arg);
        return;
    }
    if (!g->shut && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        g->shut = 1; /* the answer is out: half-close, keep reading */
        shutdown(bufferevent_getfd(bev), SHUT_WR);
    }
}

static void gate_event(struct bufferevent *bev, short events, void *arg)
{
    lm_gate_t *g = arg;
    g->evhtp_event(bev, events, g->evhtp_arg); /* may free the connection and g */
}

/*
 * A whole answer is written now. libevent writes a socket bufferevent's
 * output only once the loop sees the socket writable: per answer an
 * epoll_ctl to add EPOLLOUT, an epoll_wait, the write and an epoll_ctl to
 * drop EPOLLOUT. When the front announced a whole answer
 * (lm_gate_reply_now) and the bufferevent is not already waiting to write,
 * its bytes keep the bufferevent from arming its write event (EV_WRITE is
 * held off `enabled`; this callback runs before libevent's own, as
 * evbuffer_add_cb puts the newest first) and are written from the loop in
 * this same pass, once the caller's stack has unwound. What the socket does
 * not take goes back to libevent's path. When everything went, libevhtp's
 * write callback runs as libevent would have run it (it may end the request
 * and free the connection). Stream events keep libevent's path: written
 * one by one as they came, a slow reader's userland queue stopped moving
 * while the kernel's send buffer grew, and client_send_timeout cut it off
 * (test_http_hardening's slow reader).
 */
static void on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    lm_gate_t *g = arg;
    struct bufferevent *bev = g->bev;
    (void)buf;
    if (info->n_added == 0 || !g->reply_next)
        return;
    g->reply_next = 0;
    if (g->held || !(bev->enabled & EV_WRITE) || event_pending(&bev->ev_write, EV_WRITE, NULL))
        return;
    bev->enabled &= (short)~EV_WRITE;
    g->held = 1;
    event_active(g->flush, EV_TIMEOUT, 0);
}

static void write_now(evutil_socket_t fd, short what, void *arg)
{
    lm_gate_t *g = arg;
    struct bufferevent *bev = g->bev;
    struct evbuffer *out = bufferevent_get_output(bev);
    (void)fd;
    (void)what;
    if (!g->held)
        return;
    g->held = 0;
    bev->enabled |= EV_WRITE;
    if (evbuffer_get_length(out) == 0)
        return;
    evbuffer_unfreeze(out, 1); /* only the bufferevent drains it otherwise */
    int n = evbuffer_write(out, bufferevent_getfd(bev));
    evbuffer_freeze(out, 1);
    if (n <= 0 || evbuffer_get_length(out) > 0) {
        bufferevent_enable(bev, EV_WRITE); /* the rest, or the error, the usual way */
        return;
    }
    event_del(&bev->ev_write); /* as libevent does once the output is empty */
    gate_write(bev, g);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    lm_gate_t *g = arg;
    (void)fd;
    (void)what;
    pump(g);
}

lm_gate_t *lm_gate_attach(evhtp_connection_t *c, const lm_head_limits_t *lim)
{
    struct bufferevent *bev = evhtp_connection_get_bev(c);
    lm_gate_t *g = calloc(1, sizeof(*g));
    if (g == NULL || bev == NULL)
        goto fail;
    g->conn = c;
    g->bev = bev;
    g->lim = *lim;
    g->pending = evbuffer_new();
    g->feed = evbuffer_new();
    g->kick = event_new(bufferevent_get_base(bev), -1, 0, on_kick, g);
    g->flush = event_new(bufferevent_get_base(bev), -1, 0, write_now, g);
    if (g->pending == NULL || g->feed == NULL || g->kick == NULL || g->flush == NULL)
        goto fail;
    g->on_out = evbuffer_add_cb(bufferevent_get_output(bev), on_output, g);
    if (g->on_out == NULL)
        goto fail;
    bufferevent_getcb(bev, &g->evhtp_read, &g->evhtp_write, &g->evhtp_event, &g->evhtp_arg);
    bufferevent_setcb(bev, gate_read, gate_write, gate_event, g);
    return g;
fail:
    lm_gate_free(g);
    return NULL;
}

void lm_gate_max_body_from(lm_gate_t *g, const _Atomic uint64_t *live)
{
    if (g)
        g->max_body = live;
}

void lm_gate_reply_now(lm_gate_t *g)
{
    if (g && g->state != GATE_LINGER)
        g->reply_next = 1;
}

void lm_gate_request_done(lm_gate_t *g)
{
    if (g == NULL || g->state == GATE_LINGER)
        return;
    g->reply_next = 0; /* an answer that never got queued */
    if (g->state == GATE_BODY) {
        g->discard = 1; /* answered early: the rest of its body is not a request */
    } else {
        g->state = GATE_HEAD;
    }
    bufferevent_enable(g->bev, EV_READ);
    if (evbuffer_get_length(g->pending)) /* a pipelined request waits */
        event_active(g->kick, EV_TIMEOUT, 0);
}

void lm_gate_free(lm_gate_t *g)
{
    if (g == NULL)
        return;
    if (g->kick)
        event_free(g->kick);
    if (g->flush)
        event_free(g->flush);
    if (g->on_out) /* the bufferevent is freed after the connection-fini hook */
        evbuffer_remove_cb_entry(bufferevent_get_output(g->bev), g->on_out);
    if (g->held)
        g->bev->enabled |= EV_WRITE;
    if (g->linger)
        event_free(g->linger);
    if (g->pending)
        evbuffer_free(g->pending);
    if (g->feed)
        evbuffer_free(g->feed);
    free(g);
}
