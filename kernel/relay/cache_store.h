/*
 * cache_store.h - the response cache's memory: answers by 32-byte key
 * (SHA-256 of the canonical request, cache_key.h), each with an expiry,
 * under a byte cap kept by evicting the least recently used.
 *
 * Threads: any. One mutex guards the table and the LRU list and is held
 * only to find, link or unlink an entry (no copy, no allocation of the
 * answer's bytes under it). Values are immutable, counted blobs: a reader
 * keeps one after the entry is replaced or evicted, until it releases it.
 *
 * A shared backend (Redis) would implement the same three calls (get,
 * put, bytes) over the network; the relay calls nothing else.
 */
#ifndef LM_CACHE_STORE_H
#define LM_CACHE_STORE_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define LM_CACHE_KEY_LEN 32

typedef struct lm_cache_s lm_cache_t;

/* An answer as stored: len bytes at data. Read-only once published. */
typedef struct lm_cache_blob_s {
    atomic_int refs;
    size_t len;
    char data[];
} lm_cache_blob_t;

/* A cache of at most max_bytes (entry overhead included). NULL when out of
 * memory. Owner: the runtime generation (lm_cache_free when it retires). */
lm_cache_t *lm_cache_new(uint64_t max_bytes);
void lm_cache_free(lm_cache_t *c);

/* A new blob of len bytes, a copy of data (NULL: left for the caller to
 * fill before publishing it), with one reference (the caller's), or NULL. lm_cache_blob_release
 * drops a reference (frees at zero). */
lm_cache_blob_t *lm_cache_blob_new(const void *data, size_t len);
void lm_cache_blob_release(lm_cache_blob_t *b);

/* The live answer for key, with a reference for the caller (release it),
 * or NULL. An expired entry is removed.
 * A hit moves the entry to the front of the LRU list. */
lm_cache_blob_t *lm_cache_get(lm_cache_t *c, const unsigned char key[LM_CACHE_KEY_LEN],
                              int64_t now_ms);

/* Store b under key until expires_ms, replacing what was there; takes the
 * caller's reference to b (also on failure). Evicts from the LRU tail
 * until the cap holds; returns how many entries it evicted, or -1 when b
 * alone is larger than the cap or memory ran out (nothing stored). */
int lm_cache_put(lm_cache_t *c, const unsigned char key[LM_CACHE_KEY_LEN], lm_cache_blob_t *b,
                 int64_t expires_ms);

/* Bytes held (entries' overhead included) and entries held. */
uint64_t lm_cache_bytes(lm_cache_t *c);
size_t lm_cache_count(lm_cache_t *c);
#endif
