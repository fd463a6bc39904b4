/* settle.c - settlement: bill, then let the last bytes go (DB-1), waiting
 * for the ledger at most store_wait (DB-4); the ledger row, the access log
 * and request metrics. Thread: the relay's worker; the store's writer
 * thread only posts settle_ev back to it. */
#include "relay/settle.h"

#include "conf/priceunit.h"
#include "core/clock.h"

#include "core/log.h"
#include "relay/audiobill.h"
#include "relay/cache_rec.h"
#include "relay/output.h"
#include "route/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The usage to bill: the provider's report; without one, an estimate of
 * what was actually received (content bytes / 4), never error text. */
lm_usage lm_settle_usage(const lm_relay_t *r)
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

/* The held reply, or a stream's end, goes out. */
static void release(lm_relay_t *r)
{
    if (r->settle_timer)
        event_del(r->settle_timer);
    if (r->pending_body) {
        lm_relay_to(r, LM_RELAY_DONE);
        r->client_status = 200;
        lm_out_route_header(r);
        if (r->req)
            lm_http_reply(r->req, 200, lm_audio_ctype(r) ? lm_audio_ctype(r) : "application/json",
                          r->pending_body, r->pending_len, r->id);
        free(r->pending_body);
        r->pending_body = NULL;
    } else if (r->state == LM_RELAY_SETTLING) { /* a stream's usage chunk and [DONE] */
        lm_out_stream_end(r, NULL);
    }
}

void lm_settle_committed(evutil_socket_t fd, short what, void *arg)
{
    lm_relay_t *r = arg;
    (void)fd, (void)what;
    r->settling = 0;
    release(r);
    lm_relay_maybe_free(r);
}

/* store_wait passed without the commit (DB-4): the answer goes now. The row
 * stays with the writer, which commits it or, if the store stays stalled,
 * spools it; `settling` keeps the relay until the writer reports. */
static void settle_timeout(evutil_socket_t fd, short what, void *arg)
{
    lm_relay_t *r = arg;
    (void)fd, (void)what;
    lm_log(LM_LOG_WARN, "%s: usage row not committed within %d ms; answer sent, row left queued",
           r->id, r->gov.store_wait_ms);
    release(r);
}

/* Bound the wait for the commit by store_wait (DB-4). */
static void arm_timeout(lm_relay_t *r)
{
    if (r->settle_timer == NULL)
        r->settle_timer = evtimer_new(r->w->base, settle_timeout, r);
    if (r->settle_timer == NULL)
        return; /* then the reply waits for the commit, as before */
    struct timeval tv = {r->gov.store_wait_ms / 1000, (r->gov.store_wait_ms % 1000) * 1000};
    evtimer_add(r->settle_timer, &tv);
}

/* A `price GLOB AMOUNT UNIT` line (conf/priceunit.h) bills what the
 * request counts: rerank searches, images asked for, input characters. */
static int64_t unit_cost(const lm_relay_t *r)
{
    if (r->audio) { /* seconds from the answer, characters of speech's input */
        int unit;
        int64_t per_unit;
        lm_conf_price_unit(r->rt->conf, r->route->inst->chan, r->upstream_model, &unit, &per_unit);
        return unit == LM_UNIT_TOKENS || per_unit == 0 ? 0 : lm_audio_cost(r, unit, per_unit);
    }
    return lm_gov_unit_cost(r->rt->conf, r->route->inst->chan, r->upstream_model, r->op, r->canon);
}

/* Record this request's row and release its quota hold. With wait and a
 * billed row, the caller holds its last bytes until the row is committed
 * or store_wait passed (returns 1 and lm_settle_committed or the timeout
 * continues); aborted requests and rows that bill nothing never wait. */
int lm_settle(lm_relay_t *r, int aborted, int wait)
{
    if (r->settled || r->route == NULL)
        return 0;
    r->settled = 1;
    lm_usage u = lm_settle_usage(r);
    lm_price_t price;
    lm_gov_price(r->rt->conf, r->route->inst->chan, r->upstream_model, &price);
    int64_t cost = lm_sat_add(lm_gov_cost(&price, &u), unit_cost(r));
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
                          .client_aborted = aborted,
                          .api = r->api->name};
    if (!wait || r->settle_ev == NULL) {
        lm_gov_settle(&r->gov, cost, &row, NULL);
        return 0;
    }
    lm_store_cb_t cb = {settle_noop, r, settle_post, r};
    if (lm_gov_settle(&r->gov, cost, &row, &cb) != 0)
        return 0; /* nothing billed (DB-4), or nothing queued */
    r->settling = 1;
    lm_relay_to(r, LM_RELAY_SETTLING);
    arm_timeout(r);
    return 1;
}

/* A stream that ended well: its usage chunk and [DONE] follow the commit. */
void lm_settle_stream_ok(lm_relay_t *r)
{
    lm_cache_put_stream(r); /* a complete stream (cache.h) */
    lm_out_flush(r);
    if (lm_settle(r, 0, 1))
        return;
    lm_out_stream_end(r, NULL);
}

#define LM_LOG_MODEL_MAX 64 /* bytes of an unknown model name shown in the access log */

/* The model a client asked for, as one log word: it is client text, so
 * spaces, control and non-ASCII bytes become '?' (no forged fields or
 * lines) and a long name is cut, marked by "...". */
static const char *log_word(const char *s, char *out, size_t outlen)
{
    size_t i = 0;
    for (; s[i] && i < LM_LOG_MODEL_MAX && i + 4 < outlen; i++)
        out[i] = (s[i] > 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s[i] && i + 4 <= outlen) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return i ? out : "-";
}

/* One access-log line per request: who asked for what, which channel and
 * plugin version (and config generation) served it, how it ended. A
 * request no channel serves (404 model_not_found) shows the name asked,
 * so operators see what clients want. */
void lm_settle_access_log(lm_relay_t *r)
{
    char asked[LM_LOG_MODEL_MAX + 4];
    if (lm_log_level() < LM_LOG_INFO)
        return;
    const lm_usage *u = r->st_init ? &r->st.emit.usage : &r->usage;
    const lm_provider *vt = r->route ? &r->route->inst->plugin->vt : NULL;
    int64_t charge = r->charge;
    if (r->lua && (lm_lua_call_stages(r->lua) & LM_LUA_BIT(LM_LUA_STAGE_LOG))) {
        json_t *rec =
            json_pack("{s:s,s:s,s:s,s:s,s:i,s:I,s:I,s:I}", "id", r->id, "api", r->api->name, "key",
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
           "prompt=%lld completion=%lld charge=%lld api=%s",
           r->id, r->gov.key_name ? r->gov.key_name : "-",
           r->route ? r->route->model : log_word(r->client_model, asked, sizeof(asked)),
           r->route ? r->route->inst->chan->name : "-", vt ? vt->name : "-",
           vt && vt->version ? vt->version : "-", (unsigned long long)r->rt->gen, r->client_status,
           r->stream_error ? " stream_error" : "",
           r->fini_seen && r->state != LM_RELAY_DONE ? " client_gone" : "",
           (unsigned long long)((uint64_t)lm_clock_ms() - r->t_start_ms), (long long)u->prompt,
           (long long)u->completion, (long long)charge, r->api->name);
}

/* Request-level metrics (names only: model, channel, status). */
void lm_settle_metrics(lm_relay_t *r)
{
    lm_metrics_std_t *m = r->w->svc->metrics;
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
