/* cache_rec.c - recording a miss's answer into the response cache
 * (cache_rec.h). Thread: the relay's worker; the table is shared. */
#include "relay/cache_rec.h"
#include "core/clock.h"

#include "route/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lm_cache_rec_valid(const void *p, size_t n)
{
    lm_cache_hdr_t h;
    if (p == NULL || n < sizeof(h))
        return 0;
    memcpy(&h, p, sizeof(h));
    if ((h.form != LM_CACHE_WHOLE && h.form != LM_CACHE_STREAM) ||
        !memchr(h.channel, '\0', sizeof(h.channel)) || !memchr(h.model, '\0', sizeof(h.model)))
        return 0;
    if (h.form == LM_CACHE_WHOLE)
        return 1;
    const char *c = (const char *)p + sizeof(h);
    size_t left = n - sizeof(h), chunks = 0;
    while (left >= 4) {
        uint32_t len;
        memcpy(&len, c, 4);
        if (len > left - 4)
            return 0;
        c += 4 + len;
        left -= 4 + (size_t)len;
        chunks++;
    }
    return left == 0 && chunks > 0;
}

/* Publish an answer under the request's key (once). */
static void put(lm_relay_t *r, uint32_t form, const lm_usage *u, const void *payload, size_t n)
{
    lm_cache_t *c = r->rt->cache;
    const lm_conf_t *conf = r->rt->conf;
    r->cache->store = 0;
    if (n > conf->cache.max_entry - sizeof(lm_cache_hdr_t))
        return; /* over cache_max_entry: kept nowhere */
    lm_cache_blob_t *b = lm_cache_blob_new(NULL, sizeof(lm_cache_hdr_t) + n);
    if (b == NULL)
        return;
    lm_cache_hdr_t h;
    memset(&h, 0, sizeof(h)); /* no stray padding bytes go to Redis */
    h.form = form;
    h.prompt = u->prompt;
    h.completion = u->completion;
    h.cached = u->cached;
    h.reasoning = u->reasoning;
    snprintf(h.channel, sizeof(h.channel), "%s", r->route ? r->route->inst->chan->name : "");
    snprintf(h.model, sizeof(h.model), "%s", r->upstream_model);
    memcpy(b->data, &h, sizeof(h));
    memcpy(b->data + sizeof(h), payload, n);
    if (lm_cache_redis_on(r))
        lm_cache_redis_put(r, r->cache->key, b->data, b->len, conf->cache.ttl_ms);
    int evicted =
        lm_cache_put(c, r->cache->key, b, (int64_t)(uint64_t)lm_clock_ms() + conf->cache.ttl_ms);
    lm_metrics_std_t *m = r->w->svc->metrics;
    if (m == NULL)
        return;
    if (evicted > 0)
        lm_metrics_inc(m->cache_evictions, NULL, (uint64_t)evicted);
    lm_metrics_put(m->cache_bytes, NULL, (int64_t)lm_cache_bytes(c));
}

/* Every choice has a finish_reason: the answer is complete. A scan, not a
 * parse (a parse would double a miss's cost): in JSON text a key's quotes
 * are bare, and quotes inside a string value are escaped, so the bytes
 * "finish_reason": mark a key and nothing else. */
static int complete(const char *body, size_t len)
{
    static const char key[] = "\"finish_reason\":";
    const char *p = body, *end = body + len;
    int seen = 0;
    while ((p = memmem(p, (size_t)(end - p), key, sizeof(key) - 1)) != NULL) {
        p += sizeof(key) - 1;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p + 1 >= end || p[0] != '"' || p[1] == '"')
            return 0; /* null, or an empty reason: not finished */
        seen = 1;
    }
    return seen;
}

void lm_cache_put_whole(lm_relay_t *r, const char *body, size_t len, const lm_usage *u)
{
    if (r->cache == NULL || !r->cache->store || !complete(body, len))
        return;
    put(r, LM_CACHE_WHOLE, u, body, len);
}

void lm_cache_rec_chunk(lm_relay_t *r, const char *json, size_t len)
{
    if (r->cache == NULL || !r->cache->store)
        return;
    uint32_t n = (uint32_t)len;
    uint64_t cap = r->rt->conf->cache.max_entry;
    if (len > cap || r->cache->rec.len > cap || lm_buf_add(&r->cache->rec, &n, 4) < 0 ||
        lm_buf_add(&r->cache->rec, json, len) < 0) {
        r->cache->store = 0; /* larger than cache_max_entry: never stored */
        lm_buf_free(&r->cache->rec);
    }
}

void lm_cache_rec_reset(lm_relay_t *r)
{
    if (r->cache)
        lm_buf_reset(&r->cache->rec);
}

void lm_cache_put_stream(lm_relay_t *r)
{
    if (r->cache == NULL || !r->cache->store || !r->st_init || !r->st.emit.finish_seen ||
        r->stream_error || r->cache->rec.len == 0)
        return;
    put(r, LM_CACHE_STREAM, &r->st.emit.usage, r->cache->rec.p, r->cache->rec.len);
}

void lm_cache_req_free(lm_relay_t *r)
{
    if (r->cache == NULL)
        return;
    lm_buf_free(&r->cache->rec);
    lm_cache_wait_free(&r->cache->redis);
    free(r->cache);
    r->cache = NULL;
}
