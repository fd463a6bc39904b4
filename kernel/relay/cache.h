/*
 * cache.h - the response cache in the relay (docs/cache.md): look a request
 * up once it is admitted and answer it from the cache, or record the
 * upstream's answer on the way out (cache_rec.h). Off unless a `cache on` rule matches;
 * then every hook here starts with one pointer test (r->cache).
 * Thread: the relay's worker; the table itself is shared (cache_store.h).
 */
#ifndef LM_RELAY_CACHE_H
#define LM_RELAY_CACHE_H
#include "relay/relay_int.h"

/* After admission (key, limits and the quota hold apply to hits too):
 * 1 when the request was answered from the cache (the relay is done with
 * it but for freeing) or is parked on a lookup in Redis (which answers it
 * or starts the first attempt itself), 0 to go upstream (miss, bypass or
 * not cacheable). */
int lm_cache_lookup(lm_relay_t *r);
#endif
