/* trace.c - a request's trace (trace.h): ids and times gathered from what
 * the relay already has, one record copied out at the end for the
 * exporter's thread to serialise (otel.h). Thread: the relay's worker. */
#include "relay/trace.h"
#include "core/clock.h"
#include "core/traceparent.h"
#include "relay/otel.h"
#include "relay/relay_int.h"
#include "relay/reqlog.h"
#include "store/reqlog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define LM_TRACE_TEXT_MAX (64 * 1024) /* prompt or completion text kept per span */

/* xorshift64 on the worker's state, seeded once from the kernel. */
static uint64_t rnd(lm_worker_t *w)
{
    if (w->rng == 0 &&
        (getrandom(&w->rng, sizeof(w->rng), GRND_NONBLOCK) != sizeof(w->rng) || w->rng == 0))
        w->rng = ((uint64_t)lm_clock_ns() << 8) ^ (uint64_t)(w->index + 1) * 0x9e3779b97f4a7c15ull;
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static void rnd_id(lm_worker_t *w, uint8_t *p, size_t n)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t v = rnd(w);
            memcpy(p + i, &v, n - i < 8 ? n - i : 8);
        }
    } while (p[0] == 0 && p[n - 1] == 0); /* never all zero (invalid) */
}

void lm_trace_begin(lm_relay_t *r)
{
    lm_trace_t *t = &r->trace;
    if (r->rt->conf->obs.request_log && r->w->svc->store) { /* the request log (reqlog.h) */
        t->logged = t->collect = 1;
        t->bodies = r->rt->conf->obs.nbody_rules ? -1 : 0;
    }
    const lm_obs_conf_t *oc = &r->rt->conf->obs;
    if (oc->otel_endpoint == NULL || r->w->svc->otel == NULL) /* a reload may turn it on */
        return;
    const char *h = r->req ? lm_http_header(r->req, "traceparent") : NULL;
    lm_traceparent_t tp;
    if (h && lm_traceparent_parse(h, strlen(h), &tp) == 0) { /* the caller decided sampling */
        memcpy(t->trace_id, tp.trace_id, 16);
        memcpy(t->parent_id, tp.span_id, 8);
        t->has_parent = 1;
        t->sampled = tp.flags & 1;
    } else {
        rnd_id(r->w, t->trace_id, 16);
        t->sampled = oc->otel_sample_ratio >= 1.0 ||
                     (double)(rnd(r->w) >> 11) * 0x1.0p-53 < oc->otel_sample_ratio;
    }
    rnd_id(r->w, t->span_id, 8);
    t->start_mono_ns = lm_clock_ns(); /* the exporter shifts it to Unix time per batch */
    t->on = 1;
    t->collect |= t->sampled;
    t->capture = t->sampled && oc->otel_capture_content;
}

static void close_attempt(lm_trace_t *t, int status)
{
    lm_trace_att_t *a = t->natt ? &t->att[t->natt - 1] : NULL;
    if (a && a->end_ns == 0) {
        a->end_ns = lm_clock_ns();
        a->status = status;
    }
}

/* A traceparent naming span, added to u's headers (none on no memory). */
static void add_traceparent(const lm_trace_t *t, lm_ureq_t *u, const uint8_t *span)
{
    char **nh = realloc(u->headers, (u->nheaders + 1) * sizeof(*nh));
    char *line = malloc(sizeof("traceparent: ") + LM_TRACEPARENT_LEN);
    if (nh)
        u->headers = nh;
    if (nh == NULL || line == NULL) {
        free(line);
        return;
    }
    memcpy(line, "traceparent: ", 13);
    lm_traceparent_format(t->trace_id, span, t->sampled ? 1 : 0, line + 13);
    u->headers[u->nheaders++] = line;
}

void lm_trace_attempt(lm_relay_t *r)
{
    lm_trace_t *t = &r->trace;
    if (t->bodies < 0) /* model and key are known by now */
        t->bodies = lm_obsconf_bodies(&r->rt->conf->obs, r->client_model, r->gov.key_name);
    if (!t->on && !t->logged)
        return;
    close_attempt(t, 0);
    uint8_t span[8];
    if (t->natt < LM_TRACE_ATTEMPTS) {
        lm_trace_att_t *a = &t->att[t->natt++];
        rnd_id(r->w, a->span_id, 8);
        a->start_ns = lm_clock_ns();
        a->route = r->route;
        memcpy(span, a->span_id, 8);
    } else {
        memcpy(span, t->span_id, 8); /* untraced attempt: the request's span is the parent */
    }
    if (t->on) /* the upstream sees this attempt's span as its parent */
        add_traceparent(t, &r->ureq, span);
}

void lm_trace_task_poll(lm_relay_t *r, struct lm_ureq *u)
{
    if (r->trace.on && r->trace.task.start_ns)
        add_traceparent(&r->trace, u, r->trace.task.span_id);
}

void lm_trace_attempt_end(lm_relay_t *r, int status)
{
    if (r->trace.on || r->trace.logged)
        close_attempt(&r->trace, status);
}

void lm_trace_task_begin(lm_relay_t *r)
{
    lm_trace_t *t = &r->trace;
    if (!t->on)
        return;
    close_attempt(t, r->status); /* the submit ended with its answer */
    rnd_id(r->w, t->task.span_id, 8);
    t->task.start_ns = lm_clock_ns();
    t->task.end_ns = 0;
    t->task.route = r->route;
}

void lm_trace_task_end(lm_relay_t *r, int polls, const char *outcome)
{
    lm_trace_task_t *k = &r->trace.task;
    if (k->start_ns == 0 || k->end_ns != 0)
        return;
    k->end_ns = lm_clock_ns();
    k->polls = polls;
    snprintf(k->outcome, sizeof(k->outcome), "%s", outcome);
}

void lm_trace_error(lm_relay_t *r, const char *code)
{
    if (code && *code && r->trace.error_code[0] == '\0')
        snprintf(r->trace.error_code, sizeof(r->trace.error_code), "%s", code);
}

/* The first "finish_reason": "..." with a string value in json. Searched
 * backwards for '_' (rare in an answer, and the key sits near a chunk's
 * end): memrchr runs over a stream's every chunk faster than memmem. */
static void scan_finish(lm_trace_t *t, const char *json, size_t n)
{
    static const char key[] = "\"finish_reason\""; /* its '_' at 7 */
    const char *found = NULL, *u, *e = json + n;
    size_t left = n, flen = 0;
    while ((u = memrchr(json, '_', left)) != NULL) {
        left = (size_t)(u - json);
        if (left < 7 || n - left < sizeof(key) - 1 - 7 || memcmp(u - 7, key, sizeof(key) - 1))
            continue;
        left -= 7;
        const char *p = u - 7 + sizeof(key) - 1;
        while (p < e && (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        const char *q = p < e && *p == '"' ? memchr(p + 1, '"', (size_t)(e - p - 1)) : NULL;
        if (q) { /* null: not finished in this chunk */
            found = p + 1;
            flen = (size_t)(q - found);
        }
    }
    if (found) {
        size_t len = flen < sizeof(t->finish) ? flen : sizeof(t->finish) - 1;
        memcpy(t->finish, found, len);
        t->finish[len] = '\0';
    }
}

/* Capture: the text of choice 0 (a whole message, or a stream delta). */
static void keep_text(lm_trace_t *t, const char *json, size_t n)
{
    json_t *doc = json_loadb(json, n, 0, NULL);
    json_t *c = json_array_get(json_object_get(doc, "choices"), 0);
    json_t *m = json_object_get(c, "message");
    const char *s =
        json_string_value(json_object_get(m ? m : json_object_get(c, "delta"), "content"));
    size_t len = s ? strlen(s) : 0;
    if (len && t->completion.len + len <= LM_TRACE_TEXT_MAX)
        lm_buf_add(&t->completion, s, len);
    json_decref(doc);
}

void lm_trace_answer(lm_relay_t *r, const char *json, size_t n)
{
    lm_trace_t *t = &r->trace;
    if (t->finish[0] == '\0')
        scan_finish(t, json, n);
    if (t->capture)
        keep_text(t, json, n);
    if (t->bodies > 0 && t->answer.len + n + 1 <= LM_REQLOG_BODY_MAX) {
        lm_buf_add(&t->answer, json, n);
        lm_buf_add(&t->answer, "\n", 1);
    }
}

static char *prompt_text(const lm_relay_t *r)
{
    json_t *m = json_object_get(r->canon, r->op == LM_OP_EMBED ? "input" : "messages");
    char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
    if (s && strlen(s) > LM_TRACE_TEXT_MAX)
        s[LM_TRACE_TEXT_MAX] = '\0';
    return s;
}

/* s (NULL reads as "") into d[n], cut to fit. */
static void copy(char *d, size_t n, const char *s)
{
    size_t len = s ? strnlen(s, n - 1) : 0;
    memcpy(d, s ? s : "", len);
    d[len] = '\0';
}

/* The request's record, written into its exporter slot o (every field:
 * the slot holds an older record's bytes). */
static void build(lm_relay_t *r, lm_otel_rec_t *o)
{
    lm_trace_t *t = &r->trace;
    memcpy(o->trace_id, t->trace_id, 16);
    memcpy(o->span_id, t->span_id, 8);
    memcpy(o->parent_id, t->parent_id, 8);
    o->has_parent = t->has_parent;
    o->start_ns = t->start_mono_ns;
    o->end_ns = lm_clock_ns();
    copy(o->request_id, sizeof(o->request_id), r->id);
    copy(o->api, sizeof(o->api), r->api->name);
    copy(o->operation, sizeof(o->operation), r->op == LM_OP_EMBED ? "embeddings" : "chat");
    copy(o->key_name, sizeof(o->key_name), r->gov.key_name);
    o->key_id = r->gov.key ? r->gov.key->id : 0;
    copy(o->model_req, sizeof(o->model_req), r->client_model);
    o->input_tokens = o->output_tokens = -1;
    o->channel[0] = o->system[0] = o->model_resp[0] = '\0';
    if (r->route) {
        /* what the provider reported; settle.c's estimate when it did not
         * (repeated here: including settle.h would close an include cycle) */
        lm_usage u = r->st_init ? r->st.emit.usage : r->usage;
        o->input_tokens = u.prompt >= 0 ? u.prompt : r->prompt_est;
        o->output_tokens = u.completion >= 0 ? u.completion
                           : r->st_init      ? (int64_t)((r->st.emit.content_chars + 3) / 4)
                                             : 0;
        copy(o->channel, sizeof(o->channel), r->route->inst->chan->name);
        copy(o->system, sizeof(o->system), r->route->inst->plugin->vt.name);
        copy(o->model_resp, sizeof(o->model_resp), r->upstream_model);
    }
    copy(o->finish, sizeof(o->finish), t->finish);
    copy(o->error_code, sizeof(o->error_code),
         t->error_code[0]  ? t->error_code
         : r->stream_error ? r->st.err.code
                           : "");
    o->cost = r->charge;
    o->generation = (int64_t)r->rt->gen;
    o->ttft_ms = r->ttft_ms;
    o->status = r->client_status;
    o->stream = r->call.stream;
    o->nattempts = 0;
    for (int i = 0; i < t->natt; i++) {
        const lm_trace_att_t *a = &t->att[i];
        lm_otel_attempt_t *b = &o->attempts[o->nattempts++];
        memcpy(b->span_id, a->span_id, 8);
        b->start_ns = a->start_ns;
        b->end_ns = a->end_ns;
        b->status = a->status;
        b->channel[0] = b->system[0] = b->model[0] = '\0';
        if (a->route) {
            copy(b->channel, sizeof(b->channel), a->route->inst->chan->name);
            copy(b->system, sizeof(b->system), a->route->inst->plugin->vt.name);
            copy(b->model, sizeof(b->model), a->route->upstream);
        }
    }
    o->task.start_ns = 0;
    if (t->task.start_ns) {
        lm_otel_task_t *k = &o->task;
        memcpy(k->span_id, t->task.span_id, 8);
        k->start_ns = t->task.start_ns;
        k->end_ns = t->task.end_ns;
        k->polls = t->task.polls;
        copy(k->outcome, sizeof(k->outcome), t->task.outcome);
        copy(k->channel, sizeof(k->channel), t->task.route->inst->chan->name);
        copy(k->system, sizeof(k->system), t->task.route->inst->plugin->vt.name);
        copy(k->model, sizeof(k->model), t->task.route->upstream);
    }
    o->prompt = o->completion = NULL;
    if (t->capture) {
        o->prompt = prompt_text(r);
        o->completion = t->completion.len ? strndup(t->completion.p, t->completion.len) : NULL;
    }
}

void lm_trace_end(lm_relay_t *r)
{
    lm_trace_t *t = &r->trace;
    close_attempt(t, r->status);          /* the last attempt ends with the request */
    lm_trace_task_end(r, 0, "cancelled"); /* still polled: the request ended first */
    if (t->on && t->sampled) {
        lm_otel_t *ex = r->w->svc->otel;
        lm_otel_rec_t *o = lm_otel_reserve(ex, 1 + t->natt + (t->task.start_ns != 0));
        if (o) {
            build(r, o);
            lm_otel_commit(ex, o);
        }
    }
    if (t->logged)
        lm_reqlog_record(r);
    lm_buf_free(&t->completion);
    lm_buf_free(&t->answer);
    t->on = t->sampled = t->collect = t->capture = t->logged = 0;
    t->task.start_ns = 0;
}
