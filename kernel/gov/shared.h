/*
 * shared.h - counters shared by every instance through Redis
 * (docs/redis.md): per-key rpm/tpm windows, concurrency and quota holds
 * (one atomic ADMIT script), settlement of the spend, the brute-force
 * guard and channel holds. The local counters (ratelimit.h, billing.h)
 * still run; Redis is the shared truth on top of them.
 *
 * Threads: the calls queue work on the process's Redis thread (redis.h)
 * and return at once; answers and the 250 ms poll of shared blocks and
 * holds run on that thread.
 */
#ifndef LM_GOV_SHARED_H
#define LM_GOV_SHARED_H
#include "gov/authguard.h"
#include "gov/redis.h"
#include "store/store.h"

#include <stdint.h>

typedef struct lm_shared_s lm_shared_t;

/* A channel held by some instance until until_ms (this process's
 * lm_clock_ms clock). Called on the Redis thread. */
typedef void (*lm_shared_hold_fn)(void *arg, const char *channel, int64_t until_ms);

/* Start the Redis thread. guard (borrowed, may be NULL) receives blocks
 * decided by any instance; on_hold receives channel holds. NULL with err. */
lm_shared_t *lm_shared_new(const lm_redis_url_t *u, int fail_open, lm_authguard_t *guard,
                           int auth_fail_limit, lm_shared_hold_fn on_hold, void *hold_arg,
                           char *err, size_t errlen);
/* Run what is queued, then end the Redis thread; later calls are refused
 * (before the workers stop: no answer reaches a freed request). NULL ok. */
void lm_shared_stop(lm_shared_t *sh);
void lm_shared_free(lm_shared_t *sh); /* stops if needed; NULL ok */
int lm_shared_fail_open(const lm_shared_t *sh);
/* The process's Redis connection, for other users of the same Redis (the
 * response cache, docs/cache.md); borrowed, NULL when sh is NULL. */
lm_redis_t *lm_shared_redis(lm_shared_t *sh);

/* What a shared admission booked (kept in lm_gov_t). */
typedef struct lm_shared_ticket_s {
    int64_t key_id, sec, est;
    char req_id[72]; /* this process's node id ":" the request id */
    int active;      /* admitted by Redis: finish at the end */
    int held;        /* a quota hold is open in Redis: settle or finish drops it */
} lm_shared_ticket_t;

/* Ask Redis to admit a request of key (limits, quota hold of worst).
 * done runs on the Redis thread with ints {0} admitted, {1, retry_s}
 * limited, {2} quota; ans->ok 0 = Redis unreachable. The ticket is filled
 * for lm_shared_settle/finish (mark it active when admitted). 0 queued,
 * -1 not (then treat as unreachable). Any thread. */
int lm_shared_admit(lm_shared_t *sh, const lm_key_t *key, const char *req_id, int64_t est,
                    int64_t worst, int64_t seed_used, lm_shared_ticket_t *t, lm_redis_done_fn done,
                    void *arg);
/* Bill cost against the key's shared spend and drop the hold. */
void lm_shared_settle(lm_shared_t *sh, lm_shared_ticket_t *t, int64_t cost, int64_t seed_used);
/* Bill cost against key_id's shared spend for a charge that had no shared
 * admission of its own (a script's side call, billed under the caller's
 * key): once per req_id, like a settle. No-op when sh is NULL or cost <= 0. */
void lm_shared_charge(lm_shared_t *sh, int64_t key_id, const char *req_id, int64_t cost,
                      int64_t seed_used);
/* The request ended: concurrency slot and hold released, tokens corrected. */
void lm_shared_finish(lm_shared_t *sh, lm_shared_ticket_t *t, int64_t actual_tokens);
/* A failed authentication from peer (shared brute-force count). */
void lm_shared_auth_fail(lm_shared_t *sh, const struct sockaddr *peer);
/* Channel held (ejected or Retry-After) until until_ms (lm_clock_ms). */
void lm_shared_hold(lm_shared_t *sh, const char *channel, int64_t until_ms);
#endif
