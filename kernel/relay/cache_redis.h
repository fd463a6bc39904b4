/*
 * cache_redis.h - the response cache's shared tier (docs/cache.md): when
 * the scale-out Redis is configured (`redis`, docs/redis.md), answers are
 * also kept there, under LM_CACHE_REDIS_PREFIX and the request's hash, as
 * the same record the memory tier holds (cache_rec.h), with SET ... PX
 * (Redis expires and evicts them). A lookup parks the relay while the GET
 * runs on the process's Redis thread (gov/redis.h) and resumes it on its
 * worker's loop; nothing here blocks the loop.
 * Thread: the relay's worker, but for the Redis thread's answer callback,
 * which only copies the reply and wakes the worker.
 */
#ifndef LM_RELAY_CACHE_REDIS_H
#define LM_RELAY_CACHE_REDIS_H
#include "relay/cache_store.h"
#include "relay/relay_int.h"

#include <event2/event.h>

/* The record's format version is in the key: a change to lm_cache_hdr_t,
 * the chunk framing or the key's encoding bumps it, and old records are
 * never read (they expire). */
#define LM_CACHE_REDIS_PREFIX "lm:cache:1:"

/* One lookup's rendezvous between the Redis thread and the worker. */
typedef struct lm_cache_wait_s {
    struct event *ev;     /* the worker's wake-up (owned) */
    lm_cache_blob_t *got; /* the value found, unchecked (owned), or NULL: a miss */
    int failed;           /* Redis could not be asked or answered an error */
} lm_cache_wait_t;

/* 1 when this process keeps answers in Redis (`redis` configured). */
int lm_cache_redis_on(const lm_relay_t *r);
/* GET key into w. 0: queued; r is held (r->shared_wait) and resume(r) runs
 * on the worker once w is filled. -1: not queued (out of memory, queue
 * full, stopping): a miss, nothing held. */
int lm_cache_redis_get(lm_relay_t *r, const unsigned char key[LM_CACHE_KEY_LEN], lm_cache_wait_t *w,
                       event_callback_fn resume);
/* SET the record (len bytes at data) under key for ttl_ms; fire and
 * forget: a failure only loses the shared copy. */
void lm_cache_redis_put(lm_relay_t *r, const unsigned char key[LM_CACHE_KEY_LEN], const void *data,
                        size_t len, int64_t ttl_ms);
/* Frees what w holds (not w). */
void lm_cache_wait_free(lm_cache_wait_t *w);
#endif
