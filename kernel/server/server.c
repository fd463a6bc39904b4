/* server.c - the process: workers' relay state, signals and drain, reload and
 * retired generations, pid file, store and admin listener. Thread: control
 * unless noted; it owns the generations, store and front until run returns. */
#include "server/server.h"
#include "core/clock.h"

#include "admin/admin.h"
#include "conf/chanconf.h"
#include "core/log.h"
#include "gov/authguard.h"
#include "gov/billing.h"
#include "gov/shared.h"
#include "http/admin_http.h"
#include "http/front.h"
#include "lua/lua_host.h"
#include "relay/otel.h"
#include "relay/relay.h"
#include "relay/side_fetch.h"
#include "relay/upstream.h"
#include "relay/worker.h"
#include "route/metrics.h"
#include "server/routes.h"
#include "store/reqlog.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <evhtp/evhtp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
    lm_shared_t *shared;       /* counters shared through Redis (docs/redis.md), or NULL */
    lm_metrics_std_t mstd;
    lm_otel_t *otel; /* the span exporter (relay/otel.h); re-pointed at each reload */
    atomic_int draining;
    int cancel_sent;
    lm_http_front_t *front; /* the data-plane listener and its workers */
    struct event_base *base;
    atomic_long inflight;
    /* what relays use (relay/services.h); filled before the workers start */
    lm_relay_services_t relay_svc;
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

/* Redis thread: another instance (or this one) held `channel`; keep
 * traffic away from it here too (every model it serves). */
static void on_shared_hold(void *arg, const char *channel, int64_t until_ms)
{
    lm_server_t *s = arg;
    lm_rt_t *rt = lm_server_acquire_rt(s);
    for (size_t i = 0; rt->cstats && i < rt->ninsts; i++) {
        const lm_chan_conf_t *ch = rt->insts[i].chan;
        if (strcmp(ch->name, channel))
            continue;
        for (size_t j = 0; j < ch->nmodels; j++)
            if (rt->cstats[rt->coff[i] + j] &&
                lm_route_hold_left(rt->cstats[rt->coff[i] + j], lm_clock_ms()) <
                    until_ms - lm_clock_ms())
                lm_route_hold(rt->cstats[rt->coff[i] + j], until_ms);
    }
    lm_rt_unref(rt);
}

/* ---- workers ---- */

/* A worker thread starts (the front's thread_init): its relay state. */
static void *worker_init(struct event_base *base, void *arg)
{
    lm_server_t *s = arg;
    lm_worker_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        abort(); /* no way to run a worker without its state */
    w->index = atomic_fetch_add(&s->next_worker, 1);
    /* request ids are ledger keys shared by every instance on one database:
     * the counter starts at a random point so two processes never meet */
    if (RAND_bytes((unsigned char *)&w->next_id, sizeof(w->next_id)) != 1)
        w->next_id = (uint64_t)getpid() << 40 ^ (uint64_t)lm_clock_ms() << 8;
    w->next_id >>= 8; /* room to count before the printed width grows */
    w->base = base;
    w->srv = s;
    w->svc = &s->relay_svc;
    w->up = lm_upstream_pool_new(w->base);
    if (w->up == NULL)
        abort();
    return w;
}

/* Worker thread: a side value it may wait on was fetched (or failed) by
 * some worker. */
static void worker_side_wake(void *user)
{
    lm_worker_t *w = user;
    if (w->side_waiters)
        lm_relay_side_wake(w);
}

void lm_server_side_wake(lm_server_t *s)
{
    static const lm_http_task_t wake = {worker_side_wake};
    if (s->front)
        lm_http_front_each_thread(s->front, &wake);
}

/* Worker thread, its connections already closed (their relays saw fini):
 * every relay is released without the loop. */
static void worker_exit(void *user, void *arg)
{
    lm_worker_t *w = user;
    (void)arg;
    lm_side_fetch_cancel_all(w);
    lm_relay_free_all(w);
    lm_lua_vm_release(w->vm);
    lm_upstream_pool_free(w->up);
    free(w);
}

/* ---- signals and drain ---- */

/* Worker thread: end its in-flight requests. */
static void worker_cancel(void *user)
{
    lm_relay_shutdown_all(user);
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
        static const lm_http_task_t cancel = {worker_cancel};
        lm_http_front_each_thread(s->front, &cancel);
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
    lm_http_front_drain(s->front);
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
    lm_http_front_set_max_body(s->front, next->conf->max_body);
    lm_http_front_set_max_audio(s->front, next->conf->audio_max_bytes);
    pthread_mutex_unlock(&s->rt_lock);
    if (s->otel && lm_otel_configure(s->otel, &next->conf->obs, err, errlen) < 0)
        lm_log(LM_LOG_ERROR, "reload: %s; traces keep their previous collector", err);
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
    const lm_obs_conf_t *oc = &s->rt->conf->obs; /* s->rt is this thread's to read */
    if (oc->request_log) /* the request log's retention: the writer prunes */
        lm_store_reqlog_prune(s->store, lm_store_now_ms() - oc->request_log_max_age_s * 1000,
                              oc->request_log_max_rows);
}

static void store_log(int level, const char *msg)
{
    lm_log(level, "store: %s", msg);
}

/* A shared store's channels changed through another instance (watcher
 * thread): rebuild the routes as an admin edit here would. */
static void store_changed(void *s)
{
    lm_log(LM_LOG_INFO, "stored channels changed on another instance: reloading");
    lm_server_reload(s);
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

/* The admin API's calls into the server (admin/env.h): arg is the server. */
static lm_rt_t *admin_acquire_rt(void *s)
{
    return lm_server_acquire_rt(s);
}

static void admin_reload(void *s)
{
    lm_server_reload(s);
}

static char *admin_metrics_render(void *s, size_t *len)
{
    return lm_server_metrics_render(s, len);
}

static lm_conf_t *admin_conf_file(void *s, char *err, size_t errlen)
{
    return lm_server_conf_file(s, err, errlen);
}

static int admin_check_conf(void *s, lm_conf_t *conf, char *err, size_t errlen)
{
    return lm_server_check_conf(s, conf, err, errlen);
}

static int admin_reload_wait(void *s, int timeout_ms, uint64_t *gen, char *err, size_t errlen)
{
    return lm_server_reload_wait(s, timeout_ms, gen, err, errlen);
}

/* The store opens (migrations included) before any listener, then the
 * admin API gets its own listener and thread. */
static int setup_store(lm_server_t *s, char *err, size_t errlen)
{
    const lm_conf_t *c = s->rt->conf;
    if (c->data_dir == NULL && c->store_pg == NULL)
        return 0;
    /* store_wait also paces the writer's spooling; that part is set at start */
    lm_store_opts_t o = {.dir = c->data_dir,
                         .log = store_log,
                         .stall_ms = c->store_wait_ms,
                         .spool = c->store_spool,
                         .pg = c->store_pg,
                         .changed = store_changed,
                         .changed_arg = s};
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
    s->admin_env = (lm_admin_env_t){.store = s->store,
                                    .authguard = s->authguard,
                                    .ctl = {.arg = s,
                                            .acquire_rt = admin_acquire_rt,
                                            .reload = admin_reload,
                                            .metrics_render = admin_metrics_render,
                                            .conf_file = admin_conf_file,
                                            .check_conf = admin_check_conf,
                                            .reload_wait = admin_reload_wait}};
    if (s->admin_htp == NULL || lm_admin_setup(s->admin_htp, &s->admin_env, err, errlen) < 0)
        return -1;
    if (evhtp_use_threads_wexit(s->admin_htp, lm_admin_http_thread_init, lm_admin_http_thread_exit,
                                1, s) != 0 ||
        evhtp_bind_socket(s->admin_htp, c->admin_host, (uint16_t)c->admin_port, 64) != 0) {
        snprintf(err, errlen, "cannot listen on admin %s:%d", c->admin_host, c->admin_port);
        return -1;
    }
    lm_log(LM_LOG_INFO, "admin API on %s:%d", c->admin_host, c->admin_port);
    return 0;
}

/* The data-plane front: the relay's calls, this server's worker state. */
static int setup_front(lm_server_t *s, char *err, size_t errlen)
{
    const lm_conf_t *c = s->rt->conf;
    long workers = c->workers ? c->workers : sysconf(_SC_NPROCESSORS_ONLN);
    if (workers < 1)
        workers = 1;
    lm_http_calls_t calls = {.arg = s, .thread_init = worker_init, .thread_exit = worker_exit};
    lm_routes_relay_calls(&calls);
    /* client timeouts are read at start (reload keeps them) */
    s->front = lm_http_front_new(
        s->base, &calls, c->client_header_timeout_ms > 0 ? c->client_header_timeout_ms : 10000,
        c->client_body_timeout_ms > 0 ? c->client_body_timeout_ms : 60000,
        c->client_send_timeout_ms > 0 ? c->client_send_timeout_ms : 60000);
    if (s->front == NULL) {
        snprintf(err, errlen, "cannot initialise the HTTP server");
        return -1;
    }
    lm_http_front_set_max_body(s->front, c->max_body);
    lm_http_front_set_max_audio(s->front, c->audio_max_bytes);
    if (lm_routes_add(s->front, &s->relay_svc) < 0) {
        snprintf(err, errlen, "cannot register routes");
        return -1;
    }
    if (lm_http_front_listen(s->front, (int)workers, c->listen_host, c->listen_port, err, errlen) <
        0)
        return -1;
    lm_log(LM_LOG_INFO, "listening on %s:%d with %ld workers, %zu channels, %zu models",
           c->listen_host, c->listen_port, workers, s->rt->ninsts, s->rt->nroutes);
    return 0;
}

static int setup(lm_server_t *s, char *err, size_t errlen)
{
    s->base = event_base_new();
    if (s->base == NULL) {
        snprintf(err, errlen, "cannot initialise the HTTP server");
        return -1;
    }
    if (setup_store(s, err, errlen) < 0)
        return -1;
    const lm_obs_conf_t *oc = &s->rt->conf->obs;
    if ((s->otel = lm_otel_new(oc, s->metrics, err, errlen)) == NULL)
        return -1;
    if (oc->otel_endpoint)
        lm_log(LM_LOG_INFO, "otel: traces go to %s", oc->otel_endpoint);
    const lm_conf_t *c = s->rt->conf;
    if (c->redis &&
        (s->shared = lm_shared_new(c->redis, c->store_fail_open, s->authguard, c->auth_fail_limit,
                                   on_shared_hold, s, err, errlen)) == NULL)
        return -1;
    s->relay_svc = (lm_relay_services_t){.store = s->store,
                                         .shared = s->shared,
                                         .metrics = lm_server_metrics(s),
                                         .authguard = s->authguard,
                                         .inflight = &s->inflight,
                                         .otel = s->otel,
                                         .acquire_rt = svc_acquire_rt,
                                         .side_wake = svc_side_wake,
                                         .arg = s};
    if (setup_front(s, err, errlen) < 0) /* stored channels may have rebuilt the generation */
        return -1;
    s->retire_ev = event_new(s->base, -1, 0, on_retire_ev, s);
    s->sig_hup = evsignal_new(s->base, SIGHUP, on_hup, s);
    event_add(s->sig_hup, NULL);
    write_pid_file(s);
    s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
    s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
    event_add(s->sig_term, NULL);
    event_add(s->sig_int, NULL);
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
    lm_shared_stop(s.shared);    /* queued settlements run; no answer outlives a request */
    lm_http_front_free(s.front); /* stops the workers; their relays drop their references */
    lm_otel_free(s.otel);        /* what the workers queued is sent (bounded by otel_timeout) */
    lm_shared_free(s.shared);
    if (s.admin_htp)
        evhtp_free(s.admin_htp); /* its thread closes the admin connections left open */
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
