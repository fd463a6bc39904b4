/*
 * route.h - channel selection and passive health (issue 8, FT-7, FT-8).
 *
 * Pure: no I/O, no clock, no logging. The caller passes now_ms (a monotonic
 * clock in milliseconds) and a random source, so every decision is
 * reproducible in tests. State changes are returned as events for the
 * caller to log.
 *
 * Objects and who owns them:
 *   lm_route_limit_t  an in-flight counter with a cap. One per channel (so
 *                     all models of a channel share the upstream's cap), and
 *                     optionally one global. Lock-free (atomics).
 *   lm_route_stats_t  live health of one channel x model (a model may fail
 *                     on one channel while others work, so health is per
 *                     pair, as issue 8 asks): in-flight, EWMA latency and
 *                     time-to-first-token, error window, consecutive
 *                     failures, ejection and half-open probe. Points at its
 *                     channel's limit. A mutex guards the health state;
 *                     in-flight is atomic.
 *   lm_route_group_t  per model group: the round-robin counter. Atomic.
 *   lm_route_table_t  owns every limit and stats object, keyed by names, so
 *                     health and counters survive hot reloads (a reloaded
 *                     generation looks its channels up again by name and
 *                     gets the same objects). Lives as long as the server.
 *
 * Threading: every function may be called from any worker thread at once,
 * except the init and free functions and lm_route_table_free, which the owner calls when no
 * other thread can hold the object.
 */
#ifndef LM_ROUTE_H
#define LM_ROUTE_H
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Most candidates one selection orders; more are ignored (relay keeps 8). */
#define LM_ROUTE_MAX_CANDS 64

/* EWMA weight of a new sample: 0.2, so the last ~5-10 attempts dominate and
 * one slow outlier moves the mean by a fifth of its excess. */
#define LM_ROUTE_EWMA_ALPHA 0.2

/* Health settings. Zeroed fields take the defaults (lm_route_opts_default). */
typedef struct lm_route_opts_s {
    int consecutive_failures; /* eject after this many failures in a row (5, FT-7) */
    int64_t base_ejection_ms; /* cool-down = base x number of ejections (30 s, FT-7) */
    int64_t max_ejection_ms;  /* cap on the cool-down (300 s) */
    int64_t reset_after_ms;   /* the ejection count restarts after this long healthy (300 s) */
    int64_t window_ms;        /* error-rate window (10 s, in 10 buckets) */
    int window_min_requests;  /* error-rate ejection needs this many results in the window (20) */
    int window_error_pct;     /* ... and at least this failure percentage (50) */
    int64_t probe_ttl_ms;     /* a claimed probe that never started lapses after (10 s) */
} lm_route_opts_t;

/* The defaults above. */
void lm_route_opts_default(lm_route_opts_t *o);

/* ---- in-flight limits (per channel, or global) ---- */

typedef struct lm_route_limit_s {
    atomic_int inflight;
    atomic_int cap; /* 0 = unlimited; may change on reload (lm_route_limit_set_cap) */
} lm_route_limit_t;

/* Set up with a cap (0 = unlimited). Owner, before sharing. */
void lm_route_limit_init(lm_route_limit_t *l, int cap);
/* Change the cap (reload). Any thread; requests already in flight stay. */
void lm_route_limit_set_cap(lm_route_limit_t *l, int cap);
/* Take one slot: 0, or -1 when the cap is reached (nothing taken). Any thread. */
int lm_route_limit_acquire(lm_route_limit_t *l);
/* Give back a slot taken by lm_route_limit_acquire. Any thread. */
void lm_route_limit_release(lm_route_limit_t *l);
/* Current in-flight count (a racy snapshot, for strategies and metrics). */
int lm_route_limit_inflight(const lm_route_limit_t *l);

/* ---- per channel x model health ---- */

typedef enum {
    LM_ROUTE_CLOSED = 0, /* healthy */
    LM_ROUTE_EJECTED,    /* cooling down until ejected_until */
    LM_ROUTE_HALF_OPEN   /* cool-down over: one probe decides */
} lm_route_state_t;

/* Outcome of one attempt, for lm_route_end. */
enum {
    LM_ROUTE_FAIL = 0,   /* connect error, timeout, 5xx, 429, bad upstream data */
    LM_ROUTE_OK = 1,     /* the upstream answered (2xx, or a 4xx that is the client's fault) */
    LM_ROUTE_CANCEL = -1 /* not the upstream's doing (client gone, shutdown): no verdict */
};

/* Health events returned by lm_route_end, for the caller to log. */
typedef enum {
    LM_ROUTE_EV_NONE = 0,
    LM_ROUTE_EV_EJECT_CONSECUTIVE, /* N failures in a row */
    LM_ROUTE_EV_EJECT_RATE,        /* error rate over the window */
    LM_ROUTE_EV_PROBE_FAILED,      /* half-open probe failed: ejected again, longer */
    LM_ROUTE_EV_RECOVERED          /* a success while ejected or half-open: closed */
} lm_route_event_t;

#define LM_ROUTE_WINDOW_BUCKETS 10

typedef struct lm_route_stats_s {
    lm_route_limit_t *limit; /* the channel's in-flight cap, or NULL (borrowed) */
    atomic_int inflight;     /* attempts on this channel x model */
    pthread_mutex_t mu;      /* guards everything below */
    lm_route_opts_t opts;
    double ewma_latency_ms, ewma_ttft_ms; /* < 0: no sample yet */
    int consecutive;                      /* failures in a row */
    lm_route_state_t state;
    int64_t ejected_until; /* ms, while EJECTED */
    int ejections;         /* ejections since the count last reset (cool-down growth) */
    int64_t closed_since;  /* ms: when the channel last became healthy */
    int probe_claimed;     /* HALF_OPEN: a selection handed out the probe */
    int probe_started;     /* HALF_OPEN: an attempt began; its end decides */
    int64_t probe_claimed_at;
    int64_t hold_until; /* ms: the upstream said Retry-After; no traffic before */
    struct {
        int64_t epoch; /* now / bucket width when last written */
        int ok, fail;
    } win[LM_ROUTE_WINDOW_BUCKETS];
} lm_route_stats_t;

/* Set up (closed, no samples). opts NULL = defaults; limit may be NULL.
 * Owner, before sharing. */
void lm_route_stats_init(lm_route_stats_t *s, const lm_route_opts_t *opts, lm_route_limit_t *limit);
void lm_route_stats_free(lm_route_stats_t *s);
/* Replace the health settings (reload). Any thread. */
void lm_route_stats_set_opts(lm_route_stats_t *s, const lm_route_opts_t *opts);

/* An attempt starts on this channel x model: in-flight +1 on the stats and
 * its channel limit. Returns 0, or -1 when the channel's cap is reached
 * (nothing counted, do not call lm_route_end): try the next candidate, or
 * answer 503 at once when none is left (FT-8). Any thread. */
int lm_route_begin(lm_route_stats_t *s, int64_t now_ms);
/* The attempt that lm_route_begin admitted is over. outcome: LM_ROUTE_OK,
 * _FAIL or _CANCEL. latency_ms: whole attempt, ttft_ms: until the first
 * content byte; < 0 = unknown (no EWMA update). Returns the health event
 * (log it with lm_route_event_str). Any thread. */
lm_route_event_t lm_route_end(lm_route_stats_t *s, int64_t now_ms, int outcome, int64_t latency_ms,
                              int64_t ttft_ms);
/* Whether the pair would get normal traffic now (closed, or half-open with
 * no probe out). Any thread; a snapshot. */
int lm_route_healthy(lm_route_stats_t *s, int64_t now_ms);

/* The upstream answered 429/503 with Retry-After: keep traffic away from
 * the pair until until_ms (it sorts with the ejected ones). Any thread. */
void lm_route_hold(lm_route_stats_t *s, int64_t until_ms);
/* Milliseconds left on such a hold (0: none). Any thread. */
int64_t lm_route_hold_left(lm_route_stats_t *s, int64_t now_ms);

/* A consistent copy of the state, for metrics, the admin API and logs. */
typedef struct lm_route_snap_s {
    lm_route_state_t state; /* as of now_ms (an elapsed cool-down reads HALF_OPEN) */
    int inflight;           /* this channel x model */
    int consecutive;
    int ejections;
    int64_t ejected_until;                /* ms, when EJECTED */
    double ewma_latency_ms, ewma_ttft_ms; /* < 0: no sample */
    int window_ok, window_fail;
} lm_route_snap_t;
void lm_route_snapshot(lm_route_stats_t *s, int64_t now_ms, lm_route_snap_t *out);

const char *lm_route_state_str(lm_route_state_t st); /* "closed", "ejected", "half_open" */
const char *lm_route_event_str(lm_route_event_t ev); /* a reason for the log, "" for NONE */

/* ---- selection ---- */

typedef enum {
    LM_ROUTE_WEIGHTED = 0, /* default: weighted random inside a priority tier */
    LM_ROUTE_ROUND_ROBIN,
    LM_ROUTE_LEAST_INFLIGHT,
    LM_ROUTE_LOWEST_LATENCY, /* EWMA time-to-first-token, else EWMA latency */
    LM_ROUTE_LOWEST_COST
} lm_route_strategy_t;

/* "weighted", "round_robin", "least_inflight", "lowest_latency",
 * "lowest_cost" -> 0 with *out set, or -1 (for the config parser). */
int lm_route_strategy_parse(const char *name, lm_route_strategy_t *out);

typedef struct lm_route_cand_s {
    const char *name;        /* for the caller's logs only */
    int priority;            /* lower is tried first; a strict tier */
    int weight;              /* > 0 (<= 0 counts as 1) */
    int64_t price;           /* micro-units, for LOWEST_COST (e.g. input + output per 1M) */
    lm_route_stats_t *stats; /* NULL: always healthy, no statistics */
} lm_route_cand_t;

/* Per model group state (the round-robin position). Zero-initialised or
 * lm_route_group_init; any thread. */
typedef struct lm_route_group_s {
    atomic_uint_fast64_t rr;
} lm_route_group_t;
void lm_route_group_init(lm_route_group_t *g);

/* 64 random bits. */
typedef uint64_t (*lm_route_rand_fn)(void *arg);
/* A small PRNG (xorshift64*) for lm_route_select: arg is a uint64_t state,
 * non-zero, one per thread (e.g. per worker, seeded from time and pid). */
uint64_t lm_route_rand_xorshift(void *state);

/* Order n candidates for trying, into order[] (indexes into c, each once);
 * returns how many were written (min(n, LM_ROUTE_MAX_CANDS)), so there is
 * always at least one when n > 0, even if all are ejected (FT-7).
 *   1. Usable: closed, or half-open with the probe handed to THIS request
 *      (the probe goes first within its tier, so it is actually tried),
 *      by priority tier, ordered inside a tier by the strategy (ties broken
 *      by the weighted random draw).
 *   2. Usable but at their channel's in-flight cap (lm_route_begin would
 *      refuse them now; they may have room by the time they are reached).
 *   3. Ejected, and half-open whose probe is out: soonest cool-down end first.
 * group may be NULL (round robin then degrades to config order). Any thread. */
size_t lm_route_select(const lm_route_cand_t *c, size_t n, lm_route_strategy_t strategy,
                       lm_route_group_t *group, lm_route_rand_fn rnd, void *rnd_arg, int64_t now_ms,
                       size_t *order);

/* ---- the table that keeps state across reloads ---- */

typedef struct lm_route_table_s lm_route_table_t;
lm_route_table_t *lm_route_table_new(void);
/* The channel's limit, created with cap on first use; an existing one gets
 * its cap updated. NULL when out of memory. Borrowed until table_free.
 * Any thread (a mutex; call at generation build, not per request). */
lm_route_limit_t *lm_route_table_limit(lm_route_table_t *t, const char *channel, int cap);
/* The channel x model stats, created on first use (bound to the channel's
 * limit, which must have been looked up first or is created with no cap);
 * an existing one gets opts updated (NULL = defaults). Borrowed until
 * table_free. Any thread (a mutex; at generation build). */
lm_route_stats_t *lm_route_table_stats(lm_route_table_t *t, const char *channel, const char *model,
                                       const lm_route_opts_t *opts);
/* Owner, once no request can hold a pointer (process exit). */
void lm_route_table_free(lm_route_table_t *t);
#endif
