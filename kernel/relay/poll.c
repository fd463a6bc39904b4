/* poll.c - an asynchronous upstream task polled on the worker's event loop
 * (poll.h has the decisions). Thread: the relay's worker. The poll is owned
 * by the relay through r->poll; it owns its timer, poll request and answer
 * buffer; its transfer is r->up while a poll is in flight. */
#include "relay/poll.h"

#include "core/clock.h"
#include "core/errors.h"
#include "core/log.h"
#include "proto/response.h"
#include "relay/output.h"
#include "relay/trace.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lm_poll_s {
    lm_relay_t *r;
    const lm_poll_ops_t *ops;
    struct event *timer;
    uint64_t deadline_ms; /* monotonic: the task must have answered by then */
    uint32_t wait_ms;     /* the backoff's current wait */
    int busy;             /* a poll transfer (r->up) is in flight */
    int fails;            /* polls in a row that got no answer */
    int polls;
    int status;
    int too_large;
    int ended; /* the task's outcome was counted */
    lm_ureq_t ureq;
    lm_buf_t body;
} lm_poll_t;

static void poll_arm(lm_poll_t *p);

/* The task ended (succeeded, failed, timeout): counted and its span closed. */
static void task_end(lm_poll_t *p, const char *outcome)
{
    lm_relay_t *r = p->r;
    lm_metrics_std_t *m = r->w->svc->metrics;
    if (p->ended)
        return;
    p->ended = 1;
    if (m) {
        const char *labels[] = {r->route->model, r->route->inst->chan->name, outcome};
        lm_metrics_inc(m->tasks, labels, 1);
    }
    lm_trace_task_end(r, p->polls, outcome);
}

void lm_poll_free(lm_relay_t *r)
{
    lm_poll_t *p = r->poll;
    if (p == NULL)
        return;
    r->poll = NULL;
    if (p->busy && r->up) {
        lm_upstream_cancel(r->up);
        r->up = NULL;
    }
    if (p->timer)
        event_free(p->timer);
    lm_trace_task_end(r, p->polls, "cancelled"); /* no-op after task_end */
    lm_ureq_free(&p->ureq);
    lm_buf_free(&p->body);
    free(p);
}

/* The task ended with an error: the poll goes, then the attempt fails
 * (which may start another attempt: nothing of the poll may be left). */
static void poll_fail(lm_poll_t *p, lm_err *e)
{
    lm_relay_t *r = p->r;
    const lm_poll_ops_t *ops = p->ops;
    task_end(p, "failed"); /* no-op after a timeout's */
    lm_poll_free(r);
    r->status = e->http_status;
    ops->failed(r, e);
}

static void poll_timeout(lm_poll_t *p)
{
    lm_err e;
    lm_log(LM_LOG_WARN, "%s: upstream task on channel %s did not finish in time (%d polls)",
           p->r->id, p->r->route->inst->chan->name, p->polls);
    lm_error_set(&e, -1, 504, "api_error", "upstream_task_timeout",
                 "the upstream task did not finish in time");
    task_end(p, "timeout");
    poll_fail(p, &e);
}

static int64_t left_ms(const lm_poll_t *p)
{
    return (int64_t)p->deadline_ms - (int64_t)(uint64_t)lm_clock_ms();
}

/* The task answered: hand the answer to the single path's end. */
static void poll_done(lm_poll_t *p, char *out, size_t out_len, const lm_usage *usage, int64_t units)
{
    lm_relay_t *r = p->r;
    const lm_poll_ops_t *ops = p->ops;
    r->status = p->status;
    lm_log(LM_LOG_INFO, "%s: upstream task answered after %d polls", r->id, p->polls);
    task_end(p, "succeeded");
    lm_poll_free(r);
    if (units > 0 && r->op == LM_OP_IMAGES) /* bill what was delivered (settle.c unit_cost) */
        json_object_set_new(r->canon, "n", json_integer(units));
    ops->answer(r, out, out_len, usage);
}

static size_t sink_data(void *arg, int status, int whole_json, const char *p, size_t n)
{
    lm_poll_t *pl = arg;
    (void)whole_json;
    pl->status = status;
    if (pl->body.len + n > LM_POLL_BODY_MAX) {
        pl->too_large = 1;
        return 0; /* abort: no task status is that large */
    }
    return lm_buf_add(&pl->body, p, n) < 0 ? 0 : n;
}

static void sink_done(void *arg, int ok, int timeout, const char *why)
{
    lm_poll_t *p = arg;
    lm_relay_t *r = p->r;
    char *out = NULL;
    size_t out_len = 0;
    lm_usage usage;
    int64_t units;
    lm_err e;
    r->up = NULL;
    p->busy = 0;
    if (p->too_large) {
        lm_error_set(&e, -1, 502, "api_error", "upstream_error",
                     "the upstream task's status is too large");
        poll_fail(p, &e);
        return;
    }
    if (!ok) {
        if (timeout && left_ms(p) <= 0) {
            poll_timeout(p);
            return;
        }
        lm_log(LM_LOG_WARN, "%s: polling the upstream task failed: %s", r->id, why);
        if (++p->fails >= LM_POLL_MAX_FAILS) {
            lm_error_set(&e, -1, 502, "api_error", "upstream_error",
                         "the upstream task could not be polled");
            poll_fail(p, &e);
            return;
        }
        poll_arm(p);
        return;
    }
    p->fails = 0;
    lm_str body = {lm_buf_cstr(&p->body), p->body.len};
    int rc = lm_response_poll(r->route->inst, &r->call, p->status, body, &out, &out_len, &usage,
                              &units, &e);
    lm_buf_reset(&p->body);
    if (rc == LM_PENDING) {
        poll_arm(p);
        return;
    }
    if (rc < 0) {
        lm_log(LM_LOG_INFO, "%s: upstream task failed: %d %s", r->id, e.http_status, e.code);
        poll_fail(p, &e);
        return;
    }
    poll_done(p, out, out_len, &usage, units);
}

static const lm_upstream_sink_t poll_sink = {sink_data, sink_done, NULL};

/* The timer went off: describe one poll through the plugin and send it. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    lm_poll_t *p = arg;
    lm_relay_t *r = p->r;
    const lm_inst_t *inst = r->route->inst;
    lm_err e;
    char why[256];
    (void)fd;
    (void)what;
    if (left_ms(p) <= 0) {
        poll_timeout(p);
        return;
    }
    lm_ureq_free(&p->ureq);
    lm_ureq_init(&p->ureq);
    p->ureq.inst = inst;
    p->ureq.chan = inst->chan; /* its address policy (SS-7) */
    memset(&e, 0, sizeof(e));
    const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
    int rc = inst->plugin->vt.poll_request(inst->istate, &r->call, &p->ureq, &e);
    lm_plugin_leave(prev);
    if (rc >= 0 && (p->ureq.url.len == 0 || p->ureq.local_status))
        rc = lm_error_set(&e, LM_ERR, 500, "api_error", "plugin_error",
                          "the plugin described no upstream task poll");
    if (rc < 0) {
        if (e.http_status == 0)
            lm_error_set(&e, rc, 500, "api_error", "plugin_error",
                         "the plugin could not describe the task poll");
        poll_fail(p, &e);
        return;
    }
    lm_trace_task_poll(r, &p->ureq);
    int64_t total = left_ms(p);
    if (inst->chan->request_timeout_ms > 0 && inst->chan->request_timeout_ms < total)
        total = inst->chan->request_timeout_ms;
    p->polls++;
    p->status = 0;
    lm_metrics_std_t *m = r->w->svc->metrics;
    if (m) {
        const char *labels[] = {r->route->model, inst->chan->name};
        lm_metrics_inc(m->task_polls, labels, 1);
    }
    r->up = lm_upstream_start(r->w->up, &p->ureq, inst->chan->connect_timeout_ms,
                              total > 1 ? (int)total : 1, &poll_sink, p, why, sizeof(why));
    if (r->up == NULL) {
        lm_error_set(&e, -1, 502, "api_error", "upstream_error", why);
        poll_fail(p, &e);
        return;
    }
    p->busy = 1;
}

/* Wait for the next poll: the plugin's interval, else the backoff; never
 * past the deadline (the tick there answers the timeout). */
static void poll_arm(lm_poll_t *p)
{
    uint32_t wait = p->r->call.task_poll_ms;
    if (wait == 0) {
        wait = p->wait_ms;
        p->wait_ms = p->wait_ms * 2 < LM_POLL_MAX_MS ? p->wait_ms * 2 : LM_POLL_MAX_MS;
    }
    int64_t left = left_ms(p);
    if (left < 0)
        left = 0;
    if ((int64_t)wait > left)
        wait = (uint32_t)left;
    struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
    evtimer_add(p->timer, &tv);
}

int lm_poll_start(lm_relay_t *r, const lm_poll_ops_t *ops)
{
    lm_poll_t *p = calloc(1, sizeof(*p));
    if (p == NULL || (p->timer = evtimer_new(r->w->base, on_tick, p)) == NULL) {
        free(p);
        return lm_out_err(r, 500, "api_error", NULL, "out of memory");
    }
    uint32_t limit = r->call.task_timeout_ms ? r->call.task_timeout_ms : LM_POLL_TIMEOUT_MS;
    p->r = r;
    p->ops = ops;
    p->deadline_ms = (uint64_t)lm_clock_ms() + limit;
    p->wait_ms = LM_POLL_FIRST_MS;
    lm_ureq_init(&p->ureq);
    r->poll = p;
    lm_trace_task_begin(r);
    lm_log(LM_LOG_INFO, "%s: channel %s took an asynchronous task; polling it (up to %u ms)", r->id,
           r->route->inst->chan->name, (unsigned)limit);
    poll_arm(p);
    return 0;
}

int lm_poll_client_gone(lm_relay_t *r)
{
    lm_poll_t *p = r->poll;
    if (p == NULL || r->req != NULL)
        return 0;
    lm_log(LM_LOG_INFO,
           "%s: client went away; the upstream task is polled on so that its row bills what "
           "the provider made (after %d polls)",
           r->id, p->polls);
    return 1;
}
