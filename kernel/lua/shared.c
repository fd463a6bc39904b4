/*
 * shared.c - lm.shared: integer counters shared by every worker (e.g.
 * tokens used per key per day). One mutex around a chained hash table; the
 * critical sections are a lookup and an add. Entries may expire (TTL on
 * CLOCK_MONOTONIC); when the table is full, expired entries are swept and
 * if none can go the write fails (scripts see nil, "full").
 * Thread: any. Owned by the lead (lm_lua_shared_new / _free).
 */
#include "lua/shared.h"
#include "core/clock.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct sh_ent_s {
    struct sh_ent_s *next;
    int64_t val;
    int64_t exp_ms; /* 0 = never */
    size_t klen;
    char k[];
} sh_ent_t;

struct lm_lua_shared_s {
    pthread_mutex_t mu;
    size_t max;
    size_t count;
    size_t nb; /* buckets, a power of two */
    sh_ent_t **b;
};

static size_t sh_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
    return (size_t)h;
}

lm_lua_shared_t *lm_lua_shared_new(size_t max_entries)
{
    lm_lua_shared_t *sh = calloc(1, sizeof(*sh));

    if (!sh)
        return NULL;
    sh->max = max_entries ? max_entries : 65536;
    sh->nb = 64;
    while (sh->nb < sh->max && sh->nb < ((size_t)1 << 24))
        sh->nb <<= 1;
    sh->b = calloc(sh->nb, sizeof(*sh->b));
    if (!sh->b) {
        free(sh);
        return NULL;
    }
    pthread_mutex_init(&sh->mu, NULL);
    return sh;
}

void lm_lua_shared_free(lm_lua_shared_t *sh)
{
    if (!sh)
        return;
    for (size_t i = 0; i < sh->nb; i++) {
        sh_ent_t *e = sh->b[i];
        while (e) {
            sh_ent_t *n = e->next;
            free(e);
            e = n;
        }
    }
    pthread_mutex_destroy(&sh->mu);
    free(sh->b);
    free(sh);
}

/* Under the lock. Drops the entry if it expired. */
static sh_ent_t **sh_find(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t now)
{
    sh_ent_t **pp = &sh->b[sh_hash(k, klen) & (sh->nb - 1)];

    while (*pp) {
        sh_ent_t *e = *pp;
        if (e->exp_ms && e->exp_ms <= now) {
            *pp = e->next;
            free(e);
            sh->count--;
            continue;
        }
        if (e->klen == klen && memcmp(e->k, k, klen) == 0)
            return pp;
        pp = &e->next;
    }
    return pp; /* where a new entry goes */
}

static void sh_sweep(lm_lua_shared_t *sh, int64_t now)
{
    for (size_t i = 0; i < sh->nb; i++) {
        sh_ent_t **pp = &sh->b[i];
        while (*pp) {
            sh_ent_t *e = *pp;
            if (e->exp_ms && e->exp_ms <= now) {
                *pp = e->next;
                free(e);
                sh->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

/* Under the lock: the entry for k, created with value 0 when absent. */
static sh_ent_t *sh_get_or_add(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t ttl_ms,
                               int64_t now)
{
    sh_ent_t **pp = sh_find(sh, k, klen, now);
    sh_ent_t *e;

    if (*pp)
        return *pp;
    if (sh->count >= sh->max) {
        sh_sweep(sh, now);
        if (sh->count >= sh->max)
            return NULL;
        pp = sh_find(sh, k, klen, now);
    }
    e = malloc(sizeof(*e) + klen);
    if (!e)
        return NULL;
    memcpy(e->k, k, klen);
    e->klen = klen;
    e->val = 0;
    e->exp_ms = ttl_ms > 0 ? now + ttl_ms : 0;
    e->next = NULL;
    *pp = e;
    sh->count++;
    return e;
}

int lm_lua_shared_get(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t *val)
{
    int64_t now = lm_clock_ms();
    sh_ent_t **pp;
    int rc = -1;

    pthread_mutex_lock(&sh->mu);
    pp = sh_find(sh, k, klen, now);
    if (*pp) {
        *val = (*pp)->val;
        rc = 0;
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

int lm_lua_shared_incr(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t delta,
                       int64_t ttl_ms, int64_t *val)
{
    int64_t now = lm_clock_ms();
    sh_ent_t *e;

    pthread_mutex_lock(&sh->mu);
    e = sh_get_or_add(sh, k, klen, ttl_ms, now);
    if (e) {
        /* saturate instead of wrapping */
        if (delta > 0 && e->val > INT64_MAX - delta)
            e->val = INT64_MAX;
        else if (delta < 0 && e->val < INT64_MIN - delta)
            e->val = INT64_MIN;
        else
            e->val += delta;
        *val = e->val;
    }
    pthread_mutex_unlock(&sh->mu);
    return e ? 0 : -1;
}

int lm_lua_shared_set(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t val, int64_t ttl_ms)
{
    int64_t now = lm_clock_ms();
    sh_ent_t *e;

    pthread_mutex_lock(&sh->mu);
    e = sh_get_or_add(sh, k, klen, ttl_ms, now);
    if (e) {
        e->val = val;
        e->exp_ms = ttl_ms > 0 ? now + ttl_ms : 0;
    }
    pthread_mutex_unlock(&sh->mu);
    return e ? 0 : -1;
}

void lm_lua_shared_del(lm_lua_shared_t *sh, const char *k, size_t klen)
{
    int64_t now = lm_clock_ms();
    sh_ent_t **pp;

    pthread_mutex_lock(&sh->mu);
    pp = sh_find(sh, k, klen, now);
    if (*pp) {
        sh_ent_t *e = *pp;
        *pp = e->next;
        free(e);
        sh->count--;
    }
    pthread_mutex_unlock(&sh->mu);
}
