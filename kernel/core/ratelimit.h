/*
 * ratelimit.h - per-key request/token rate limits and a concurrency cap.
 *
 * Window: a SLIDING window of 60 one-second buckets (not a fixed minute and
 * not the two-bucket approximation). A request admitted during second S
 * counts against rpm/tpm until second S+60 begins, i.e. the window at time
 * t holds everything admitted in seconds floor(t)-59 .. floor(t). Counting
 * is exact at one-second granularity, so a burst of 2x the limit inside one
 * second admits exactly `limit`, and Retry-After is the exact number of
 * whole seconds until enough of the window has slid out (rounded up, >= 1).
 *
 * Tokens: admission checks (tokens in window + est_tokens) <= tpm and books
 * est_tokens (the caller's prompt estimate, optionally + max_tokens); when
 * the request ends, lm_rl_finish() corrects the booked bucket to the actual
 * tokens (if that bucket is still in the window). A single request whose
 * estimate alone exceeds tpm is refused with LM_RL_TOO_LARGE.
 *
 * Time is injected (now_ms, any monotonic or wall clock in milliseconds, the
 * same one for every call on one limiter), so the module is pure and
 * testable. Thread-safe: one mutex per limiter, held for O(60) work.
 * Memory: ~1.5 KB per limiter, no allocation.
 */
#ifndef LM_RATELIMIT_H
#define LM_RATELIMIT_H
#include <pthread.h>
#include <stdint.h>

#define LM_RL_WINDOW 60 /* seconds, one bucket per second */

enum {
    LM_RL_OK = 0,
    LM_RL_RPM = 1,       /* requests per minute exhausted */
    LM_RL_TPM = 2,       /* tokens per minute exhausted */
    LM_RL_CONC = 3,      /* max concurrent requests reached */
    LM_RL_TOO_LARGE = 4, /* est_tokens alone exceeds tpm: never admissible */
};

typedef struct lm_rl_limits_s {
    int64_t rpm;            /* 0 = no limit */
    int64_t tpm;            /* 0 = no limit */
    int64_t max_concurrent; /* 0 = no limit */
} lm_rl_limits_t;

typedef struct lm_rl_s {
    pthread_mutex_t mu;
    int64_t sec[LM_RL_WINDOW]; /* the second each bucket holds, INT64_MIN = empty */
    int64_t reqs[LM_RL_WINDOW];
    int64_t toks[LM_RL_WINDOW];
    int64_t inflight;
} lm_rl_t;

/* What an admission booked; hand it back to lm_rl_finish(). */
typedef struct lm_rl_ticket_s {
    int64_t sec;
    int64_t est_tokens;
    int active;
} lm_rl_ticket_t;

void lm_rl_init(lm_rl_t *rl);
void lm_rl_destroy(lm_rl_t *rl);

/* Admission. Returns 0 when admitted (one request and est_tokens booked in
 * the current second, inflight + 1, *ticket filled); otherwise the
 * Retry-After in whole seconds (>= 1) and nothing is booked. *why (may be
 * NULL) gets an LM_RL_* code. Limits are passed per call so a key update
 * takes effect at once. */
int64_t lm_rl_admit(lm_rl_t *rl, const lm_rl_limits_t *lim, int64_t now_ms, int64_t est_tokens,
                    lm_rl_ticket_t *ticket, int *why);
/* The request ended: inflight - 1 and the booked tokens corrected to
 * actual_tokens. Safe to call once per admitted ticket; a zeroed ticket is
 * ignored. */
void lm_rl_finish(lm_rl_t *rl, lm_rl_ticket_t *ticket, int64_t actual_tokens);
/* Window sums at now_ms (for tests, metrics and the admin API). */
void lm_rl_usage(lm_rl_t *rl, int64_t now_ms, int64_t *reqs, int64_t *toks, int64_t *inflight);
#endif
