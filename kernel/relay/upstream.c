/* upstream.c - one curl multi per worker, driven by its event base; easy
 * handles made in one place. Thread: the owning worker. A transfer belongs
 * to the pool until it completes (sink's on_done) or is cancelled. */
#include "relay/upstream.h"

#include "core/log.h"
#include "core/netaddr.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define LM_IDLE_EASY_MAX 64

struct lm_upstream_pool_s {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    int running;
    CURL *idle[LM_IDLE_EASY_MAX]; /* reset easy handles kept for reuse */
    int nidle;
};

struct lm_upstream_s {
    lm_upstream_pool_t *pool;
    CURL *easy;
    struct curl_slist *headers;
    const lm_upstream_sink_t *sink;
    void *arg;
    int status;
    int whole_json;  /* the upstream answered application/json, not a stream */
    int in_callback; /* inside a curl callback: cancel must wait */
    char errbuf[CURL_ERROR_SIZE];
    /* Outbound address policy (SS-7), copied from the channel at start. */
    int allow_private;
    char chan[64];
    char refused[128]; /* "ADDRESS (class)" of the last refused address, or "" */
    lm_str lent[3];    /* a lent request body (host.h), sent by read_cb */
    size_t nlent;
    curl_off_t sent; /* read_cb's offset into the lent pieces */
};

/* Per-socket event, attached with curl_multi_assign. */
typedef struct sock_ev_s {
    struct event *ev;
} sock_ev_t;

int lm_upstream_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void lm_upstream_global_cleanup(void)
{
    curl_global_cleanup();
}

static void finish_transfer(lm_upstream_t *t, CURLcode res)
{
    const lm_upstream_sink_t *sink = t->sink;
    void *arg = t->arg;
    char why[CURL_ERROR_SIZE + 64];
    const char *msg = why;
    int ok = res == CURLE_OK;
    int timeout = res == CURLE_OPERATION_TIMEDOUT;

    if (ok && t->status == 0) {
        /* An answer without a body (a 302 with only Location, a 204) never
         * reached write_cb: hand its status over, or it would read as 0. */
        long code = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code > 0 && (code < 200 || code > 299)) {
            t->status = (int)code;
            (void)sink->on_data(arg, t->status, 0, "", 0);
        }
    }
    if (!ok && t->refused[0])
        snprintf(why, sizeof(why), LM_UP_REFUSED ": channel %s, %s", t->chan, t->refused);
    else if (t->errbuf[0]) /* t and its errbuf go with the handle below */
        snprintf(why, sizeof(why), "%s", t->errbuf);
    else
        msg = curl_easy_strerror(res); /* a static string: no copy per request */
    lm_upstream_cancel(t);             /* release the handle before the relay runs */
    sink->on_done(arg, ok, timeout, msg);
}

static void check_multi_info(lm_upstream_pool_t *pool)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(pool->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        lm_upstream_t *t = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (t)
            finish_transfer(t, msg->data.result);
    }
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    lm_upstream_pool_t *pool = arg;
    int flags =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(pool->multi, fd, flags, &pool->running);
    check_multi_info(pool);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    lm_upstream_pool_t *pool = arg;
    (void)fd;
    (void)what;
    curl_multi_socket_action(pool->multi, CURL_SOCKET_TIMEOUT, 0, &pool->running);
    check_multi_info(pool);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    lm_upstream_pool_t *pool = userp;
    sock_ev_t *se = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (se) {
            event_free(se->ev);
            free(se);
            curl_multi_assign(pool->multi, s, NULL);
        }
        return 0;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (se == NULL) {
        se = calloc(1, sizeof(*se));
        if (se == NULL)
            return -1;
        curl_multi_assign(pool->multi, s, se);
    } else {
        event_free(se->ev);
    }
    se->ev = event_new(pool->base, s, kind, on_socket_event, pool);
    if (se->ev == NULL)
        return -1;
    event_add(se->ev, NULL);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    lm_upstream_pool_t *pool = userp;
    (void)multi;
    if (timeout_ms < 0) {
        evtimer_del(pool->timer);
    } else if (timeout_ms == 0) {
        /* "Now" (a transfer just added): run in this loop pass, not after
         * another epoll_wait; one syscall and a loop turn less a request. */
        evtimer_del(pool->timer);
        event_active(pool->timer, EV_TIMEOUT, 0);
    } else {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        evtimer_add(pool->timer, &tv);
    }
    return 0;
}

lm_upstream_pool_t *lm_upstream_pool_new(struct event_base *base)
{
    lm_upstream_pool_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return NULL;
    pool->base = base;
    pool->multi = curl_multi_init();
    pool->timer = evtimer_new(base, on_timer, pool);
    if (pool->multi == NULL || pool->timer == NULL) {
        lm_upstream_pool_free(pool);
        return NULL;
    }
    curl_multi_setopt(pool->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(pool->multi, CURLMOPT_SOCKETDATA, pool);
    curl_multi_setopt(pool->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(pool->multi, CURLMOPT_TIMERDATA, pool);
    curl_multi_setopt(pool->multi, CURLMOPT_MAXCONNECTS, 256L);
    return pool;
}

void lm_upstream_pool_free(lm_upstream_pool_t *pool)
{
    if (pool == NULL)
        return;
    while (pool->nidle > 0)
        curl_easy_cleanup(pool->idle[--pool->nidle]);
    if (pool->multi)
        curl_multi_cleanup(pool->multi);
    if (pool->timer)
        event_free(pool->timer);
    free(pool);
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
    lm_upstream_t *t = userdata;
    size_t n = size * nmemb;
    if (t->status == 0) {
        long code = 0;
        char *ctype = NULL;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
        t->status = (int)code;
        t->whole_json = ctype && strncasecmp(ctype, "application/json", 16) == 0;
    }
    t->in_callback = 1;
    size_t rc = t->sink->on_data(t->arg, t->status, t->whole_json, p, n);
    t->in_callback = 0;
    if (rc == LM_UP_PAUSE)
        return CURL_WRITEFUNC_PAUSE;
    return rc;
}

/* A lent body, piece after piece, from t->sent. */
static size_t read_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    lm_upstream_t *t = userdata;
    size_t want = size * nitems, got = 0;
    curl_off_t off = t->sent;
    for (size_t i = 0; i < t->nlent && got < want; i++) {
        curl_off_t n = (curl_off_t)t->lent[i].n;
        if (off >= n) {
            off -= n;
            continue;
        }
        size_t k = (size_t)(n - off) < want - got ? (size_t)(n - off) : want - got;
        memcpy(buf + got, t->lent[i].p + off, k);
        got += k;
        off = 0;
    }
    t->sent += (curl_off_t)got;
    return got;
}

/* A resend on a new connection starts over (curl rewinds to 0). */
static int seek_cb(void *userdata, curl_off_t offset, int origin)
{
    lm_upstream_t *t = userdata;
    if (origin != SEEK_SET)
        return CURL_SEEKFUNC_CANTSEEK;
    t->sent = offset;
    return CURL_SEEKFUNC_OK;
}

/* Only Retry-After is read (delta-seconds or an HTTP date). */
static size_t header_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
    lm_upstream_t *t = userdata;
    size_t n = size * nmemb;
    if (n > 12 && strncasecmp(p, "Retry-After:", 12) == 0 && t->sink->on_retry_after) {
        char v[64];
        size_t i = 12, k = 0;
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        while (i < n && p[i] != '\r' && p[i] != '\n' && k + 1 < sizeof(v))
            v[k++] = p[i++];
        v[k] = '\0';
        char *end;
        long long secs = strtoll(v, &end, 10);
        if (end == v || *end) {
            time_t when = curl_getdate(v, NULL);
            secs = when < 0 ? -1 : (long long)(when - time(NULL));
            if (when >= 0 && secs < 0)
                secs = 0;
        }
        if (secs >= 0)
            t->sink->on_retry_after(t->arg, secs);
    }
    return n;
}

/* The address policy on one address: 1 allowed, else 0 with the refusal
 * logged and remembered for the transfer's `why`. */
static int addr_ok(lm_upstream_t *t, lm_netaddr_class_t k, const char *addr)
{
    if (lm_netaddr_allowed(k, t->allow_private))
        return 1;
    snprintf(t->refused, sizeof(t->refused), "%s (%s)", addr, lm_netaddr_class_str(k));
    int hint = !t->allow_private && (k == LM_NETADDR_LOOPBACK || k == LM_NETADDR_PRIVATE);
    lm_log(LM_LOG_WARN, "channel %s: upstream address %s refused%s", t->chan, t->refused,
           hint ? " (a channel of the admin API; see admin_private_upstreams)" : "");
    return 0;
}

/* Before each connection is opened: no SYN ever leaves for a refused
 * address, so a refusal is immediate, never a connect timeout. */
static curl_socket_t open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    lm_upstream_t *t = clientp;
    char text[64];
    if (purpose == CURLSOCKTYPE_IPCXN &&
        !addr_ok(t, lm_netaddr_classify(&a->addr, a->addrlen),
                 lm_netaddr_format(&a->addr, a->addrlen, text, sizeof(text))))
        return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype, a->protocol);
}

/* Before the request is sent, on a new or a reused connection: a
 * connection another channel's looser policy opened is not borrowed. */
static int prereq_cb(void *clientp, char *primary_ip, char *local_ip, int primary_port,
                     int local_port)
{
    lm_upstream_t *t = clientp;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    return addr_ok(t, lm_netaddr_classify_text(primary_ip), primary_ip) ? CURL_PREREQFUNC_OK
                                                                        : CURL_PREREQFUNC_ABORT;
}

static void set_policy(lm_upstream_t *t, const lm_ureq_t *u)
{
    CURL *e = t->easy;
    t->allow_private = u->chan && !u->chan->private_refused;
    const char *name = u->chan && u->chan->name ? u->chan->name : "?";
    size_t n = strnlen(name, sizeof(t->chan) - 1); /* snprintf cost ~600 instructions */
    memcpy(t->chan, name, n);
    t->chan[n] = '\0';
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, t);
    /* No proxy, not even from http_proxy and the like in the environment:
     * through one, the checks above would judge the proxy's address and
     * the proxy would reach the refused host for us. */
    curl_easy_setopt(e, CURLOPT_PROXY, "");
}

static int set_headers(lm_upstream_t *t, const lm_ureq_t *u)
{
    for (size_t i = 0; i < u->nheaders; i++) {
        struct curl_slist *l = curl_slist_append(t->headers, u->headers[i]);
        if (l == NULL)
            return -1;
        t->headers = l;
    }
    const char *extra[] = {u->json_body ? "Content-Type: application/json" : NULL,
                           "Expect:", /* no 100-continue round trip */
                           NULL};
    for (int i = 0; i < 2; i++) {
        if (extra[i] == NULL)
            continue;
        struct curl_slist *l = curl_slist_append(t->headers, extra[i]);
        if (l == NULL)
            return -1;
        t->headers = l;
    }
    return 0;
}

lm_upstream_t *lm_upstream_start(lm_upstream_pool_t *pool, const lm_ureq_t *u,
                                 int connect_timeout_ms, int total_timeout_ms,
                                 const lm_upstream_sink_t *sink, void *arg, char *err,
                                 size_t errlen)
{
    lm_upstream_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->pool = pool;
    t->sink = sink;
    t->arg = arg;
    /* The only easy-handle factory in the tree. Handles are reused (after
     * curl_easy_reset) to save their allocations on every request. */
    t->easy = pool->nidle > 0 ? pool->idle[--pool->nidle] : curl_easy_init();
    if (t->easy == NULL || set_headers(t, u) < 0) {
        snprintf(err, errlen, "cannot create an upstream transfer");
        goto fail;
    }
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, lm_buf_cstr((lm_buf_t *)&u->url));
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
    set_policy(t, u);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_timeout_ms);
    if (total_timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)total_timeout_ms);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL); /* no decompression bombs */
    if (!u->has_body && u->nlent > 0) {
        curl_off_t total = 0;
        t->nlent = u->nlent < 3 ? u->nlent : 3;
        for (size_t i = 0; i < t->nlent; i++) {
            t->lent[i] = u->lent[i];
            total += (curl_off_t)u->lent[i].n;
        }
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, total);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(e, CURLOPT_READDATA, t);
        curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_cb);
        curl_easy_setopt(e, CURLOPT_SEEKDATA, t);
    } else if (strcmp(u->method, "POST") == 0 || u->has_body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, u->body.p ? u->body.p : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)u->body.len);
    }
    if (strcmp(u->method, "POST") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, u->method);
    if (strcmp(u->method, "GET") == 0)
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    if (curl_multi_add_handle(pool->multi, e) != CURLM_OK) {
        snprintf(err, errlen, "cannot start the upstream transfer");
        goto fail;
    }
    return t;
fail:
    if (t->easy)
        curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    free(t);
    return NULL;
}

void lm_upstream_cancel(lm_upstream_t *t)
{
    if (t == NULL)
        return;
    lm_upstream_pool_t *pool = t->pool;
    curl_multi_remove_handle(pool->multi, t->easy);
    if (pool->nidle < LM_IDLE_EASY_MAX) {
        curl_easy_reset(t->easy);
        pool->idle[pool->nidle++] = t->easy;
    } else {
        curl_easy_cleanup(t->easy);
    }
    curl_slist_free_all(t->headers);
    free(t);
}

const char *lm_upstream_content_type(lm_upstream_t *t)
{
    char *ct = NULL;
    if (t && curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ct) != CURLE_OK)
        ct = NULL;
    return ct;
}

void lm_upstream_resume(lm_upstream_t *t)
{
    if (t)
        curl_easy_pause(t->easy, CURLPAUSE_CONT);
}
