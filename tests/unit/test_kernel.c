/* Pure kernel logic: config parsing, usage merge, error mapping, request
 * checks, key hashing. */
#include "conf/conf.h"
#include "core/errors.h"
#include "gov/auth.h"
#include "plugin/host.h"
#include "proto/reqcheck.h"
#include "t.h"

#include <stdint.h>
#include <stdlib.h>

static lm_conf_t *parse(const char *text, char *err, size_t n)
{
    lm_conf_t *c = NULL;
    if (lm_conf_parse("t.conf", text, strlen(text), &c, err, n) < 0)
        return NULL;
    return c;
}

static void test_conf(void)
{
    char err[512];
    T_BEGIN("conf_full");
    setenv("LM_UNIT_KEY", "sk-from-the-environment", 1);
    lm_conf_t *c = parse("# comment\n"
                         "listen 0.0.0.0:9000   # trailing\n"
                         "workers 3\nmax_body_size 2m\ndrain_timeout 1500ms\nlog_level debug\n"
                         "key a sk-literal-key\nkey b env:LM_UNIT_KEY\n"
                         "key c sha256:"
                         "0123456789abcdef0123456789abcdef"
                         "0123456789abcdef0123456789abcdef\n"
                         "channel one {\n  plugin openai\n  models x y=z\n"
                         "  base_url \"http://h/v1\"\n  api_key env:LM_UNIT_KEY\n"
                         "  idle_timeout 2m\n}\n",
                         err, sizeof(err));
    T_CHECK(c != NULL, "parse: %s", err);
    if (c) {
        T_STREQ(c->listen_host, "0.0.0.0");
        T_CHECK(c->listen_port == 9000 && c->workers == 3, "listen/workers");
        T_CHECK(c->max_body == 2u * 1024 * 1024 && c->drain_timeout_ms == 1500, "sizes");
        T_CHECK(c->log_level == LM_LOG_DEBUG && c->nkeys == 3 && c->nchans == 1, "counts");
        T_CHECK(c->keys[2].hash[0] == 0x01 && c->keys[2].hash[31] == 0xef, "sha256 key");
        lm_chan_conf_t *ch = &c->chans[0];
        T_CHECK(ch->nmodels == 2, "models");
        T_STREQ(ch->models[1].name, "y");
        T_STREQ(ch->models[1].upstream, "z");
        T_STREQ(lm_conf_chan_kv(ch, "base_url")->val, "http://h/v1");
        T_STREQ(lm_conf_chan_kv(ch, "api_key")->val, "sk-from-the-environment");
        T_CHECK(lm_conf_chan_kv(ch, "api_key")->secret, "env values are secret");
        T_CHECK(ch->idle_timeout_ms == 120000 && ch->connect_timeout_ms == 5000, "timeouts");
        T_CHECK(lm_auth_check(c, "Bearer sk-literal-key") == &c->keys[0], "literal key");
        T_CHECK(lm_auth_check(c, "bearer  sk-from-the-environment") == &c->keys[1], "env key");
        T_CHECK(lm_auth_check(c, "Bearer sk-literal-ke") == NULL, "prefix is not a key");
        T_CHECK(lm_auth_check(c, "Basic sk-literal-key") == NULL, "scheme");
        T_CHECK(lm_auth_check(c, NULL) == NULL && lm_auth_check(c, "Bearer ") == NULL, "empty");
        lm_conf_free(c);
    }
    T_END();

    T_BEGIN("conf_errors");
    const char *bad[][2] = {
        {"listen 1.2.3.4\n", "t.conf:1: expected host:port"},
        {"\n\nfoo bar\n", "t.conf:3: unknown directive \"foo\""},
        {"channel x {\n plugin p\n}\n", "t.conf:3: channel x (line 1) serves no models"},
        {"channel x {\n models a\n models =b\n}\n", "t.conf:3: bad model mapping"},
        {"channel x {\n plugin p\n models a\n k v\n k w\n}\n", "t.conf:5: k is set twice"},
        {"}\n", "t.conf:1: unexpected }"},
        {"max_body_size 10\n", "t.conf:1: max_body_size"},
        {"key k sha256:zz\n", "t.conf:1: sha256: needs 64 hex digits"},
        {"channel x {\n connect_timeout 0\n}\n", "t.conf:2: connect_timeout needs a positive"},
        {"listen \"a b\"c\n", "t.conf:1: text right after a closing quote"},
        {"channel x {\n base_url a b\n}\n", "t.conf:2: base_url takes one value"},
        {"channel x {\n api_key a b\n secret c d\n}\n",
         "t.conf:3: only one setting per channel may list several keys"},
        {"route_strategy fastest gpt-*\n", "t.conf:1: route_strategy must be"},
        {"channel x {\n error_rate 101\n}\n",
         "t.conf:2: error_rate needs a whole number (a percentage"},
        {"channel x {\n eject_cooldown 0\n}\n",
         "t.conf:2: eject_cooldown needs a positive duration"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = parse(bad[i][0], err, sizeof(err));
        T_CHECK(c == NULL && strstr(err, bad[i][1]), "case %zu: got \"%s\"", i, err);
        lm_conf_free(c);
    }
    char nul[] = "listen 1.2.3.4:5\n\0x\n";
    c = NULL;
    T_CHECK(lm_conf_parse("t.conf", nul, sizeof(nul) - 1, &c, err, sizeof(err)) < 0 &&
                strstr(err, "NUL"),
            "NUL byte: %s", err);
    T_END();
}

/* store postgres / on_store_failure (docs/scale-out.md) */
static void test_conf_store(void)
{
    char err[256];
    T_BEGIN("conf_store_postgres_and_failure_policy");
    lm_conf_t *c = parse("store postgres \"host=h dbname=d user=u password=env:PGPW\"\n"
                         "on_store_failure open\n",
                         err, sizeof(err));
    T_CHECK(c && c->store_pg && !strcmp(c->store_pg, "host=h dbname=d user=u password=env:PGPW") &&
                c->store_fail_open,
            "parsed: %s", err);
    lm_conf_free(c);
    c = parse("listen 127.0.0.1:1\n", err, sizeof(err));
    T_CHECK(c && c->store_pg == NULL && !c->store_fail_open, "defaults: sqlite, closed");
    lm_conf_free(c);
    c = parse("store postgres \"host=h password=env:A\"\nstore sqlite\n", err, sizeof(err));
    T_CHECK(c && c->store_pg == NULL, "store sqlite goes back");
    lm_conf_free(c);
    const char *bad[][2] = {
        {"store postgres \"host=h password=s3cret\"\n", "literal password is refused"},
        {"store postgres \"host=h password = 's3cret'\"\n", "literal password is refused"},
        {"store postgres \"postgres://u:p@h/d\"\n", "not a URI"},
        {"store mysql \"x\"\n", "usage: store sqlite"},
        {"on_store_failure maybe\n", "on_store_failure must be closed or open"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c = parse(bad[i][0], err, sizeof(err));
        T_CHECK(c == NULL && strstr(err, bad[i][1]) && !strstr(err, "s3cret"),
                "case %zu: got \"%s\"", i, err);
        lm_conf_free(c);
    }
    T_END();
}

static void test_conf_rotation_and_strategies(void)
{
    char err[256];
    T_BEGIN("conf_rotating_keys_and_model_strategies");
    lm_conf_t *c = parse("route_strategy round_robin chat-* gpt-4o\n"
                         "channel x {\n plugin p\n models a\n api_key k1 k2 k3\n}\n",
                         err, sizeof(err));
    T_CHECK(c != NULL, "parse: %s", err);
    if (c) {
        const lm_kv_t *kv = lm_conf_chan_kv(&c->chans[0], "api_key");
        T_CHECK(c->chans[0].nkeys == 3 && kv && kv->secret && kv->nalts == 2 &&
                    !strcmp(kv->val, "k1") && !strcmp(kv->alts[1], "k3"),
                "three keys");
        T_CHECK(c->nmodel_strategies == 2 && !strcmp(c->model_strategies[1].pattern, "gpt-4o") &&
                    !strcmp(c->model_strategies[0].strategy, "round_robin"),
                "strategy per pattern");
        lm_conf_free(c);
    }
    c = parse("channel x {\n plugin p\n models a\n api_key sk-AAAA sk-BBBB\n}\n", err, sizeof(err));
    if (c) {
        char text[] = "refused sk-BBBB, sk-AAAA";
        lm_conf_scrub(&c->chans[0], text);
        T_STREQ(text, "refused ***, ***");
        lm_conf_free(c);
    }
    T_END();
}

static void test_usage(void)
{
    T_BEGIN("usage_merge");
    lm_usage acc = LM_USAGE_UNKNOWN;
    lm_usage a = {12, 1, 13, -1, -1}, b = {-1, 2, 14, 3, -1};
    lm_usage_merge(&acc, &a, LM_USAGE_CUMULATIVE);
    lm_usage_merge(&acc, &b, LM_USAGE_CUMULATIVE);
    T_CHECK(acc.prompt == 12 && acc.completion == 2 && acc.total == 14 && acc.cached == 3 &&
                acc.reasoning == -1,
            "cumulative: last known wins");
    lm_usage d = LM_USAGE_UNKNOWN, x = {5, 1, -1, -1, -1}, y = {0, 2, -1, -1, -1};
    lm_usage_merge(&d, &x, LM_USAGE_DELTA);
    lm_usage_merge(&d, &y, LM_USAGE_DELTA);
    T_CHECK(d.prompt == 5 && d.completion == 3 && d.total == -1, "delta: summed");
    lm_usage big = {INT64_MAX - 1, INT64_MAX, -1, -1, -1};
    lm_usage_merge(&d, &big, LM_USAGE_DELTA);
    T_CHECK(d.prompt == INT64_MAX && d.completion == INT64_MAX, "delta saturates");
    json_t *o = lm_usage_to_openai(&acc);
    T_CHECK(json_integer_value(json_object_get(o, "total_tokens")) == 14, "to_openai");
    T_CHECK(json_integer_value(
                json_object_get(json_object_get(o, "prompt_tokens_details"), "cached_tokens")) == 3,
            "cached tokens detail");
    lm_usage back;
    lm_usage_from_openai(o, &back);
    T_CHECK(back.prompt == 12 && back.cached == 3 && back.reasoning == -1, "round trip");
    json_decref(o);
    T_END();
}

static void test_errors(void)
{
    lm_err e;
    T_BEGIN("error_default_map");
    const char *oa = "{\"error\":{\"message\":\"m\",\"type\":\"t\",\"code\":\"c\"}}";
    lm_error_map_default(429, lm_cstr(oa), &e);
    T_CHECK(e.http_status == 429 && !strcmp(e.code, "c") && !strcmp(e.msg, "m"), "429");
    lm_error_map_default(500, lm_cstr(oa), &e);
    T_CHECK(e.http_status == 502 && !strcmp(e.type, "api_error"), "5xx -> 502");
    lm_error_map_default(404, lm_cstr("{\"error\":\"model x not found\"}"), &e);
    T_CHECK(e.http_status == 404 && !strcmp(e.msg, "model x not found"), "string error");
    lm_error_map_default(403, lm_cstr("<html>"), &e);
    T_CHECK(e.http_status == 403 && strstr(e.msg, "HTTP 403"), "non-JSON body");
    lm_error_map_default(302, lm_cstr(""), &e);
    T_CHECK(e.http_status == 502, "redirects are bad gateway");
    char *body = lm_error_body(&e);
    json_t *j = json_loads(body, 0, NULL);
    json_t *err = json_object_get(j, "error");
    T_CHECK(json_is_string(json_object_get(err, "message")) &&
                json_is_string(json_object_get(err, "type")) &&
                json_object_get(err, "code") != NULL && json_is_null(json_object_get(err, "param")),
            "OpenAI shape: %s", body);
    json_decref(j);
    free(body);
    lm_err_set(&e, -1, 400, "invalid_request_error", NULL, "bad \xff utf8");
    body = lm_error_body(&e);
    j = body ? json_loads(body, 0, NULL) : NULL;
    T_CHECK(j != NULL, "invalid UTF-8 never breaks the body");
    json_decref(j);
    free(body);
    T_END();
}

static void test_reqcheck(void)
{
    lm_err e;
    T_BEGIN("reqcheck_depth");
    char deep[200];
    memset(deep, '[', 65);
    memset(deep + 65, ']', 65);
    T_CHECK(!lm_reqcheck_depth_ok(deep, 130, 64), "65 levels rejected");
    T_CHECK(lm_reqcheck_depth_ok(deep + 1, 128, 64), "64 levels accepted");
    T_CHECK(lm_reqcheck_depth_ok("\"[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[\"", 30, 3),
            "brackets in strings");
    T_END();

    T_BEGIN("reqcheck_fields");
    struct {
        const char *body;
        int ok;
    } cases[] = {
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 1},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}",
         1},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 0},
        {"{\"model\":\"\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 0},
        {"{\"model\":\"m\",\"messages\":[]}", 0},
        {"{\"model\":\"m\",\"messages\":[1]}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"n\":0}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"max_tokens\":1e308}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"max_tokens\":9223372036854775807}",
         0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"temperature\":\"0.5\"}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"top_p\":1.5}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":null}",
         1},
        /* what each role requires, for every channel (ABI 1.2) */
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":null}]}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"r\"}]}", 0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"r\",\"tool_call_id\":"
         "\"c\"}]}",
         1},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
         "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}",
         1},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
         "\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}]}",
         0},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\"}]}", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *r = lm_reqcheck_parse(cases[i].body, strlen(cases[i].body), &e);
        int ok = r && lm_reqcheck_chat(r, &e) == 0;
        T_CHECK(ok == cases[i].ok, "case %zu (%s): %s", i, cases[i].body, ok ? "accepted" : e.msg);
        T_CHECK(ok || e.http_status == 400, "case %zu: status %d", i, e.http_status);
        json_decref(r);
    }
    const char *named = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
                        "{\"role\":\"tool\",\"content\":\"r\"}]}";
    json_t *r = lm_reqcheck_parse(named, strlen(named), &e);
    T_CHECK(r && lm_reqcheck_chat(r, &e) < 0 && strstr(e.msg, "messages[1].tool_call_id"),
            "the error names the field: %s", e.msg);
    json_decref(r);
    T_END();
}

static void test_digest(void)
{
    unsigned char a[32] = {0}, b[32] = {0};
    T_BEGIN("auth_digest_eq");
    T_CHECK(lm_auth_digest_eq(a, b), "equal");
    b[31] = 1;
    T_CHECK(!lm_auth_digest_eq(a, b), "last byte differs");
    b[31] = 0;
    b[0] = 1;
    T_CHECK(!lm_auth_digest_eq(a, b), "first byte differs");
    T_END();
}

int main(void)
{
    test_conf();
    test_conf_store();
    test_conf_rotation_and_strategies();
    test_usage();
    test_errors();
    test_reqcheck();
    test_digest();
    T_EXIT();
}
