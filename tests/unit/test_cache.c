/* Unit tests for the response cache (docs/cache.md): the canonical request
 * text and its key (what changes it and what does not), the sampled rule,
 * the cache directives, and the table: hit, replace, expiry, LRU eviction
 * under the byte cap, a value kept by a reader across its eviction, and
 * many threads at once. */
#include "conf/cacheconf.h"
#include "relay/cache_key.h"
#include "relay/cache_rec.h"
#include "relay/cache_store.h"
#include "t.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static int key_of(const char *json, const char *api, int stream, unsigned char out[32])
{
    json_t *j = json_loads(json, 0, NULL);
    int rc = j ? lm_cache_key(j, api, stream, out) : -1;
    json_decref(j);
    return rc;
}

static int same(const char *a, const char *b, const char *api_a, const char *api_b)
{
    unsigned char ka[32], kb[32];
    if (key_of(a, api_a, 0, ka) < 0 || key_of(b, api_b, 0, kb) < 0)
        return -1;
    return memcmp(ka, kb, 32) == 0;
}

static void test_key(void)
{
    T_BEGIN("cache_key_canonical");
    const char *base = "{\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":\"user\","
                       "\"content\":\"hi\"}]}";
    /* key order and the fields that change nothing */
    T_CHECK(same(base,
                 "{\"messages\":[{\"content\":\"hi\",\"role\":\"user\"}],\"temperature\":0,"
                 "\"model\":\"m\",\"stream\":true,\"user\":\"u1\",\"stream_options\":"
                 "{\"include_usage\":true}}",
                 "chat", "chat") == 1,
            "order, stream, user and stream_options change nothing");
    T_CHECK(same(base, base, "chat", "messages") == 0, "the inbound API is in the key");
    const char *differ[] = {
        "{\"model\":\"m2\",\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
        "}",
        "{\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":\"user\",\"content\":\"hi!\"}]"
        "}",
        "{\"model\":\"m\",\"temperature\":0,\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}]}",
        "{\"model\":\"m\",\"temperature\":0,\"tools\":[],\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}]}",
        "{\"model\":\"m\",\"temperature\":0,\"response_format\":{\"type\":\"json_object\"},"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        "{\"model\":\"m\",\"temperature\":0,\"messages\":[{\"role\":\"system\",\"content\":\"hi\"}]"
        "}",
    };
    for (size_t i = 0; i < sizeof(differ) / sizeof(differ[0]); i++)
        T_CHECK(same(base, differ[i], "chat", "chat") == 0, "must differ: %s", differ[i]);
    unsigned char a[32], b[32];
    T_CHECK(key_of(base, "chat", 0, a) == 0 && key_of(base, "chat", 1, b) == 0 &&
                memcmp(a, b, 32) != 0,
            "whole and stream answers are stored apart");
    /* the encoding is typed: a number and a string that print alike differ */
    T_CHECK(same("{\"a\":1}", "{\"a\":\"1\"}", "chat", "chat") == 0, "types");
    T_CHECK(same("{\"a\":[\"x\",\"y\"]}", "{\"a\":[\"xy\"]}", "chat", "chat") == 0, "lengths");
    T_CHECK(same("{\"a\":{\"b\":1,\"c\":2}}", "{\"a\":{\"c\":2,\"b\":1}}", "chat", "chat") == 1,
            "nested key order");
    T_CHECK(same("{\"a\":{\"user\":1}}", "{\"a\":{}}", "chat", "chat") == 0,
            "only the top-level user is left out");
    json_t *j = json_loads(base, 0, NULL);
    T_CHECK(lm_cache_key(j, "chat", 0, a) == 0 && json_object_size(j) == 3, "canon unchanged");
    json_decref(j);
    T_END();

    T_BEGIN("cache_key_deterministic");
    const char *cases[][2] = {{"{\"temperature\":0}", "1"},
                              {"{\"temperature\":0.0}", "1"},
                              {"{\"temperature\":0.2}", "0"},
                              {"{}", "0"},
                              {"{\"temperature\":\"0\"}", "0"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *c = json_loads(cases[i][0], 0, NULL);
        T_CHECK(lm_cache_key_deterministic(c, 0) == (cases[i][1][0] == '1'), "%s", cases[i][0]);
        T_CHECK(lm_cache_key_deterministic(c, 1) == 1, "sampled on: %s", cases[i][0]);
        json_decref(c);
    }
    T_END();
}

static int directive(lm_cache_conf_t *cc, const char *line)
{
    char buf[256], *w[16], err[256];
    int nw = 0;
    snprintf(buf, sizeof(buf), "%s", line);
    for (char *t = strtok(buf, " "); t && nw < 16; t = strtok(NULL, " "))
        w[nw++] = t;
    return lm_cacheconf_directive(cc, w, nw, err, sizeof(err));
}

static void test_conf(void)
{
    T_BEGIN("cache_conf_rules");
    lm_cache_conf_t cc;
    lm_cacheconf_init(&cc);
    T_CHECK(!lm_cacheconf_any(&cc) && !lm_cacheconf_wanted(&cc, "m", "k", "chat"),
            "off by default");
    T_CHECK(directive(&cc, "cache off models gpt-4o-mini") == 0, "off rule");
    T_CHECK(directive(&cc, "cache on models gpt-* keys team-* apis chat messages") == 0, "on rule");
    T_CHECK(directive(&cc, "cache_ttl 5m") == 0 && cc.ttl_ms == 300000, "ttl");
    T_CHECK(directive(&cc, "cache_max_bytes 2m") == 0 && cc.max_bytes == 2u * 1024 * 1024, "size");
    T_CHECK(directive(&cc, "cache_sampled on") == 0 && cc.sampled, "sampled");
    T_CHECK(cc.max_entry == 1024 * 1024, "cache_max_entry 1m by default");
    T_CHECK(directive(&cc, "cache_max_entry 64k") == 0 && cc.max_entry == 64 * 1024, "entry cap");
    T_CHECK(directive(&cc, "listen x") == 1, "not a cache directive");
    const char *bad[] = {"cache",
                         "cache yes",
                         "cache on models",
                         "cache on models a models b",
                         "cache on bogus",
                         "cache_ttl 0",
                         "cache_ttl soon",
                         "cache_max_bytes 10",
                         "cache_max_entry 10",
                         "cache_max_entry 1g",
                         "cache_sampled maybe",
                         "cache_ttl 1 2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        T_CHECK(directive(&cc, bad[i]) == -1, "refused: %s", bad[i]);
    T_CHECK(lm_cacheconf_any(&cc), "a rule turns it on");
    T_CHECK(lm_cacheconf_wanted(&cc, "gpt-4o", "team-a", "chat"), "match");
    T_CHECK(!lm_cacheconf_wanted(&cc, "gpt-4o-mini", "team-a", "chat"), "first rule wins");
    T_CHECK(!lm_cacheconf_wanted(&cc, "gpt-4o", "other", "chat"), "key");
    T_CHECK(!lm_cacheconf_wanted(&cc, "gpt-4o", NULL, "chat"), "no key name");
    T_CHECK(!lm_cacheconf_wanted(&cc, "gpt-4o", "team-a", "responses"), "api");
    lm_cacheconf_free(&cc);
    T_END();
}

static void key_n(unsigned char k[32], int n)
{
    memset(k, 0, 32);
    memcpy(k, &n, sizeof(n));
    k[31] = (unsigned char)n;
}

static size_t blob_cost(size_t len)
{
    lm_cache_t *c = lm_cache_new(1 << 20);
    unsigned char k[32];
    key_n(k, 1);
    lm_cache_put(c, k, lm_cache_blob_new(NULL, len), 100);
    size_t n = (size_t)lm_cache_bytes(c);
    lm_cache_free(c);
    return n;
}

static void test_table(void)
{
    T_BEGIN("cache_table_get_put_expiry");
    lm_cache_t *c = lm_cache_new(1 << 20);
    unsigned char k[32];
    key_n(k, 7);
    T_CHECK(lm_cache_get(c, k, 0) == NULL, "empty");
    T_CHECK(lm_cache_put(c, k, lm_cache_blob_new("one", 3), 1000) == 0, "put");
    lm_cache_blob_t *b = lm_cache_get(c, k, 999);
    T_CHECK(b && b->len == 3 && memcmp(b->data, "one", 3) == 0, "hit");
    T_CHECK(lm_cache_put(c, k, lm_cache_blob_new("two!", 4), 2000) == 0 && lm_cache_count(c) == 1,
            "replace");
    T_CHECK(b && memcmp(b->data, "one", 3) == 0, "a reader keeps the replaced value");
    lm_cache_blob_release(b);
    b = lm_cache_get(c, k, 1500);
    T_CHECK(b && b->len == 4, "new value");
    lm_cache_blob_release(b);
    T_CHECK(lm_cache_get(c, k, 2000) == NULL && lm_cache_count(c) == 0 && lm_cache_bytes(c) == 0,
            "expired entries go");
    lm_cache_free(c);
    T_END();

    T_BEGIN("cache_table_lru");
    size_t each = blob_cost(100);
    c = lm_cache_new(each * 4);
    for (int i = 0; i < 4; i++) {
        key_n(k, i);
        T_CHECK(lm_cache_put(c, k, lm_cache_blob_new(NULL, 100), 1000) == 0, "fits %d", i);
    }
    key_n(k, 0);
    lm_cache_blob_release(lm_cache_get(c, k, 0)); /* 0 becomes the newest; 1 the oldest */
    key_n(k, 4);
    T_CHECK(lm_cache_put(c, k, lm_cache_blob_new(NULL, 100), 1000) == 1, "one eviction");
    key_n(k, 1);
    T_CHECK(lm_cache_get(c, k, 0) == NULL, "the least recently used went");
    for (int i = 0; i < 5; i++) {
        if (i == 1)
            continue;
        key_n(k, i);
        lm_cache_blob_t *v = lm_cache_get(c, k, 0);
        T_CHECK(v != NULL, "kept %d", i);
        lm_cache_blob_release(v);
    }
    T_CHECK(lm_cache_bytes(c) <= each * 4, "under the cap");
    key_n(k, 9);
    T_CHECK(lm_cache_put(c, k, lm_cache_blob_new(NULL, each * 4), 1000) == -1,
            "a value larger than the cap is refused");
    key_n(k, 10);
    T_CHECK(lm_cache_put(c, k, lm_cache_blob_new(NULL, 100 + each * 2), 1000) >= 2,
            "a big value evicts several");
    lm_cache_free(c);
    T_END();
}

static void *hammer(void *arg)
{
    lm_cache_t *c = arg;
    unsigned char k[32];
    for (int i = 0; i < 20000; i++) {
        key_n(k, i % 300);
        if (i % 3 == 0) {
            lm_cache_put(c, k, lm_cache_blob_new(NULL, 64 + (size_t)(i % 50)), 1000000);
        } else {
            lm_cache_blob_t *b = lm_cache_get(c, k, i % 7 == 0 ? 2000000 : 0);
            lm_cache_blob_release(b);
        }
    }
    return NULL;
}

static void test_threads(void)
{
    T_BEGIN("cache_table_threads");
    lm_cache_t *c = lm_cache_new(16 * 1024);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, c);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    T_CHECK(lm_cache_bytes(c) <= 16 * 1024, "cap held: %llu",
            (unsigned long long)lm_cache_bytes(c));
    lm_cache_free(c);
    T_END();
}

/* A record as cache_rec.c writes it: header, then a body or chunks. */
static size_t record(char *out, uint32_t form, const char *const *chunks, size_t n)
{
    lm_cache_hdr_t h;
    memset(&h, 0, sizeof(h));
    h.form = form;
    memcpy(out, &h, sizeof(h));
    size_t len = sizeof(h);
    for (size_t i = 0; i < n; i++) {
        uint32_t l = (uint32_t)strlen(chunks[i]);
        if (form == LM_CACHE_STREAM) {
            memcpy(out + len, &l, 4);
            len += 4;
        }
        memcpy(out + len, chunks[i], l);
        len += l;
    }
    return len;
}

static void test_record_check(void)
{
    T_BEGIN("cache_record_valid");
    char buf[1024];
    const char *two[] = {"{\"a\":1}", "{\"b\":2}"};
    size_t n = record(buf, LM_CACHE_STREAM, two, 2);
    T_CHECK(lm_cache_rec_valid(buf, n), "a stream of two chunks");
    T_CHECK(!lm_cache_rec_valid(buf, n - 1), "a cut chunk");
    T_CHECK(!lm_cache_rec_valid(buf, n + 3), "trailing bytes short of a length");
    T_CHECK(!lm_cache_rec_valid(buf, sizeof(lm_cache_hdr_t)), "a stream with no chunk");
    n = record(buf, LM_CACHE_WHOLE, two, 1);
    T_CHECK(lm_cache_rec_valid(buf, n), "a whole answer");
    T_CHECK(!lm_cache_rec_valid(buf, sizeof(lm_cache_hdr_t) - 1) && !lm_cache_rec_valid(NULL, 0),
            "shorter than a header");
    lm_cache_hdr_t h;
    memcpy(&h, buf, sizeof(h));
    h.form = 7;
    memcpy(buf, &h, sizeof(h));
    T_CHECK(!lm_cache_rec_valid(buf, n), "an unknown form");
    h.form = LM_CACHE_WHOLE;
    memset(h.model, 'x', sizeof(h.model));
    memcpy(buf, &h, sizeof(h));
    T_CHECK(!lm_cache_rec_valid(buf, n), "a model name without its NUL");
    T_END();
}

int main(void)
{
    test_key();
    test_conf();
    test_table();
    test_threads();
    test_record_check();
    T_EXIT();
}
