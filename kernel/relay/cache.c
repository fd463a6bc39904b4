/* cache.c - the response cache in the relay (cache.h, docs/cache.md):
 * lookup after admission, replay of a hit (whole, or a stream as SSE in the
 * client's API, through the scripts' on_response / on_event), its free
 * ledger row. Recording a miss is cache_rec.c. Thread: the relay's
 * worker; the table is shared (cache_store.h). */
#include "relay/cache.h"
#include "core/clock.h"
#include "relay/cache_rec.h"

#include "conf/cacheconf.h"
#include "core/errors.h"
#include "plugin/host.h"
#include "relay/attempt.h"
#include "relay/cache_key.h"
#include "relay/cache_redis.h"
#include "relay/output.h"
#include "route/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void header(lm_relay_t *r, const char *v)
{
    if (r->req)
        lm_http_add_header(r->req, "X-Longmen-Cache", v);
}

static int has_token(const char *v, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = v; p && *p; p++)
        if (strncasecmp(p, tok, n) == 0)
            return 1;
    return 0;
}

/* Cache-Control: no-cache (or X-Longmen-Cache: bypass) skips the lookup;
 * no-store skips storing the answer. */
static void directives(lm_relay_t *r, int *bypass, int *no_store)
{
    const char *cc = lm_http_header(r->req, "Cache-Control");
    const char *x = lm_http_header(r->req, "X-Longmen-Cache");
    *bypass = has_token(cc, "no-cache") || (x && strcasecmp(x, "bypass") == 0);
    *no_store = has_token(cc, "no-store");
}

static void count(lm_relay_t *r, int hit)
{
    lm_metrics_std_t *m = r->w->svc->metrics;
    const char *labels[] = {r->client_model};
    if (m)
        lm_metrics_inc(hit ? m->cache_hits : m->cache_misses, labels, 1);
}

static lm_usage usage_of(const lm_cache_hdr_t *h)
{
    return (lm_usage){h->prompt, h->completion, -1, h->cached, h->reasoning};
}

/* The hit's ledger row: cost 0, marked cached; the scripts' on_usage sees
 * the answer's usage, and the charge stays 0 whatever it says. Limits
 * count its tokens (lm_gov_end at free, from r->usage). */
static void settle_hit(lm_relay_t *r, const lm_cache_hdr_t *h, const lm_usage *u)
{
    lm_usage b = *u;
    if (b.prompt < 0)
        b.prompt = r->prompt_est;
    if (b.completion < 0)
        b.completion = 0;
    lm_price_t zero = {0, 0, 0, 0};
    int64_t cost = 0;
    lm_rlua_usage(r->lua, &b, &zero, &cost);
    r->charge = 0;
    r->settled = 1;
    lm_usage_row_t row = {.request_id = r->id,
                          .attempt = 0,
                          .channel = h->channel,
                          .model_asked = r->client_model,
                          .model_served = h->model,
                          .prompt_tokens = b.prompt,
                          .completion_tokens = b.completion,
                          .cached_tokens = b.cached > 0 ? b.cached : 0,
                          .reasoning_tokens = b.reasoning > 0 ? b.reasoning : 0,
                          .latency_ms = (int64_t)((uint64_t)lm_clock_ms() - r->t_start_ms),
                          .ttft_ms = r->ttft_ms,
                          .status = 200,
                          .api = r->api->name,
                          .cached = 1};
    lm_gov_settle(&r->gov, 0, &row, NULL);
}

static int replay_whole(lm_relay_t *r, const lm_cache_hdr_t *h, const char *p, size_t n)
{
    lm_err e;
    lm_usage u = usage_of(h);
    size_t len = n;
    char *out = malloc(n + 1);
    if (out == NULL)
        return lm_out_err(r, 500, "api_error", NULL, "out of memory");
    memcpy(out, p, n);
    out[n] = '\0';
    if (lm_rlua_response(r->lua, &out, &len, &e) < 0) {
        free(out);
        return lm_out_error(r, &e);
    }
    if (!lm_inbound_is_chat(r->api)) { /* as attempt.c's api_answer */
        lm_usage a = u;
        if (a.prompt < 0)
            a.prompt = r->prompt_est;
        char *t = r->api->answer(out, len, &a, &len);
        free(out);
        if ((out = t) == NULL)
            return lm_out_err(r, 500, "api_error", NULL, "out of memory");
    }
    r->usage = u;
    r->ttft_ms = (int64_t)((uint64_t)lm_clock_ms() - r->t_start_ms);
    settle_hit(r, h, &u);
    lm_relay_to(r, LM_RELAY_DONE);
    r->client_status = 200;
    header(r, "hit");
    lm_http_reply(r->req, 200, "application/json", out, len, r->id);
    free(out);
    return 0;
}

/* The usage chunk a client asked for (stream_options.include_usage), in
 * the shape of the stream's first chunk (its id, created and model). */
static void usage_chunk(lm_relay_t *r, const char *first, size_t flen, const lm_usage *u)
{
    json_t *f = first ? json_loadb(first, flen, 0, NULL) : NULL;
    json_t *c =
        json_pack("{s:O?,s:s,s:O?,s:O?,s:[],s:o}", "id", json_object_get(f, "id"), "object",
                  "chat.completion.chunk", "created", json_object_get(f, "created"), "model",
                  json_object_get(f, "model"), "choices", "usage", lm_usage_to_openai(u));
    char *s = c ? json_dumps(c, JSON_COMPACT) : NULL;
    if (s) {
        lm_buf_adds(&r->out, "data: ");
        lm_buf_adds(&r->out, s);
        lm_buf_adds(&r->out, "\n\n");
    }
    free(s);
    json_decref(c);
    json_decref(f);
}

/* As output.c's lm_out_stream_end, with the cached usage (no stream state
 * exists: nothing was parsed). */
static void end_stream(lm_relay_t *r, const lm_err *e, const char *first, size_t flen,
                       const lm_usage *u)
{
    lm_relay_to(r, LM_RELAY_DONE);
    r->client_status = 200;
    r->stream_error = e != NULL;
    if (r->api_st) {
        r->api->stream_end(r->api_st, r->want_usage || !r->api->usage_if_asked ? u : NULL, e,
                           &r->out);
    } else {
        if (e) {
            char *body = lm_error_body(e);
            lm_buf_adds(&r->out, "data: ");
            lm_buf_adds(&r->out, body ? body : "{}");
            lm_buf_adds(&r->out, "\n\n");
            free(body);
        } else if (r->want_usage && (u->prompt >= 0 || u->completion >= 0)) {
            usage_chunk(r, first, flen, u);
        }
        lm_buf_adds(&r->out, "data: [DONE]\n\n");
    }
    lm_out_flush(r);
    lm_http_stream_end(r->req);
}

static int replay_stream(lm_relay_t *r, const lm_cache_hdr_t *h, const char *p, size_t n)
{
    lm_usage u = usage_of(h);
    json_t *so = json_object_get(r->canon, "stream_options");
    r->want_usage = json_is_true(json_object_get(so, "include_usage"));
    r->call.stream = 1;
    if (r->api->stream_new && (r->api_st = r->api->stream_new(r->client_model, r->id)) == NULL)
        return lm_out_err(r, 500, "api_error", NULL, "out of memory");
    r->usage = u;
    header(r, "hit");
    r->headers_sent = 1;
    lm_relay_to(r, LM_RELAY_STREAMING);
    r->ttft_ms = (int64_t)((uint64_t)lm_clock_ms() - r->t_start_ms);
    lm_http_stream_start(r->req, r->id);
    /* the sink's error when the client's API cannot take a chunk; on_event's own otherwise */
    lm_error_set(&r->st.err, -1, 500, "api_error", NULL, "the cached answer could not be replayed");
    const char *first = NULL;
    size_t flen = 0, off = 0;
    int rc = 0;
    while (rc == 0 && n - off >= 4) {
        uint32_t len;
        memcpy(&len, p + off, 4);
        off += 4;
        if (len > n - off)
            break;
        if (first == NULL)
            first = p + off, flen = len;
        rc = lm_out_sse_sink(r, p + off, len);
        off += len;
    }
    settle_hit(r, h, &u);
    end_stream(r, rc < 0 ? &r->st.err : NULL, first, flen, &u);
    return 0;
}

static void replay(lm_relay_t *r, const lm_cache_blob_t *b)
{
    lm_cache_hdr_t h;
    memcpy(&h, b->data, sizeof(h));
    const char *p = b->data + sizeof(h);
    size_t n = b->len - sizeof(h);
    if (h.form == LM_CACHE_STREAM)
        replay_stream(r, &h, p, n);
    else
        replay_whole(r, &h, p, n);
}

static void redis_error(lm_relay_t *r)
{
    lm_metrics_std_t *m = r->w->svc->metrics;
    if (m)
        lm_metrics_inc(m->cache_redis_errors, NULL, 1);
}

/* Worker: Redis answered the lookup (cache_redis.h); hit or miss as for
 * the memory tier. A Redis error or timeout is a miss. */
static void on_redis(evutil_socket_t fd, short what, void *arg)
{
    lm_relay_t *r = arg;
    (void)fd, (void)what;
    r->shared_wait = 0;
    if (r->req == NULL || r->state != LM_RELAY_ROUTING) { /* the client left, or a drain answered */
        lm_relay_maybe_free(r);
        return;
    }
    lm_cache_blob_t *b = r->cache->redis.got;
    r->cache->redis.got = NULL;
    if (r->cache->redis.failed)
        redis_error(r);
    if (b && !lm_cache_rec_valid(b->data, b->len)) { /* not a record this version wrote: a miss */
        lm_cache_blob_release(b);
        b = NULL;
    }
    count(r, b != NULL);
    if (b) {
        r->cache->store = 0;
        replay(r, b);
        lm_cache_blob_release(b);
        return;
    }
    header(r, "miss");
    (void)lm_attempt_start(r);
}

int lm_cache_lookup(lm_relay_t *r)
{
    lm_cache_t *c = r->rt->cache;
    if (c == NULL || r->op != LM_OP_CHAT || r->req == NULL)
        return 0;
    const lm_cache_conf_t *cc = &r->rt->conf->cache;
    if (!lm_cacheconf_wanted(cc, r->client_model, r->gov.key_name, r->api->name))
        return 0;
    if (!lm_cache_key_deterministic(r->canon, cc->sampled)) {
        header(r, "bypass"); /* sampled answers differ by design */
        return 0;
    }
    int bypass, no_store;
    directives(r, &bypass, &no_store);
    int stream = json_is_true(json_object_get(r->canon, "stream"));
    if ((r->cache = calloc(1, sizeof(*r->cache))) == NULL ||
        lm_cache_key(r->canon, r->api->name, stream, r->cache->key) < 0) {
        lm_cache_req_free(r);
        return 0;
    }
    r->cache->store = !no_store;
    if (!bypass) {
        lm_cache_blob_t *b = lm_cache_get(c, r->cache->key, (int64_t)(uint64_t)lm_clock_ms());
        if (b == NULL && lm_cache_redis_on(r)) { /* the shared tier: parked until it answers */
            if (lm_cache_redis_get(r, r->cache->key, &r->cache->redis, on_redis) == 0)
                return 1;
            redis_error(r);
        }
        count(r, b != NULL);
        if (b) {
            r->cache->store = 0;
            replay(r, b);
            lm_cache_blob_release(b);
            return 1;
        }
    }
    header(r, bypass ? "bypass" : "miss");
    return 0;
}
