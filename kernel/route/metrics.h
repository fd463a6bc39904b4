/*
 * metrics.h - a small Prometheus registry, rendered as text exposition
 * format 0.0.4 (GET /metrics on the admin listener).
 *
 * A registry holds families (a name, help, type and a fixed list of label
 * names chosen at registration); a family holds series (one per label value
 * combination). Counters are uint64, gauges int64, histograms have fixed
 * upper bounds and a sum kept as an integer in nano-units (exact, atomic).
 *
 * Threading: updating an existing series is lock-free (atomics); looking one
 * up is lock-free; only creating a new label combination, registering a
 * family and rendering take the registry's mutex. The number of series is
 * capped (label values such as model names may come from clients): past the
 * cap lookups return NULL, updates through NULL do nothing, and the drop is
 * counted (rendered as longmen_metrics_series_dropped_total once non-zero).
 *
 * Ownership: the registry owns families and series; their pointers stay
 * valid until lm_metrics_free, so callers may cache them. Label values are
 * copied. Only names go in labels (model, channel, key group, script):
 * never a key, a token or request text.
 */
#ifndef LM_METRICS_H
#define LM_METRICS_H
#include <stddef.h>
#include <stdint.h>

typedef struct lm_metrics_s lm_metrics_t;
typedef struct lm_metrics_family_s lm_metrics_family_t;
typedef struct lm_metrics_series_s lm_metrics_series_t;

#define LM_METRICS_MAX_LABELS  8
#define LM_METRICS_MAX_BUCKETS 32

/* Latency and time-to-first-token buckets, in seconds: 0.005 .. 60. */
extern const double lm_metrics_seconds_buckets[];
#define LM_METRICS_SECONDS_NBUCKETS 13

/* A registry holding at most max_series series in all (0: 10000). NULL
 * when out of memory. Owner: whoever creates it (the server, for the
 * process lifetime); free once no thread uses it. */
lm_metrics_t *lm_metrics_new(size_t max_series);
void lm_metrics_free(lm_metrics_t *m);

/* Register a family (any thread; at start-up). Names must match
 * [a-zA-Z_:][a-zA-Z0-9_:]*, labels [a-zA-Z_][a-zA-Z0-9_]* (histograms may not
 * use "le"). Registering the same name with the same type and labels again
 * returns the existing family; anything else invalid returns NULL. A family
 * without labels gets its single series at once (so it renders as 0). */
lm_metrics_family_t *lm_metrics_counter(lm_metrics_t *m, const char *name, const char *help,
                                        const char *const *labels, size_t nlabels);
lm_metrics_family_t *lm_metrics_gauge(lm_metrics_t *m, const char *name, const char *help,
                                      const char *const *labels, size_t nlabels);
/* bounds: strictly increasing upper bounds (le), +Inf is implicit. */
lm_metrics_family_t *lm_metrics_histogram(lm_metrics_t *m, const char *name, const char *help,
                                          const char *const *labels, size_t nlabels,
                                          const double *bounds, size_t nbounds);

/* The series for these label values (one per label name, NULL reads as "";
 * ignored when the family has no labels). Lock-free when it exists; created
 * under the registry mutex otherwise. NULL when f is NULL, past the series
 * cap, or out of memory. Any thread; the pointer may be cached. */
lm_metrics_series_t *lm_metrics_series(lm_metrics_family_t *f, const char *const *values);

/* Updates: lock-free, any thread, a NULL series does nothing; an update of
 * the wrong type does nothing. */
void lm_metrics_add(lm_metrics_series_t *s, uint64_t n);      /* counter += n */
void lm_metrics_set(lm_metrics_series_t *s, int64_t v);       /* gauge = v */
void lm_metrics_gauge_add(lm_metrics_series_t *s, int64_t d); /* gauge += d (may be < 0) */
void lm_metrics_observe(lm_metrics_series_t *s, double v);    /* histogram; NaN ignored */

/* Lookup and update in one call, for call sites that do not cache: 0, or
 * -1 when the series could not be had (cap). Any thread. */
int lm_metrics_inc(lm_metrics_family_t *f, const char *const *values, uint64_t n);
int lm_metrics_put(lm_metrics_family_t *f, const char *const *values, int64_t v);
int lm_metrics_obs(lm_metrics_family_t *f, const char *const *values, double v);

/* The whole registry as text format 0.0.4 (families in registration order,
 * series in creation order), NUL-terminated, malloc'd (caller frees), length
 * in *len if non-NULL; NULL when out of memory. Any thread; holds the mutex
 * while it walks (new series wait, updates do not). Serve it with
 * Content-Type: text/plain; version=0.0.4; charset=utf-8 */
char *lm_metrics_render(lm_metrics_t *m, size_t *len);

/* Series refused because of the cap (any thread). */
uint64_t lm_metrics_dropped(lm_metrics_t *m);

/* ---- the gateway's series (issue 8), registered in one call ---- */

typedef struct lm_metrics_std_s {
    lm_metrics_family_t *requests; /* longmen_requests_total{model,channel,status} */
    lm_metrics_family_t *errors;   /* longmen_errors_total{model,channel,code} */
    lm_metrics_family_t *tokens;   /* longmen_tokens_total{model,channel,kind} prompt|completion */
    lm_metrics_family_t *cost;     /* longmen_cost_micro_total{model,channel} */
    lm_metrics_family_t *request_secs;  /* longmen_request_seconds{model,channel} histogram */
    lm_metrics_family_t *ttft_secs;     /* longmen_ttft_seconds{model,channel} histogram */
    lm_metrics_family_t *inflight;      /* longmen_inflight{channel} gauge */
    lm_metrics_family_t *healthy;       /* longmen_channel_healthy{channel} gauge 1/0 */
    lm_metrics_family_t *generation;    /* longmen_generation gauge */
    lm_metrics_family_t *script_errors; /* longmen_script_errors_total{script} */
    /* The response cache (docs/cache.md). */
    lm_metrics_family_t *cache_hits;         /* longmen_cache_hits_total{model} */
    lm_metrics_family_t *cache_misses;       /* longmen_cache_misses_total{model} */
    lm_metrics_family_t *cache_evictions;    /* longmen_cache_evictions_total */
    lm_metrics_family_t *cache_bytes;        /* longmen_cache_bytes gauge */
    lm_metrics_family_t *cache_redis_errors; /* longmen_cache_redis_errors_total */
    /* Asynchronous upstream tasks (relay/poll.h). */
    lm_metrics_family_t *task_polls; /* longmen_task_polls_total{model,channel} */
    lm_metrics_family_t
        *tasks; /* longmen_tasks_total{model,channel,outcome} succeeded|failed|timeout */
} lm_metrics_std_t;

/* Register all of the above into m: 0, or -1 (out of memory). */
int lm_metrics_std_register(lm_metrics_t *m, lm_metrics_std_t *out);
#endif
