/*
 * route.c - channel selection and passive health. See route.h for the
 * ownership and threading of each object; nothing here does I/O or reads a
 * clock, so tests drive time by hand.
 */
#include "route/route.h"

#include <stdlib.h>
#include <string.h>

void lm_route_opts_default(lm_route_opts_t *o)
{
    *o = (lm_route_opts_t){.consecutive_failures = 5,
                           .base_ejection_ms = 30000,
                           .max_ejection_ms = 300000,
                           .reset_after_ms = 300000,
                           .window_ms = 10000,
                           .window_min_requests = 20,
                           .window_error_pct = 50,
                           .probe_ttl_ms = 10000};
}

/* Zero fields mean "default", so a config that sets one knob keeps the rest. */
static void opts_fill(lm_route_opts_t *dst, const lm_route_opts_t *src)
{
    lm_route_opts_t d;
    lm_route_opts_default(&d);
    if (src == NULL) {
        *dst = d;
        return;
    }
    *dst = *src;
#define LM_FILL(f)                                                                                 \
    do {                                                                                           \
        if (dst->f <= 0)                                                                           \
            dst->f = d.f;                                                                          \
    } while (0)
    LM_FILL(consecutive_failures);
    LM_FILL(base_ejection_ms);
    LM_FILL(max_ejection_ms);
    LM_FILL(reset_after_ms);
    LM_FILL(window_ms);
    LM_FILL(window_min_requests);
    LM_FILL(window_error_pct);
    LM_FILL(probe_ttl_ms);
#undef LM_FILL
    if (dst->window_ms < LM_ROUTE_WINDOW_BUCKETS)
        dst->window_ms = LM_ROUTE_WINDOW_BUCKETS;
}

/* ---- limits ---- */

void lm_route_limit_init(lm_route_limit_t *l, int cap)
{
    atomic_init(&l->inflight, 0);
    atomic_init(&l->cap, cap > 0 ? cap : 0);
}

void lm_route_limit_set_cap(lm_route_limit_t *l, int cap)
{
    atomic_store(&l->cap, cap > 0 ? cap : 0);
}

/* Increment first, then check, so concurrent callers can never overshoot
 * the cap: whoever lands past it undoes its own increment. */
int lm_route_limit_acquire(lm_route_limit_t *l)
{
    int cap = atomic_load_explicit(&l->cap, memory_order_relaxed);
    int prev = atomic_fetch_add(&l->inflight, 1);
    if (cap > 0 && prev >= cap) {
        atomic_fetch_sub(&l->inflight, 1);
        return -1;
    }
    return 0;
}

void lm_route_limit_release(lm_route_limit_t *l)
{
    atomic_fetch_sub(&l->inflight, 1);
}

int lm_route_limit_inflight(const lm_route_limit_t *l)
{
    return atomic_load_explicit(&l->inflight, memory_order_relaxed);
}

static int limit_full(lm_route_limit_t *l)
{
    if (l == NULL)
        return 0;
    int cap = atomic_load_explicit(&l->cap, memory_order_relaxed);
    return cap > 0 && atomic_load_explicit(&l->inflight, memory_order_relaxed) >= cap;
}

/* ---- health ---- */

void lm_route_stats_init(lm_route_stats_t *s, const lm_route_opts_t *opts, lm_route_limit_t *limit)
{
    memset(s, 0, sizeof(*s));
    s->limit = limit;
    atomic_init(&s->inflight, 0);
    pthread_mutex_init(&s->mu, NULL);
    opts_fill(&s->opts, opts);
    s->ewma_latency_ms = -1;
    s->ewma_ttft_ms = -1;
    s->state = LM_ROUTE_CLOSED;
    for (int i = 0; i < LM_ROUTE_WINDOW_BUCKETS; i++)
        s->win[i].epoch = -1;
}

void lm_route_stats_free(lm_route_stats_t *s)
{
    pthread_mutex_destroy(&s->mu);
}

void lm_route_stats_set_opts(lm_route_stats_t *s, const lm_route_opts_t *opts)
{
    pthread_mutex_lock(&s->mu);
    opts_fill(&s->opts, opts);
    pthread_mutex_unlock(&s->mu);
}

/* Time-driven transitions, applied lazily by whoever looks (locked):
 * a finished cool-down becomes half-open; a probe handed out but never
 * started (the request died before its attempt) lapses, so the channel
 * cannot stay half-open forever. */
static void refresh(lm_route_stats_t *s, int64_t now)
{
    if (s->state == LM_ROUTE_EJECTED && now >= s->ejected_until) {
        s->state = LM_ROUTE_HALF_OPEN;
        s->probe_claimed = s->probe_started = 0;
    }
    if (s->state == LM_ROUTE_HALF_OPEN && s->probe_claimed && !s->probe_started &&
        now - s->probe_claimed_at >= s->opts.probe_ttl_ms)
        s->probe_claimed = 0;
}

static int64_t bucket_width(const lm_route_stats_t *s)
{
    return s->opts.window_ms / LM_ROUTE_WINDOW_BUCKETS;
}

static void window_add(lm_route_stats_t *s, int64_t now, int ok)
{
    int64_t epoch = now / bucket_width(s);
    int i = (int)(epoch % LM_ROUTE_WINDOW_BUCKETS);
    if (s->win[i].epoch != epoch) {
        s->win[i].epoch = epoch;
        s->win[i].ok = s->win[i].fail = 0;
    }
    if (ok)
        s->win[i].ok++;
    else
        s->win[i].fail++;
}

static void window_sum(const lm_route_stats_t *s, int64_t now, int *ok, int *fail)
{
    int64_t epoch = now / bucket_width(s);
    *ok = *fail = 0;
    for (int i = 0; i < LM_ROUTE_WINDOW_BUCKETS; i++) {
        if (s->win[i].epoch >= 0 && s->win[i].epoch > epoch - LM_ROUTE_WINDOW_BUCKETS) {
            *ok += s->win[i].ok;
            *fail += s->win[i].fail;
        }
    }
}

static void window_clear(lm_route_stats_t *s)
{
    for (int i = 0; i < LM_ROUTE_WINDOW_BUCKETS; i++)
        s->win[i].epoch = -1;
}

/* Eject for base x n (capped). The count restarts once the channel has
 * stayed healthy for reset_after_ms, so a channel that fails once a day is
 * not punished for last week; a failed probe keeps growing it. The window
 * and the failure run are cleared so a recovered channel starts afresh. */
static void eject(lm_route_stats_t *s, int64_t now)
{
    if (s->state == LM_ROUTE_CLOSED && now - s->closed_since >= s->opts.reset_after_ms)
        s->ejections = 0;
    s->ejections++;
    int64_t cool = s->opts.base_ejection_ms * s->ejections;
    if (cool > s->opts.max_ejection_ms || cool <= 0)
        cool = s->opts.max_ejection_ms;
    s->state = LM_ROUTE_EJECTED;
    s->ejected_until = now + cool;
    s->probe_claimed = s->probe_started = 0;
    s->consecutive = 0;
    window_clear(s);
}

static void ewma(double *avg, int64_t sample)
{
    if (sample < 0)
        return;
    *avg = *avg < 0 ? (double)sample : *avg + LM_ROUTE_EWMA_ALPHA * ((double)sample - *avg);
}

int lm_route_begin(lm_route_stats_t *s, int64_t now_ms)
{
    if (s->limit && lm_route_limit_acquire(s->limit) < 0)
        return -1;
    atomic_fetch_add(&s->inflight, 1);
    pthread_mutex_lock(&s->mu);
    refresh(s, now_ms);
    /* Any attempt on a half-open pair is its probe (the selected one, or a
     * last resort when everything else failed): its end decides. */
    if (s->state == LM_ROUTE_HALF_OPEN) {
        s->probe_claimed = s->probe_started = 1;
        s->probe_claimed_at = now_ms;
    }
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* A failure on a closed pair: eject on a failure run, or on the error
 * rate once the window holds enough results to mean something. */
static lm_route_event_t judge_failure(lm_route_stats_t *s, int64_t now)
{
    if (s->consecutive >= s->opts.consecutive_failures) {
        eject(s, now);
        return LM_ROUTE_EV_EJECT_CONSECUTIVE;
    }
    int ok, fail;
    window_sum(s, now, &ok, &fail);
    if (ok + fail >= s->opts.window_min_requests &&
        (int64_t)fail * 100 >= (int64_t)s->opts.window_error_pct * (ok + fail)) {
        eject(s, now);
        return LM_ROUTE_EV_EJECT_RATE;
    }
    return LM_ROUTE_EV_NONE;
}

static lm_route_event_t record(lm_route_stats_t *s, int64_t now, int ok)
{
    window_add(s, now, ok);
    if (ok) {
        s->consecutive = 0;
        if (s->state == LM_ROUTE_CLOSED)
            return LM_ROUTE_EV_NONE;
        s->state = LM_ROUTE_CLOSED;
        s->closed_since = now;
        s->probe_claimed = s->probe_started = 0;
        return LM_ROUTE_EV_RECOVERED;
    }
    s->consecutive++;
    if (s->state == LM_ROUTE_HALF_OPEN) {
        eject(s, now);
        return LM_ROUTE_EV_PROBE_FAILED;
    }
    if (s->state == LM_ROUTE_EJECTED)
        return LM_ROUTE_EV_NONE; /* a last-resort attempt: the cool-down stands */
    return judge_failure(s, now);
}

lm_route_event_t lm_route_end(lm_route_stats_t *s, int64_t now_ms, int outcome, int64_t latency_ms,
                              int64_t ttft_ms)
{
    lm_route_event_t ev = LM_ROUTE_EV_NONE;
    atomic_fetch_sub(&s->inflight, 1);
    if (s->limit)
        lm_route_limit_release(s->limit);
    pthread_mutex_lock(&s->mu);
    refresh(s, now_ms);
    if (outcome == LM_ROUTE_CANCEL) {
        /* No verdict: free the probe so another request can decide. */
        if (s->state == LM_ROUTE_HALF_OPEN)
            s->probe_claimed = s->probe_started = 0;
    } else {
        /* Failures do not feed the EWMA: a refused connection is fast and
         * would make a dead channel look like the quickest. */
        if (outcome == LM_ROUTE_OK) {
            ewma(&s->ewma_latency_ms, latency_ms);
            ewma(&s->ewma_ttft_ms, ttft_ms);
        }
        ev = record(s, now_ms, outcome == LM_ROUTE_OK);
    }
    pthread_mutex_unlock(&s->mu);
    return ev;
}

int lm_route_healthy(lm_route_stats_t *s, int64_t now_ms)
{
    pthread_mutex_lock(&s->mu);
    refresh(s, now_ms);
    int ok = s->state == LM_ROUTE_CLOSED || (s->state == LM_ROUTE_HALF_OPEN && !s->probe_claimed);
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void lm_route_snapshot(lm_route_stats_t *s, int64_t now_ms, lm_route_snap_t *out)
{
    pthread_mutex_lock(&s->mu);
    refresh(s, now_ms);
    out->state = s->state;
    out->inflight = atomic_load(&s->inflight);
    out->consecutive = s->consecutive;
    out->ejections = s->ejections;
    out->ejected_until = s->ejected_until;
    out->ewma_latency_ms = s->ewma_latency_ms;
    out->ewma_ttft_ms = s->ewma_ttft_ms;
    window_sum(s, now_ms, &out->window_ok, &out->window_fail);
    pthread_mutex_unlock(&s->mu);
}

const char *lm_route_state_str(lm_route_state_t st)
{
    switch (st) {
    case LM_ROUTE_CLOSED: return "closed";
    case LM_ROUTE_EJECTED: return "ejected";
    case LM_ROUTE_HALF_OPEN: return "half_open";
    }
    return "?";
}

const char *lm_route_event_str(lm_route_event_t ev)
{
    switch (ev) {
    case LM_ROUTE_EV_NONE: return "";
    case LM_ROUTE_EV_EJECT_CONSECUTIVE: return "ejected: consecutive failures";
    case LM_ROUTE_EV_EJECT_RATE: return "ejected: error rate over the window";
    case LM_ROUTE_EV_PROBE_FAILED: return "ejected again: half-open probe failed";
    case LM_ROUTE_EV_RECOVERED: return "recovered";
    }
    return "?";
}

/* ---- selection ---- */

int lm_route_strategy_parse(const char *name, lm_route_strategy_t *out)
{
    static const char *const names[] = {"weighted", "round_robin", "least_inflight",
                                        "lowest_latency", "lowest_cost"};
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (lm_route_strategy_t)i;
            return 0;
        }
    }
    return -1;
}

void lm_route_group_init(lm_route_group_t *g)
{
    atomic_init(&g->rr, 0);
}

uint64_t lm_route_rand_xorshift(void *state)
{
    uint64_t *x = state;
    if (*x == 0)
        *x = 0x9e3779b97f4a7c15ull; /* a zero state would stay zero */
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 0x2545f4914f6cdd1dull;
}

enum { CLS_USABLE = 0, CLS_FULL = 1, CLS_OUT = 2 };

/* What selection knows about one candidate: a snapshot taken once. */
typedef struct {
    int cls;
    int probe; /* holds this request's half-open probe */
    int tier;
    double key;    /* strategy key, lower first */
    int64_t until; /* CLS_OUT: when the cool-down ends */
    size_t rank;   /* position in the weighted random draw (tie-break) */
} slot_t;

/* Claim the probe for this request if the pair is half-open and free
 * (*probe_left limits a request to one probe). Locked. */
static int classify_health(lm_route_stats_t *s, int64_t now, int *probe_left, slot_t *sl)
{
    int out = 0;
    pthread_mutex_lock(&s->mu);
    refresh(s, now);
    if (s->state == LM_ROUTE_HALF_OPEN && !s->probe_claimed && *probe_left) {
        s->probe_claimed = 1;
        s->probe_claimed_at = now;
        *probe_left = 0;
        sl->probe = 1;
    } else if (s->state != LM_ROUTE_CLOSED) {
        out = 1;
        sl->until = s->state == LM_ROUTE_EJECTED ? s->ejected_until : now;
    }
    if (now < s->hold_until) { /* Retry-After: out even when otherwise healthy */
        if (sl->probe) {
            sl->probe = 0;
            s->probe_claimed = 0;
            *probe_left = 1;
        }
        if (!out || sl->until < s->hold_until)
            sl->until = s->hold_until;
        out = 1;
    }
    sl->key = s->ewma_ttft_ms >= 0 ? s->ewma_ttft_ms : s->ewma_latency_ms;
    pthread_mutex_unlock(&s->mu);
    return out;
}

void lm_route_hold(lm_route_stats_t *s, int64_t until_ms)
{
    pthread_mutex_lock(&s->mu);
    if (until_ms > s->hold_until)
        s->hold_until = until_ms;
    pthread_mutex_unlock(&s->mu);
}

int64_t lm_route_hold_left(lm_route_stats_t *s, int64_t now_ms)
{
    pthread_mutex_lock(&s->mu);
    int64_t left = s->hold_until > now_ms ? s->hold_until - now_ms : 0;
    pthread_mutex_unlock(&s->mu);
    return left;
}

static double strategy_key(const lm_route_cand_t *c, lm_route_strategy_t st, double latency)
{
    switch (st) {
    case LM_ROUTE_LEAST_INFLIGHT:
        if (c->stats == NULL)
            return 0;
        return c->stats->limit ? lm_route_limit_inflight(c->stats->limit)
                               : atomic_load_explicit(&c->stats->inflight, memory_order_relaxed);
    case LM_ROUTE_LOWEST_LATENCY: return latency; /* no sample (-1) sorts first: explore it */
    case LM_ROUTE_LOWEST_COST: return (double)c->price;
    default: return 0;
    }
}

static void classify(const lm_route_cand_t *c, size_t n, lm_route_strategy_t st, int64_t now,
                     slot_t *sl)
{
    int probe_left = 1;
    for (size_t i = 0; i < n; i++) {
        memset(&sl[i], 0, sizeof(sl[i]));
        sl[i].tier = c[i].priority;
        sl[i].key = -1;
        if (c[i].stats && classify_health(c[i].stats, now, &probe_left, &sl[i]))
            sl[i].cls = CLS_OUT;
        else if (c[i].stats && limit_full(c[i].stats->limit))
            sl[i].cls = CLS_FULL;
        sl[i].key = strategy_key(&c[i], st, sl[i].key);
    }
}

/* Successive weighted draws without replacement over all candidates: the
 * relative order inside any tier is then itself such a draw over that tier,
 * so the first healthy pick of a tier follows its weights. */
static void weighted_ranks(const lm_route_cand_t *c, size_t n, lm_route_rand_fn rnd, void *arg,
                           slot_t *sl)
{
    int taken[LM_ROUTE_MAX_CANDS] = {0};
    for (size_t r = 0; r < n; r++) {
        uint64_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += taken[i] ? 0 : (uint64_t)(c[i].weight > 0 ? c[i].weight : 1);
        uint64_t pick = rnd(arg) % total;
        for (size_t i = 0; i < n; i++) {
            if (taken[i])
                continue;
            uint64_t w = (uint64_t)(c[i].weight > 0 ? c[i].weight : 1);
            if (pick < w) {
                taken[i] = 1;
                sl[i].rank = r;
                break;
            }
            pick -= w;
        }
    }
}

static int cmp_double(double a, double b)
{
    return a < b ? -1 : a > b;
}

/* Order: class; out ones by cool-down end; then tier, probe first, the
 * strategy key, the random rank. */
static int slot_cmp(const slot_t *a, const slot_t *b)
{
    if (a->cls != b->cls)
        return a->cls - b->cls;
    if (a->cls == CLS_OUT && a->until != b->until)
        return a->until < b->until ? -1 : 1;
    if (a->tier != b->tier)
        return a->tier < b->tier ? -1 : 1;
    if (a->probe != b->probe)
        return b->probe - a->probe;
    int k = cmp_double(a->key, b->key);
    if (k)
        return k;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

static void sort_order(const slot_t *sl, size_t n, size_t *order)
{
    for (size_t i = 0; i < n; i++) {
        size_t v = order[i], j = i;
        while (j > 0 && slot_cmp(&sl[v], &sl[order[j - 1]]) < 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

/* Round robin: rotate each run of usable, non-probe candidates of one
 * tier (kept in config order) by the group's counter, so k healthy
 * channels are picked exactly in turn. */
static void rotate_runs(const slot_t *sl, size_t n, uint64_t counter, size_t *order)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && sl[order[j]].cls == sl[order[i]].cls &&
               sl[order[j]].tier == sl[order[i]].tier && !sl[order[j]].probe)
            j++;
        size_t len = j - i;
        if (len > 1 && sl[order[i]].cls != CLS_OUT) {
            size_t tmp[LM_ROUTE_MAX_CANDS], off = (size_t)(counter % len);
            for (size_t k = 0; k < len; k++)
                tmp[k] = order[i + (k + off) % len];
            memcpy(order + i, tmp, len * sizeof(*tmp));
        }
        i = j > i ? j : i + 1;
    }
}

size_t lm_route_select(const lm_route_cand_t *c, size_t n, lm_route_strategy_t strategy,
                       lm_route_group_t *group, lm_route_rand_fn rnd, void *rnd_arg, int64_t now_ms,
                       size_t *order)
{
    slot_t sl[LM_ROUTE_MAX_CANDS];
    if (n > LM_ROUTE_MAX_CANDS)
        n = LM_ROUTE_MAX_CANDS;
    if (n == 0)
        return 0;
    classify(c, n, strategy, now_ms, sl);
    if (strategy == LM_ROUTE_ROUND_ROBIN) {
        for (size_t i = 0; i < n; i++)
            sl[i].rank = i; /* config order, rotated below */
    } else {
        weighted_ranks(c, n, rnd, rnd_arg, sl);
    }
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    sort_order(sl, n, order);
    if (strategy == LM_ROUTE_ROUND_ROBIN && group)
        rotate_runs(sl, n, atomic_fetch_add(&group->rr, 1), order);
    return n;
}

/* ---- table ---- */

typedef struct entry_s {
    struct entry_s *next;
    char *channel, *model; /* model NULL: the channel's limit */
    lm_route_limit_t limit;
    lm_route_stats_t stats;
} entry_t;

struct lm_route_table_s {
    pthread_mutex_t mu;
    entry_t *head;
};

lm_route_table_t *lm_route_table_new(void)
{
    lm_route_table_t *t = calloc(1, sizeof(*t));
    if (t)
        pthread_mutex_init(&t->mu, NULL);
    return t;
}

static entry_t *find(lm_route_table_t *t, const char *channel, const char *model)
{
    for (entry_t *e = t->head; e; e = e->next) {
        if (strcmp(e->channel, channel) == 0 &&
            (model == NULL ? e->model == NULL : e->model && strcmp(e->model, model) == 0))
            return e;
    }
    return NULL;
}

static entry_t *add(lm_route_table_t *t, const char *channel, const char *model)
{
    entry_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->channel = strdup(channel);
    e->model = model ? strdup(model) : NULL;
    if (e->channel == NULL || (model && e->model == NULL)) {
        free(e->channel);
        free(e->model);
        free(e);
        return NULL;
    }
    e->next = t->head;
    t->head = e;
    return e;
}

/* Locked. */
static entry_t *limit_entry(lm_route_table_t *t, const char *channel, int cap, int set_cap)
{
    entry_t *e = find(t, channel, NULL);
    if (e) {
        if (set_cap)
            lm_route_limit_set_cap(&e->limit, cap);
        return e;
    }
    e = add(t, channel, NULL);
    if (e)
        lm_route_limit_init(&e->limit, cap);
    return e;
}

lm_route_limit_t *lm_route_table_limit(lm_route_table_t *t, const char *channel, int cap)
{
    pthread_mutex_lock(&t->mu);
    entry_t *e = limit_entry(t, channel, cap, 1);
    pthread_mutex_unlock(&t->mu);
    return e ? &e->limit : NULL;
}

lm_route_stats_t *lm_route_table_stats(lm_route_table_t *t, const char *channel, const char *model,
                                       const lm_route_opts_t *opts)
{
    pthread_mutex_lock(&t->mu);
    entry_t *e = find(t, channel, model);
    if (e) {
        lm_route_stats_set_opts(&e->stats, opts);
    } else {
        entry_t *le = limit_entry(t, channel, 0, 0);
        e = le ? add(t, channel, model) : NULL;
        if (e)
            lm_route_stats_init(&e->stats, opts, &le->limit);
    }
    pthread_mutex_unlock(&t->mu);
    return e ? &e->stats : NULL;
}

void lm_route_table_free(lm_route_table_t *t)
{
    if (t == NULL)
        return;
    entry_t *e = t->head;
    while (e) {
        entry_t *next = e->next;
        if (e->model)
            lm_route_stats_free(&e->stats);
        free(e->channel);
        free(e->model);
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&t->mu);
    free(t);
}
