/* modcall.c - lm.moderate's side call (modcall.h has the decisions): a
 * moderation request built by the channel's plugin, sent on the worker's
 * curl multi, translated, billed, and handed to the waiting script.
 * Thread: the relay's worker; the call is calloc'd and owned by r->mod. */
#include "relay/modcall.h"

#include "core/clock.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/money.h"
#include "plugin/endpoints.h"
#include "proto/response.h"
#include "relay/output.h"
#include "relay/side_fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LM_MODCALL_HOLD_MS (5 * 60 * 1000) /* the quota hold outlives the call */

typedef struct lm_modcall_s {
    lm_relay_t *r;
    lm_route_t route; /* the channel (its instance lives in r->rt) */
    char model[128];  /* as the script asked */
    json_t *canon;    /* {"model", "input"} */
    lm_call call;
    int call_open;
    lm_ureq_t ureq;
    lm_upstream_t *up; /* the pool's until it ends */
    int status;
    int too_large;
    lm_buf_t body;
    lm_reservation_t *hold; /* the quota hold, or NULL (config key, no store) */
    int64_t chars;          /* of the text: the token estimate */
    uint64_t start_ms;
    int n;     /* 1-based: the call's number in this request */
    int begun; /* lm_route_begin admitted the call: end it once */
} lm_modcall_t;

/* The call is over for the channel's health and in-flight count, as an
 * attempt is (outcome: LM_ROUTE_OK, _FAIL or _CANCEL). */
static void mod_route_end(lm_modcall_t *m, int outcome)
{
    if (!m->begun)
        return;
    m->begun = 0;
    int64_t now = (int64_t)(uint64_t)lm_clock_ms();
    lm_route_event_t ev =
        lm_route_end(m->route.stats, now, outcome, now - (int64_t)m->start_ms, -1);
    if (ev != LM_ROUTE_EV_NONE)
        lm_log(LM_LOG_WARN, "channel %s model %s: %s", m->route.inst->chan->name, m->route.model,
               lm_route_event_str(ev));
}

static void mod_free(lm_modcall_t *m)
{
    const lm_provider *vt = &m->route.inst->plugin->vt;
    if (m->up)
        lm_upstream_cancel(m->up);
    mod_route_end(m, LM_ROUTE_CANCEL); /* still begun: nobody waits for the answer */
    if (m->call_open && vt->req_close) {
        const lm_plugin_t *prev = lm_plugin_enter(m->route.inst->plugin);
        vt->req_close(m->route.inst->istate, &m->call);
        lm_plugin_leave(prev);
    }
    if (m->hold)
        lm_billing_cancel(m->hold);
    json_decref(m->canon);
    lm_ureq_free(&m->ureq);
    lm_buf_free(&m->body);
    m->r->mod = NULL;
    free(m);
}

void lm_modcall_cancel(lm_relay_t *r)
{
    if (r->mod)
        mod_free(r->mod);
}

/* The charge at the channel's prices: units (per_1m_chars) plus tokens,
 * estimated from the characters when the provider reported none. */
static int64_t mod_cost(const lm_modcall_t *m, lm_usage *u)
{
    const lm_conf_t *conf = m->r->rt->conf;
    const lm_chan_conf_t *ch = m->route.inst->chan;
    lm_price_t p;
    if (u->prompt < 0)
        u->prompt = (m->chars + 3) / 4;
    if (u->completion < 0)
        u->completion = 0;
    lm_gov_price(conf, ch, m->route.upstream, &p);
    return lm_sat_add(lm_gov_cost(&p, u),
                      lm_gov_unit_cost(conf, ch, m->route.upstream, LM_OP_MODERATIONS, m->canon));
}

/* The channel answered: its own ledger row under the caller's key. */
static void mod_bill(lm_modcall_t *m, lm_usage u)
{
    lm_relay_t *r = m->r;
    char id[64];
    int64_t cost = mod_cost(m, &u);
    snprintf(id, sizeof(id), "%s-mod%d", r->id, m->n);
    lm_usage_row_t row = {.request_id = id,
                          .attempt = 1,
                          .channel = m->route.inst->chan->name,
                          .model_asked = m->model,
                          .model_served = m->route.upstream,
                          .prompt_tokens = u.prompt,
                          .completion_tokens = u.completion,
                          .latency_ms = (int64_t)((uint64_t)lm_clock_ms() - m->start_ms),
                          .status = m->status,
                          .api = "moderations"};
    lm_log(LM_LOG_INFO, "%s: moderation side call %d: channel %s model %s status %d charge %lld",
           r->id, m->n, row.channel, row.model_served, m->status, (long long)cost);
    if (r->gov.store == NULL)
        return;
    /* other gateways sharing the key's spend see this charge too */
    lm_gov_shared_charge(&r->gov, r->w->svc->shared, id, cost);
    int rc = lm_billing_settle(r->gov.store, m->hold, cost, &row, NULL); /* frees the hold */
    m->hold = NULL;
    if (rc != LM_STORE_OK)
        lm_log(LM_LOG_ERROR, "%s: moderation row not queued (%s): cost %lld micro-units unrecorded",
               r->id, lm_store_strerror(rc), (long long)cost);
}

/* The answer's first result ({flagged, categories, ...}), a new
 * reference, or NULL with why filled. */
static json_t *mod_verdict(lm_modcall_t *m, lm_usage *u, char *why, size_t wlen)
{
    char *out = NULL;
    size_t out_len = 0;
    lm_err e;
    memset(&e, 0, sizeof(e));
    int rc = lm_response_translate(m->route.inst, &m->call, m->status,
                                   (lm_str){lm_buf_cstr(&m->body), m->body.len}, 0, &out, &out_len,
                                   u, &e);
    json_t *ans = rc < 0 ? NULL : json_loadb(out, out_len, 0, NULL);
    free(out);
    json_t *v = json_array_get(json_object_get(ans, "results"), 0);
    if (json_is_object(v) && json_is_boolean(json_object_get(v, "flagged"))) {
        json_incref(v);
        json_decref(ans);
        return v;
    }
    json_decref(ans);
    snprintf(why, wlen, "the moderation answer carries no verdict");
    return NULL;
}

/* The call ended: bill it, free it, and let the script go on. */
static void mod_end(lm_modcall_t *m, int ok, int timeout)
{
    lm_relay_t *r = m->r;
    char why[160] = "";
    json_t *verdict = NULL;
    lm_usage u = LM_USAGE_UNKNOWN;
    lm_err e;
    if (m->too_large)
        snprintf(why, sizeof(why), "the moderation answer is too large");
    else if (!ok)
        snprintf(why, sizeof(why), "%s",
                 timeout ? "the moderation call timed out"
                         : "the moderation channel did not answer");
    else if (m->status < 200 || m->status >= 300)
        snprintf(why, sizeof(why), "the moderation channel answered %d", m->status);
    /* a 4xx is the request's fault (the text), not the channel's */
    mod_route_end(m, ok && !m->too_large && m->status < 500 && m->status != 429 ? LM_ROUTE_OK
                                                                                : LM_ROUTE_FAIL);
    if (why[0] == '\0') {
        verdict = mod_verdict(m, &u, why, sizeof(why));
        mod_bill(m, u); /* the channel answered: its work is billed, verdict or not */
    } else {
        lm_log(LM_LOG_WARN, "%s: moderation side call %d on channel %s: %s", r->id, m->n,
               m->route.inst->chan->name, why);
    }
    mod_free(m);
    if (r->req == NULL || r->state != LM_RELAY_ROUTING) { /* nobody waits any more */
        json_decref(verdict);
        lm_relay_maybe_free(r);
        return;
    }
    int rc = lm_rlua_request_resume(r->lua, r->canon, verdict, why, &e);
    json_decref(verdict);
    if (rc < 0)
        lm_out_error(r, &e);
    else if (rc == 0)
        (void)lm_relay_routed(r);
    /* rc > 0: the script waits on another side call */
}

static size_t mod_data(void *arg, int status, int whole_json, const char *p, size_t n)
{
    lm_modcall_t *m = arg;
    (void)whole_json;
    m->status = status;
    if (m->body.len + n > LM_MODCALL_BODY_MAX) {
        m->too_large = 1;
        return 0;
    }
    return lm_buf_add(&m->body, p, n) < 0 ? 0 : n;
}

static void mod_done(void *arg, int ok, int timeout, const char *why)
{
    lm_modcall_t *m = arg;
    (void)why;
    m->up = NULL;
    mod_end(m, ok, timeout);
}

static const lm_upstream_sink_t mod_sink = {mod_data, mod_done, NULL};

/* The first candidate of model whose plugin serves moderations. */
static int pick(lm_relay_t *r, const char *model, lm_route_t *out)
{
    lm_route_t c[LM_MAX_CANDIDATES];
    size_t n = lm_rt_candidates(r->rt, model, c, LM_MAX_CANDIDATES);
    for (size_t k = 0; k < n; k++)
        if (lm_endpoints_of(&c[k].inst->plugin->vt) & lm_endpoint_bit(LM_OP_MODERATIONS)) {
            *out = c[k];
            return 0;
        }
    return -1;
}

/* Builds the request through the channel's plugin. 0, or -1 with why. */
static int mod_build(lm_modcall_t *m, char *why, size_t wlen)
{
    lm_relay_t *r = m->r;
    lm_inst_t *inst = m->route.inst;
    const lm_provider *vt = &inst->plugin->vt;
    lm_err e;
    memset(&e, 0, sizeof(e));
    m->call = (lm_call){.hdr = LM_ABI_HDR(lm_call),
                        .op = lm_endpoint_call_op(vt, LM_OP_MODERATIONS, 0),
                        .model = m->route.upstream,
                        .request_id = r->id};
    m->ureq.inst = inst;
    m->ureq.chan = inst->chan; /* its address policy (SS-7) */
    m->call_open = 1;
    const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
    int rc = vt->build_request(inst->istate, &m->call, m->canon, &m->ureq, &e);
    lm_plugin_leave(prev);
    if ((rc == LM_AGAIN || rc >= 0) && m->ureq.side.name[0] && m->ureq.side.fetch &&
        lm_side_fetch_start(r->w, r->rt, inst, m->ureq.side.name, &e) < 0)
        lm_log(LM_LOG_WARN, "%s: credential fetch for the moderation channel failed to start",
               r->id);
    if (rc == LM_AGAIN) {
        snprintf(why, wlen, "the moderation channel's credential is not ready yet");
        return -1;
    }
    if (rc < 0 || m->ureq.local_status || m->ureq.url.len == 0) {
        snprintf(why, wlen, "the moderation channel cannot take the request");
        return -1;
    }
    return 0;
}

/* lm.moderate's start (lm_lua_side_fn): 0 once the transfer runs. */
static int mod_start(void *arg, const char *model, const char *text, size_t len, char *why,
                     size_t wlen)
{
    lm_relay_t *r = arg;
    lm_usage est = LM_USAGE_UNKNOWN;
    char uwhy[256];
    if (r->mod) {
        snprintf(why, wlen, "a side call is already running");
        return -1;
    }
    lm_modcall_t *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(why, wlen, "out of memory");
        return -1;
    }
    m->r = r;
    r->mod = m;
    lm_ureq_init(&m->ureq);
    snprintf(m->model, sizeof(m->model), "%s", model);
    m->chars = (int64_t)len;
    m->start_ms = (uint64_t)lm_clock_ms();
    m->n = lm_lua_call_side_count(r->lua) + 1;
    if (pick(r, model, &m->route) < 0) {
        snprintf(why, wlen, "no channel serves the moderation model '%.64s'", model);
        goto fail;
    }
    m->canon = json_pack("{s:s,s:s%}", "model", m->route.upstream, "input", text, len);
    if (m->canon == NULL) {
        snprintf(why, wlen, "the text cannot be sent (not UTF-8, or out of memory)");
        goto fail;
    }
    if (r->gov.store && r->gov.key &&
        lm_billing_reserve(r->gov.key, mod_cost(m, &est),
                           (int64_t)lm_clock_ms() + LM_MODCALL_HOLD_MS,
                           &m->hold) != LM_BILLING_OK) {
        m->hold = NULL;
        snprintf(why, wlen, "insufficient quota for the moderation call");
        goto fail;
    }
    if (mod_build(m, why, wlen) < 0)
        goto fail;
    const lm_chan_conf_t *ch = m->route.inst->chan;
    if (m->route.stats && lm_route_begin(m->route.stats, (int64_t)m->start_ms) < 0) {
        snprintf(why, wlen, "the moderation channel is at its concurrency limit");
        goto fail;
    }
    m->begun = m->route.stats != NULL;
    int total = ch->request_timeout_ms > 0 && ch->request_timeout_ms < LM_MODCALL_TIMEOUT_MS
                    ? ch->request_timeout_ms
                    : LM_MODCALL_TIMEOUT_MS;
    m->up = lm_upstream_start(r->w->up, &m->ureq, ch->connect_timeout_ms, total, &mod_sink, m, uwhy,
                              sizeof(uwhy));
    if (m->up == NULL) {
        mod_route_end(m, LM_ROUTE_FAIL);
        lm_log(LM_LOG_WARN, "%s: moderation side call on channel %s: %s", r->id, ch->name, uwhy);
        snprintf(why, wlen, "the moderation channel cannot be reached");
        goto fail;
    }
    return 0;
fail:
    mod_free(m);
    return -1;
}

void lm_modcall_arm(lm_relay_t *r)
{
    lm_lua_call_set_side(r->lua, mod_start, r);
}
