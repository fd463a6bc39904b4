/*
 * status.c - GET /admin/status, GET /admin/usage/series, POST /admin/check
 * (status.h, docs/admin.md). Replies own their JSON.
 */
#include "admin/status.h"
#include "core/clock.h"
#include "route/route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERIES_GROUPS 12    /* named series; the rest add up in "(other)" */
#define SERIES_SCAN   50000 /* ledger rows read at most per call */
#define SERIES_PAGE   1000

static json_t *health_json(lm_route_stats_t *st, const char *model, int64_t now)
{
    lm_route_snap_t s;
    lm_route_snapshot(st, now, &s);
    int64_t hold = lm_route_hold_left(st, now);
    json_t *o = json_pack("{s:s, s:s, s:b, s:i, s:i}", "model", model, "state",
                          lm_route_state_str(s.state), "healthy", lm_route_healthy(st, now),
                          "inflight", s.inflight, "consecutive_failures", s.consecutive);
    json_object_set_new(o, "ejected_for_ms",
                        json_integer(s.state == LM_ROUTE_EJECTED && s.ejected_until > now
                                         ? s.ejected_until - now
                                         : 0));
    json_object_set_new(o, "held_for_ms", json_integer(hold));
    json_object_set_new(o, "latency_ms",
                        s.ewma_latency_ms < 0 ? json_null()
                                              : json_integer((json_int_t)s.ewma_latency_ms));
    json_object_set_new(
        o, "ttft_ms", s.ewma_ttft_ms < 0 ? json_null() : json_integer((json_int_t)s.ewma_ttft_ms));
    json_object_set_new(o, "window_ok", json_integer(s.window_ok));
    json_object_set_new(o, "window_fail", json_integer(s.window_fail));
    return o;
}

/* Channels of the generation with their health per model; *inflight sums
 * the attempts in flight. */
static json_t *channels_json(const lm_rt_t *rt, int64_t *inflight)
{
    json_t *arr = json_array();
    int64_t now = lm_clock_ms();
    for (size_t i = 0; i < rt->ninsts; i++) {
        const lm_inst_t *in = &rt->insts[i];
        const lm_chan_conf_t *c = in->chan;
        json_t *models = json_array();
        for (size_t j = 0; j < c->nmodels; j++) {
            lm_route_stats_t *st = rt->cstats ? rt->cstats[rt->coff[i] + j] : NULL;
            if (st == NULL)
                continue;
            json_t *h = health_json(st, c->models[j].name, now);
            *inflight += json_integer_value(json_object_get(h, "inflight"));
            json_array_append_new(models, h);
        }
        json_array_append_new(arr, json_pack("{s:o, s:o, s:i, s:i, s:o}", "name",
                                             lm_admin_jtext(c->name), "plugin",
                                             lm_admin_jtext(c->plugin), "priority", c->priority,
                                             "weight", c->weight, "models", models));
    }
    return arr;
}

void lm_admin_status(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a))
        return;
    if (a->env->ctl.arg == NULL) {
        lm_admin_http_error(a->req, 503, "unavailable", NULL, "no server");
        return;
    }
    lm_rt_t *rt = a->env->ctl.acquire_rt(a->env->ctl.arg);
    json_t *plugins = json_array(), *scripts = json_array();
    for (size_t i = 0; i < rt->nplugins; i++) {
        const lm_plugin_t *p = rt->plugins[i];
        char abi[16];
        snprintf(abi, sizeof(abi), "%d.%u", LM_ABI_MAJOR, (unsigned)p->abi_minor);
        json_array_append_new(plugins,
                              json_pack("{s:o, s:o, s:s}", "name", lm_admin_jtext(p->name),
                                        "version", lm_admin_jtext(p->vt.version), "abi", abi));
    }
    for (size_t i = 0; i < rt->conf->nscripts; i++)
        json_array_append_new(scripts, json_pack("{s:o, s:o}", "name",
                                                 lm_admin_jtext(rt->conf->scripts[i].name), "path",
                                                 lm_admin_jtext(rt->conf->scripts[i].path)));
    int64_t inflight = 0;
    json_t *chans = channels_json(rt, &inflight);
    json_t *o =
        json_pack("{s:s, s:I, s:I, s:o, s:o, s:o, s:I}", "object", "status", "generation",
                  (json_int_t)rt->gen, "inflight", (json_int_t)inflight, "plugins", plugins,
                  "scripts", scripts, "channels", chans, "now_ms", (json_int_t)lm_store_now_ms());
    lm_rt_unref(rt);
    lm_admin_http_json(a->req, 200, o);
}

/* ------------------------------------------------------------------------ */
/* the ledger in time buckets                                                */

typedef struct series_s {
    char name[160];
    int64_t *v; /* 4 x nb: requests, errors, tokens, cost_micro */
} series_t;

typedef struct bucketing_s {
    int64_t from, width;
    size_t nb, ng;
    series_t g[SERIES_GROUPS + 2]; /* [0] = total, then the groups, last = (other) */
} bucketing_t;

static series_t *series_for(bucketing_t *b, const char *name)
{
    for (size_t i = 1; i <= b->ng; i++)
        if (strcmp(b->g[i].name, name) == 0)
            return &b->g[i];
    size_t i = b->ng < SERIES_GROUPS ? ++b->ng : SERIES_GROUPS + 1;
    if (b->g[i].name[0] == '\0')
        snprintf(b->g[i].name, sizeof(b->g[i].name), "%s", i <= SERIES_GROUPS ? name : "(other)");
    return &b->g[i];
}

static void add_row(bucketing_t *b, const lm_usage_row_t *u, int by_channel)
{
    size_t k = (size_t)((u->created_ms - b->from) / b->width);
    const char *name = by_channel ? u->channel : u->model_asked;
    series_t *ss[2] = {&b->g[0], series_for(b, name && *name ? name : "-")};
    for (int i = 0; i < 2; i++) {
        int64_t *v = ss[i]->v;
        v[k] += 1;
        v[b->nb + k] += u->status >= 400 || u->status == 0;
        v[2 * b->nb + k] += u->prompt_tokens + u->completion_tokens;
        v[3 * b->nb + k] += u->cost;
    }
}

static json_t *ints(const int64_t *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *series_json(const series_t *s, size_t nb)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "group", lm_admin_jtext(s->name), "requests",
                     ints(s->v, nb), "errors", ints(s->v + nb, nb), "tokens",
                     ints(s->v + 2 * nb, nb), "cost_micro", ints(s->v + 3 * nb, nb));
}

/* Read the ledger newest first until a row is older than b->from. */
static int scan(lm_admin_ctx_t *a, bucketing_t *b, int by_channel, size_t *scanned, int *cut)
{
    int64_t before = 0, end = b->from + (int64_t)b->nb * b->width;
    for (;;) {
        lm_usage_rec_t *r = NULL;
        size_t n = 0;
        int rc = lm_store_usage_list(a->env->store, 0, before, SERIES_PAGE, &r, &n);
        if (rc != LM_STORE_OK)
            return rc;
        int stop = n < SERIES_PAGE;
        for (size_t i = 0; i < n; i++) {
            if (r[i].row.created_ms < b->from) {
                stop = 1;
                break;
            }
            if (r[i].row.created_ms < end)
                add_row(b, &r[i].row, by_channel);
            (*scanned)++;
        }
        before = n ? r[n - 1].id : 0;
        lm_store_usage_list_free(r, n);
        *cut = !stop && *scanned >= SERIES_SCAN;
        if (stop || *cut)
            return LM_STORE_OK;
    }
}

static const char *const series_params[] = {"window", "group_by", NULL};

/* window=hour (60 one-minute buckets, the default) or day (96 of 15
 * minutes); group_by=model (default) or channel. */
void lm_admin_usage_series(lm_admin_ctx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, series_params, &q) != 0)
        return;
    const char *w = lm_admin_http_query_get(&q, "window"),
               *g = lm_admin_http_query_get(&q, "group_by");
    int day = w && strcmp(w, "day") == 0, by_channel = g && strcmp(g, "channel") == 0;
    int bad_w = w && !day && strcmp(w, "hour") != 0;
    int bad_g = g && !by_channel && strcmp(g, "model") != 0;
    lm_admin_http_query_free(&q);
    if (bad_w || bad_g) {
        lm_admin_http_bad_request(a->req, bad_w ? "window" : "group_by",
                                  bad_w ? "window must be hour or day"
                                        : "group_by must be model or channel");
        return;
    }
    bucketing_t *b = calloc(1, sizeof(*b));
    int64_t *mem = NULL;
    if (b) {
        b->nb = day ? 96 : 60;
        b->width = day ? 15 * 60000 : 60000;
        int64_t now = lm_store_now_ms(), end = (now / b->width + 1) * b->width;
        b->from = end - (int64_t)b->nb * b->width;
        mem = calloc((SERIES_GROUPS + 2) * 4 * b->nb, sizeof(int64_t));
        for (size_t i = 0; mem && i < SERIES_GROUPS + 2; i++)
            b->g[i].v = mem + i * 4 * b->nb;
    }
    if (mem == NULL) {
        free(b);
        lm_admin_http_error(a->req, 500, "internal_error", NULL, "out of memory");
        return;
    }
    snprintf(b->g[0].name, sizeof(b->g[0].name), "(total)");
    size_t scanned = 0;
    int cut = 0, rc = scan(a, b, by_channel, &scanned, &cut);
    if (rc != LM_STORE_OK) {
        free(mem);
        free(b);
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    json_t *groups = json_array();
    for (size_t i = 1; i <= SERIES_GROUPS + 1; i++)
        if (b->g[i].name[0])
            json_array_append_new(groups, series_json(&b->g[i], b->nb));
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:i, s:o, s:o, s:I, s:b}", "object", "series",
                  "window", day ? "day" : "hour", "group_by", by_channel ? "channel" : "model",
                  "from_ms", (json_int_t)b->from, "bucket_ms", (json_int_t)b->width, "buckets",
                  (int)b->nb, "total", series_json(&b->g[0], b->nb), "groups", groups, "scanned",
                  (json_int_t)scanned, "truncated", cut);
    free(mem);
    free(b);
    lm_admin_http_json(a->req, 200, o);
}

/* ------------------------------------------------------------------------ */
/* configuration check                                                       */

/* "FILE:LINE: message" -> {file, line, message}; other text -> message. */
static json_t *error_json(const char *msg)
{
    const char *p = msg;
    while ((p = strchr(p, ':')) != NULL) {
        char *end;
        long line = strtol(p + 1, &end, 10);
        if (end > p + 1 && line > 0 && strncmp(end, ": ", 2) == 0) {
            char file[512];
            snprintf(file, sizeof(file), "%.*s", (int)(p - msg), msg);
            return json_pack("{s:o, s:i, s:o}", "file", lm_admin_jtext(file), "line", (int)line,
                             "message", lm_admin_jtext(end + 2));
        }
        p++;
    }
    return json_pack("{s:n, s:n, s:o}", "file", "line", "message", lm_admin_jtext(msg));
}

/* POST /admin/check: build the configuration file as it is on disk now,
 * strictly (as longmen -t), without applying it. 200 either way: ok, or
 * the errors. */
void lm_admin_check(lm_admin_ctx_t *a)
{
    char err[1024] = "";
    if (!lm_admin_no_query(a))
        return;
    if (a->env->ctl.arg == NULL) {
        lm_admin_http_error(a->req, 503, "unavailable", NULL, "no server");
        return;
    }
    lm_conf_t *c = a->env->ctl.conf_file(a->env->ctl.arg, err, sizeof(err));
    int ok = c != NULL && a->env->ctl.check_conf(a->env->ctl.arg, c, err, sizeof(err)) == 0;
    json_t *errors = json_array();
    if (!ok)
        json_array_append_new(errors, error_json(err[0] ? err : "the configuration does not load"));
    lm_admin_http_json(a->req, 200,
                       json_pack("{s:s, s:b, s:o}", "object", "check", "ok", ok, "errors", errors));
}
