/*
 * redis.h - one Redis connection per process, owned by its own thread
 * (docs/redis.md). Workers never touch the socket: they queue a script
 * call (lm_redis_call) and get the answer through their callback, which
 * runs on the Redis thread and must only copy the answer and wake the
 * worker's loop (event_active). Nothing here blocks a caller beyond a
 * mutex held for a queue push.
 *
 * Failure: a call made while Redis is unreachable (connect or command
 * timeout: 500 ms) is answered at once with ok = 0; the thread retries the
 * connection at most every 500 ms. `tick` runs on the Redis thread every
 * 250 ms while connected (shared holds and blocks are polled there).
 */
#ifndef LM_GOV_REDIS_H
#define LM_GOV_REDIS_H
#include "core/redis_url.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lm_redis_s lm_redis_t;

/* The scripts (redis_lua.c). */
enum {
    LM_RS_ADMIT = 0,
    LM_RS_FINISH,
    LM_RS_SETTLE,
    LM_RS_AUTHFAIL,
    LM_RS_HOLD,
    LM_RS_SYNC,
    LM_RS_N
};
const char *lm_redis_script(int id);

#define LM_REDIS_MAX_INTS 8
/* A script's answer, flattened: ok = 0 when Redis could not be asked;
 * ints: the first integers of the reply array; strs/nstrs: a flat array of
 * strings (SYNC), borrowed for the callback only. */
typedef struct lm_redis_ans_s {
    int ok;
    int64_t ints[LM_REDIS_MAX_INTS];
    size_t nints;
    const char *const *strs;
    size_t nstrs;
    const char *bulk; /* a bulk-string reply (lm_redis_cmd's GET): NULL for nil; borrowed */
    size_t bulklen;
} lm_redis_ans_t;

typedef void (*lm_redis_done_fn)(void *arg, const lm_redis_ans_t *ans);

/* Start the thread (it connects in the background). NULL with err on
 * failure to start. The URL is copied. */
lm_redis_t *lm_redis_start(const lm_redis_url_t *u, void (*tick)(void *arg, lm_redis_t *rd),
                           void *tick_arg, char *err, size_t errlen);
/* Stop the thread once what is queued has run (settlements are not
 * lost); later calls are refused. Settlements kept for a Redis that was
 * unreachable are dropped (the store seeds them). NULL ok. */
void lm_redis_stop(lm_redis_t *rd);
/* Stop if needed, then free. NULL ok. */
void lm_redis_free(lm_redis_t *rd);
/* Queue script `id` with nkeys KEYS then the remaining ARGV (argv copied).
 * done (may be NULL) runs once on the Redis thread. 0, or -1 when the
 * queue is full or out of memory (done is not called). Any thread. */
int lm_redis_call(lm_redis_t *rd, int id, int nkeys, int argc, const char *const *argv,
                  lm_redis_done_fn done, void *arg);
/* Queue a plain command (GET, SET ... PX): argc arguments, lens[i] bytes
 * each (binary-safe; copied; plain commands queued at once hold at most
 * 64 MiB). done (may be NULL) runs once on the Redis
 * thread: a string reply in ans->bulk/bulklen, an integer in ints[0],
 * ok = 0 when Redis could not be asked or answered an error. 0, or -1 when
 * the queue is full or out of memory (done is not called). Any thread. */
int lm_redis_cmd(lm_redis_t *rd, int argc, const char *const *argv, const size_t *lens,
                 lm_redis_done_fn done, void *arg);
/* Run script id now (from tick only, on the Redis thread). */
void lm_redis_call_now(lm_redis_t *rd, int id, int nkeys, int argc, const char *const *argv,
                       lm_redis_done_fn done, void *arg);
/* Whether the last command reached Redis (any thread). */
int lm_redis_up(lm_redis_t *rd);
#endif
