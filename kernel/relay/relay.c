/* relay.c - one client request end to end: its lifecycle, its state and
 * the pipeline (auth, parse, route, admit) that hands it to an attempt.
 * Thread: the worker that accepted the connection. The relay owns itself:
 * it is freed by lm_relay_maybe_free once both sides are done.
 *
 * States (relay_int.h) and who moves between them:
 *   READING    -> ROUTING     lm_relay_run: the body is complete
 *   ROUTING    -> SIDE_WAIT   attempt.c side_wait: a credential must be fetched
 *   ROUTING    -> UPSTREAM    lm_attempt_build: the transfer starts
 *   ROUTING    -> STREAMING   run_local: a plugin answered a stream itself
 *   SIDE_WAIT  -> the moves of ROUTING, once lm_relay_side_wake rebuilds
 *   UPSTREAM   -> UPSTREAM    failover: the next candidate's transfer
 *   UPSTREAM   -> SIDE_WAIT   a refused credential is refreshed
 *   UPSTREAM   -> STREAMING   the first stream event reaches the client
 *   UPSTREAM   stays          the client left a non-stream request: the
 *                             transfer runs on to be billed (QB-6)
 *   any active -> SETTLING    lm_settle: the last bytes wait for the ledger commit
 *   any        -> DONE        output.c: the reply or the stream's end went out;
 *                             lm_settle_committed: the held reply went out
 * Not states: headers_sent (reply shape, kept after DONE), settling (a
 * commit in flight holds the relay), settled, fini_seen, paused, too_large. */
#include "relay/relay.h"
#include "core/clock.h"

#include "core/errors.h"
#include "core/log.h"
#include "core/money.h"
#include "gov/auth.h"
#include "gov/authguard.h"
#include "plugin/endpoints.h"
#include "proto/canon.h"
#include "proto/endpoint.h"
#include "proto/reqcheck.h"
#include "relay/attempt.h"
#include "relay/audio.h"
#include "relay/audiobill.h"
#include "relay/cache.h"
#include "relay/cache_rec.h"
#include "relay/count.h"
#include "relay/fanout.h"
#include "relay/modcall.h"
#include "relay/output.h"
#include "relay/poll.h"
#include "relay/relay_int.h"
#include "relay/settle.h"
#include "relay/trace.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- state ---- */

#define B(s) (1u << LM_RELAY_##s)
/* legal[from]: the states `from` may move to. DONE -> DONE is the held
 * reply of lm_settle_committed after a shutdown already answered. */
static const unsigned legal[] = {
    [LM_RELAY_READING] = B(ROUTING) | B(DONE),
    [LM_RELAY_ROUTING] = B(SIDE_WAIT) | B(UPSTREAM) | B(STREAMING) | B(SETTLING) | B(DONE),
    [LM_RELAY_SIDE_WAIT] = B(SIDE_WAIT) | B(UPSTREAM) | B(STREAMING) | B(SETTLING) | B(DONE),
    [LM_RELAY_UPSTREAM] = B(SIDE_WAIT) | B(UPSTREAM) | B(STREAMING) | B(SETTLING) | B(DONE),
    [LM_RELAY_STREAMING] = B(SETTLING) | B(DONE),
    [LM_RELAY_SETTLING] = B(DONE),
    [LM_RELAY_DONE] = B(DONE),
};
#undef B

static const char *const state_names[] = {"reading",   "routing",  "side_wait", "upstream",
                                          "streaming", "settling", "done"};

void lm_relay_to(lm_relay_t *r, lm_relay_state_t to)
{
    if (!(legal[r->state] & (1u << to))) {
        lm_log(LM_LOG_ERROR, "%s: illegal relay state change %s -> %s", r->id,
               state_names[r->state], state_names[to]);
#ifdef LM_DEBUG
        abort();
#endif
        if (r->state == LM_RELAY_DONE)
            return; /* answered stays answered, whatever runs on */
    }
    r->state = to;
}

/* ---- lifecycle ---- */

/* One freed relay is kept per worker: the next request reuses it instead
 * of a 4.4 KB calloc (about 5k instructions with the allocator's bin work,
 * a memset is a few hundred). Not under AddressSanitizer, which must see
 * every relay freed. */
#if defined(__SANITIZE_ADDRESS__)
#define LM_RELAY_SPARE 0
#else
#define LM_RELAY_SPARE 1
#endif

static lm_relay_t *relay_alloc(lm_worker_t *w)
{
    lm_relay_t *r = w->spare;
    if (r == NULL)
        return calloc(1, sizeof(*r));
    w->spare = NULL;
    memset(r, 0, sizeof(*r));
    return r;
}

static void relay_release(lm_worker_t *w, lm_relay_t *r)
{
    if (LM_RELAY_SPARE && w->spare == NULL)
        w->spare = r;
    else
        free(r);
}

static void relay_free(lm_relay_t *r)
{
    lm_worker_t *w = r->w;
    lm_attempt_side_unlink(r);
    lm_modcall_cancel(r);
    lm_attempt_route_end(r, LM_ROUTE_CANCEL);
    /* A stream cut short (client gone, upstream cut) is billed for what was
     * received; failures before any output bill nothing. */
    if (!r->settled && (r->st_init || r->audio) && r->headers_sent)
        lm_settle(r, r->fini_seen && r->state != LM_RELAY_DONE, 0);
    lm_settle_access_log(r);
    lm_settle_metrics(r);
    lm_trace_end(r); /* before the reset below: it reads the last attempt */
    lm_usage fin = lm_settle_usage(r);
    lm_gov_end(&r->gov,
               (fin.prompt > 0 ? fin.prompt : 0) + (fin.completion > 0 ? fin.completion : 0));
    free(r->pending_body);
    if (r->settle_ev)
        event_free(r->settle_ev);
    if (r->shared_ev)
        event_free(r->shared_ev);
    if (r->settle_timer)
        event_free(r->settle_timer);
    lm_attempt_reset(r); /* the plugin's request state and the stream, as between attempts */
    lm_cache_req_free(r);
    lm_lua_call_end(r->lua);
    json_decref(r->canon);
    lm_ureq_free(&r->ureq);
    lm_audio_free(r); /* after the transfer: it may have lent the upload */
    lm_buf_free(&r->body);
    lm_buf_free(&r->out);
    if (r->timer)
        event_free(r->timer);
    if (r->reap)
        event_free(r->reap);
    if (r->prev)
        r->prev->next = r->next;
    else
        w->inflight = r->next;
    if (r->next)
        r->next->prev = r->prev;
    lm_relay_inflight_add(w->svc, -1);
    lm_rt_unref(r->rt); /* may retire an old generation (on the control thread) */
    relay_release(w, r);
}

/* Frees the relay once both sides are done: the upstream transfer is
 * released and the HTTP request object is gone. */
void lm_relay_maybe_free(lm_relay_t *r)
{
    if (r->up == NULL && r->fan == NULL && r->poll == NULL && r->fini_seen && !r->settling &&
        !r->shared_wait)
        relay_free(r);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    lm_relay_t *r = arg;
    (void)fd;
    (void)what;
    lm_fanout_client_gone(r); /* a split request's parts end with the client */
    lm_modcall_cancel(r);     /* a script's side call too (modcall.h) */
    if (lm_poll_client_gone(r)) {
        /* an asynchronous task is polled on: its answer is billed (poll.h) */
    } else if (r->up && lm_attempt_background(r)) {
        lm_log(LM_LOG_INFO, "%s: client went away; upstream answer awaited for billing", r->id);
    } else if (r->up) { /* client left a stream: stop upstream tokens now */
        /* Before its first event the provider already has the prompt and
         * bills it: the attempt's row bills the prompt (estimated), so a
         * client cannot leave big prompts unbilled by hanging up early. */
        if (!r->headers_sent && r->state != LM_RELAY_DONE && !r->settled) {
            if (r->status == 0)
                r->status = 499; /* nginx's "client closed request" */
            lm_settle(r, 1, 0);
        }
        lm_upstream_cancel(r->up);
        r->up = NULL;
        /* DONE: the client has its whole answer and the upstream merely
         * kept its body open after the end marker; nobody went away (the
         * access log's client_gone uses the same test). */
        if (r->state != LM_RELAY_DONE)
            lm_log(LM_LOG_INFO, "%s: client went away; upstream transfer cancelled", r->id);
    }
    lm_relay_maybe_free(r);
}

void lm_relay_client_gone(lm_relay_t *r)
{
    r->req = NULL;
    event_active(r->reap, 0, 0);
}

void lm_relay_client_fini(lm_relay_t *r)
{
    r->req = NULL;
    r->fini_seen = 1;
    event_active(r->reap, 0, 0);
}

/* Appends v in hex, at least `min` digits (printf's %0*llx). */
static char *hex(char *p, uint64_t v, int min)
{
    char t[16];
    int n = 0;
    do {
        t[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n < min)
        t[n++] = '0';
    while (n)
        *p++ = t[--n];
    return p;
}

/* The request id: "%x%02x%08llx" of seconds, worker and count, written by
 * hand (snprintf was about 1,700 instructions a request). out: >= 35. */
static void request_id(char *out, uint64_t secs, unsigned worker, uint64_t count)
{
    char *p = hex(out, secs & 0xffffffffu, 1);
    p = hex(p, worker, 2);
    p = hex(p, count, 8);
    *p = '\0';
}

static lm_relay_t *relay_new(lm_http_req_t *req, lm_worker_t *w, int op)
{
    lm_relay_t *r = relay_alloc(w);
    if (r == NULL)
        return NULL;
    r->w = w;
    r->req = req;
    r->op = LM_INBOUND_OP(op); /* the route's tag: operation and inbound API */
    r->api = lm_inbound_get(LM_INBOUND_API(op));
    r->usage = (lm_usage)LM_USAGE_UNKNOWN;
    r->up_retry_after = -1;
    r->t_start_ms = (uint64_t)lm_clock_ms();
    r->reap = event_new(w->base, -1, 0, on_reap, r);
    if (r->reap == NULL) {
        relay_release(w, r);
        return NULL;
    }
    r->settle_ev = event_new(w->base, -1, 0, lm_settle_committed, r);
    r->rt = w->svc->acquire_rt(w->svc->arg);
    lm_ureq_init(&r->ureq);
    request_id(r->id, (uint64_t)time(NULL), (unsigned)w->index & 0xff, ++w->next_id);
    lm_trace_begin(r);
    r->next = w->inflight;
    if (w->inflight)
        w->inflight->prev = r;
    w->inflight = r;
    r->overload = lm_relay_inflight_add(w->svc, 1) > r->rt->conf->max_inflight;
    lm_http_bind_relay(req, r);
    return r;
}

void lm_relay_client_writable(lm_relay_t *r)
{
    if (r->paused && r->up && r->req) {
        r->paused = 0;
        lm_upstream_resume(r->up);
    }
}

void lm_relay_shutdown_all(lm_worker_t *w)
{
    lm_relay_t *r = w->inflight;
    lm_err e;
    lm_error_set(&e, -1, 503, "api_error", "shutting_down", "the gateway is shutting down");
    while (r) {
        lm_relay_t *next = r->next;
        if (r->up) {
            lm_upstream_cancel(r->up);
            r->up = NULL;
        }
        lm_fanout_cancel(r);
        lm_modcall_cancel(r);
        lm_poll_free(r);
        if (r->timer)
            evtimer_del(r->timer);
        lm_attempt_side_unlink(r);
        if (r->headers_sent)
            lm_out_stream_end(r, &e);
        else
            lm_out_error(r, &e);
        r = next;
    }
}

void lm_relay_free_all(lm_worker_t *w)
{
    while (w->inflight) {
        lm_relay_t *r = w->inflight;
        if (r->up) {
            lm_upstream_cancel(r->up);
            r->up = NULL;
        }
        lm_fanout_cancel(r);
        relay_free(r);
    }
    free(w->spare);
    w->spare = NULL;
}

void lm_relay_side_wake(lm_worker_t *w)
{
    lm_relay_t *r = w->side_waiters;
    while (r) {
        lm_relay_t *next = r->side_next;
        lm_err e;
        int st = lm_side_check(r->route->inst->side, r->side_name, r->side_seq, &e);
        if (st != 0) {
            lm_attempt_side_unlink(r);
            if (r->req == NULL)
                lm_relay_maybe_free(r);
            else if (st > 0)
                lm_attempt_build(r);
            else
                lm_out_error(r, &e);
        }
        r = next;
    }
}

/* ---- request pipeline ---- */

/* The configured strategy orders the candidates (health first: ejected
 * channels go last, never dropped); scripts may reorder after it. */
static void order_candidates(lm_relay_t *r, const char *model)
{
    lm_route_cand_t c[LM_MAX_CANDIDATES];
    size_t order[LM_MAX_CANDIDATES];
    lm_route_t copy[LM_MAX_CANDIDATES];
    const lm_route_t *primary = lm_rt_route(r->rt, model);
    if (r->ncands < 2)
        return;
    for (size_t i = 0; i < r->ncands; i++) {
        const lm_chan_conf_t *ch = r->cands[i].inst->chan;
        lm_price_t p;
        lm_gov_price(r->rt->conf, ch, r->cands[i].upstream, &p);
        c[i] = (lm_route_cand_t){ch->name, ch->priority, ch->weight, p.input + p.output,
                                 r->cands[i].stats};
    }
    if (r->w->rng == 0)
        r->w->rng =
            ((uint64_t)lm_clock_ms() << 8) ^ (uint64_t)(r->w->index + 1) * 0x9e3779b97f4a7c15ull;
    size_t n = lm_route_select(c, r->ncands, lm_rt_strategy(r->rt, model),
                               primary ? primary->group : NULL, lm_route_rand_xorshift, &r->w->rng,
                               (int64_t)(uint64_t)lm_clock_ms(), order);
    memcpy(copy, r->cands, r->ncands * sizeof(copy[0]));
    for (size_t i = 0; i < n; i++)
        r->cands[i] = copy[order[i]];
    r->ncands = n;
}

/* Limits and the quota hold, priced at the first candidate channel. */
static int admit(lm_relay_t *r, const char *model)
{
    lm_err e;
    int64_t retry = 0;
    json_t *mt = json_object_get(r->canon, "max_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(r->canon, "max_completion_tokens");
    int64_t max_tokens = json_is_integer(mt)   ? json_integer_value(mt)
                         : r->op == LM_OP_CHAT ? 4096
                                               : 0;
    lm_price_t price;
    lm_gov_price(r->rt->conf, r->cands[0].inst->chan, r->cands[0].upstream, &price);
    int64_t units = lm_gov_unit_cost(r->rt->conf, r->cands[0].inst->chan, r->cands[0].upstream,
                                     r->op, r->canon);
    if (r->audio) /* its unit price, held like a per-request price (audio.h) */
        price.per_request = lm_sat_add(
            price.per_request, lm_audio_hold(r, r->cands[0].inst->chan, r->cands[0].upstream));
    if (lm_gov_admit(&r->gov, model, &price, units, r->prompt_est, max_tokens, &retry, &e) == 0)
        return 0;
    if (retry > 0) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)retry);
        lm_http_add_header(r->req, "Retry-After", v);
    }
    lm_out_error(r, &e);
    return -1;
}

/* Admitted everywhere: the cache, else the first attempt. */
static int admitted(lm_relay_t *r)
{
    if (lm_cache_lookup(r)) /* a cache hit is answered there */
        return 0;
    return lm_attempt_start(r);
}

/* Worker: the Redis thread answered the shared admission. */
static void on_shared(evutil_socket_t fd, short what, void *arg)
{
    lm_relay_t *r = arg;
    lm_err e;
    int64_t retry = 0;
    (void)fd, (void)what;
    r->shared_wait = 0;
    if (r->req == NULL || r->state != LM_RELAY_ROUTING) { /* the client left, or a drain answered */
        lm_relay_maybe_free(r);
        return;
    }
    if (lm_gov_shared_result(&r->gov, &retry, &e) == 0) {
        (void)admitted(r);
        return;
    }
    if (retry > 0) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)retry);
        lm_http_add_header(r->req, "Retry-After", v);
    }
    lm_out_error(r, &e);
}

/* Redis thread: keep the answer and wake the relay's worker. */
static void shared_done(void *arg, const lm_redis_ans_t *a)
{
    lm_relay_t *r = arg;
    lm_gov_shared_answer(&r->gov, a);
    event_active(r->shared_ev, 0, 0);
}

/* The shared counters (docs/redis.md) admit too; the worker's loop goes
 * on meanwhile and on_shared continues the request. */
static int shared_admit(lm_relay_t *r)
{
    lm_shared_t *sh = r->w->svc->shared;
    if (sh == NULL || r->gov.key == NULL)
        return admitted(r);
    if (r->shared_ev == NULL && (r->shared_ev = event_new(r->w->base, -1, 0, on_shared, r)) == NULL)
        return lm_out_err(r, 500, "api_error", NULL, "out of memory");
    int rc = lm_gov_shared_admit(&r->gov, sh, r->id, shared_done, r);
    if (rc == 1) {
        r->shared_wait = 1;
        return 0;
    }
    lm_redis_ans_t down = {0};
    lm_gov_shared_answer(&r->gov, &down); /* not queued: as if Redis were down */
    event_active(r->shared_ev, 0, 0);
    r->shared_wait = 1;
    return 0;
}

/* Every channel for the model asked us (Retry-After) to wait: say so
 * without sending the provider a request it will refuse. */
static int all_held(lm_relay_t *r)
{
    int64_t now = (int64_t)(uint64_t)lm_clock_ms(), least = -1;
    for (size_t i = 0; i < r->ncands; i++) {
        int64_t left = r->cands[i].stats ? lm_route_hold_left(r->cands[i].stats, now) : 0;
        if (left == 0)
            return 0;
        if (least < 0 || left < least)
            least = left;
    }
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)((least + 999) / 1000));
    lm_http_add_header(r->req, "Retry-After", v);
    lm_out_err(r, 429, "rate_limit_error", "upstream_rate_limited",
               "the provider asked to retry later; see Retry-After");
    return 1;
}

/* Only channels whose plugin serves the endpoint stay candidates (ABI 1.3);
 * none left is a 400 naming the endpoint. */
static int keep_serving(lm_relay_t *r, lm_err *e)
{
    size_t n = 0;
    if (r->op == LM_OP_CHAT || r->op == LM_OP_EMBED) /* canon.c's capability checks answer */
        return 0;
    for (size_t i = 0; i < r->ncands; i++)
        if (lm_endpoints_of(&r->cands[i].inst->plugin->vt) & lm_endpoint_bit(r->op))
            r->cands[n++] = r->cands[i];
    if (n == 0)
        return lm_endpoint_check(&r->cands[0].inst->plugin->vt, r->op, e) < 0 ? -1 : 0;
    r->ncands = n;
    return 0;
}

/* Scripts see the request first (on_request may reject or rewrite it,
 * including the model), then the candidate channels (on_route). */
static int route_request(lm_relay_t *r)
{
    lm_err e;
    if (r->rt->lua) {
        lm_lua_vm_t *vm = lm_rlua_vm(r->w, r->rt->lua, &e);
        if (vm == NULL)
            return lm_out_error(r, &e);
        r->lua =
            lm_lua_call_begin(vm, r->gov.key_name, r->gov.key ? r->gov.key->group : NULL, r->canon);
        if (r->lua == NULL)
            return lm_out_err(r, 500, "api_error", NULL, "out of memory");
        lm_lua_call_set_api(r->lua, r->api->name);
        lm_modcall_arm(r);
        int rc = lm_rlua_request(r->lua, r->canon, &e);
        if (rc < 0)
            return lm_out_error(r, &e);
        if (rc > 0) /* a script waits on lm.moderate: modcall.c continues */
            return 0;
    }
    return lm_relay_routed(r);
}

int lm_relay_routed(lm_relay_t *r)
{
    lm_err e;
    const char *model = json_string_value(json_object_get(r->canon, "model"));
    if (model == NULL)
        return lm_out_err(r, 400, "invalid_request_error", "invalid_value", "'model' is required");
    lm_relay_copy(r->client_model, sizeof(r->client_model), model);
    model = r->client_model; /* candidates may borrow it; canon's copy is replaced later */
    r->ncands = lm_rt_candidates(r->rt, model, r->cands, LM_MAX_CANDIDATES);
    if (r->ncands == 0) {
        lm_err_set(&e, -1, 404, "invalid_request_error", "model_not_found",
                   "The model '%.128s' does not exist or you do not have access to it.", model);
        return lm_out_error(r, &e);
    }
    if (keep_serving(r, &e) < 0)
        return lm_out_error(r, &e);
    order_candidates(r, model);
    if (all_held(r))
        return 0;
    long n = lm_rlua_route(r->lua, r->cands, r->ncands, r->rt->conf, &e);
    if (n < 0)
        return lm_out_error(r, &e);
    if (n == 0)
        return lm_out_err(r, 503, "api_error", "no_channel",
                          "no channel is available for this model (policy)");
    r->ncands = (size_t)n;
    if (admit(r, model) < 0)
        return 0;
    return shared_admit(r);
}

lm_relay_t *lm_relay_begin(lm_http_req_t *req, lm_worker_t *w, int op)
{
    return relay_new(req, w, op);
}

/* Past the limit the body is read and dropped (so the client can read our
 * 413) for up to 64 KiB more, then the connection is closed (IN-3). */
int lm_relay_body(lm_relay_t *r, size_t have, size_t n)
{
    uint64_t cap = lm_audio_op(r->op) ? r->rt->conf->audio_max_bytes : r->rt->conf->max_body;
    if (!r->too_large && have + n <= cap)
        return 1;
    r->too_large = 1;
    r->discarded += n;
    return r->discarded > 64 * 1024 ? -1 : 0;
}

/* The gateway key: Authorization, or the inbound API's own key header
 * (Anthropic's x-api-key) as a bearer token when Authorization is absent. */
static const char *auth_header(lm_relay_t *r, char *buf, size_t n)
{
    const char *a = lm_http_header(r->req, "Authorization");
    const char *k =
        a || r->api->key_header == NULL ? NULL : lm_http_header(r->req, r->api->key_header);
    if (k == NULL)
        return a;
    snprintf(buf, n, "Bearer %s", k); /* a longer value is cut: no key is that long */
    return buf;
}

static int handle(lm_relay_t *r, int method_ok)
{
    lm_http_req_t *req = r->req;
    char authz[600];
    lm_err e;
    if (!method_ok)
        return lm_out_err(r, 405, "invalid_request_error", "method_not_allowed",
                          "method not allowed for this path");
    if (r->overload) { /* shed load at once rather than queue it (overload policy) */
        lm_http_add_header(req, "Retry-After", "1");
        return lm_out_err(r, 503, "api_error", "overloaded",
                          "the gateway is at its in-flight request limit; retry shortly");
    }
    lm_authguard_t *guard = r->w->svc->authguard;
    int64_t wait = lm_authguard_blocked(guard, lm_http_peer(req), (int64_t)(uint64_t)lm_clock_ms());
    if (wait > 0) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)wait);
        lm_http_add_header(req, "Retry-After", v);
        return lm_out_err(r, 429, "rate_limit_error", "too_many_auth_failures",
                          "too many failed authentications from this address; retry later");
    }
    if (lm_gov_auth(&r->gov, r->rt->conf, r->w->svc->store, auth_header(r, authz, sizeof(authz)),
                    lm_http_peer(req), &e) < 0) {
        if (e.http_status == 401) {
            lm_authguard_fail(guard, lm_http_peer(req), (int64_t)(uint64_t)lm_clock_ms());
            lm_shared_auth_fail(r->w->svc->shared, lm_http_peer(req)); /* every instance counts */
        }
        return lm_out_error(r, &e);
    }
    lm_str body = lm_http_body(req);
    if (r->too_large ||
        body.n > (lm_audio_op(r->op) ? r->rt->conf->audio_max_bytes : r->rt->conf->max_body))
        return lm_out_err(r, 413, "invalid_request_error", "request_too_large",
                          "request body exceeds the configured limit");
    r->prompt_est = (int64_t)body.n / 4;
    if (r->op == LM_OP_COUNT_TOKENS) /* counted, not answered (count.h) */
        return lm_count_run(r);
    if (lm_audio_op(r->op)) { /* its own checks; the upload's bytes are forwarded (audio.h) */
        if ((r->canon = lm_audio_request(r, &e)) == NULL)
            return lm_out_error(r, &e);
        r->canon_edited = 1;
        return route_request(r);
    }
    if (lm_inbound_is_chat(r->api)) {
        r->canon = lm_reqcheck_parse(body.p, body.n, &e);
    } else { /* the canonical form of another API's body: its bytes are never forwarded */
        r->canon = r->api->request(body.p, body.n, &e);
        r->canon_edited = 1;
        if (r->canon == NULL && e.http_status == 400 && r->api->request_native &&
            (r->canon = r->api->request_native(body.p, body.n, &r->native_err)) != NULL) {
            r->native_err = e; /* what a channel that cannot pass it through answers */
            r->native_only = 1;
        }
    }
    if (r->canon == NULL)
        return lm_out_error(r, &e);
    int ck = r->op == LM_OP_CHAT    ? lm_reqcheck_chat(r->canon, &e)
             : r->op == LM_OP_EMBED ? lm_reqcheck_embed(r->canon, &e)
                                    : lm_endpoint_request(r->op, r->canon, &e);
    if (ck < 0)
        return lm_out_error(r, &e);
    if (ck > 0) /* a rerank document object was sent as its text */
        r->canon_edited = 1;
    if (r->op == LM_OP_EMBED) /* the kernel encodes; plugins always see floats */
        r->canon_edited = r->want_b64 = lm_canon_take_encoding(r->canon);
    return route_request(r);
}

void lm_relay_run(lm_relay_t *r, int method_ok)
{
    if (r->state == LM_RELAY_READING) /* not when a shutdown already answered */
        lm_relay_to(r, LM_RELAY_ROUTING);
    (void)handle(r, method_ok);
}
