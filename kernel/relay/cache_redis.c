/* cache_redis.c - the response cache's tier in Redis: GET parked on the
 * Redis thread, SET ... PX fire and forget (cache_redis.h). */
#include "relay/cache_redis.h"

#include "gov/shared.h"

#include <stdio.h>
#include <string.h>

#define KEY_MAX (sizeof(LM_CACHE_REDIS_PREFIX) + 2 * LM_CACHE_KEY_LEN)

static lm_redis_t *conn(const lm_relay_t *r)
{
    return lm_shared_redis(r->w->svc->shared);
}

int lm_cache_redis_on(const lm_relay_t *r)
{
    return conn(r) != NULL;
}

static size_t key_of(const unsigned char *key, char out[KEY_MAX])
{
    static const char hex[] = "0123456789abcdef";
    size_t n = sizeof(LM_CACHE_REDIS_PREFIX) - 1;
    memcpy(out, LM_CACHE_REDIS_PREFIX, n);
    for (size_t i = 0; i < LM_CACHE_KEY_LEN; i++) {
        out[n++] = hex[key[i] >> 4];
        out[n++] = hex[key[i] & 15];
    }
    out[n] = '\0';
    return n;
}

/* Redis thread: copy the answer and wake the worker (the relay is held
 * meanwhile, so w lives). */
static void got(void *arg, const lm_redis_ans_t *a)
{
    lm_cache_wait_t *w = arg;
    w->failed = !a->ok;
    if (a->ok && a->bulk)
        w->got = lm_cache_blob_new(a->bulk, a->bulklen); /* NULL: a miss */
    event_active(w->ev, 0, 0);
}

int lm_cache_redis_get(lm_relay_t *r, const unsigned char key[LM_CACHE_KEY_LEN], lm_cache_wait_t *w,
                       event_callback_fn resume)
{
    char k[KEY_MAX];
    size_t klen = key_of(key, k);
    const char *argv[] = {"GET", k};
    const size_t lens[] = {3, klen};
    if (w->ev == NULL && (w->ev = event_new(r->w->base, -1, 0, resume, r)) == NULL)
        return -1;
    if (lm_redis_cmd(conn(r), 2, argv, lens, got, w) < 0)
        return -1;
    r->shared_wait = 1; /* a Redis answer is awaited: holds the relay */
    return 0;
}

void lm_cache_redis_put(lm_relay_t *r, const unsigned char key[LM_CACHE_KEY_LEN], const void *data,
                        size_t len, int64_t ttl_ms)
{
    char k[KEY_MAX], px[24];
    size_t klen = key_of(key, k);
    snprintf(px, sizeof(px), "%lld", (long long)ttl_ms);
    const char *argv[] = {"SET", k, data, "PX", px};
    const size_t lens[] = {3, klen, len, 2, strlen(px)};
    (void)lm_redis_cmd(conn(r), 5, argv, lens, NULL, NULL);
}

void lm_cache_wait_free(lm_cache_wait_t *w)
{
    if (w->ev)
        event_free(w->ev);
    lm_cache_blob_release(w->got);
    w->ev = NULL;
    w->got = NULL;
}
