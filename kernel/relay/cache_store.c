/* cache_store.c - the response cache's table: a chained hash table and an
 * LRU list under one mutex, values as counted immutable blobs
 * (cache_store.h). Threads: any. */
#include "relay/cache_store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry_s {
    unsigned char key[LM_CACHE_KEY_LEN];
    lm_cache_blob_t *val;
    int64_t expires_ms;
    struct entry_s *chain;         /* next in the bucket */
    struct entry_s *newer, *older; /* LRU list: head is the newest */
} entry_t;

struct lm_cache_s {
    pthread_mutex_t mu;
    entry_t **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    uint64_t bytes, max_bytes;
    entry_t *head, *tail;
};

#define ENTRY_OVERHEAD (sizeof(entry_t) + sizeof(lm_cache_blob_t))

lm_cache_t *lm_cache_new(uint64_t max_bytes)
{
    lm_cache_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->nbuckets = 256;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void lm_cache_free(lm_cache_t *c)
{
    if (c == NULL)
        return;
    for (entry_t *e = c->head, *next; e; e = next) {
        next = e->older;
        lm_cache_blob_release(e->val);
        free(e);
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

lm_cache_blob_t *lm_cache_blob_new(const void *data, size_t len)
{
    lm_cache_blob_t *b = malloc(sizeof(*b) + len);
    if (b == NULL)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = len;
    if (len && data)
        memcpy(b->data, data, len);
    return b;
}

void lm_cache_blob_release(lm_cache_blob_t *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

/* The key is a SHA-256: its first bytes are already uniform. */
static size_t slot(const lm_cache_t *c, const unsigned char *key)
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)h & (c->nbuckets - 1);
}

static entry_t **find(lm_cache_t *c, const unsigned char *key)
{
    entry_t **p = &c->buckets[slot(c, key)];
    while (*p && memcmp((*p)->key, key, LM_CACHE_KEY_LEN) != 0)
        p = &(*p)->chain;
    return p;
}

static void lru_unlink(lm_cache_t *c, entry_t *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        c->head = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->tail = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push(lm_cache_t *c, entry_t *e)
{
    e->newer = NULL;
    e->older = c->head;
    if (c->head)
        c->head->newer = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

/* Unlink e from both structures (under the mutex); the caller frees it
 * and releases its value outside the lock. */
static void drop(lm_cache_t *c, entry_t **slotp)
{
    entry_t *e = *slotp;
    *slotp = e->chain;
    lru_unlink(c, e);
    c->count--;
    c->bytes -= ENTRY_OVERHEAD + e->val->len;
}

static void entry_free(entry_t *e)
{
    lm_cache_blob_release(e->val);
    free(e);
}

lm_cache_blob_t *lm_cache_get(lm_cache_t *c, const unsigned char key[LM_CACHE_KEY_LEN],
                              int64_t now_ms)
{
    lm_cache_blob_t *b = NULL;
    entry_t *dead = NULL;
    pthread_mutex_lock(&c->mu);
    entry_t **p = find(c, key);
    if (*p && (*p)->expires_ms <= now_ms) {
        dead = *p;
        drop(c, p);
    } else if (*p) {
        b = (*p)->val;
        atomic_fetch_add(&b->refs, 1);
        lru_unlink(c, *p);
        lru_push(c, *p);
    }
    pthread_mutex_unlock(&c->mu);
    if (dead)
        entry_free(dead);
    return b;
}

/* Double the bucket array when entries outnumber buckets (under the
 * mutex; a failed allocation keeps the old, longer chains). */
static void grow(lm_cache_t *c)
{
    size_t n = c->nbuckets * 2;
    entry_t **nb = calloc(n, sizeof(*nb));
    if (nb == NULL)
        return;
    for (size_t i = 0; i < c->nbuckets; i++)
        for (entry_t *e = c->buckets[i], *next; e; e = next) {
            next = e->chain;
            uint64_t h;
            memcpy(&h, e->key, sizeof(h));
            e->chain = nb[(size_t)h & (n - 1)];
            nb[(size_t)h & (n - 1)] = e;
        }
    free(c->buckets);
    c->buckets = nb;
    c->nbuckets = n;
}

int lm_cache_put(lm_cache_t *c, const unsigned char key[LM_CACHE_KEY_LEN], lm_cache_blob_t *b,
                 int64_t expires_ms)
{
    uint64_t need = ENTRY_OVERHEAD + b->len;
    entry_t *e = need <= c->max_bytes ? malloc(sizeof(*e)) : NULL;
    if (e == NULL) {
        lm_cache_blob_release(b);
        return -1;
    }
    memcpy(e->key, key, LM_CACHE_KEY_LEN);
    e->val = b;
    e->expires_ms = expires_ms;
    entry_t *gone = NULL; /* replaced and evicted entries, freed after unlock */
    int evicted = 0;
    pthread_mutex_lock(&c->mu);
    entry_t **p = find(c, key);
    if (*p) {
        entry_t *old = *p;
        drop(c, p);
        old->chain = gone;
        gone = old;
    }
    while (c->tail && c->bytes + need > c->max_bytes) {
        entry_t *t = c->tail;
        drop(c, find(c, t->key));
        t->chain = gone;
        gone = t;
        evicted++;
    }
    p = &c->buckets[slot(c, key)];
    e->chain = *p;
    *p = e;
    lru_push(c, e);
    c->count++;
    c->bytes += need;
    if (c->count > c->nbuckets)
        grow(c);
    pthread_mutex_unlock(&c->mu);
    while (gone) {
        entry_t *next = gone->chain;
        entry_free(gone);
        gone = next;
    }
    return evicted;
}

uint64_t lm_cache_bytes(lm_cache_t *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->bytes;
    pthread_mutex_unlock(&c->mu);
    return n;
}

size_t lm_cache_count(lm_cache_t *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->count;
    pthread_mutex_unlock(&c->mu);
    return n;
}
