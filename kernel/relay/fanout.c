/* fanout.c - a large embeddings request as concurrent upstream calls
 * (fanout.h has the decisions). Thread: the relay's worker. The fan-out is
 * calloc'd and owned by the relay through r->fan; each part owns its
 * request copy, plugin call, upstream request, transfer, timer and answer. */
#include "relay/fanout.h"

#include "core/clock.h"
#include "core/errors.h"
#include "core/log.h"
#include "proto/response.h"
#include "relay/output.h"
#include "relay/settle.h"
#include "relay/side_fetch.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LM_FANOUT_RESPONSE_MAX (64u * 1024 * 1024) /* all parts' answers together */
#define LM_FANOUT_ERROR_MAX    (1024u * 1024)      /* one part's error body kept for mapping */

typedef struct lm_fanout_s lm_fanout_t;

typedef struct fan_part_s {
    lm_fanout_t *fan;
    size_t first, count; /* the slice of the client's input */
    json_t *canon;       /* the request with that slice as input (own reference) */
    lm_call call;
    int call_open;
    lm_ureq_t ureq;
    lm_upstream_t *up; /* running transfer (the pool's until it ends) */
    struct event *timer;
    int status;
    int64_t retry_after; /* -1: none */
    lm_buf_t body;
    int local;       /* the plugin answered itself (ureq_local_response) */
    json_t *data;    /* the translated answer's data, in input order (own reference) */
    json_t *answer;  /* the first part's whole translated answer (own reference) */
    lm_usage usage;  /* as parse_response reported it */
    int ok, timeout; /* how the transfer ended */
    char why[160];
    int has_kerr;   /* failed for a kernel reason (kerr), not the upstream's answer */
    int kerr_retry; /* ... that may go to the next candidate */
    lm_err kerr;
} fan_part_t;

struct lm_fanout_s {
    lm_relay_t *r;
    const lm_fanout_ops_t *ops;
    lm_inst_t *inst; /* the attempt's channel instance (the relay's generation holds it) */
    size_t nparts, ndone;
    size_t bytes;       /* answer bytes buffered over all parts */
    fan_part_t *failed; /* the first part that failed: it decides the request */
    fan_part_t parts[];
};

/* ---- deciding to split ---- */

int lm_fanout_wanted(const lm_relay_t *r)
{
    int max = r->route->inst->plugin->vt.embed_max_inputs; /* 0 for plugins before 1.2 */
    json_t *in = json_object_get(r->canon, "input");
    if (r->op != LM_OP_EMBED || max <= 0 || !json_is_array(in) ||
        json_array_size(in) <= (size_t)max)
        return 0;
    /* an array of numbers is one tokenized input, not many inputs */
    size_t i;
    json_t *v;
    json_array_foreach (in, i, v)
        if (!json_is_string(v) && !json_is_array(v))
            return 0;
    return 1;
}

/* ---- teardown ---- */

/* Cancel every running transfer and unhook the fan-out from its relay, so
 * nothing of it runs again and the relay may be freed without it. */
static void fan_detach(lm_fanout_t *f)
{
    f->r->fan = NULL;
    for (size_t i = 0; i < f->nparts; i++) {
        fan_part_t *p = &f->parts[i];
        if (p->up)
            lm_upstream_cancel(p->up);
        p->up = NULL;
        if (p->timer)
            evtimer_del(p->timer);
    }
}

/* Free a detached fan-out: the plugin's request states first, while the
 * relay (and so the generation holding the plugin) is certainly alive. */
static void fan_free(lm_fanout_t *f)
{
    const lm_provider *vt = &f->inst->plugin->vt;
    for (size_t i = 0; i < f->nparts; i++) {
        fan_part_t *p = &f->parts[i];
        if (p->call_open && vt->req_close) {
            const lm_plugin_t *prev = lm_plugin_enter(f->inst->plugin);
            vt->req_close(f->inst->istate, &p->call);
            lm_plugin_leave(prev);
        }
        if (p->timer)
            event_free(p->timer);
        json_decref(p->canon);
        json_decref(p->data);
        json_decref(p->answer);
        lm_ureq_free(&p->ureq);
        lm_buf_free(&p->body);
    }
    free(f);
}

/* ---- usage ---- */

/* a + b, unknown (-1) when either is */
static int64_t sum_known(int64_t a, int64_t b)
{
    return a < 0 || b < 0 ? -1 : a + b;
}

/* The usage of the answered parts, summed field by field (a field one part
 * did not report is unknown: the settlement estimates it). *answered gets
 * how many parts answered and *est their request bytes / 4. */
static lm_usage answered_usage(const lm_fanout_t *f, size_t *answered, int64_t *est)
{
    lm_usage s = {0, 0, 0, 0, 0};
    *answered = 0;
    *est = 0;
    for (size_t i = 0; i < f->nparts; i++) {
        const fan_part_t *p = &f->parts[i];
        if (p->data == NULL)
            continue;
        (*answered)++;
        *est += (int64_t)p->ureq.body.len / 4;
        s.prompt = sum_known(s.prompt, p->usage.prompt);
        s.completion = sum_known(s.completion, p->usage.completion);
        s.total = sum_known(s.total, p->usage.total);
        s.cached = sum_known(s.cached, p->usage.cached);
        s.reasoning = sum_known(s.reasoning, p->usage.reasoning);
    }
    if (*answered == 0)
        s = (lm_usage)LM_USAGE_UNKNOWN;
    return s;
}

/* ---- joining ---- */

/* The embeddings of one part's answer in input order: by their "index"
 * when those are exactly 0..count-1, else as listed. A new reference, or
 * NULL when the answer holds another number of embeddings or a non-object. */
static json_t *part_data(const json_t *answer, size_t count)
{
    json_t *data = json_object_get(answer, "data");
    if (!json_is_array(data) || json_array_size(data) != count)
        return NULL;
    json_t *slots = json_array();
    for (size_t k = 0; slots && k < count; k++)
        json_array_append_new(slots, json_null());
    int by_index = slots != NULL;
    size_t k;
    json_t *item;
    json_array_foreach (data, k, item) {
        json_t *ix = json_object_get(item, "index");
        json_int_t at = json_is_integer(ix) ? json_integer_value(ix) : -1;
        if (!json_is_object(item)) {
            json_decref(slots);
            return NULL;
        }
        if (at < 0 || (size_t)at >= count || !json_is_null(json_array_get(slots, (size_t)at)))
            by_index = 0;
        else if (by_index)
            json_array_set(slots, (size_t)at, item);
    }
    if (by_index)
        return slots;
    json_decref(slots);
    return json_copy(data);
}

/* The client's answer: the first part's object with every part's data in
 * input order, each "index" the position in the client's input, and the
 * summed usage. New JSON text (free()), or NULL when out of memory. */
static char *join_answer(lm_fanout_t *f, const lm_usage *sum, size_t *len)
{
    json_t *out = json_copy(f->parts[0].answer);
    json_t *data = json_array();
    for (size_t i = 0; out && data && i < f->nparts; i++) {
        size_t k;
        json_t *item;
        json_array_foreach (f->parts[i].data, k, item) {
            json_t *c = json_copy(item); /* shallow: the vectors are shared, not copied */
            json_object_set_new(c, "index", json_integer((json_int_t)(f->parts[i].first + k)));
            json_array_append_new(data, c);
        }
    }
    json_object_set_new(out, "data", data);
    json_object_del(out, "usage"); /* the first part's: the kernel writes the sum */
    lm_usage u = *sum;
    /* the parts were translated as floats: the client's encoding_format applies to the join */
    if (out && lm_response_finish(out, LM_OP_EMBED, f->r->want_b64, &u) < 0) {
        json_decref(out);
        out = NULL;
    }
    char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    *len = text ? strlen(text) : 0;
    return text;
}

/* Every part answered: the joined answer goes out like the single path's
 * (scripts' on_response, the row committed before the reply). */
static void fan_succeed(lm_fanout_t *f)
{
    lm_relay_t *r = f->r;
    const lm_fanout_ops_t *ops = f->ops;
    size_t answered, out_len;
    int64_t est;
    lm_err e;
    lm_usage sum = answered_usage(f, &answered, &est);
    char *out = join_answer(f, &sum, &out_len);
    fan_detach(f);
    fan_free(f);
    r->status = 200;
    ops->route_end(r, LM_ROUTE_OK);
    if (out == NULL) {
        lm_out_err(r, 500, "api_error", NULL, "out of memory");
    } else if (lm_rlua_response(r->lua, &out, &out_len, &e) < 0) {
        lm_out_error(r, &e);
    } else if ((r->usage = sum, lm_settle(r, 0, 1))) {
        r->pending_body = out; /* sent by lm_settle_committed once the row is committed */
        r->pending_len = out_len;
        out = NULL;
    } else {
        lm_relay_to(r, LM_RELAY_DONE);
        r->client_status = 200;
        lm_out_route_header(r);
        if (r->req)
            lm_http_reply(r->req, 200, "application/json", out, out_len, r->id);
    }
    free(out);
}

/* ---- failing ---- */

static void swap_buf(lm_buf_t *a, lm_buf_t *b)
{
    lm_buf_t t = *a;
    *a = *b;
    *b = t;
}

/* The first failed part decides: the others are cancelled and nothing is
 * billed for them. An upstream failure becomes the relay's one transfer
 * (its call, request, status and body) and ends through the single path,
 * so it is mapped, retried and failed over exactly like one call. */
static void fan_fail(lm_fanout_t *f, fan_part_t *p)
{
    lm_relay_t *r = f->r;
    const lm_fanout_ops_t *ops = f->ops;
    int ok = p->ok, timeout = p->timeout, has_kerr = p->has_kerr, retry = p->kerr_retry;
    char why[sizeof(p->why)];
    lm_err e = p->kerr;
    memcpy(why, p->why, sizeof(why));
    lm_log(LM_LOG_INFO, "%s: part %zu of %zu (inputs %zu-%zu) failed; the other parts cancelled",
           r->id, (size_t)(p - f->parts) + 1, f->nparts, p->first, p->first + p->count - 1);
    fan_detach(f);
    r->status = p->status;
    r->up_retry_after = p->retry_after;
    r->whole_body = 1;
    swap_buf(&r->body, &p->body);
    lm_ureq_t u = r->ureq; /* the attempt's (empty) request goes to the part, freed with it */
    r->ureq = p->ureq;
    p->ureq = u;
    r->call = p->call;
    r->call_open = p->call_open;
    p->call_open = 0;
    fan_free(f);
    if (!has_kerr) {
        ops->upstream_done(r, ok, timeout, why); /* may free r */
        return;
    }
    ops->route_end(r, LM_ROUTE_FAIL);
    r->status = e.http_status;
    ops->attempt_failed(r, &e, retry);
    lm_relay_maybe_free(r);
}

/* A part ended; decide once every part answered or one failed. */
static void fan_step(lm_fanout_t *f)
{
    lm_relay_t *r = f->r;
    if (r->req == NULL) {
        lm_fanout_client_gone(r);
        lm_relay_maybe_free(r);
    } else if (f->failed) {
        fan_fail(f, f->failed);
    } else if (f->ndone == f->nparts) {
        fan_succeed(f);
        lm_relay_maybe_free(r);
    }
}

/* ---- one part's transfer ---- */

static void arm(fan_part_t *p, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
}

/* Like a single non-stream call: the idle timeout between reads, within
 * request_timeout of the attempt's start. */
static int next_timeout_ms(const fan_part_t *p)
{
    const lm_chan_conf_t *ch = p->fan->inst->chan;
    int ms = ch->idle_timeout_ms;
    if (ch->request_timeout_ms > 0) {
        int64_t left = (int64_t)p->fan->r->attempt_start_ms + ch->request_timeout_ms -
                       (int64_t)(uint64_t)lm_clock_ms();
        if (left < ms)
            ms = left > 1 ? (int)left : 1;
    }
    return ms;
}

static void part_kerr(fan_part_t *p, int status, const char *code, const char *msg, int retry)
{
    p->has_kerr = 1;
    p->kerr_retry = retry;
    lm_error_set(&p->kerr, -1, status, "api_error", code, msg);
}

/* Upstream bytes of one part (its whole answer, or an error body). */
static size_t part_data_in(void *arg, int status, int whole_json, const char *s, size_t n)
{
    fan_part_t *p = arg;
    lm_fanout_t *f = p->fan;
    (void)whole_json;
    p->status = status;
    if (f->r->attempt_ttft_ms < 0)
        f->r->attempt_ttft_ms = (int64_t)((uint64_t)lm_clock_ms() - f->r->attempt_start_ms);
    arm(p, next_timeout_ms(p));
    int good = status >= 200 && status < 300;
    if (!good && p->body.len + n > LM_FANOUT_ERROR_MAX)
        return n; /* error bodies: keep the first part for mapping */
    if (good && f->bytes + n > LM_FANOUT_RESPONSE_MAX) {
        part_kerr(p, 502, "upstream_error", "upstream response too large", 0);
        return 0; /* abort the transfer */
    }
    if (lm_buf_add(&p->body, s, n) < 0) {
        part_kerr(p, 500, NULL, "out of memory", 0);
        return 0;
    }
    f->bytes += n;
    return n;
}

/* A 2xx answer through the plugin's parse_response; its embeddings are
 * kept in input order. 0, or -1 when it is not an answer (a failure the
 * single path then maps from the same body). */
static int part_translate(fan_part_t *p)
{
    char *out = NULL;
    size_t out_len = 0;
    lm_err e;
    int rc = lm_response_translate(p->fan->inst, &p->call, p->status,
                                   (lm_str){lm_buf_cstr(&p->body), p->body.len}, 0, &out, &out_len,
                                   &p->usage, &e);
    if (rc < 0) {
        free(out);
        return -1;
    }
    json_t *answer = json_loadb(out, out_len, 0, NULL);
    free(out);
    p->data = part_data(answer, p->count);
    if (p->data == NULL) { /* a 200 that is not this part's answer: like a 502 (IN-11) */
        char msg[128];
        snprintf(msg, sizeof(msg), "upstream answered %zu inputs with another number of embeddings",
                 p->count);
        part_kerr(p, 502, "upstream_error", msg, 1);
        json_decref(answer);
        return -1;
    }
    if (p == &p->fan->parts[0])
        p->answer = answer; /* its "model" and other members are the client's */
    else
        json_decref(answer);
    return 0;
}

/* One part's transfer ended (or was answered locally): record how. The
 * first failure is the one that counts. */
static void part_record(fan_part_t *p, int ok, int timeout, const char *why)
{
    lm_fanout_t *f = p->fan;
    p->up = NULL;
    if (p->timer)
        evtimer_del(p->timer);
    f->ndone++;
    p->ok = ok && !p->has_kerr;
    p->timeout = timeout;
    snprintf(p->why, sizeof(p->why), "%s", why ? why : "");
    int good = p->ok && p->status >= 200 && p->status < 300;
    if ((!good || part_translate(p) < 0) && f->failed == NULL)
        f->failed = p;
}

/* A transfer ended: record it, then let the fan-out decide. */
static void part_end(fan_part_t *p, int ok, int timeout, const char *why)
{
    part_record(p, ok, timeout, why);
    fan_step(p->fan);
}

static void part_done_cb(void *arg, int ok, int timeout, const char *why)
{
    part_end(arg, ok, timeout, why);
}

static void part_retry_after_cb(void *arg, int64_t seconds)
{
    ((fan_part_t *)arg)->retry_after = seconds;
}

static const lm_upstream_sink_t part_sink = {part_data_in, part_done_cb, part_retry_after_cb};

static void part_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    fan_part_t *p = arg;
    (void)fd, (void)what;
    if (p->up == NULL)
        return;
    lm_upstream_cancel(p->up);
    p->up = NULL;
    part_end(p, 0, 1, "upstream timeout");
}

/* ---- building ---- */

/* The part's request: the client's request with its slice as input. */
static int part_canon(lm_fanout_t *f, fan_part_t *p)
{
    json_t *in = json_object_get(f->r->canon, "input");
    json_t *slice = json_array();
    p->canon = json_copy(f->r->canon); /* shallow: the other members are shared */
    if (p->canon == NULL || slice == NULL) {
        json_decref(slice);
        return -1;
    }
    for (size_t k = p->first; k < p->first + p->count; k++)
        json_array_append(slice, json_array_get(in, k));
    return json_object_set_new(p->canon, "input", slice);
}

/* Translate one part for the channel, on its own call: raw_body stays
 * empty, the client's bytes hold every input. Returns 0, LM_AGAIN (a side
 * value is needed: p->ureq.side says which) or < 0 with e filled. */
static int part_build(lm_fanout_t *f, fan_part_t *p, lm_err *e)
{
    lm_relay_t *r = f->r;
    const lm_provider *vt = &f->inst->plugin->vt;
    memset(e, 0, sizeof(*e));
    if (part_canon(f, p) < 0)
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    p->call = r->call;
    p->call.raw_body = (lm_str){NULL, 0};
    p->call.rstate = NULL;
    p->ureq.inst = f->inst;
    p->ureq.chan = f->inst->chan; /* its address policy (SS-7) */
    p->call_open = 1;
    const lm_plugin_t *prev = lm_plugin_enter(f->inst->plugin);
    int rc = vt->build_request(f->inst->istate, &p->call, p->canon, &p->ureq, e);
    lm_plugin_leave(prev);
    if (rc == LM_AGAIN && p->ureq.side.name[0])
        return LM_AGAIN;
    if (rc >= 0 && p->ureq.side.fetch && /* background refresh of a value near its end */
        lm_side_fetch_start(r->w, r->rt, f->inst, p->ureq.side.name, e) < 0)
        lm_log(LM_LOG_WARN, "%s: background credential refresh failed to start", r->id);
    if (rc == LM_AGAIN || rc < 0) {
        if (rc == LM_AGAIN || e->http_status == 0) /* LM_AGAIN without a side value: a bug */
            lm_error_set(e, LM_ERR, 400, "invalid_request_error", NULL,
                         "the request cannot be sent to this provider");
        return rc < 0 ? rc : LM_ERR;
    }
    if (lm_rlua_upstream(r->lua, r->route, r->attempt, &p->ureq, e) < 0)
        return LM_ERR;
    if (!p->ureq.local_status && p->ureq.url.len == 0)
        return lm_error_set(e, LM_ERR, 500, "api_error", "plugin_error",
                            "plugin built no upstream URL");
    return 0;
}

static lm_fanout_t *fan_new(lm_relay_t *r, const lm_fanout_ops_t *ops, size_t n, size_t max)
{
    size_t nparts = (n + max - 1) / max;
    lm_fanout_t *f = calloc(1, sizeof(*f) + nparts * sizeof(f->parts[0]));
    if (f == NULL)
        return NULL;
    f->r = r;
    f->ops = ops;
    f->inst = r->route->inst;
    f->nparts = nparts;
    for (size_t i = 0; i < nparts; i++) {
        fan_part_t *p = &f->parts[i];
        p->fan = f;
        p->first = i * max;
        p->count = n - p->first < max ? n - p->first : max;
        p->retry_after = -1;
        p->usage = (lm_usage)LM_USAGE_UNKNOWN;
        lm_ureq_init(&p->ureq);
    }
    r->fan = f;
    return f;
}

/* Build every part; on failure the fan-out is freed (r->fan NULL). */
static int fan_build(lm_fanout_t *f, lm_err *e)
{
    lm_relay_t *r = f->r;
    for (size_t i = 0; i < f->nparts; i++) {
        fan_part_t *p = &f->parts[i];
        int rc = part_build(f, p, e);
        if (rc == LM_AGAIN)
            r->ureq.side = p->ureq.side; /* the caller waits for it, then builds again */
        if (rc != 0) {
            fan_detach(f);
            fan_free(f);
            return rc;
        }
    }
    return 0;
}

/* Start one part's transfer (a part the plugin answered itself ends at
 * once). Returns 0, or -1 with why filled. */
static int part_send(fan_part_t *p, char *why, size_t whylen)
{
    lm_fanout_t *f = p->fan;
    const lm_chan_conf_t *ch = f->inst->chan;
    if (p->ureq.local_status) {
        p->status = p->ureq.local_status;
        swap_buf(&p->body, &p->ureq.body); /* the answer is the body it set */
        p->local = 1;
        return 0;
    }
    p->timer = evtimer_new(f->r->w->base, part_timeout_cb, p);
    if (p->timer == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    p->up = lm_upstream_start(f->r->w->up, &p->ureq, ch->connect_timeout_ms, 0, &part_sink, p, why,
                              whylen);
    if (p->up == NULL)
        return -1;
    arm(p, ch->request_timeout_ms > 0 && ch->request_timeout_ms < ch->first_byte_timeout_ms
               ? ch->request_timeout_ms
               : ch->first_byte_timeout_ms);
    return 0;
}

/* Take the channel's in-flight slot for the whole fan-out (one attempt).
 * Returns 0, or 1 when the channel is at its cap: the fan-out is freed and
 * the request went to the next candidate or was answered 503 (FT-8). */
static int fan_admit(lm_fanout_t *f)
{
    lm_relay_t *r = f->r;
    const lm_fanout_ops_t *ops = f->ops;
    const lm_route_t *route = r->route;
    if (route->stats == NULL || lm_route_begin(route->stats, (int64_t)(uint64_t)lm_clock_ms()) == 0)
        return 0;
    fan_detach(f);
    fan_free(f);
    if (r->cand + 1 < r->ncands) {
        r->cand++;
        r->attempt--;
        ops->attempt_start(r);
        return 1;
    }
    lm_out_err(r, 503, "api_error", "channel_busy",
               "every channel for this model is at its concurrency limit");
    return 1;
}

/* Send every part; each ends through part_end. Local answers are recorded
 * after the loop, so the decision never runs while parts are starting. */
static void fan_send(lm_fanout_t *f)
{
    lm_relay_t *r = f->r;
    char why[256];
    r->route_begun = r->route->stats != NULL;
    r->attempt_start_ms = (uint64_t)lm_clock_ms();
    r->attempt_ttft_ms = -1;
    lm_relay_to(r, LM_RELAY_UPSTREAM);
    for (size_t i = 0; i < f->nparts; i++) {
        if (part_send(&f->parts[i], why, sizeof(why)) < 0) {
            const lm_fanout_ops_t *ops = f->ops;
            fan_detach(f);
            fan_free(f);
            ops->route_end(r, LM_ROUTE_FAIL);
            lm_out_err(r, 502, "api_error", "upstream_error", why);
            return;
        }
    }
    size_t local = 0;
    for (size_t i = 0; i < f->nparts; i++)
        if (f->parts[i].local) {
            part_record(&f->parts[i], 1, 0, "");
            local++;
        }
    if (local)
        fan_step(f); /* may free f and r */
}

int lm_fanout_start(lm_relay_t *r, const lm_fanout_ops_t *ops)
{
    size_t n = json_array_size(json_object_get(r->canon, "input"));
    size_t max = (size_t)r->route->inst->plugin->vt.embed_max_inputs;
    lm_err e;
    if ((n + max - 1) / max > LM_FANOUT_MAX_PARTS) {
        lm_err_set(&e, -1, 400, "invalid_request_error", "too_many_inputs",
                   "'input' has %zu items; this model takes at most %zu per upstream call and %d "
                   "calls per request (%zu items)",
                   n, max, LM_FANOUT_MAX_PARTS, max * LM_FANOUT_MAX_PARTS);
        return lm_out_error(r, &e);
    }
    lm_fanout_t *f = fan_new(r, ops, n, max);
    if (f == NULL)
        return lm_out_err(r, 500, "api_error", NULL, "out of memory");
    int rc = fan_build(f, &e);
    if (rc == LM_AGAIN)
        return LM_AGAIN;
    if (rc < 0)
        return lm_out_error(r, &e);
    size_t nparts = f->nparts;
    if (fan_admit(f))
        return 0;
    lm_log(LM_LOG_INFO, "%s: %zu inputs split into %zu upstream calls on channel %s", r->id, n,
           nparts, r->route->inst->chan->name);
    fan_send(f);
    return 0;
}

/* ---- the client left, or the gateway stops ---- */

void lm_fanout_client_gone(lm_relay_t *r)
{
    lm_fanout_t *f = r->fan;
    size_t answered;
    int64_t est;
    if (f == NULL)
        return;
    lm_usage sum = answered_usage(f, &answered, &est);
    size_t nparts = f->nparts;
    fan_detach(f);
    fan_free(f);
    if (answered == 0) {
        lm_log(LM_LOG_INFO, "%s: client gone; %zu upstream calls cancelled, none had answered",
               r->id, nparts);
        return;
    }
    r->usage = sum;
    r->prompt_est = est; /* an estimate covers the answered parts only */
    r->status = 200;
    lm_settle(r, 1, 0);
    lm_log(LM_LOG_INFO,
           "%s: client gone; %zu of %zu upstream calls had answered: billed (charge "
           "%lld)",
           r->id, answered, nparts, (long long)r->charge);
}

void lm_fanout_cancel(lm_relay_t *r)
{
    lm_fanout_t *f = r->fan;
    if (f == NULL)
        return;
    fan_detach(f);
    fan_free(f);
}
