/* side_fetch.c - one side-value fetch per call: a pool transfer whose result
 * goes to the channel's side cache, then every worker is woken (w->svc).
 * Thread: the starting worker, which owns the fetch until it ends. */
#include "relay/side_fetch.h"
#include "core/clock.h"

#include "core/errors.h"
#include "core/log.h"
#include "gov/billing.h"
#include "plugin/plugin.h"
#include "relay/upstream.h"

#include <stdlib.h>
#include <string.h>

#define LM_SIDE_BODY_MAX (64u * 1024)

typedef struct lm_side_fetch_s {
    lm_worker_t *w;
    lm_rt_t *rt; /* counted reference: keeps inst alive */
    lm_inst_t *inst;
    char name[LM_SIDE_NAME_MAX];
    lm_ureq_t ureq;
    lm_upstream_t *up;
    int status;
    lm_buf_t body;
    int too_large;
    struct lm_side_fetch_s *next, *prev;
} lm_side_fetch_t;

static void unlink_fetch(lm_side_fetch_t *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        f->w->side_fetches = f->next;
    if (f->next)
        f->next->prev = f->prev;
}

/* Store the outcome, wake every worker's waiters, free the fetch. */
static void fetch_end(lm_side_fetch_t *f, int ok, char *value, int64_t ttl_s, const lm_err *e)
{
    lm_side_complete(f->inst->side, f->name, ok, value, ttl_s, e, lm_clock_ms());
    if (!ok)
        lm_log(LM_LOG_WARN, "channel %s: side value %s: %s", f->inst->chan->name, f->name,
               e ? e->msg : "failed");
    else
        lm_log(LM_LOG_INFO, "channel %s: side value %s refreshed (lifetime %llds)",
               f->inst->chan->name, f->name, (long long)ttl_s);
    unlink_fetch(f);
    f->w->svc->side_wake(f->w->svc->arg);
    lm_ureq_free(&f->ureq);
    lm_buf_free(&f->body);
    lm_rt_unref(f->rt);
    free(f);
}

static size_t on_data(void *arg, int status, int whole_json, const char *p, size_t n)
{
    lm_side_fetch_t *f = arg;
    (void)whole_json;
    f->status = status;
    if (f->body.len + n > LM_SIDE_BODY_MAX) {
        f->too_large = 1;
        return 0;
    }
    return lm_buf_add(&f->body, p, n) < 0 ? 0 : n;
}

static void on_done(void *arg, int ok, int timeout, const char *why)
{
    lm_side_fetch_t *f = arg;
    lm_err e;
    char *value = NULL;
    int64_t ttl = 0;
    f->up = NULL;
    memset(&e, 0, sizeof(e));
    if (f->too_large || !ok) {
        lm_log(LM_LOG_WARN, "channel %s: side value %s: %s", f->inst->chan->name, f->name,
               f->too_large ? "answer too large" : why);
        lm_error_set(&e, LM_EUPSTREAM, timeout ? 504 : 502, "api_error",
                     timeout ? "upstream_timeout" : "upstream_error",
                     "the provider credential could not be obtained");
        fetch_end(f, 0, NULL, 0, &e);
        return;
    }
    const lm_provider *vt = &f->inst->plugin->vt;
    const lm_plugin_t *prev = lm_plugin_enter(f->inst->plugin);
    int rc = vt->side_parse(f->inst->istate, f->name, f->status,
                            (lm_str){lm_buf_cstr(&f->body), f->body.len}, &value, &ttl, &e);
    lm_plugin_leave(prev);
    if (rc < 0 || value == NULL) {
        free(value);
        if (e.http_status == 0)
            lm_error_set(&e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                         "the provider credential could not be obtained");
        fetch_end(f, 0, NULL, 0, &e);
        return;
    }
    fetch_end(f, 1, value, ttl > 0 ? ttl : 0, NULL);
}

static const lm_upstream_sink_t side_sink = {on_data, on_done, NULL};

int lm_side_fetch_start(lm_worker_t *w, lm_rt_t *rt, lm_inst_t *inst, const char *name, lm_err *e)
{
    const lm_provider *vt = &inst->plugin->vt;
    char why[256];
    lm_side_fetch_t *f = calloc(1, sizeof(*f));
    memset(e, 0, sizeof(*e));
    if (f == NULL) {
        lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
        goto fail;
    }
    f->w = w;
    f->rt = rt;
    f->inst = inst;
    snprintf(f->name, sizeof(f->name), "%s", name);
    lm_ureq_init(&f->ureq);
    f->ureq.chan = inst->chan; /* its address policy (SS-7) */
    const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
    int rc = vt->side_request ? vt->side_request(inst->istate, name, &f->ureq, e) : LM_ENOTSUP;
    lm_plugin_leave(prev);
    if (rc < 0 || f->ureq.url.len == 0 || f->ureq.local_status) {
        if (e->http_status == 0)
            lm_error_set(e, LM_ERR, 500, "api_error", "plugin_error",
                         "the plugin cannot describe its credential request");
        goto fail;
    }
    int total = inst->chan->request_timeout_ms;
    if (total <= 0 || total > LM_SIDE_TIMEOUT_MS)
        total = LM_SIDE_TIMEOUT_MS;
    f->up = lm_upstream_start(w->up, &f->ureq, inst->chan->connect_timeout_ms, total, &side_sink, f,
                              why, sizeof(why));
    if (f->up == NULL) {
        lm_error_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                     "the provider credential could not be obtained");
        goto fail;
    }
    lm_rt_ref(rt);
    f->next = w->side_fetches;
    if (f->next)
        f->next->prev = f;
    w->side_fetches = f;
    return 0;
fail:
    lm_side_complete(inst->side, name, 0, NULL, 0, e, lm_clock_ms());
    w->svc->side_wake(w->svc->arg);
    if (f) {
        lm_ureq_free(&f->ureq);
        free(f);
    }
    return -1;
}

void lm_side_fetch_cancel_all(lm_worker_t *w)
{
    lm_err e;
    lm_error_set(&e, LM_EUPSTREAM, 503, "api_error", "shutting_down",
                 "the gateway is shutting down");
    while (w->side_fetches) {
        lm_side_fetch_t *f = w->side_fetches;
        if (f->up)
            lm_upstream_cancel(f->up);
        f->up = NULL;
        lm_side_complete(f->inst->side, f->name, 0, NULL, 0, &e, lm_clock_ms());
        unlink_fetch(f);
        lm_ureq_free(&f->ureq);
        lm_buf_free(&f->body);
        lm_rt_unref(f->rt);
        free(f);
    }
}
