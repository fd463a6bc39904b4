#include "relay/relay.h"
#include "core/clock.h"

#include "core/errors.h"
#include "core/log.h"
#include "gov/auth.h"
#include "gov/authguard.h"
#include "gov/gov.h"
#include "proto/reqcheck.h"
#include "proto/response.h"
#include "proto/stream.h"
#include "relay/relay_lua.h"
#include "relay/side_fetch.h"
#include "relay/upstream.h"
#include "route/metrics.h"
#include "server/server.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LM_RESPONSE_MAX   (64u * 1024 * 1024) /* whole non-stream upstream body */
#define LM_ERROR_BODY_MAX (1024u * 1024)      /* upstream error body kept for mapping */
#define LM_MAX_CANDIDATES 8
#define LM_MAX_ATTEMPTS   2 /* upstream attempts per request (FT-1 default) */

struct lm_relay_s {
    lm_worker_t *w;
    lm_http_req_t *req;      /* NULL once the client is gone */
    int fini_seen;           /* the HTTP request object was freed */
    lm_rt_t *rt;             /* counted reference: the generation this request runs on */
    const lm_route_t *route; /* the current attempt's channel: &cands[cand] */
    lm_route_t cands[LM_MAX_CANDIDATES]; /* channels serving the model, in try order */
    size_t ncands, cand;
    int attempt;     /* 1-based upstream attempt number */
    int route_begun; /* lm_route_begin admitted this attempt: end it once */
    uint64_t attempt_start_ms;
    int64_t attempt_ttft_ms;
    lm_lua_call_t *lua; /* the scripts' view of this request, or NULL */
    lm_gov_t gov;       /* caller identity, limits, quota hold */
    int ending;         /* the end is decided; waiting for the ledger commit */
    int settling;       /* a ledger row is being committed (holds the relay) */
    int settled;        /* this request's row was submitted */
    char *pending_body; /* non-stream reply held until its row is committed */
    struct event *settle_ev;
    int64_t prompt_est; /* request bytes / 4: used when no usage is reported */
    int64_t ttft_ms;
    int64_t charge; /* micro-units billed */
    char client_model[256];
    json_t *canon;
    lm_call call;
    int call_open;
    int op;
    int want_usage;
    char id[40];
    char upstream_model[256];
    lm_ureq_t ureq;
    lm_upstream_t *up;
    int status;
    int headers_sent; /* stream reply started */
    int finished;     /* client reply complete */
    int paused;
    int too_large;
    int whole_body;    /* the upstream answered with one body (JSON), not events */
    int client_status; /* what the client was answered (0: nothing yet) */
    int stream_error;  /* the stream ended with an error event */
    lm_usage usage;    /* non-stream usage (streams: st.emit.usage) */
    size_t discarded;  /* request bytes dropped past the limit */
    lm_buf_t body;     /* non-stream body or upstream error body */
    lm_stream_t st;
    int st_init;
    lm_buf_t out;        /* SSE bytes produced by one upstream read */
    struct event *timer; /* first-byte, then idle timeout */
    struct event *reap;
    uint64_t t_start_ms;
    lm_relay_t *next, *prev;
    /* Side values (ABI 1.1): the attempt waits for a credential fetch. */
    char side_name[LM_SIDE_NAME_MAX]; /* "" when not waiting */
    uint64_t side_seq;                /* the entry's fetch count when we looked */
    int side_waits;                   /* waits in this attempt (bounded) */
    int side_retried;                 /* a refused credential was refreshed once */
    int64_t up_retry_after;           /* the attempt's Retry-After in seconds (-1: none) */
    int overload;                     /* over the process-wide in-flight cap when it came */
    lm_relay_t *side_next, *side_prev;
};

static int settle(lm_relay_t *r, int aborted, int wait);
static lm_usage billed_usage(const lm_relay_t *r);
static void on_settled(evutil_socket_t fd, short what, void *arg);
static void route_end(lm_relay_t *r, int outcome);
static void reset_attempt(lm_relay_t *r);
static void record_failed_attempt(lm_relay_t *r, int status);
static int start_attempt(lm_relay_t *r);
static int build_attempt(lm_relay_t *r);

/* ---- lifecycle ---- */

/* One access-log line per request: who asked for what, which channel and
 * plugin version (and config generation) served it, how it ended. */
static void access_log(lm_relay_t *r)
{
    if (lm_log_level() < LM_LOG_INFO)
        return;
    const lm_usage *u = r->st_init ? &r->st.emit.usage : &r->usage;
    const lm_provider *vt = r->route ? &r->route->inst->plugin->vt : NULL;
    int64_t charge = r->charge;
    if (r->lua && (lm_lua_call_stages(r->lua) & LM_LUA_BIT(LM_LUA_STAGE_LOG))) {
        json_t *rec =
            json_pack("{s:s,s:s,s:s,s:i,s:I,s:I,s:I}", "id", r->id, "key",
                      r->gov.key_name ? r->gov.key_name : "", "channel",
                      r->route ? r->route->inst->chan->name : "", "status", r->client_status,
                      "prompt_tokens", (json_int_t)u->prompt, "completion_tokens",
                      (json_int_t)u->completion, "charge", (json_int_t)charge);
        lm_rlua_log(r->lua, rec);
        char *line = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
        lm_log(LM_LOG_INFO, "access-record %s", line ? line : "{}");
        free(line);
        json_decref(rec);
    }
    lm_log(LM_LOG_INFO,
           "access id=%s key=%s model=%s channel=%s plugin=%s/%s gen=%llu status=%d%s%s ms=%llu "
           "prompt=%lld completion=%lld charge=%lld",
           r->id, r->gov.key_name ? r->gov.key_name : "-", r->route ? r->route->model : "-",
           r->route ? r->route->inst->chan->name : "-", vt ? vt->name : "-",
           vt && vt->version ? vt->version : "-", (unsigned long long)r->rt->gen, r->client_status,
           r->stream_error ? " stream_error" : "",
           r->fini_seen && !r->finished ? " client_gone" : "",
           (unsigned long long)((uint64_t)lm_clock_ms() - r->t_start_ms), (long long)u->prompt,
           (long long)u->completion, (long long)charge);
}

/* Request-level metrics (names only: model, channel, status). */
static void record_metrics(lm_relay_t *r)
{
    lm_metrics_std_t *m = lm_server_metrics(r->w->srv);
    if (m == NULL)
        return;
    const lm_usage *u = r->st_init ? &r->st.emit.usage : &r->usage;
    const char *model = r->route ? r->route->model : "";
    const char *chan = r->route ? r->route->inst->chan->name : "";
    char status[16];
    snprintf(status, sizeof(status), "%d", r->client_status);
    const char *req_labels[] = {model, chan, status};
    const char *mc[] = {model, chan};
    const char *tp[] = {model, chan, "prompt"}, *tc[] = {model, chan, "completion"};
    lm_metrics_inc(m->requests, req_labels, 1);
    if (u->prompt > 0)
        lm_metrics_inc(m->tokens, tp, (uint64_t)u->prompt);
    if (u->completion > 0)
        lm_metrics_inc(m->tokens, tc, (uint64_t)u->completion);
    if (r->charge > 0)
        lm_metrics_inc(m->cost, mc, (uint64_t)r->charge);
    if (r->route) {
        lm_metrics_obs(m->request_secs, mc,
                       (double)((uint64_t)lm_clock_ms() - r->t_start_ms) / 1000.0);
        if (r->ttft_ms > 0)
            lm_metrics_obs(m->ttft_secs, mc, (double)r->ttft_ms / 1000.0);
    }
}

static void side_unlink(lm_relay_t *r)
{
    if (r->side_name[0] == '\0')
        return;
    if (r->side_prev)
        r->side_prev->side_next = r->side_next;
    else
        r->w->side_waiters = r->side_next;
    if (r->side_next)
        r->side_next->side_prev = r->side_prev;
    r->side_next = r->side_prev = NULL;
    r->side_name[0] = '\0';
}

static void relay_free(lm_relay_t *r)
{
    lm_worker_t *w = r->w;
    side_unlink(r);
    route_end(r, LM_ROUTE_CANCEL);
    /* A stream cut short (client gone, upstream cut) is billed for what was
     * received; failures before any output bill nothing. */
    if (!r->settled && r->st_init && r->headers_sent)
        settle(r, r->fini_seen && !r->finished, 0);
    access_log(r);
    record_metrics(r);
    lm_usage fin = billed_usage(r);
    lm_gov_end(&r->gov,
               (fin.prompt > 0 ? fin.prompt : 0) + (fin.completion > 0 ? fin.completion : 0));
    free(r->pending_body);
    if (r->settle_ev)
        event_free(r->settle_ev);
    reset_attempt(r); /* the plugin's request state and the stream, as between attempts */
    lm_lua_call_end(r->lua);
    json_decref(r->canon);
    lm_ureq_free(&r->ureq);
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
    lm_server_inflight_add(w->srv, -1);
    lm_rt_unref(r->rt); /* may retire an old generation (on the control thread) */
    free(r);
}

/* Frees the relay once both sides are done: the upstream transfer is
 * released and the HTTP request object is gone. */
static void maybe_free(lm_relay_t *r)
{
    if (r->up == NULL && r->fini_seen && !r->settling)
        relay_free(r);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    lm_relay_t *r = arg;
    (void)fd;
    (void)what;
    if (r->up) { /* client left mid-transfer: stop upstream tokens now */
        lm_upstream_cancel(r->up);
        r->up = NULL;
        lm_log(LM_LOG_INFO, "%s: client went away; upstream transfer cancelled", r->id);
    }
    maybe_free(r);
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

static lm_relay_t *relay_new(lm_http_req_t *req, lm_worker_t *w, int op)
{
    lm_relay_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->w = w;
    r->req = req;
    r->op = op;
    r->usage = (lm_usage)LM_USAGE_UNKNOWN;
    r->up_retry_after = -1;
    r->t_start_ms = (uint64_t)lm_clock_ms();
    r->reap = event_new(w->base, -1, 0, on_reap, r);
    if (r->reap == NULL) {
        free(r);
        return NULL;
    }
    r->settle_ev = event_new(w->base, -1, 0, on_settled, r);
    r->rt = lm_server_acquire_rt(w->srv);
    lm_ureq_init(&r->ureq);
    snprintf(r->id, sizeof(r->id), "%x%02x%08llx", (unsigned)time(NULL), (unsigned)w->index & 0xff,
             (unsigned long long)++w->next_id);
    r->next = w->inflight;
    if (w->inflight)
        w->inflight->prev = r;
    w->inflight = r;
    r->overload = lm_server_inflight_add(w->srv, 1) > r->rt->conf->max_inflight;
    lm_http_bind_relay(req, r);
    return r;
}

/* ---- replies ---- */

/* A copy of e with the channel's secrets masked out of the message. */
static lm_err scrubbed(const lm_relay_t *r, const lm_err *e)
{
    lm_err c = *e;
    c.msg[sizeof(c.msg) - 1] = '\0';
    if (r->route)
        lm_conf_scrub(r->route->inst->chan, c.msg);
    return c;
}

/* x-longmen-route: which channel answered and after how many attempts. */
static void route_header(lm_relay_t *r)
{
    char v[192];
    if (r->req == NULL || r->route == NULL)
        return;
    snprintf(v, sizeof(v), "channel=%s; attempts=%d", r->route->inst->chan->name, r->attempt);
    lm_http_add_header(r->req, "X-Longmen-Route", v);
}

static int reply_error(lm_relay_t *r, const lm_err *e)
{
    if (r->finished)
        return 0;
    route_header(r);
    r->finished = 1;
    r->client_status = e->http_status;
    lm_err safe = scrubbed(r, e);
    if (r->req)
        lm_http_reply_error(r->req, &safe, r->id);
    return 0;
}

static int reply_err(lm_relay_t *r, int status, const char *type, const char *code, const char *msg)
{
    lm_err e;
    lm_error_set(&e, -1, status, type, code, msg);
    return reply_error(r, &e);
}

static void flush_out(lm_relay_t *r)
{
    if (r->out.len && r->req)
        lm_http_stream_write(r->req, r->out.p, r->out.len);
    lm_buf_reset(&r->out);
}

static void stream_end(lm_relay_t *r, const lm_err *e)
{
    if (r->finished)
        return;
    r->finished = 1;
    r->client_status = 200;
    if (e) {
        r->stream_error = 1;
        lm_err safe = scrubbed(r, e);
        char *body = lm_error_body(&safe);
        lm_buf_adds(&r->out, "data: ");
        lm_buf_adds(&r->out, body);
        lm_buf_adds(&r->out, "\n\n");
        free(body);
    } else if (r->want_usage) {
        char *u = lm_emit_usage_chunk(&r->st.emit);
        if (u) {
            lm_buf_adds(&r->out, "data: ");
            lm_buf_adds(&r->out, u);
            lm_buf_adds(&r->out, "\n\n");
            free(u);
        }
    }
    lm_buf_adds(&r->out, "data: [DONE]\n\n");
    flush_out(r);
    if (r->req)
        lm_http_stream_end(r->req);
}

/* Emit sink: each canonical chunk becomes one SSE event in r->out. */
static int sse_sink(void *arg, const char *json, size_t len)
{
    lm_relay_t *r = arg;
    if (r->req == NULL)
        return -1;
    if (r->lua && (lm_lua_call_stages(r->lua) & LM_LUA_BIT(LM_LUA_STAGE_EVENT))) {
        lm_err e;
        if (lm_rlua_event(r->lua, json, len, &r->out, &e) < 0) {
            r->st.err = e; /* reported as the stream's error event */
            return -1;
        }
        return 0;
    }
    if (lm_buf_add(&r->out, "data: ", 6) < 0 || lm_buf_add(&r->out, json, len) < 0 ||
        lm_buf_add(&r->out, "\n\n", 2) < 0)
        return -1;
    return 0;
}

/* ---- settlement: bill, then let the last bytes go (DB-1) ---- */

/* The usage to bill: the provider's report; without one, an estimate of
 * what was actually received (content bytes / 4), never error text. */
static lm_usage billed_usage(const lm_relay_t *r)
{
    lm_usage u = r->st_init ? r->st.emit.usage : r->usage;
    if (u.prompt < 0)
        u.prompt = r->prompt_est;
    if (u.completion < 0)
        u.completion = r->st_init ? (int64_t)((r->st.emit.content_chars + 3) / 4) : 0;
    return u;
}

static void settle_noop(void *arg, int status, int64_t id)
{
    (void)arg, (void)status, (void)id;
}

/* Writer thread: the row is durable; continue on the relay's worker. */
static void settle_post(void *ctx, lm_store_done_fn done, void *arg, int status, int64_t id)
{
    lm_relay_t *r = ctx;
    (void)done, (void)arg, (void)status, (void)id;
    event_active(r->settle_ev, 0, 0);
}

static void on_settled(evutil_socket_t fd, short what, void *arg)
{
    lm_relay_t *r = arg;
    (void)fd, (void)what;
    r->settling = 0;
    if (r->pending_body) {
        r->finished = 1;
        r->client_status = 200;
        route_header(r);
        if (r->req)
            lm_http_reply(r->req, 200, "application/json", r->pending_body, strlen(r->pending_body),
                          r->id);
        free(r->pending_body);
        r->pending_body = NULL;
    } else if (r->ending) {
        r->ending = 0;
        stream_end(r, NULL);
    }
    maybe_free(r);
}

/* Record this request's row and release its quota hold. With wait, the
 * caller holds its last bytes until the row is committed (returns 1 and
 * on_settled continues); aborted requests never wait. */
static int settle(lm_relay_t *r, int aborted, int wait)
{
    if (r->settled || r->route == NULL)
        return 0;
    r->settled = 1;
    lm_usage u = billed_usage(r);
    lm_price_t price;
    lm_gov_price(r->rt->conf, r->route->inst->chan, r->upstream_model, &price);
    int64_t cost = lm_gov_cost(&price, &u);
    lm_rlua_usage(r->lua, &u, &price, &cost);
    r->charge = cost;
    lm_usage_row_t row = {.request_id = r->id,
                          .attempt = r->attempt,
                          .channel = r->route->inst->chan->name,
                          .model_asked = r->client_model,
                          .model_served = r->upstream_model,
                          .prompt_tokens = u.prompt,
                          .completion_tokens = u.completion,
                          .cached_tokens = u.cached > 0 ? u.cached : 0,
                          .reasoning_tokens = u.reasoning > 0 ? u.reasoning : 0,
                          .latency_ms = (int64_t)((uint64_t)lm_clock_ms() - r->t_start_ms),
                          .ttft_ms = r->ttft_ms,
                          .status = r->status,
                          .client_aborted = aborted};
    if (!wait || r->settle_ev == NULL) {
        lm_gov_settle(&r->gov, cost, &row, NULL);
        return 0;
    }
    lm_store_cb_t cb = {settle_noop, r, settle_post, r};
    if (lm_gov_settle(&r->gov, cost, &row, &cb) < 0)
        return 0;
    r->settling = 1;
    return 1;
}

/* A stream that ended well: its usage chunk and [DONE] follow the commit. */
static void end_stream_ok(lm_relay_t *r)
{
    flush_out(r);
    if (settle(r, 0, 1)) {
        r->ending = 1;
        return;
    }
    stream_end(r, NULL);
}

/* ---- timers ---- */

static void arm_timer(lm_relay_t *r, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (r->timer)
        evtimer_add(r->timer, &tv);
}

/* Streams get only the idle timeout (no absolute cap, FT-4); a whole
 * (non-stream) answer must also arrive within request_timeout. */
static int next_timeout_ms(const lm_relay_t *r)
{
    const lm_chan_conf_t *ch = r->route->inst->chan;
    int ms = ch->idle_timeout_ms;
    if (!r->call.stream && ch->request_timeout_ms > 0) {
        int64_t left = (int64_t)r->attempt_start_ms + ch->request_timeout_ms -
                       (int64_t)(uint64_t)lm_clock_ms();
        if (left < ms)
            ms = left > 1 ? (int)left : 1;
    }
    return ms;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    lm_relay_t *r = arg;
    (void)fd;
    (void)what;
    if (r->up == NULL)
        return;
    lm_upstream_cancel(r->up);
    r->up = NULL;
    lm_relay_on_done(r, 0, 1, r->headers_sent ? "upstream idle timeout" : "upstream timeout");
}

/* ---- upstream data ---- */

static size_t on_stream_data(lm_relay_t *r, const char *p, size_t n)
{
    if (!r->headers_sent) {
        r->headers_sent = 1;
        r->ttft_ms = (int64_t)((uint64_t)lm_clock_ms() - r->t_start_ms);
        route_header(r);
        lm_http_stream_start(r->req, r->id);
    } else if (lm_http_out_pending(r->req) > r->rt->conf->stream_high_water) {
        r->paused = 1; /* slow reader: let the kernel socket buffer drain */
        return LM_UP_PAUSE;
    }
    int rc = lm_stream_feed(&r->st, p, n);
    if (rc < 0) {
        stream_end(r, &r->st.err);
        return 0; /* abort the transfer */
    }
    if (rc == LM_DONE) {
        end_stream_ok(r);
        return n;
    }
    flush_out(r);
    return n;
}

size_t lm_relay_on_data(lm_relay_t *r, int status, int whole_json, const char *p, size_t n)
{
    if (r->req == NULL)
        return 0; /* client gone: abort, stop paying for tokens */
    if (r->finished || r->ending)
        return n; /* trailing bytes after the end marker */
    r->status = status;
    if (r->attempt_ttft_ms < 0)
        r->attempt_ttft_ms = (int64_t)((uint64_t)lm_clock_ms() - r->attempt_start_ms);
    arm_timer(r, next_timeout_ms(r));
    /* An SSE body never starts with '{': that is one JSON object (an error
     * in a 200, as Baidu v1 sends), however it is labelled. */
    int json_first = !r->headers_sent && !r->whole_body && n > 0 && p[0] == '{' &&
                     r->route->inst->plugin->vt.framing == LM_FRAME_SSE;
    if (status >= 200 && status < 300 && r->call.stream && !whole_json && !r->whole_body &&
        !json_first)
        return on_stream_data(r, p, n);
    r->whole_body = 1;
    size_t cap = (status >= 200 && status < 300) ? LM_RESPONSE_MAX : LM_ERROR_BODY_MAX;
    if (r->body.len + n > cap) {
        if (status >= 200 && status < 300) {
            reply_err(r, 502, "api_error", "upstream_error", "upstream response too large");
            return 0;
        }
        return n; /* error bodies: keep the first part for mapping */
    }
    if (lm_buf_add(&r->body, p, n) < 0) {
        reply_err(r, 500, "api_error", NULL, "out of memory");
        return 0;
    }
    return n;
}

#define LM_RETRY_AFTER_MAX_S 600 /* longer holds are the provider's mistake */

/* A 429/503 with Retry-After keeps this channel x model out of rotation
 * for that long; the client that gets the error is told the same. */
static void honour_retry_after(lm_relay_t *r)
{
    if (r->up_retry_after < 0 || (r->status != 429 && r->status != 503) || r->route->stats == NULL)
        return;
    int64_t s = r->up_retry_after < LM_RETRY_AFTER_MAX_S ? r->up_retry_after : LM_RETRY_AFTER_MAX_S;
    lm_route_hold(r->route->stats, (int64_t)(uint64_t)lm_clock_ms() + s * 1000);
    lm_log(LM_LOG_INFO, "channel %s model %s: upstream asked to retry after %llds; held",
           r->route->inst->chan->name, r->route->model, (long long)s);
}

/* The upstream refused the credential this attempt sent and the plugin
 * dropped it: fetch a fresh one and rebuild on the same channel, once per
 * request (a second refusal is the client's answer). */
static int credential_retry(lm_relay_t *r, const lm_err *e)
{
    if (r->side_retried || r->req == NULL)
        return 0;
    r->side_retried = 1;
    lm_log(LM_LOG_INFO, "%s: channel %s refused its credential (%s); refreshing it", r->id,
           r->route->inst->chan->name, e->code);
    record_failed_attempt(r, e->http_status);
    r->attempt++;
    r->side_waits = 0;
    build_attempt(r);
    return 1;
}

static void finish_whole(lm_relay_t *r, int status, lm_str body)
{
    char *out = NULL;
    lm_usage usage;
    lm_err e;
    int rc = lm_response_translate(r->route->inst, &r->call, status, body, &out, &usage, &e);
    if (rc == LM_ERETRY && credential_retry(r, &e)) {
        free(out);
        return;
    }
    if (rc < 0) {
        lm_log(LM_LOG_INFO, "%s: upstream %d -> %d %s", r->id, status, e.http_status, e.code);
        reply_error(r, &e);
    } else if (lm_rlua_response(r->lua, &out, &e) < 0) {
        reply_error(r, &e);
    } else if ((r->usage = usage, settle(r, 0, 1))) {
        r->pending_body = out; /* sent by on_settled once the row is committed */
        out = NULL;
    } else {
        r->finished = 1;
        r->client_status = 200;
        r->usage = usage;
        route_header(r);
        if (r->req)
            lm_http_reply(r->req, 200, "application/json", out, strlen(out), r->id);
    }
    free(out);
}

/* The attempt is over for channel health: once per begun attempt. */
static void route_end(lm_relay_t *r, int outcome)
{
    if (!r->route_begun || r->route == NULL || r->route->stats == NULL)
        return;
    r->route_begun = 0;
    uint64_t now = (uint64_t)lm_clock_ms();
    lm_route_event_t ev = lm_route_end(r->route->stats, (int64_t)now, outcome,
                                       (int64_t)(now - r->attempt_start_ms), r->attempt_ttft_ms);
    if (ev != LM_ROUTE_EV_NONE)
        lm_log(LM_LOG_WARN, "channel %s model %s: %s", r->route->inst->chan->name, r->route->model,
               lm_route_event_str(ev));
}

/* What the attempt says about the channel: its failures, not the client's. */
static int attempt_outcome(const lm_relay_t *r, int ok, int timeout)
{
    if (r->req == NULL)
        return LM_ROUTE_CANCEL;
    if (!ok || timeout)
        return LM_ROUTE_FAIL;
    return (r->status == 429 || r->status >= 500) ? LM_ROUTE_FAIL : LM_ROUTE_OK;
}

/* Whether a failed attempt may go to the next channel: only while nothing
 * reached the client, only for failures where the upstream did not take
 * the request (no connection) or said so (429, 5xx); never after a timeout
 * once the request was sent (FT-3). Scripts may ask for it (on_error). */
static int retryable(const lm_relay_t *r, int ok, int timeout)
{
    if (!ok)
        return !timeout && r->status == 0;
    return r->status == 429 || r->status >= 500;
}

/* Every upstream attempt has a ledger row (linked by the request id); a
 * failed one costs nothing and its status says why. */
static void record_failed_attempt(lm_relay_t *r, int status)
{
    lm_usage_row_t row = {.request_id = r->id,
                          .attempt = r->attempt,
                          .channel = r->route->inst->chan->name,
                          .model_asked = r->client_model,
                          .model_served = r->upstream_model,
                          .latency_ms = (int64_t)((uint64_t)lm_clock_ms() - r->attempt_start_ms),
                          .ttft_ms = -1,
                          .status = r->status ? r->status : status,
                          .client_aborted = r->req == NULL};
    lm_gov_record_attempt(&r->gov, &row);
}

/* The attempt failed before the client saw a byte: map the error, let the
 * scripts look at it, and try the next candidate when allowed. */
static void attempt_failed(lm_relay_t *r, lm_err *e, int kernel_retry)
{
    record_failed_attempt(r, e->http_status);
    lm_metrics_std_t *m = lm_server_metrics(r->w->srv);
    if (m) {
        const char *labels[] = {r->route->model, r->route->inst->chan->name,
                                e->code[0] ? e->code : "error"};
        lm_metrics_inc(m->errors, labels, 1);
    }
    int script_retry = lm_rlua_error(r->lua, e, r->route, r->attempt, 0);
    if ((kernel_retry || script_retry) && r->attempt < LM_MAX_ATTEMPTS && r->cand + 1 < r->ncands &&
        r->req) {
        lm_log(LM_LOG_WARN, "%s: attempt %d on channel %s failed (%d %s); trying channel %s", r->id,
               r->attempt, r->route->inst->chan->name, e->http_status, e->code,
               r->cands[r->cand + 1].inst->chan->name);
        r->cand++;
        start_attempt(r);
        return;
    }
    if (r->up_retry_after >= 0 && r->req && (e->http_status == 429 || e->http_status == 503)) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)r->up_retry_after);
        lm_http_add_header(r->req, "Retry-After", v);
    }
    reply_error(r, e);
}

static void whole_done(lm_relay_t *r)
{
    int status = r->status;
    lm_str body = {lm_buf_cstr(&r->body), r->body.len};
    if (status >= 200 && status < 300) {
        finish_whole(r, status, body);
        return;
    }
    char *out = NULL;
    lm_usage usage;
    lm_err e;
    int rc = lm_response_translate(r->route->inst, &r->call, status, body, &out, &usage, &e);
    free(out);
    if (rc == LM_ERETRY && credential_retry(r, &e))
        return;
    honour_retry_after(r);
    lm_log(LM_LOG_INFO, "%s: upstream %d -> %d %s", r->id, status, e.http_status, e.code);
    attempt_failed(r, &e, retryable(r, 1, 0));
}

static void stream_done(lm_relay_t *r)
{
    int rc = r->headers_sent ? lm_stream_finish(&r->st) : LM_OK;
    lm_err e;
    if (!r->headers_sent) {
        lm_error_set(&e, -1, 502, "api_error", "upstream_error", "upstream sent an empty stream");
        attempt_failed(r, &e, 0);
    } else if (rc < 0) {
        stream_end(r, &r->st.err);
    } else if (rc == LM_DONE || r->st.emit.finish_seen) {
        end_stream_ok(r); /* a clean end of body after a finish ends the stream */
    } else {
        /* The body ended before the provider's end marker and before any
         * finish_reason: the answer is truncated, say so (7.5). */
        flush_out(r);
        lm_error_set(&e, -1, 502, "api_error", "upstream_error",
                     "upstream stream ended before the answer was complete");
        stream_end(r, &e);
    }
}

void lm_relay_on_done(lm_relay_t *r, int ok, int timeout, const char *why)
{
    lm_err e;
    r->up = NULL;
    route_end(r, attempt_outcome(r, ok, timeout));
    if (r->timer)
        evtimer_del(r->timer);
    if (r->req && !r->finished && !r->ending) {
        int success = r->status >= 200 && r->status < 300;
        if (!ok && !r->headers_sent) {
            lm_log(LM_LOG_WARN, "%s: upstream failed on channel %s: %s", r->id,
                   r->route->inst->chan->name, why);
            if (timeout)
                lm_error_set(&e, -1, 504, "api_error", "upstream_timeout", "upstream timed out");
            else if (!strncmp(why, LM_UP_REFUSED, strlen(LM_UP_REFUSED)))
                lm_error_set(&e, -1, 502, "upstream_error", "upstream_address_refused",
                             "the channel's upstream address is not allowed (see the gateway log)");
            else
                lm_error_set(&e, -1, 502, "api_error", "upstream_error",
                             "upstream connection failed");
            attempt_failed(r, &e, retryable(r, ok, timeout));
        } else if (!ok) {
            lm_error_set(&e, -1, timeout ? 504 : 502, "api_error",
                         timeout ? "upstream_timeout" : "upstream_error",
                         timeout ? "upstream stream timed out" : "upstream stream was cut off");
            stream_end(r, &e);
        } else if (r->call.stream && success && !r->whole_body) {
            stream_done(r);
        } else {
            whole_done(r);
        }
    }
    maybe_free(r);
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
        if (r->timer)
            evtimer_del(r->timer);
        side_unlink(r);
        if (r->headers_sent)
            stream_end(r, &e);
        else
            reply_error(r, &e);
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
        relay_free(r);
    }
}

/* ---- request pipeline ---- */

static int run_local(lm_relay_t *r)
{
    lm_str body = {lm_buf_cstr(&r->ureq.body), r->ureq.body.len};
    int status = r->ureq.local_status;
    r->status = status;
    if (r->call.stream && status >= 200 && status < 300) {
        r->headers_sent = 1;
        lm_http_stream_start(r->req, r->id);
        int rc = lm_stream_feed(&r->st, body.p, body.n);
        if (rc == LM_OK)
            rc = lm_stream_finish(&r->st);
        if (rc < 0)
            stream_end(r, &r->st.err);
        else
            end_stream_ok(r);
        return 0;
    }
    finish_whole(r, status, body);
    return 0;
}

/* Forget what the previous attempt left (plugin request state, buffers). */
static void reset_attempt(lm_relay_t *r)
{
    if (r->call_open && r->route && r->route->inst->plugin->vt.req_close) {
        const lm_plugin_t *prev = lm_plugin_enter(r->route->inst->plugin);
        r->route->inst->plugin->vt.req_close(r->route->inst->istate, &r->call);
        lm_plugin_leave(prev);
    }
    r->call_open = 0;
    if (r->st_init)
        lm_stream_free(&r->st);
    r->st_init = 0;
    lm_ureq_free(&r->ureq);
    lm_ureq_init(&r->ureq);
    lm_buf_reset(&r->body);
    r->status = 0;
    r->whole_body = 0;
    r->up_retry_after = -1;
}

static size_t sink_data(void *arg, int status, int whole_json, const char *p, size_t n)
{
    return lm_relay_on_data(arg, status, whole_json, p, n);
}

static void sink_done(void *arg, int ok, int timeout, const char *why)
{
    lm_relay_on_done(arg, ok, timeout, why);
}

static void sink_retry_after(void *arg, int64_t seconds)
{
    ((lm_relay_t *)arg)->up_retry_after = seconds;
}

static const lm_upstream_sink_t relay_sink = {sink_data, sink_done, sink_retry_after};

/* build_request asked for a side value that is not there yet: start the
 * fetch if this request was chosen to, and park until a worker wakes us
 * (lm_relay_side_wake). Nothing is sent and nothing is held meanwhile. */
static int side_wait(lm_relay_t *r)
{
    const lm_side_need_t *need = &r->ureq.side;
    lm_err e;
    if (!need->wait) /* a fetch failed moments ago: its error, without another fetch */
        return reply_error(r, &need->err);
    if (++r->side_waits > 2)
        return reply_err(r, 502, "api_error", "credential_unavailable",
                         "the provider credential is still not available");
    snprintf(r->side_name, sizeof(r->side_name), "%s", need->name);
    r->side_seq = need->seq;
    r->side_prev = NULL;
    r->side_next = r->w->side_waiters;
    if (r->side_next)
        r->side_next->side_prev = r;
    r->w->side_waiters = r;
    if (need->fetch && lm_side_fetch_start(r->w, r->rt, r->route->inst, need->name, &e) < 0) {
        side_unlink(r);
        return reply_error(r, &e);
    }
    return 0;
}

void lm_relay_side_wake(lm_worker_t *w)
{
    lm_relay_t *r = w->side_waiters;
    while (r) {
        lm_relay_t *next = r->side_next;
        lm_err e;
        int st = lm_side_check(r->route->inst->side, r->side_name, r->side_seq, &e);
        if (st != 0) {
            side_unlink(r);
            if (r->req == NULL)
                maybe_free(r);
            else if (st > 0)
                build_attempt(r);
            else
                reply_error(r, &e);
        }
        r = next;
    }
}

static int start_attempt(lm_relay_t *r)
{
    reset_attempt(r);
    r->route = &r->cands[r->cand];
    r->attempt++;
    r->side_waits = 0;
    return build_attempt(r);
}

/* Translate the request for the current attempt's channel and send it.
 * Re-entered after a side-value wait, so it starts from a clean call. */
static int build_attempt(lm_relay_t *r)
{
    reset_attempt(r);
    const lm_route_t *route = r->route;
    const lm_provider *vt = &route->inst->plugin->vt;
    lm_err e;

    snprintf(r->upstream_model, sizeof(r->upstream_model), "%s", route->upstream);
    r->call = (lm_call){.hdr = LM_ABI_HDR(lm_call),
                        .op = r->op,
                        .stream = r->op == LM_OP_CHAT &&
                                  json_is_true(json_object_get(r->canon, "stream")),
                        .model = r->upstream_model,
                        .request_id = r->id};
    if (r->call.stream && !(vt->caps & LM_CAP_STREAM))
        return reply_err(r, 400, "invalid_request_error", "stream_unsupported",
                         "this model does not support streaming");
    if (r->op == LM_OP_EMBED && !(vt->caps & LM_CAP_EMBED))
        return reply_err(r, 400, "invalid_request_error", "model_not_supported",
                         "this model does not support embeddings");
    json_t *so = json_object_get(r->canon, "stream_options");
    r->want_usage = json_is_true(json_object_get(so, "include_usage"));
    /* The client's bytes may be forwarded only while canon still means them:
     * the same model, and no script rewrote the request (an on_request that
     * left it alone keeps canon as parsed). */
    if (strcmp(json_string_value(json_object_get(r->canon, "model")), r->upstream_model) != 0)
        json_object_set_new(r->canon, "model", json_string(r->upstream_model));
    else if (r->req && !lm_rlua_request_changed(r->lua))
        r->call.raw_body = lm_http_body(r->req);
    memset(&e, 0, sizeof(e));
    r->call_open = 1;
    r->ureq.inst = route->inst;
    r->ureq.chan = route->inst->chan; /* its address policy (SS-7) */
    const lm_plugin_t *prev = lm_plugin_enter(route->inst->plugin);
    int rc = vt->build_request(route->inst->istate, &r->call, r->canon, &r->ureq, &e);
    lm_plugin_leave(prev);
    if (rc == LM_AGAIN && r->ureq.side.name[0])
        return side_wait(r);
    if (rc >= 0 && r->ureq.side.fetch && /* background refresh of a value near its end */
        lm_side_fetch_start(r->w, r->rt, route->inst, r->ureq.side.name, &e) < 0)
        lm_log(LM_LOG_WARN, "%s: background credential refresh failed to start", r->id);
    if (rc == LM_AGAIN)
        rc = LM_ERR; /* LM_AGAIN without a side value pending is a plugin bug */
    if (rc < 0) {
        if (e.http_status == 0)
            lm_error_set(&e, rc, 400, "invalid_request_error", NULL,
                         "the request cannot be sent to this provider");
        return reply_error(r, &e);
    }
    if (lm_rlua_upstream(r->lua, route, r->attempt, &r->ureq, &e) < 0)
        return reply_error(r, &e);
    if (r->call.stream) {
        lm_stream_init(&r->st, route->inst, &r->call, (int64_t)time(NULL), sse_sink, r);
        r->st_init = 1;
    }
    if (r->ureq.local_status)
        return run_local(r);
    if (r->ureq.url.len == 0)
        return reply_err(r, 500, "api_error", "plugin_error", "plugin built no upstream URL");
    char why[256];
    if (route->stats && lm_route_begin(route->stats, (int64_t)(uint64_t)lm_clock_ms()) < 0) {
        /* the channel is at its in-flight cap: the next candidate, or 503 now (FT-8) */
        if (r->cand + 1 < r->ncands) {
            r->cand++;
            r->attempt--;
            return start_attempt(r);
        }
        return reply_err(r, 503, "api_error", "channel_busy",
                         "every channel for this model is at its concurrency limit");
    }
    r->route_begun = route->stats != NULL;
    r->attempt_start_ms = (uint64_t)lm_clock_ms();
    r->attempt_ttft_ms = -1;
    r->up = lm_upstream_start(r->w->up, &r->ureq, route->inst->chan->connect_timeout_ms, 0,
                              &relay_sink, r, why, sizeof(why));
    if (r->up == NULL) {
        route_end(r, LM_ROUTE_FAIL);
        return reply_err(r, 502, "api_error", "upstream_error", why);
    }
    if (r->timer == NULL)
        r->timer = evtimer_new(r->w->base, on_timeout, r);
    int first = route->inst->chan->first_byte_timeout_ms;
    if (!r->call.stream && route->inst->chan->request_timeout_ms < first)
        first = route->inst->chan->request_timeout_ms;
    arm_timer(r, first);
    return 0;
}

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
    int64_t max_tokens = json_is_integer(mt)    ? json_integer_value(mt)
                         : r->op == LM_OP_EMBED ? 0
                                                : 4096;
    lm_price_t price;
    lm_gov_price(r->rt->conf, r->cands[0].inst->chan, r->cands[0].upstream, &price);
    if (lm_gov_admit(&r->gov, model, &price, r->prompt_est, max_tokens, &retry, &e) == 0)
        return 0;
    if (retry > 0) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)retry);
        lm_http_add_header(r->req, "Retry-After", v);
    }
    reply_error(r, &e);
    return -1;
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
    reply_err(r, 429, "rate_limit_error", "upstream_rate_limited",
              "the provider asked to retry later; see Retry-After");
    return 1;
}

/* Scripts see the request first (on_request may reject or rewrite it,
 * including the model), then the candidate channels (on_route). */
static int route_request(lm_relay_t *r)
{
    lm_err e;
    if (r->rt->lua) {
        lm_lua_vm_t *vm = lm_rlua_vm(r->w, r->rt->lua, &e);
        if (vm == NULL)
            return reply_error(r, &e);
        r->lua =
            lm_lua_call_begin(vm, r->gov.key_name, r->gov.key ? r->gov.key->group : NULL, r->canon);
        if (r->lua == NULL)
            return reply_err(r, 500, "api_error", NULL, "out of memory");
        if (lm_rlua_request(r->lua, r->canon, &e) < 0)
            return reply_error(r, &e);
    }
    const char *model = json_string_value(json_object_get(r->canon, "model"));
    if (model == NULL)
        return reply_err(r, 400, "invalid_request_error", "invalid_value", "'model' is required");
    snprintf(r->client_model, sizeof(r->client_model), "%s", model);
    model = r->client_model; /* candidates may borrow it; canon's copy is replaced later */
    r->ncands = lm_rt_candidates(r->rt, model, r->cands, LM_MAX_CANDIDATES);
    if (r->ncands == 0) {
        lm_err_set(&e, -1, 404, "invalid_request_error", "model_not_found",
                   "The model '%.128s' does not exist or you do not have access to it.", model);
        return reply_error(r, &e);
    }
    order_candidates(r, model);
    if (all_held(r))
        return 0;
    long n = lm_rlua_route(r->lua, r->cands, r->ncands, r->rt->conf, &e);
    if (n < 0)
        return reply_error(r, &e);
    if (n == 0)
        return reply_err(r, 503, "api_error", "no_channel",
                         "no channel is available for this model (policy)");
    r->ncands = (size_t)n;
    return admit(r, model) < 0 ? 0 : start_attempt(r);
}

lm_relay_t *lm_relay_begin(lm_http_req_t *req, lm_worker_t *w, int op)
{
    return relay_new(req, w, op);
}

/* Past the limit the body is read and dropped (so the client can read our
 * 413) for up to 64 KiB more, then the connection is closed (IN-3). */
int lm_relay_body(lm_relay_t *r, size_t have, size_t n)
{
    if (!r->too_large && have + n <= r->rt->conf->max_body)
        return 1;
    r->too_large = 1;
    r->discarded += n;
    return r->discarded > 64 * 1024 ? -1 : 0;
}

static int handle(lm_relay_t *r, int method_ok)
{
    lm_http_req_t *req = r->req;
    lm_err e;
    if (!method_ok)
        return reply_err(r, 405, "invalid_request_error", "method_not_allowed",
                         "method not allowed for this path");
    if (r->overload) { /* shed load at once rather than queue it (overload policy) */
        lm_http_add_header(req, "Retry-After", "1");
        return reply_err(r, 503, "api_error", "overloaded",
                         "the gateway is at its in-flight request limit; retry shortly");
    }
    lm_authguard_t *guard = lm_server_authguard(r->w->srv);
    int64_t wait = lm_authguard_blocked(guard, lm_http_peer(req), (int64_t)(uint64_t)lm_clock_ms());
    if (wait > 0) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)wait);
        lm_http_add_header(req, "Retry-After", v);
        return reply_err(r, 429, "rate_limit_error", "too_many_auth_failures",
                         "too many failed authentications from this address; retry later");
    }
    if (lm_gov_auth(&r->gov, r->rt->conf, lm_server_store(r->w->srv),
                    lm_http_header(req, "Authorization"), lm_http_peer(req), &e) < 0) {
        if (e.http_status == 401)
            lm_authguard_fail(guard, lm_http_peer(req), (int64_t)(uint64_t)lm_clock_ms());
        return reply_error(r, &e);
    }
    lm_str body = lm_http_body(req);
    if (r->too_large || body.n > r->rt->conf->max_body)
        return reply_err(r, 413, "invalid_request_error", "request_too_large",
                         "request body exceeds the configured limit");
    r->prompt_est = (int64_t)body.n / 4;
    r->canon = lm_reqcheck_parse(body.p, body.n, &e);
    if (r->canon == NULL)
        return reply_error(r, &e);
    if ((r->op == LM_OP_CHAT ? lm_reqcheck_chat(r->canon, &e) : lm_reqcheck_embed(r->canon, &e)) <
        0)
        return reply_error(r, &e);
    return route_request(r);
}

void lm_relay_run(lm_relay_t *r, int method_ok)
{
    (void)handle(r, method_ok);
}
