/*
 * cache_rec.h - the response cache's recording side (docs/cache.md): a
 * miss's answer on its way out, stored once complete; and the relay's
 * per-request cache state. Split from cache.c so that output.c, which
 * feeds it, and cache.c, which replays through output.c, form no cycle.
 * Thread: the relay's worker; the table is shared (cache_store.h).
 */
#ifndef LM_RELAY_CACHE_REC_H
#define LM_RELAY_CACHE_REC_H
#include "relay/cache_redis.h"
#include "relay/cache_store.h"
#include "relay/relay_int.h"

struct lm_cache_req_s {
    unsigned char key[LM_CACHE_KEY_LEN];
    int store;             /* record and store this request's answer (a miss or a bypass) */
    lm_buf_t rec;          /* stream chunks, each a u32 length and its bytes */
    lm_cache_wait_t redis; /* a lookup in Redis (cache_redis.h) */
};

enum { LM_CACHE_WHOLE = 0, LM_CACHE_STREAM = 1 };

/* What a blob starts with; the answer follows (a body, or chunks). */
typedef struct lm_cache_hdr_s {
    uint32_t form;
    int64_t prompt, completion, cached, reasoning;
    char channel[64]; /* the channel and model that produced the answer */
    char model[256];
} lm_cache_hdr_t;

/* 1 when the n bytes at p are a record this version writes: a header with
 * a known form and NUL-terminated names; a stream's chunks (u32 length,
 * bytes) exactly fill the rest, at least one. Records from Redis (written by
 * another gateway) are checked with it before they are replayed. Pure. */
int lm_cache_rec_valid(const void *p, size_t n);

/* A whole answer translated (before on_response: a hit runs the scripts
 * again): stored when it is complete (every choice finished). */
void lm_cache_put_whole(lm_relay_t *r, const char *body, size_t len, const lm_usage *u);
/* A canonical stream chunk on its way to the client: recorded. */
void lm_cache_rec_chunk(lm_relay_t *r, const char *json, size_t len);
/* A new attempt: what the previous one streamed is forgotten. */
void lm_cache_rec_reset(lm_relay_t *r);
/* The stream ended well: stored when a finish_reason was seen. */
void lm_cache_put_stream(lm_relay_t *r);
/* The relay is freed: its cache state goes with it. */
void lm_cache_req_free(lm_relay_t *r);
#endif
