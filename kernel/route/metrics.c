/*
 * metrics.c - Prometheus registry. Series live in per-family hash chains
 * that only ever grow: a new node is fully built, then published with a
 * release store, so readers walk the chains with acquire loads and no lock.
 * Nothing is removed before lm_metrics_free, which is what makes cached
 * series pointers safe.
 */
#include "route/metrics.h"
#include "core/buf.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double lm_metrics_seconds_buckets[LM_METRICS_SECONDS_NBUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

enum { T_COUNTER, T_GAUGE, T_HISTOGRAM };
#define NHASH 64
#define NANO  1000000000.0

struct lm_metrics_series_s {
    _Atomic(lm_metrics_series_t *) hnext; /* hash chain (lock-free readers) */
    lm_metrics_series_t *next;            /* creation order (under the mutex) */
    lm_metrics_family_t *fam;
    uint64_t hash;
    char **values;
    atomic_uint_fast64_t counter;   /* counter */
    atomic_int_fast64_t gauge;      /* gauge */
    atomic_uint_fast64_t sum;       /* histogram: sum in nano-units */
    atomic_uint_fast64_t buckets[]; /* histogram: nbounds + 1 (the last is +Inf only) */
};

struct lm_metrics_family_s {
    lm_metrics_t *m;
    lm_metrics_family_t *next;
    int type;
    char *name, *help;
    char *labels[LM_METRICS_MAX_LABELS];
    size_t nlabels;
    double bounds[LM_METRICS_MAX_BUCKETS];
    size_t nbounds;
    _Atomic(lm_metrics_series_t *) hash[NHASH];
    lm_metrics_series_t *first, *last;
};

struct lm_metrics_s {
    pthread_mutex_t mu; /* families list, series creation, render */
    lm_metrics_family_t *first, *last;
    size_t nseries, max_series;
    atomic_uint_fast64_t dropped;
};

lm_metrics_t *lm_metrics_new(size_t max_series)
{
    lm_metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->max_series = max_series ? max_series : 10000;
    atomic_init(&m->dropped, 0);
    return m;
}

static void series_free(lm_metrics_series_t *s)
{
    for (size_t i = 0; s->values && i < s->fam->nlabels; i++)
        free(s->values[i]);
    free(s->values);
    free(s);
}

static void family_free(lm_metrics_family_t *f)
{
    lm_metrics_series_t *s = f->first;
    while (s) {
        lm_metrics_series_t *next = s->next;
        series_free(s);
        s = next;
    }
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f);
}

void lm_metrics_free(lm_metrics_t *m)
{
    if (m == NULL)
        return;
    lm_metrics_family_t *f = m->first;
    while (f) {
        lm_metrics_family_t *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

uint64_t lm_metrics_dropped(lm_metrics_t *m)
{
    return atomic_load(&m->dropped);
}

/* ---- registration ---- */

static int name_ok(const char *s, int colon)
{
    if (s == NULL || *s == 0 || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || (colon && c == ':')))
            return 0;
    }
    return 1;
}

static int labels_ok(int type, const char *const *labels, size_t n)
{
    if (n > LM_METRICS_MAX_LABELS || (n && labels == NULL))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!name_ok(labels[i], 0) || strncmp(labels[i], "__", 2) == 0)
            return 0;
        if (type == T_HISTOGRAM && strcmp(labels[i], "le") == 0)
            return 0;
    }
    return 1;
}

static int bounds_ok(const double *b, size_t n)
{
    if (n == 0 || n > LM_METRICS_MAX_BUCKETS || b == NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(b[i]) || (i && b[i] <= b[i - 1]))
            return 0;
    }
    return 1;
}

/* The same registration twice (e.g. after a reload) is the same family. */
static int same_shape(const lm_metrics_family_t *f, int type, const char *const *labels, size_t n)
{
    if (f->type != type || f->nlabels != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(f->labels[i], labels[i]) != 0)
            return 0;
    }
    return 1;
}

static lm_metrics_family_t *family_find(lm_metrics_t *m, const char *name)
{
    for (lm_metrics_family_t *f = m->first; f; f = f->next) {
        if (strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

static lm_metrics_family_t *family_new(lm_metrics_t *m, int type, const char *name,
                                       const char *help, const char *const *labels, size_t n)
{
    lm_metrics_family_t *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->m = m;
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    int ok = f->name && f->help;
    for (size_t i = 0; i < n; i++) {
        f->labels[i] = strdup(labels[i]);
        ok = ok && f->labels[i];
    }
    f->nlabels = n;
    for (size_t i = 0; i < NHASH; i++)
        atomic_init(&f->hash[i], NULL);
    if (!ok) {
        family_free(f);
        return NULL;
    }
    return f;
}

static lm_metrics_series_t *series_locked(lm_metrics_family_t *f, const char *const *values);

static lm_metrics_family_t *reg(lm_metrics_t *m, int type, const char *name, const char *help,
                                const char *const *labels, size_t n, const double *bounds,
                                size_t nb)
{
    if (m == NULL || !name_ok(name, 1) || !labels_ok(type, labels, n))
        return NULL;
    if (type == T_HISTOGRAM && !bounds_ok(bounds, nb))
        return NULL;
    pthread_mutex_lock(&m->mu);
    lm_metrics_family_t *f = family_find(m, name);
    if (f) {
        if (!same_shape(f, type, labels, n))
            f = NULL;
        pthread_mutex_unlock(&m->mu);
        return f;
    }
    f = family_new(m, type, name, help, labels, n);
    if (f && type == T_HISTOGRAM) {
        memcpy(f->bounds, bounds, nb * sizeof(*bounds));
        f->nbounds = nb;
    }
    if (f) {
        if (m->last)
            m->last->next = f;
        else
            m->first = f;
        m->last = f;
        if (n == 0)
            series_locked(f, NULL);
    }
    pthread_mutex_unlock(&m->mu);
    return f;
}

lm_metrics_family_t *lm_metrics_counter(lm_metrics_t *m, const char *name, const char *help,
                                        const char *const *labels, size_t nlabels)
{
    return reg(m, T_COUNTER, name, help, labels, nlabels, NULL, 0);
}

lm_metrics_family_t *lm_metrics_gauge(lm_metrics_t *m, const char *name, const char *help,
                                      const char *const *labels, size_t nlabels)
{
    return reg(m, T_GAUGE, name, help, labels, nlabels, NULL, 0);
}

lm_metrics_family_t *lm_metrics_histogram(lm_metrics_t *m, const char *name, const char *help,
                                          const char *const *labels, size_t nlabels,
                                          const double *bounds, size_t nbounds)
{
    return reg(m, T_HISTOGRAM, name, help, labels, nlabels, bounds, nbounds);
}

/* ---- series ---- */

static const char *val(const char *const *values, size_t i)
{
    return values && values[i] ? values[i] : "";
}

/* FNV-1a over the values, each followed by a 0xff byte that cannot occur
 * in UTF-8, so ("ab","c") and ("a","bc") differ. */
static uint64_t hash_values(const lm_metrics_family_t *f, const char *const *values)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < f->nlabels; i++) {
        for (const unsigned char *p = (const unsigned char *)val(values, i); *p; p++)
            h = (h ^ *p) * 0x100000001b3ull;
        h = (h ^ 0xff) * 0x100000001b3ull;
    }
    return h;
}

static int same_values(const lm_metrics_series_t *s, const char *const *values)
{
    for (size_t i = 0; i < s->fam->nlabels; i++) {
        if (strcmp(s->values[i], val(values, i)) != 0)
            return 0;
    }
    return 1;
}

static lm_metrics_series_t *lookup(lm_metrics_family_t *f, uint64_t h, const char *const *values)
{
    lm_metrics_series_t *s = atomic_load_explicit(&f->hash[h % NHASH], memory_order_acquire);
    for (; s; s = atomic_load_explicit(&s->hnext, memory_order_acquire)) {
        if (s->hash == h && same_values(s, values))
            return s;
    }
    return NULL;
}

static lm_metrics_series_t *series_build(lm_metrics_family_t *f, uint64_t h,
                                         const char *const *values)
{
    size_t nb = f->type == T_HISTOGRAM ? f->nbounds + 1 : 0;
    lm_metrics_series_t *s = calloc(1, sizeof(*s) + nb * sizeof(s->buckets[0]));
    if (s == NULL)
        return NULL;
    s->fam = f;
    s->hash = h;
    atomic_init(&s->hnext, NULL);
    atomic_init(&s->counter, 0);
    atomic_init(&s->gauge, 0);
    atomic_init(&s->sum, 0);
    for (size_t i = 0; i < nb; i++)
        atomic_init(&s->buckets[i], 0);
    s->values = calloc(f->nlabels + 1, sizeof(char *));
    int ok = s->values != NULL;
    for (size_t i = 0; ok && i < f->nlabels; i++)
        ok = (s->values[i] = strdup(val(values, i))) != NULL;
    if (!ok) {
        series_free(s);
        return NULL;
    }
    return s;
}

/* Under the registry mutex: look again (another thread may have created
 * it meanwhile), check the cap, build, then publish. */
static lm_metrics_series_t *series_locked(lm_metrics_family_t *f, const char *const *values)
{
    lm_metrics_t *m = f->m;
    uint64_t h = hash_values(f, values);
    lm_metrics_series_t *s = lookup(f, h, values);
    if (s)
        return s;
    if (m->nseries >= m->max_series) {
        atomic_fetch_add(&m->dropped, 1);
        return NULL;
    }
    s = series_build(f, h, values);
    if (s == NULL)
        return NULL;
    m->nseries++;
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    atomic_store_explicit(&s->hnext, atomic_load(&f->hash[h % NHASH]), memory_order_relaxed);
    atomic_store_explicit(&f->hash[h % NHASH], s, memory_order_release);
    return s;
}

lm_metrics_series_t *lm_metrics_series(lm_metrics_family_t *f, const char *const *values)
{
    if (f == NULL)
        return NULL;
    lm_metrics_series_t *s = lookup(f, hash_values(f, values), values);
    if (s)
        return s;
    pthread_mutex_lock(&f->m->mu);
    s = series_locked(f, values);
    pthread_mutex_unlock(&f->m->mu);
    return s;
}

void lm_metrics_add(lm_metrics_series_t *s, uint64_t n)
{
    if (s && s->fam->type == T_COUNTER)
        atomic_fetch_add_explicit(&s->counter, n, memory_order_relaxed);
}

void lm_metrics_set(lm_metrics_series_t *s, int64_t v)
{
    if (s && s->fam->type == T_GAUGE)
        atomic_store_explicit(&s->gauge, v, memory_order_relaxed);
}

void lm_metrics_gauge_add(lm_metrics_series_t *s, int64_t d)
{
    if (s && s->fam->type == T_GAUGE)
        atomic_fetch_add_explicit(&s->gauge, d, memory_order_relaxed);
}

/* le is inclusive: v lands in the first bucket whose bound is >= v. The
 * sum is kept in nano-units so it can be an exact atomic integer; negative
 * observations count but add nothing (durations are never negative). */
void lm_metrics_observe(lm_metrics_series_t *s, double v)
{
    if (s == NULL || s->fam->type != T_HISTOGRAM || isnan(v))
        return;
    const lm_metrics_family_t *f = s->fam;
    size_t i = 0;
    while (i < f->nbounds && v > f->bounds[i])
        i++;
    atomic_fetch_add_explicit(&s->buckets[i], 1, memory_order_relaxed);
    if (v > 0) {
        double nano = v * NANO;
        uint64_t add = nano >= 1.8e19 ? UINT64_C(18000000000000000000) : (uint64_t)(nano + 0.5);
        atomic_fetch_add_explicit(&s->sum, add, memory_order_relaxed);
    }
}

int lm_metrics_inc(lm_metrics_family_t *f, const char *const *values, uint64_t n)
{
    lm_metrics_series_t *s = lm_metrics_series(f, values);
    lm_metrics_add(s, n);
    return s ? 0 : -1;
}

int lm_metrics_put(lm_metrics_family_t *f, const char *const *values, int64_t v)
{
    lm_metrics_series_t *s = lm_metrics_series(f, values);
    lm_metrics_set(s, v);
    return s ? 0 : -1;
}

int lm_metrics_obs(lm_metrics_family_t *f, const char *const *values, double v)
{
    lm_metrics_series_t *s = lm_metrics_series(f, values);
    lm_metrics_observe(s, v);
    return s ? 0 : -1;
}

/* ---- rendering ---- */

static void out_escaped(lm_buf_t *o, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            lm_buf_adds(o, "\\\\");
        else if (*s == '\n')
            lm_buf_adds(o, "\\n");
        else if (quote && *s == '"')
            lm_buf_adds(o, "\\\"");
        else
            lm_buf_add(o, s, 1);
    }
}

/* {a="x",b="y"} plus an optional le (histogram buckets); nothing when
 * there are no labels at all. */
static void out_labels(lm_buf_t *o, const lm_metrics_series_t *s, const char *le)
{
    const lm_metrics_family_t *f = s->fam;
    if (f->nlabels == 0 && le == NULL)
        return;
    lm_buf_adds(o, "{");
    for (size_t i = 0; i < f->nlabels; i++) {
        lm_buf_addf(o, "%s%s=\"", i ? "," : "", f->labels[i]);
        out_escaped(o, s->values[i], 1);
        lm_buf_adds(o, "\"");
    }
    if (le)
        lm_buf_addf(o, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    lm_buf_adds(o, "}");
}

/* The shortest text that reads back as the same double (0.005, 2.5, 60). */
static void fmt_double(char *buf, size_t n, double v)
{
    if (v > -1e15 && v < 1e15 && v == (double)(long long)v) { /* no libm needed */
        snprintf(buf, n, "%.0f", v);                          /* 60, not 6e+01 */
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* Nano-units as a decimal without trailing zeros: 1500000000 -> "1.5". */
static void fmt_nano(char *buf, size_t n, uint64_t v)
{
    uint64_t whole = v / 1000000000u, frac = v % 1000000000u;
    if (frac == 0) {
        snprintf(buf, n, "%llu", (unsigned long long)whole);
        return;
    }
    int digits = 9;
    while (frac % 10 == 0) {
        frac /= 10;
        digits--;
    }
    snprintf(buf, n, "%llu.%0*llu", (unsigned long long)whole, digits, (unsigned long long)frac);
}

static void render_histogram(lm_buf_t *o, const lm_metrics_series_t *s)
{
    const lm_metrics_family_t *f = s->fam;
    uint64_t cum = 0;
    char num[64];
    /* One pass: _count is the sum of the buckets read, so +Inf == _count
     * even while other threads observe. */
    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        if (i < f->nbounds)
            fmt_double(num, sizeof(num), f->bounds[i]);
        else
            snprintf(num, sizeof(num), "+Inf");
        lm_buf_addf(o, "%s_bucket", f->name);
        out_labels(o, s, num);
        lm_buf_addf(o, " %llu\n", (unsigned long long)cum);
    }
    fmt_nano(num, sizeof(num), atomic_load_explicit(&s->sum, memory_order_relaxed));
    lm_buf_addf(o, "%s_sum", f->name);
    out_labels(o, s, NULL);
    lm_buf_addf(o, " %s\n", num);
    lm_buf_addf(o, "%s_count", f->name);
    out_labels(o, s, NULL);
    lm_buf_addf(o, " %llu\n", (unsigned long long)cum);
}

static void render_series(lm_buf_t *o, const lm_metrics_series_t *s)
{
    const lm_metrics_family_t *f = s->fam;
    if (f->type == T_HISTOGRAM) {
        render_histogram(o, s);
        return;
    }
    lm_buf_adds(o, f->name);
    out_labels(o, s, NULL);
    if (f->type == T_COUNTER)
        lm_buf_addf(o, " %llu\n",
                    (unsigned long long)atomic_load_explicit(&s->counter, memory_order_relaxed));
    else
        lm_buf_addf(o, " %lld\n", (long long)atomic_load_explicit(&s->gauge, memory_order_relaxed));
}

static void render_family(lm_buf_t *o, const lm_metrics_family_t *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    lm_buf_addf(o, "# HELP %s ", f->name);
    out_escaped(o, f->help, 0);
    lm_buf_addf(o, "\n# TYPE %s %s\n", f->name, types[f->type]);
    for (const lm_metrics_series_t *s = f->first; s; s = s->next)
        render_series(o, s);
}

char *lm_metrics_render(lm_metrics_t *m, size_t *len)
{
    lm_buf_t o = {0};
    lm_buf_adds(&o, ""); /* an empty registry still renders as "" */
    pthread_mutex_lock(&m->mu);
    for (const lm_metrics_family_t *f = m->first; f; f = f->next)
        render_family(&o, f);
    pthread_mutex_unlock(&m->mu);
    uint64_t dropped = atomic_load(&m->dropped);
    if (dropped)
        lm_buf_addf(
            &o,
            "# HELP longmen_metrics_series_dropped_total Series refused by the series cap.\n"
            "# TYPE longmen_metrics_series_dropped_total counter\n"
            "longmen_metrics_series_dropped_total %llu\n",
            (unsigned long long)dropped);
    return lm_buf_take(&o, len); /* NULL if an append failed */
}

/* ---- the gateway's series ---- */

int lm_metrics_std_register(lm_metrics_t *m, lm_metrics_std_t *out)
{
    static const char *const mcs[] = {"model", "channel", "status"};
    static const char *const mcc[] = {"model", "channel", "code"};
    static const char *const mck[] = {"model", "channel", "kind"};
    static const char *const mco[] = {"model", "channel", "outcome"};
    static const char *const ch[] = {"channel"};
    static const char *const sc[] = {"script"};
    static const char *const mo[] = {"model"};
    const double *b = lm_metrics_seconds_buckets;
    const size_t nb = LM_METRICS_SECONDS_NBUCKETS;
    *out = (lm_metrics_std_t){
        .requests =
            lm_metrics_counter(m, "longmen_requests_total",
                               "Requests answered, by model, channel and HTTP status.", mcs, 3),
        .errors = lm_metrics_counter(m, "longmen_errors_total",
                                     "Failed upstream attempts and error answers, by error code.",
                                     mcc, 3),
        .tokens = lm_metrics_counter(m, "longmen_tokens_total",
                                     "Tokens reported by providers (kind: prompt or completion).",
                                     mck, 3),
        .cost = lm_metrics_counter(m, "longmen_cost_micro_total", "Money billed, in micro-units.",
                                   mcs, 2),
        .request_secs = lm_metrics_histogram(m, "longmen_request_seconds",
                                             "Request duration, first byte in to last byte out.",
                                             mcs, 2, b, nb),
        .ttft_secs = lm_metrics_histogram(m, "longmen_ttft_seconds",
                                          "Time to the first content byte from the upstream.", mcs,
                                          2, b, nb),
        .inflight = lm_metrics_gauge(m, "longmen_inflight", "Upstream attempts in flight.", ch, 1),
        .healthy =
            lm_metrics_gauge(m, "longmen_channel_healthy",
                             "1 when the channel takes traffic, 0 while it is ejected.", ch, 1),
        .generation =
            lm_metrics_gauge(m, "longmen_generation",
                             "Configuration and plugin generation serving requests.", NULL, 0),
        .script_errors = lm_metrics_counter(m, "longmen_script_errors_total",
                                            "Lua policy script errors, by script.", sc, 1),
        .cache_hits = lm_metrics_counter(m, "longmen_cache_hits_total",
                                         "Requests answered from the response cache.", mo, 1),
        .cache_misses = lm_metrics_counter(
            m, "longmen_cache_misses_total",
            "Cacheable requests the response cache did not hold, sent upstream.", mo, 1),
        .cache_evictions = lm_metrics_counter(
            m, "longmen_cache_evictions_total",
            "Answers dropped from the response cache to stay under its cap.", NULL, 0),
        .cache_bytes = lm_metrics_gauge(m, "longmen_cache_bytes",
                                        "Bytes held by the response cache.", NULL, 0),
        .cache_redis_errors = lm_metrics_counter(
            m, "longmen_cache_redis_errors_total",
            "Response cache lookups in Redis that failed or timed out (served as misses).", NULL,
            0),
        .task_polls = lm_metrics_counter(m, "longmen_task_polls_total",
                                         "Polls sent for asynchronous upstream tasks.", mcs, 2),
        .tasks = lm_metrics_counter(
            m, "longmen_tasks_total",
            "Asynchronous upstream tasks ended, by outcome (succeeded, failed, timeout).", mco, 3),
    };
    if (out->task_polls == NULL || out->tasks == NULL)
        return -1;
    lm_metrics_family_t *const all[] = {out->requests,
                                        out->errors,
                                        out->tokens,
                                        out->cost,
                                        out->request_secs,
                                        out->ttft_secs,
                                        out->inflight,
                                        out->healthy,
                                        out->generation,
                                        out->script_errors,
                                        out->cache_hits,
                                        out->cache_misses,
                                        out->cache_evictions,
                                        out->cache_bytes,
                                        out->cache_redis_errors};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (all[i] == NULL)
            return -1;
    }
    return 0;
}
