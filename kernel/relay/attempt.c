/* attempt.c - upstream attempts: build the provider request, send it, read
 * the answer (timers, stream or whole body), retry or fail over. Thread:
 * the relay's worker. r->up belongs to the pool until upstream_done. */
#include "relay/attempt.h"
#include "core/clock.h"
#include "plugin/endpoints.h"
#include "proto/completions.h"
#include "relay/audio.h"

#include "core/errors.h"
#include "core/log.h"
#include "proto/canon.h"
#include "proto/response.h"
#include "relay/cache_rec.h"
#include "relay/fanout.h"
#include "relay/output.h"
#include "relay/passthru.h"
#include "relay/poll.h"
#include "relay/settle.h"
#include "relay/side_fetch.h"
#include "relay/trace.h"
#include "route/metrics.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LM_RESPONSE_MAX   (64u * 1024 * 1024) /* whole non-stream upstream body */
#define LM_ERROR_BODY_MAX (1024u * 1024)      /* upstream error body kept for mapping */

static void upstream_done(lm_relay_t *r, int ok, int timeout, const char *why);

/* ---- timers ---- */

static void arm_timer(lm_relay_t *r, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (r->timer)
        evtimer_add(r->timer, &tv);
}

/* Streams get only the idle timeout (no absolute cap, FT-4), and so does
 * audio once it streams to the client (headers_sent); a whole (non-stream)
 * answer must also arrive within request_timeout. */
static int next_timeout_ms(const lm_relay_t *r)
{
    const lm_chan_conf_t *ch = r->route->inst->chan;
    int ms = ch->idle_timeout_ms;
    if (!r->call.stream && !r->headers_sent && ch->request_timeout_ms > 0) {
        int64_t left = (int64_t)r->attempt_start_ms + ch->request_timeout_ms -
                       (int64_t)(uint64_t)lm_clock_ms();
        if (left < ms)
            ms = left > 1 ? (int)left : 1;
    }
    return ms;
}

int lm_attempt_background(const lm_relay_t *r)
{
    /* Speech streams its audio as it comes: a client gone before the first
     * byte is a stream left before its first event (relay.c on_reap). */
    return r->req == NULL && !r->call.stream && r->op != LM_OP_AUDIO_SPEECH &&
           r->state == LM_RELAY_UPSTREAM;
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
    upstream_done(r, 0, 1, r->headers_sent ? "upstream idle timeout" : "upstream timeout");
}

/* ---- upstream data ---- */

/* The client's stream starts with the first event we have for it, not
 * with the upstream's first bytes: until then a failure is still an HTTP
 * error and may go to the next channel (FT-1). */
static void start_client_stream(lm_relay_t *r)
{
    r->headers_sent = 1;
    lm_relay_to(r, LM_RELAY_STREAMING);
    r->ttft_ms = (int64_t)((uint64_t)lm_clock_ms() - r->t_start_ms);
    lm_out_route_header(r);
    lm_http_stream_start(r->req, r->id);
}

static int has_word(const char *s, const char *w)
{
    return s && strstr(s, w) != NULL;
}

/* An error event before any output (a "lazy" error in a 200) is the HTTP
 * error it stands for: its type or code says whether the provider refused
 * the request itself (4xx-like: the next channel would refuse it too) or
 * was limited, overloaded or broken (retryable, like a 429/5xx). Refusals
 * are looked for first: plugins fill a missing type or code with a
 * generic server-side one (api_error, upstream_error). */
static void lazy_error(lm_relay_t *r, const lm_err *src)
{
    static const struct {
        const char *word;
        int status;
    } words[] = {
        {"rate_limit", 429},     {"too_many", 429},       {"authentication", 401},
        {"permission", 403},     {"not_found", 404},      {"invalid", 400},
        {"context_length", 400}, {"content_filter", 400}, {"content_policy", 400},
        {"server", 503},         {"overload", 503},       {"unavailable", 503},
        {"timeout", 503},        {"internal", 503},       {"capacity", 503},
        {"busy", 503},           {"api_error", 503},      {"upstream_error", 503},
    };
    lm_err e = *src;
    /* Nothing recognisable: the plugin's 4xx if it chose one, else a refusal
     * (an unexplained error is not worth another channel). */
    int status = e.http_status >= 400 && e.http_status < 500 ? e.http_status : 400;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (has_word(e.type, words[i].word) || has_word(e.code, words[i].word)) {
            status = words[i].status;
            if (status == 503 && e.http_status >= 500) /* the plugin's own 5xx stands */
                status = e.http_status;
            break;
        }
    e.http_status = status;
    r->lazy_err = e;
    r->lazy_failed = 1;
    r->status = status;    /* the attempt's row and the channel's health see the real error */
    lm_buf_reset(&r->out); /* events before the error were never sent */
}

static size_t on_stream_data(lm_relay_t *r, const char *p, size_t n)
{
    if (r->headers_sent && lm_http_out_pending(r->req) > r->rt->conf->stream_high_water) {
        r->paused = 1; /* slow reader: let the kernel socket buffer drain */
        return LM_UP_PAUSE;
    }
    r->st_fed = 1;
    int rc = r->pt ? lm_passthru_feed(r, p, n) : lm_stream_feed(&r->st, p, n);
    if (rc < 0 && !r->headers_sent) {
        lazy_error(r, &r->st.err);
        return 0; /* abort the transfer; upstream_done fails the attempt over */
    }
    if (!r->headers_sent && (r->out.len > 0 || rc == LM_DONE))
        start_client_stream(r);
    if (rc < 0) {
        lm_out_stream_end(r, &r->st.err);
        return 0; /* abort the transfer */
    }
    if (rc == LM_DONE) {
        lm_settle_stream_ok(r);
        return n;
    }
    if (r->headers_sent)
        lm_out_flush(r);
    return n;
}

/* From the upstream pool. whole_json: the upstream sent application/json
 * (a stream request answered with one body, e.g. an error in a 200).
 * Returns n (consumed), 0 (abort the transfer) or LM_UP_PAUSE (re-deliver
 * later). */
static size_t upstream_data(lm_relay_t *r, int status, int whole_json, const char *p, size_t n)
{
    if (r->req == NULL && !lm_attempt_background(r))
        return 0; /* client gone from a stream: abort, stop paying for tokens */
    if (r->state == LM_RELAY_DONE || r->state == LM_RELAY_SETTLING)
        return n; /* trailing bytes after the end marker */
    r->status = status;
    if (r->attempt_ttft_ms < 0)
        r->attempt_ttft_ms = (int64_t)((uint64_t)lm_clock_ms() - r->attempt_start_ms);
    arm_timer(r, next_timeout_ms(r));
    size_t taken;
    if (r->audio && lm_audio_data(r, status, p, n, &taken)) /* speech, transcript streams */
        return taken;
    /* An SSE body never starts with '{': that is one JSON object (an error
     * in a 200, as Baidu v1 sends), however it is labelled. */
    int json_first = !r->st_fed && !r->whole_body && n > 0 && p[0] == '{' &&
                     r->route->inst->plugin->vt.framing == LM_FRAME_SSE;
    if (status >= 200 && status < 300 && r->call.stream && !whole_json && !r->whole_body &&
        !json_first)
        return on_stream_data(r, p, n);
    r->whole_body = 1;
    size_t cap = (status >= 200 && status < 300) ? LM_RESPONSE_MAX : LM_ERROR_BODY_MAX;
    if (r->body.len + n > cap) {
        if (status >= 200 && status < 300) {
            lm_out_err(r, 502, "api_error", "upstream_error", "upstream response too large");
            return 0;
        }
        return n; /* error bodies: keep the first part for mapping */
    }
    if (lm_buf_add(&r->body, p, n) < 0) {
        lm_out_err(r, 500, "api_error", NULL, "out of memory");
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
    lm_shared_hold(r->w->svc->shared, r->route->inst->chan->name,
                   (int64_t)(uint64_t)lm_clock_ms() + s * 1000); /* other instances wait too */
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
    lm_attempt_record_failed(r, e->http_status);
    r->attempt++;
    r->side_waits = 0;
    lm_attempt_build(r);
    return 1;
}

static void attempt_failed(lm_relay_t *r, lm_err *e, int kernel_retry);
static void deliver(lm_relay_t *r, char *out, size_t out_len, const lm_usage *uin);
static void poll_failed(lm_relay_t *r, lm_err *e);

/* An asynchronous task ends through the same steps (poll.h). */
static const lm_poll_ops_t poll_ops = {deliver, poll_failed};

/* The canonical answer (after on_response: scripts see the canonical
 * form) in the client's API. *out is replaced; -1 on no memory. */
static int api_answer(lm_relay_t *r, char **out, size_t *out_len, const lm_usage *usage)
{
    lm_usage u = *usage;
    if (u.prompt < 0) /* what the row will bill: the estimate without a report */
        u.prompt = r->prompt_est;
    char *t = r->api->answer(*out, *out_len, &u, out_len);
    free(*out);
    *out = t;
    return t ? 0 : -1;
}

/* A whole answer (2xx). Channel health is decided here, once the body is
 * known to translate: a 200 that is not an answer is a failed attempt and
 * may go to the next channel like a 5xx (IN-11). */
static void finish_whole(lm_relay_t *r, int status, lm_str body, lm_buf_t *own)
{
    char *out = NULL;
    size_t out_len = 0;
    lm_usage usage;
    lm_err e;
    if (r->audio) { /* audio answers go back as they came (audio.h) */
        lm_attempt_route_end(r, LM_ROUTE_OK);
        lm_audio_finish(r, body);
        return;
    }
    int rc;
    if (r->pt)
        rc = lm_passthru_whole(r, body, &out, &out_len, &usage, &e);
    else if (own) /* a verbatim answer takes own's bytes instead of a copy */
        rc = lm_response_translate_buf(r->route->inst, &r->call, status, own, r->want_b64, &out,
                                       &out_len, &usage, &e);
    else
        rc = lm_response_translate(r->route->inst, &r->call, status, body, r->want_b64, &out,
                                   &out_len, &usage, &e);
    lm_attempt_route_end(r, rc < 0 && e.http_status >= 500 ? LM_ROUTE_FAIL : LM_ROUTE_OK);
    if (rc == LM_PENDING) { /* an asynchronous task: its answer comes by polling (poll.h) */
        lm_poll_start(r, &poll_ops);
        return;
    }
    if (rc >= 0 && !r->pt) /* the canonical answer, before on_response (cache.h) */
        lm_cache_put_whole(r, out, out_len, &usage);
    if (rc >= 0 && r->trace.collect) /* its finish reason (trace.h) */
        lm_trace_answer(r, out, out_len);
    if (rc == LM_ERETRY && credential_retry(r, &e)) {
        free(out);
        return;
    }
    if (rc < 0) {
        lm_log(LM_LOG_INFO, "%s: upstream %d -> %d %s", r->id, status, e.http_status, e.code);
        if (r->ureq.local_status) {
            lm_out_error(r, &e);
        } else {
            r->status = e.http_status; /* the attempt's row says why it failed */
            attempt_failed(r, &e, e.http_status == 429 || e.http_status >= 500);
        }
        free(out);
        return;
    }
    deliver(r, out, out_len, &usage);
}

/* A translated whole answer (stolen) through on_response, the client's API
 * and the ledger, to the client. */
static void deliver(lm_relay_t *r, char *out, size_t out_len, const lm_usage *uin)
{
    lm_usage usage = *uin;
    lm_err e;
    if (r->req == NULL) { /* a task's answer after its client left: billed, not sent (QB-6) */
        free(out);
        r->usage = usage;
        lm_settle(r, 1, 0);
        lm_log(LM_LOG_INFO, "%s: client gone; upstream task's answer billed (charge %lld)", r->id,
               (long long)r->charge);
        lm_relay_maybe_free(r);
        return;
    }
    if (lm_rlua_response(r->lua, &out, &out_len, &e) < 0) {
        lm_out_error(r, &e);
    } else if (!lm_inbound_is_chat(r->api) && !r->pt && api_answer(r, &out, &out_len, &usage) < 0) {
        lm_out_err(r, 500, "api_error", NULL, "out of memory");
    } else if ((r->usage = usage, lm_settle(r, 0, 1))) {
        r->pending_body = out; /* sent by lm_settle_committed once the row is committed */
        r->pending_len = out_len;
        out = NULL;
    } else {
        lm_relay_to(r, LM_RELAY_DONE);
        r->client_status = 200;
        r->usage = usage;
        lm_out_route_header(r);
        if (r->req)
            lm_http_reply(r->req, 200, "application/json", out, out_len, r->id);
    }
    free(out);
}

/* The attempt is over for channel health: once per begun attempt. */
void lm_attempt_route_end(lm_relay_t *r, int outcome)
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
    if (ev == LM_ROUTE_EV_EJECT_CONSECUTIVE || ev == LM_ROUTE_EV_EJECT_RATE ||
        ev == LM_ROUTE_EV_PROBE_FAILED) { /* tell other instances */
        lm_route_snap_t snap;
        lm_route_snapshot(r->route->stats, (int64_t)now, &snap);
        lm_shared_hold(r->w->svc->shared, r->route->inst->chan->name, snap.ejected_until);
    }
}

/* Statuses where the upstream did not serve the request and says so: 429,
 * 5xx, and a redirect (not followed, so the channel is misconfigured). */
static int upstream_refused(int status)
{
    return status == 429 || status >= 500 || (status >= 300 && status < 400);
}

/* What the attempt says about the channel: its failures, not the client's. */
static int attempt_outcome(const lm_relay_t *r, int ok, int timeout, int background)
{
    if (r->req == NULL && !background)
        return LM_ROUTE_CANCEL;
    if (r->lazy_failed) /* we aborted the transfer: its error event decides */
        ok = 1;
    if (!ok || timeout)
        return LM_ROUTE_FAIL;
    return upstream_refused(r->status) ? LM_ROUTE_FAIL : LM_ROUTE_OK;
}

/* Whether a failed attempt may go to the next channel: only while nothing
 * reached the client, only for failures where the upstream did not take
 * the request (no connection) or said so (429, 5xx, 3xx); never after a timeout
 * once the request was sent (FT-3). Scripts may ask for it (on_error). */
static int retryable(const lm_relay_t *r, int ok, int timeout)
{
    if (!ok)
        return !timeout && r->status == 0;
    return upstream_refused(r->status);
}

/* Every upstream attempt has a ledger row (linked by the request id); a
 * failed one costs nothing and its status says why. */
void lm_attempt_record_failed(lm_relay_t *r, int status)
{
    lm_usage_row_t row = {.request_id = r->id,
                          .attempt = r->attempt,
                          .channel = r->route->inst->chan->name,
                          .model_asked = r->client_model,
                          .model_served = r->upstream_model,
                          .latency_ms = (int64_t)((uint64_t)lm_clock_ms() - r->attempt_start_ms),
                          .ttft_ms = -1,
                          .status = r->status ? r->status : status,
                          .client_aborted = r->req == NULL,
                          .api = r->api->name};
    lm_gov_record_attempt(&r->gov, &row);
    lm_trace_attempt_end(r, row.status);
}

/* The attempt failed before the client saw a byte: map the error, let the
 * scripts look at it, and try the next candidate when allowed. */
static void attempt_failed(lm_relay_t *r, lm_err *e, int kernel_retry)
{
    lm_attempt_record_failed(r, e->http_status);
    lm_metrics_std_t *m = r->w->svc->metrics;
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
        lm_attempt_start(r);
        return;
    }
    if (r->up_retry_after >= 0 && r->req && (e->http_status == 429 || e->http_status == 503)) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)r->up_retry_after);
        lm_http_add_header(r->req, "Retry-After", v);
    }
    lm_out_error(r, e);
}

/* A polled task failed: the upstream took the request, so only a script
 * sends it to the next channel. */
static void poll_failed(lm_relay_t *r, lm_err *e)
{
    if (r->req ==
        NULL) { /* polled on for a client that left (poll.h): a failed task costs nothing */
        lm_attempt_record_failed(r, e->http_status);
        lm_relay_maybe_free(r);
        return;
    }
    attempt_failed(r, e, 0);
}

static void whole_done(lm_relay_t *r)
{
    int status = r->status;
    lm_str body = {lm_buf_cstr(&r->body), r->body.len};
    if (status >= 200 && status < 300) {
        finish_whole(r, status, body, &r->body);
        return;
    }
    char *out = NULL;
    lm_usage usage;
    lm_err e;
    if (status >= 300 && status < 400) {
        /* Redirects are not followed (CURLOPT_FOLLOWLOCATION 0: a base_url
         * must not wander to another host); a plugin's error map would call
         * it a provider error, so name the real status here. */
        char msg[96];
        snprintf(msg, sizeof(msg), "upstream answered HTTP %d (redirects are not followed)",
                 status);
        lm_error_set(&e, -1, 502, "api_error", "upstream_error", msg);
        lm_log(LM_LOG_WARN, "%s: upstream %d -> 502 upstream_error: redirects are not followed",
               r->id, status);
        attempt_failed(r, &e, 1); /* the request was not processed there */
        return;
    }
    size_t out_len;
    int rc = lm_response_translate(r->route->inst, &r->call, status, body, r->want_b64, &out,
                                   &out_len, &usage, &e);
    free(out);
    if (rc == LM_ERETRY && credential_retry(r, &e))
        return;
    honour_retry_after(r);
    lm_log(LM_LOG_INFO, "%s: upstream %d -> %d %s", r->id, status, e.http_status, e.code);
    attempt_failed(r, &e, retryable(r, 1, 0));
}

static void stream_done(lm_relay_t *r)
{
    int rc = r->pt ? lm_passthru_finish(r) : lm_stream_finish(&r->st);
    lm_err e;
    if (!r->headers_sent) {
        if (rc < 0) {
            lazy_error(r, &r->st.err);
            lm_attempt_route_end(r, attempt_outcome(r, 1, 0, 0));
            attempt_failed(r, &r->lazy_err, retryable(r, 1, 0));
            return;
        }
        if (r->out.len == 0 && rc != LM_DONE && !r->st.emit.finish_seen) {
            lm_attempt_route_end(r, LM_ROUTE_FAIL);
            /* a 200 with no event in it (nothing, comments, bytes that are
             * not SSE) is a bad gateway like a 502, and the client has seen
             * nothing: the next channel may answer (FT-1, IN-11) */
            lm_error_set(&e, -1, 502, "api_error", "upstream_error",
                         "upstream sent an empty stream");
            r->status = 502;
            attempt_failed(r, &e, 1);
            return;
        }
        start_client_stream(r);
    }
    lm_attempt_route_end(r, LM_ROUTE_OK); /* the channel answered; no-op when ended before */
    if (rc < 0) {
        lm_out_stream_end(r, &r->st.err);
    } else if (rc == LM_DONE || r->st.emit.finish_seen) {
        lm_settle_stream_ok(r); /* a clean end of body after a finish ends the stream */
    } else {
        /* The body ended before the provider's end marker and before any
         * finish_reason: the answer is truncated, say so (7.5). */
        lm_out_flush(r);
        lm_error_set(&e, -1, 502, "api_error", "upstream_error",
                     "upstream stream ended before the answer was complete");
        lm_out_stream_end(r, &e);
    }
}

/* The client left a non-stream request; the transfer ran on so that the
 * row says what the provider bills for it (QB-6): an answer is billed
 * from its usage (the prompt estimate without one) with the
 * client_aborted mark; a failure is a failed attempt's row and costs
 * nothing. The client is not answered: it is gone. */
static void background_done(lm_relay_t *r, int ok, const char *why)
{
    char *out = NULL;
    size_t out_len;
    lm_usage usage;
    lm_err e;
    lm_str body = {lm_buf_cstr(&r->body), r->body.len};
    if (r->audio && ok && r->status >= 200 && r->status < 300) {
        lm_audio_background(r, body); /* billed from its duration (audio.h) */
        return;
    }
    int rc = !ok || r->status < 200 || r->status >= 300 ? LM_ERR
             : r->pt ? lm_passthru_whole(r, body, &out, &out_len, &usage, &e)
                     : lm_response_translate(r->route->inst, &r->call, r->status, body, r->want_b64,
                                             &out, &out_len, &usage, &e);
    free(out);
    if (rc == LM_PENDING) { /* the provider makes it anyway: poll it so that its row bills it */
        lm_poll_start(r, &poll_ops);
        return;
    }
    if (rc < 0) {
        lm_log(LM_LOG_INFO, "%s: client gone; upstream answer failed (%d, %s): nothing billed",
               r->id, r->status, ok ? "not an answer" : why);
        lm_attempt_record_failed(r, r->status ? r->status : 502);
        return;
    }
    r->usage = usage;
    lm_settle(r, 1, 0);
    lm_log(LM_LOG_INFO, "%s: client gone; upstream answer billed (charge %lld)", r->id,
           (long long)r->charge);
}

/* The transfer ended: ok (clean end of body), or an error; timeout says
 * the failure was a timeout. The pool has already released the handle. */
static void upstream_done(lm_relay_t *r, int ok, int timeout, const char *why)
{
    lm_err e;
    int background = lm_attempt_background(r);
    r->up = NULL;
    if (r->timer)
        evtimer_del(r->timer);
    /* A 2xx answer's health waits until it is known to be one: translated
     * (finish_whole) or holding an event (stream_done). */
    int defer = ok && r->req && r->state != LM_RELAY_DONE && r->state != LM_RELAY_SETTLING &&
                !r->lazy_failed && r->status >= 200 && r->status < 300;
    if (!defer)
        lm_attempt_route_end(r, attempt_outcome(r, ok, timeout, background));
    if (background) {
        background_done(r, ok, why);
        lm_relay_maybe_free(r);
        return;
    }
    if (r->req && r->state != LM_RELAY_DONE && r->state != LM_RELAY_SETTLING) {
        int success = r->status >= 200 && r->status < 300;
        if (r->lazy_failed) {
            lm_log(LM_LOG_INFO, "%s: upstream 200 with an error event first -> %d %s", r->id,
                   r->status, r->lazy_err.code);
            attempt_failed(r, &r->lazy_err, retryable(r, 1, 0));
        } else if (!ok && !r->headers_sent) {
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
            lm_out_stream_end(r, &e);
        } else if (r->call.stream && success && !r->whole_body) {
            stream_done(r);
        } else {
            whole_done(r);
        }
    }
    lm_relay_maybe_free(r);
}

/* ---- sending ---- */

static int run_local(lm_relay_t *r)
{
    lm_str body = {lm_buf_cstr(&r->ureq.body), r->ureq.body.len};
    int status = r->ureq.local_status;
    r->status = status;
    if (r->call.stream && status >= 200 && status < 300) {
        r->headers_sent = 1;
        lm_relay_to(r, LM_RELAY_STREAMING);
        lm_http_stream_start(r->req, r->id);
        int rc = lm_stream_feed(&r->st, body.p, body.n);
        if (rc == LM_OK)
            rc = lm_stream_finish(&r->st);
        if (rc < 0)
            lm_out_stream_end(r, &r->st.err);
        else
            lm_settle_stream_ok(r);
        return 0;
    }
    finish_whole(r, status, body, NULL);
    return 0;
}

/* Forget what the previous attempt left (plugin request state, buffers). */
void lm_attempt_reset(lm_relay_t *r)
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
    if (r->api_st) /* a new attempt's stream starts over in the client's API too */
        r->api->stream_free(r->api_st);
    r->api_st = NULL;
    lm_passthru_free(r);
    lm_poll_free(r);
    lm_ureq_free(&r->ureq);
    lm_ureq_init(&r->ureq);
    lm_buf_reset(&r->body);
    r->status = 0;
    r->whole_body = 0;
    r->st_fed = 0;
    r->lazy_failed = 0;
    lm_buf_reset(&r->out);
    r->up_retry_after = -1;
    lm_cache_rec_reset(r); /* only the answering attempt's chunks are stored */
}

static size_t sink_data(void *arg, int status, int whole_json, const char *p, size_t n)
{
    return upstream_data(arg, status, whole_json, p, n);
}

static void sink_done(void *arg, int ok, int timeout, const char *why)
{
    upstream_done(arg, ok, timeout, why);
}

static void sink_retry_after(void *arg, int64_t seconds)
{
    ((lm_relay_t *)arg)->up_retry_after = seconds;
}

static const lm_upstream_sink_t relay_sink = {sink_data, sink_done, sink_retry_after};

/* A split embeddings request ends through the same steps (fanout.h). */
static const lm_fanout_ops_t fan_ops = {upstream_done, attempt_failed, lm_attempt_route_end,
                                        lm_attempt_start};

void lm_attempt_side_unlink(lm_relay_t *r)
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

/* build_request asked for a side value that is not there yet: start the
 * fetch if this request was chosen to, and park until a worker wakes us
 * (lm_relay_side_wake). Nothing is sent and nothing is held meanwhile. */
static int side_wait(lm_relay_t *r)
{
    const lm_side_need_t *need = &r->ureq.side;
    lm_err e;
    if (!need->wait) /* a fetch failed moments ago: its error, without another fetch */
        return lm_out_error(r, &need->err);
    if (++r->side_waits > 2)
        return lm_out_err(r, 502, "api_error", "credential_unavailable",
                          "the provider credential is still not available");
    lm_relay_to(r, LM_RELAY_SIDE_WAIT);
    snprintf(r->side_name, sizeof(r->side_name), "%s", need->name);
    r->side_seq = need->seq;
    r->side_prev = NULL;
    r->side_next = r->w->side_waiters;
    if (r->side_next)
        r->side_next->side_prev = r;
    r->w->side_waiters = r;
    if (need->fetch && lm_side_fetch_start(r->w, r->rt, r->route->inst, need->name, &e) < 0) {
        lm_attempt_side_unlink(r);
        return lm_out_error(r, &e);
    }
    return 0;
}

int lm_attempt_start(lm_relay_t *r)
{
    lm_attempt_reset(r);
    r->route = &r->cands[r->cand];
    r->attempt++;
    r->side_waits = 0;
    return lm_attempt_build(r);
}

/* Translate the request for the current attempt's channel and send it.
 * Re-entered after a side-value wait, so it starts from a clean call. */
int lm_attempt_build(lm_relay_t *r)
{
    lm_attempt_reset(r);
    const lm_route_t *route = r->route;
    const lm_provider *vt = &route->inst->plugin->vt;
    lm_err e;

    lm_relay_copy(r->upstream_model, sizeof(r->upstream_model), route->upstream);
    r->call = (lm_call){.hdr = LM_ABI_HDR(lm_call),
                        .op = lm_endpoint_call_op(vt, r->op, r->api == &lm_cmpl_api),
                        .stream = r->op == LM_OP_CHAT &&
                                  json_is_true(json_object_get(r->canon, "stream")),
                        .model = r->upstream_model,
                        .request_id = r->id};
    json_t *so = json_object_get(r->canon, "stream_options");
    r->want_usage = json_is_true(json_object_get(so, "include_usage"));
    /* The client's bytes may be forwarded only while canon still means them:
     * the same model, and no script rewrote the request (an on_request that
     * left it alone keeps canon as parsed). */
    if (strcmp(json_string_value(json_object_get(r->canon, "model")), r->upstream_model) != 0)
        json_object_set_new(r->canon, "model", json_string(r->upstream_model));
    else if (r->req && !lm_rlua_request_changed(r->lua) && !r->canon_edited)
        r->call.raw_body = lm_http_body(r->req);
    memset(&e, 0, sizeof(e));
    /* what this channel can take (400s before any upstream call), and its
     * parameter ranges (a clamped copy no longer means the client's bytes) */
    lm_canon_prep_t prep;
    if (lm_canon_prepare(vt, r->op, r->call.stream, r->canon, &prep, &e) < 0)
        return lm_out_error(r, &e);
    if (prep.own) {
        r->call.raw_body = (lm_str){NULL, 0};
        snprintf(r->clamped, sizeof(r->clamped), "%s", prep.clamped);
        lm_log(LM_LOG_DEBUG, "%s: clamped for channel %s: %s", r->id, route->inst->chan->name,
               prep.clamped);
    }
    if (lm_fanout_wanted(r)) { /* more inputs than one upstream call takes */
        lm_canon_prep_free(&prep);
        return lm_fanout_start(r, &fan_ops) == LM_AGAIN ? side_wait(r) : 0;
    }
    r->call_open = 1;
    r->ureq.inst = route->inst;
    r->ureq.chan = route->inst->chan; /* its address policy (SS-7) */
    const lm_plugin_t *prev = lm_plugin_enter(route->inst->plugin);
    int rc = vt->build_request(route->inst->istate, &r->call, prep.canon, &r->ureq, &e);
    lm_plugin_leave(prev);
    lm_canon_prep_free(&prep);
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
        return lm_out_error(r, &e);
    }
    if (lm_passthru_prepare(r, &e) < 0 || lm_audio_attach(r, &e) < 0)
        return lm_out_error(r, &e);
    if (r->native_only && r->pt == NULL) { /* only the native API takes this body */
        if (r->cand + 1 < r->ncands) {
            r->cand++;
            r->attempt--;
            return lm_attempt_start(r);
        }
        if (r->attempt > 1) /* the channels that could take it failed: say that, not the 400 */
            return lm_out_err(r, 503, "api_error", "no_channel",
                              "every channel that can take this request failed; retry later");
        return lm_out_error(r, &r->native_err);
    }
    if (lm_rlua_upstream(r->lua, route, r->attempt, &r->ureq, &e) < 0)
        return lm_out_error(r, &e);
    if (r->call.stream) {
        lm_stream_init(&r->st, route->inst, &r->call, (int64_t)time(NULL), lm_out_sse_sink, r);
        r->st_init = 1;
        /* the upstream's own chunk bytes may reach the client (emit_raw),
         * unless a script's on_event is to see the chunks as before */
        r->st.emit.raw_ok =
            !(r->lua && (lm_lua_call_stages(r->lua) & LM_LUA_BIT(LM_LUA_STAGE_EVENT)));
        if (r->api->stream_new && !r->pt &&
            (r->api_st = r->api->stream_new(r->client_model, r->id)) == NULL)
            return lm_out_err(r, 500, "api_error", NULL, "out of memory");
    }
    if (r->ureq.local_status)
        return run_local(r);
    if (r->ureq.url.len == 0)
        return lm_out_err(r, 500, "api_error", "plugin_error", "plugin built no upstream URL");
    char why[256];
    if (route->stats && lm_route_begin(route->stats, (int64_t)(uint64_t)lm_clock_ms()) < 0) {
        /* the channel is at its in-flight cap: the next candidate, or 503 now (FT-8) */
        if (r->cand + 1 < r->ncands) {
            r->cand++;
            r->attempt--;
            return lm_attempt_start(r);
        }
        return lm_out_err(r, 503, "api_error", "channel_busy",
                          "every channel for this model is at its concurrency limit");
    }
    r->route_begun = route->stats != NULL;
    r->attempt_start_ms = (uint64_t)lm_clock_ms();
    r->attempt_ttft_ms = -1;
    lm_trace_attempt(r); /* a child span, and its traceparent upstream */
    lm_relay_to(r, LM_RELAY_UPSTREAM);
    r->up = lm_upstream_start(r->w->up, &r->ureq, route->inst->chan->connect_timeout_ms, 0,
                              &relay_sink, r, why, sizeof(why));
    if (r->up == NULL) {
        lm_attempt_route_end(r, LM_ROUTE_FAIL);
        return lm_out_err(r, 502, "api_error", "upstream_error", why);
    }
    if (r->timer == NULL)
        r->timer = evtimer_new(r->w->base, on_timeout, r);
    int first = route->inst->chan->first_byte_timeout_ms;
    if (!r->call.stream && route->inst->chan->request_timeout_ms < first)
        first = route->inst->chan->request_timeout_ms;
    arm_timer(r, first);
    return 0;
}
