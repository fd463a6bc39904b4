/* ernie plugin (Baidu ERNIE, Qianfan v1 "wenxinworkshop" API with an OAuth
 * access token) through the test kit: the golden cases G1-G3 of
 * docs/wire-formats.md 9.2 with their exact upstream bodies, the access token as an
 * ABI 1.1 side value (fetch, failure, refusal and retry), message repair,
 * tools, every error class, streams at every split, embeddings. Run from the
 * repo root. */
#define PT_PLUGIN "ernie"
#include "plugin_t.h"

#include <math.h>
#include <stdlib.h>

#define SO   pt_so_path()
#define SIDE "access_token"

/* The golden channel of 9.2: client_id ak, client_secret sk. */
static const char *CFG[] = {"base_url",      "http://mock/", "client_id", "ak",
                            "client_secret", "sk",           NULL};
/* Long, recognisable credentials for the "never leaks" checks. */
#define SECRET_ID  "AK-ernie-ID-7f7f"
#define SECRET_SEC "SK-ernie-SECRET-9c9c"
static const char *CFG_SECRET[] = {"base_url",           "http://mock", "oauth_url",
                                   "http://oauth.mock/", "client_id",   SECRET_ID,
                                   "client_secret",      SECRET_SEC,    NULL};

static const char *TOKEN_BODY =
    "{\"access_token\":\"24.test\",\"expires_in\":2592000,\"refresh_token\":\"25.test\","
    "\"scope\":\"x\",\"session_key\":\"x\",\"session_secret\":\"x\"}";

static const char *G1 =
    "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
    "\"max_tokens\":16,\"temperature\":0.2}";
static const char *G2 =
    "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"You are terse.\"},{\"role\":\"user\",\"content\":\"Say hi\"}],"
    "\"max_tokens\":16,\"temperature\":0.2,\"stream\":true,"
    "\"stream_options\":{\"include_usage\":true}}";
#define PARAMS                                                                                     \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]" \
    "}"
#define TOOLS                                                                                      \
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Get "        \
    "weather\",\"parameters\":" PARAMS "}}]"
static const char *G3 = "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"Weather in Paris?\"}],\"tools\":" TOOLS ",\"tool_choice\":\"auto\"}";
static const char *G3S =
    "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
    "\"Weather in Paris?\"}],\"tools\":" TOOLS ",\"tool_choice\":\"auto\",\"stream\":true}";

/* What the adapter must send (9.2). */
static const char *G1_BODY = "{\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],"
                             "\"system\":\"You are terse.\",\"temperature\":0.2,"
                             "\"max_output_tokens\":16}";
static const char *G2_BODY = "{\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}],"
                             "\"system\":\"You are terse.\",\"temperature\":0.2,"
                             "\"max_output_tokens\":16,\"stream\":true}";
static const char *G3_BODY = "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather in "
                             "Paris?\"}],\"functions\":[{\"name\":\"get_weather\",\"description\":"
                             "\"Get weather\",\"parameters\":" PARAMS "}]}";
#define CHAT_URL "http://mock/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"

static const char *G1_RESP =
    "{\"id\":\"as-g1\",\"object\":\"chat.completion\",\"created\":1700000000,\"result\":\"Hi!\","
    "\"is_truncated\":false,\"need_clear_history\":false,\"finish_reason\":\"normal\","
    "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}";
static const char *G2_STREAM =
    "data: {\"id\":\"as-g2\",\"object\":\"chat.completion\",\"created\":1700000000,"
    "\"sentence_id\":0,\"is_end\":false,\"is_truncated\":false,\"result\":\"Hi\","
    "\"need_clear_history\":false,\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":1,"
    "\"total_tokens\":13}}\n\n"
    "data: {\"id\":\"as-g2\",\"object\":\"chat.completion\",\"created\":1700000000,"
    "\"sentence_id\":1,\"is_end\":true,\"is_truncated\":false,\"result\":\"!\","
    "\"need_clear_history\":false,\"finish_reason\":\"normal\",\"usage\":{\"prompt_tokens\":12,"
    "\"completion_tokens\":2,\"total_tokens\":14}}\n\n";
static const char *G3_RESP =
    "{\"id\":\"as-g3\",\"object\":\"chat.completion\",\"created\":1700000000,\"result\":\"\","
    "\"is_truncated\":false,\"need_clear_history\":false,\"finish_reason\":\"function_call\","
    "\"function_call\":{\"name\":\"get_weather\",\"thoughts\":\"need weather\",\"arguments\":"
    "\"{\\\"city\\\":\\\"Paris\\\"}\"},\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":10,"
    "\"total_tokens\":40}}";

/* ------------------------------------------------------------------ helpers */

/* The body of a chat request built for `canon` (NULL unless rc == LM_OK). */
static json_t *built_body(lmt_plugin *p, int op, const char *canon, int *rc, lm_err *e)
{
    lmt_ureq u;
    json_t *b;
    *rc = lmt_build(p, op, canon, &u, e);
    b = *rc == LM_OK ? pt_jparse(u.body) : NULL;
    lmt_ureq_clear(&u);
    return b;
}

/* Build `canon`, then answer it with a whole body. */
static void respond(lmt_plugin *p, int op, const char *canon, int status, const char *body,
                    lmt_result *r)
{
    lmt_ureq u;
    lm_err e;
    lmt_build(p, op, canon, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, status, body, strlen(body), r);
}

/* lmt_stream_every_split, and the result must be a conforming stream (one
 * role first, one finish per choice, ordered tool calls, no usage chunk:
 * the kernel's protocol). Returns the first differing split, or 0. */
static size_t every_split(lmt_plugin *p, const char *canon, const char *body, lmt_result *r)
{
    char why[256] = "";
    size_t bad = lmt_stream_every_split(p, canon, body, r);
    T_CHECK(lmt_stream_conforms(r, why, sizeof why), "not conforming: %s: %s", why, r->json);
    return bad;
}

static void stream_once(lmt_plugin *p, const char *canon, const char *body, size_t split,
                        lmt_result *r)
{
    lmt_ureq u;
    lm_err e;
    lmt_build(p, LM_OP_CHAT, canon, &u, &e);
    lmt_ureq_clear(&u);
    lmt_stream(p, body, strlen(body), split, r);
}

typedef struct {
    char content[512];
    char args[512];
    char finish[32];
    int nfinish, nchunks, ncontent, tc_heads;
    char tc_id[96];
    char tc_name[64];
} summary;

static void summarize(const char *json, summary *s)
{
    json_t *arr = pt_jparse(json), *ch;
    size_t i, k;
    memset(s, 0, sizeof *s);
    json_array_foreach (arr, i, ch) {
        json_t *c0 = json_array_get(json_object_get(ch, "choices"), 0);
        json_t *d = json_object_get(c0, "delta");
        json_t *fr = json_object_get(c0, "finish_reason");
        json_t *ct = json_object_get(d, "content");
        json_t *tc;
        s->nchunks++;
        if (json_is_string(ct) && json_string_length(ct) > 0) {
            s->ncontent++;
            strncat(s->content, json_string_value(ct), sizeof s->content - strlen(s->content) - 1);
        }
        json_array_foreach (json_object_get(d, "tool_calls"), k, tc) {
            json_t *fn = json_object_get(tc, "function");
            const char *a = json_string_value(json_object_get(fn, "arguments"));
            if (json_object_get(tc, "id")) {
                s->tc_heads++;
                snprintf(s->tc_id, sizeof s->tc_id, "%s",
                         json_string_value(json_object_get(tc, "id")));
                snprintf(s->tc_name, sizeof s->tc_name, "%s",
                         json_string_value(json_object_get(fn, "name")));
            }
            if (a)
                strncat(s->args, a, sizeof s->args - strlen(s->args) - 1);
        }
        if (json_is_string(fr)) {
            s->nfinish++;
            snprintf(s->finish, sizeof s->finish, "%s", json_string_value(fr));
        }
    }
    json_decref(arr);
}

/* A growable text for building long upstream bodies. */
typedef struct {
    char *p;
    size_t n, cap;
} tbuf;

static void tb_adds(tbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            abort();
    }
    memcpy(b->p + b->n, s, n + 1);
    b->n += n;
}

/* 1 when the cached token equals want (NULL: no token cached). */
static int cached_is(lmt_plugin *p, const char *want)
{
    char *v = lmt_side_value(p, SIDE);
    int ok = want ? (v != NULL && strcmp(v, want) == 0) : v == NULL;
    free(v);
    return ok;
}

/* The messages array a request produces, compared with `want_json`. */
static int messages_are(lmt_plugin *p, const char *canon, const char *want_json, char *got,
                        size_t gotn)
{
    int rc;
    lm_err e;
    json_t *b = built_body(p, LM_OP_CHAT, canon, &rc, &e);
    json_t *want = pt_jparse(want_json);
    int ok = b && want && json_equal(json_object_get(b, "messages"), want);
    char *s = b ? json_dumps(json_object_get(b, "messages"), JSON_COMPACT) : NULL;
    snprintf(got, gotn, "%s", s ? s : e.msg);
    free(s);
    json_decref(b);
    json_decref(want);
    return ok;
}

/* ------------------------------------------------------------------ the token */

static void test_token(void)
{
    lmt_plugin *p = pt_load(CFG);
    lmt_ureq u, req;
    lm_err e;
    int64_t ttl = -1;
    int rc;
    if (p == NULL)
        return;

    T_BEGIN("ernie_build_waits_for_token");
    rc = lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    T_CHECK(rc == LM_AGAIN, "rc %d, want LM_AGAIN", rc);
    T_CHECK(e.http_status == 0 && e.msg[0] == '\0', "e untouched (%d %s)", e.http_status, e.msg);
    T_CHECK(u.url[0] == '\0' && u.body[0] == '\0', "nothing described: %s %s", u.url, u.body);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ernie_invalid_request_needs_no_token");
    rc = lmt_build(p, LM_OP_CHAT,
                   "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"x\"},{\"role\":\"tool\",\"tool_call_id\":\"nope\",\"content\":\"1\"}]}",
                   &u, &e);
    T_CHECK(rc == LM_EINVAL && e.http_status == 400, "rc %d status %d", rc, e.http_status);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ernie_side_request_and_parse");
    rc = lmt_side_fetch(p, SIDE, 200, TOKEN_BODY, &req, &ttl, &e);
    T_CHECK(rc == LM_OK, "rc %d (%s)", rc, e.msg);
    T_STREQ(req.method, "POST");
    T_STREQ(req.url, "http://mock/oauth/2.0/token?grant_type=client_credentials&client_id=ak&"
                     "client_secret=sk");
    T_CHECK(req.body_len == 0, "empty body, got %s", req.body);
    T_CHECK(ttl == 2592000, "ttl %lld", (long long)ttl);
    T_CHECK(cached_is(p, "24.test"), "token cached");
    lmt_ureq_clear(&req);
    T_END();

    T_BEGIN("ernie_g1_request");
    rc = lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    T_CHECK(rc == LM_OK, "rc %d (%s)", rc, e.msg);
    T_STREQ(u.method, "POST");
    T_STREQ(u.url, CHAT_URL "completions?access_token=24.test");
    {
        json_t *b = pt_jparse(u.body), *want = pt_jparse(G1_BODY);
        T_CHECK(b && json_equal(b, want), "body %s", u.body);
        json_decref(b);
        json_decref(want);
    }
    T_CHECK(lmt_header(&u, "Authorization") == NULL, "no Authorization header");
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ernie_side_unknown_name");
    rc = lmt_side_fetch(p, "session", 200, TOKEN_BODY, &req, NULL, &e);
    T_CHECK(rc < 0, "rc %d", rc);
    lmt_ureq_clear(&req);
    T_END();

    lmt_unload(p);
}

static void oauth_fails(lmt_plugin *p, int status, const char *body, int want_status,
                        const char *want_code, const char *want_in_msg)
{
    lmt_ureq req;
    lm_err e;
    int rc = lmt_side_fetch(p, SIDE, status, body, &req, NULL, &e);
    T_CHECK(rc == LM_EUPSTREAM, "HTTP %d %s: rc %d", status, body, rc);
    T_CHECK(e.http_status == want_status, "HTTP %d: status %d, want %d", status, e.http_status,
            want_status);
    T_STREQ(e.code, want_code);
    if (want_in_msg)
        T_CHECK(strstr(e.msg, want_in_msg) != NULL, "msg %s lacks %s", e.msg, want_in_msg);
    T_CHECK(strstr(e.msg, SECRET_SEC) == NULL && strstr(e.msg, SECRET_ID) == NULL &&
                strstr(e.code, SECRET_SEC) == NULL,
            "credential leaked: %s / %s", e.code, e.msg);
    T_CHECK(cached_is(p, NULL), "no token cached after a failure");
    lmt_ureq_clear(&req);
}

static void test_token_failures(void)
{
    lmt_plugin *p = pt_load(CFG_SECRET);
    lmt_ureq req;
    lm_err e;
    if (p == NULL)
        return;

    T_BEGIN("ernie_oauth_url_and_escaping");
    lmt_side_fetch(p, SIDE, 200, TOKEN_BODY, &req, NULL, &e);
    T_STREQ(req.url,
            "http://oauth.mock/oauth/2.0/token?grant_type=client_credentials&client_id=" SECRET_ID
            "&client_secret=" SECRET_SEC);
    lmt_ureq_clear(&req);
    lmt_side_set(p, SIDE, NULL);
    T_END();

    T_BEGIN("ernie_oauth_failure_401");
    oauth_fails(p, 200,
                "{\"error\":\"invalid_client\",\"error_description\":\"unknown client id\"}", 401,
                "invalid_client", "unknown client id");
    oauth_fails(p, 401,
                "{\"error\":\"invalid_client\",\"error_description\":\"Client authentication "
                "failed\"}",
                401, "invalid_client", "Client authentication failed");
    /* a description echoing the credentials is scrubbed */
    oauth_fails(p, 200,
                "{\"error\":\"invalid_client\",\"error_description\":\"bad pair " SECRET_ID
                "/" SECRET_SEC "\"}",
                401, "invalid_client", "bad pair");
    oauth_fails(p, 200, "{\"expires_in\":10}", 401, "oauth_failed", NULL);
    oauth_fails(p, 200, "{\"access_token\":\"\"}", 401, "oauth_failed", NULL);
    oauth_fails(p, 200, "not json", 401, "oauth_failed", NULL);
    oauth_fails(p, 500, "<html>oops</html>", 502, "oauth_unavailable", NULL);
    T_END();

    T_BEGIN("ernie_token_escaped_in_url");
    {
        lmt_ureq u;
        lmt_side_set(p, SIDE, "24.a/b+c=");
        T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build %s", e.msg);
        T_STREQ(u.url, "http://mock"
                       "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions?"
                       "access_token=24.a%2Fb%2Bc%3D");
        lmt_ureq_clear(&u);
    }
    T_END();

    T_BEGIN("ernie_error_message_scrubbed");
    {
        lmt_result r;
        lmt_side_set(p, SIDE, "24.tok-SECRETTOKEN");
        respond(p, LM_OP_CHAT, G1, 200,
                "{\"error_code\":336003,\"error_msg\":\"bad 24.tok-SECRETTOKEN " SECRET_SEC "\"}",
                &r);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 400, "rc %d", r.rc);
        T_CHECK(strstr(r.err.msg, "SECRETTOKEN") == NULL && strstr(r.err.msg, SECRET_SEC) == NULL,
                "leak: %s", r.err.msg);
        lmt_result_clear(&r);
    }
    T_END();
    lmt_unload(p);
}

static void test_refusal(lmt_plugin *p)
{
    lmt_result r;
    const char *codes[] = {"110", "111", NULL};

    T_BEGIN("ernie_110_111_eretry_and_invalidate");
    for (int i = 0; codes[i]; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"error_code\":%s,\"error_msg\":\"Access token expired\"}",
                 codes[i]);
        lmt_side_set(p, SIDE, "24.old");
        respond(p, LM_OP_CHAT, G1, 200, body, &r);
        T_CHECK(r.rc == LM_ERETRY, "%s: rc %d", codes[i], r.rc);
        T_CHECK(r.err.http_status == 401, "%s: status %d", codes[i], r.err.http_status);
        T_STREQ(r.err.type, "authentication_error");
        T_STREQ(r.err.code, codes[i]);
        T_STREQ(r.err.msg, "Access token expired");
        T_CHECK(cached_is(p, NULL), "%s: the refused token is gone", codes[i]);
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie_refusal_keeps_token_refreshed_by_another");
    lmt_side_set(p, SIDE, "24.old");
    {
        lmt_ureq u;
        lm_err e;
        lmt_build(p, LM_OP_CHAT, G1, &u, &e); /* this request sends 24.old */
        T_CHECK(strstr(u.url, "access_token=24.old") != NULL, "url %s", u.url);
        lmt_ureq_clear(&u);
    }
    lmt_side_set(p, SIDE, "24.new"); /* another request refreshed it meanwhile */
    {
        const char *b = "{\"error_code\":111,\"error_msg\":\"Access token expired\"}";
        lmt_response(p, 200, b, strlen(b), &r);
    }
    T_CHECK(r.rc == LM_ERETRY, "rc %d", r.rc);
    T_CHECK(cached_is(p, "24.new"), "the fresh token stays");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie_stream_call_refused_as_plain_json");
    lmt_side_set(p, SIDE, "24.old");
    respond(p, LM_OP_CHAT, G2, 200,
            "{\"error_code\":110,\"error_msg\":\"Access token invalid or no longer valid\"}", &r);
    T_CHECK(r.rc == LM_ERETRY && r.err.http_status == 401, "rc %d", r.rc);
    T_CHECK(cached_is(p, NULL), "token gone");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie_110_via_map_error");
    lmt_side_set(p, SIDE, "24.old");
    respond(p, LM_OP_CHAT, G1, 401, "{\"error_code\":110,\"error_msg\":\"Access token invalid\"}",
            &r);
    T_CHECK(r.rc == LM_ERETRY && r.err.http_status == 401, "rc %d status %d", r.rc,
            r.err.http_status);
    T_CHECK(cached_is(p, NULL), "token gone");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie_13_14_no_retry");
    lmt_side_set(p, SIDE, "24.test");
    respond(p, LM_OP_CHAT, G1, 200,
            "{\"error_code\":14,\"error_msg\":\"IAM Certification failed\"}", &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 401, "rc %d", r.rc);
    T_STREQ(r.err.type, "authentication_error");
    T_CHECK(cached_is(p, "24.test"), "token kept");
    lmt_result_clear(&r);
    T_END();
}

/* ------------------------------------------------------------------ golden */

static void test_golden(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    summary s;
    json_t *b, *want;
    size_t bad;

    T_BEGIN("ernie_g1_response");
    respond(p, LM_OP_CHAT, G1, 200, G1_RESP, &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    b = pt_jparse(r.json);
    {
        json_t *c0 = json_array_get(json_object_get(b, "choices"), 0);
        json_t *m = json_object_get(c0, "message");
        T_STREQ(json_string_value(json_object_get(b, "object")), "chat.completion");
        T_STREQ(json_string_value(json_object_get(b, "id")), "as-g1");
        T_STREQ(json_string_value(json_object_get(b, "model")), "ERNIE-3.5-8K");
        T_CHECK(json_integer_value(json_object_get(b, "created")) == 1700000000, "created");
        T_STREQ(json_string_value(json_object_get(m, "role")), "assistant");
        T_STREQ(json_string_value(json_object_get(m, "content")), "Hi!");
        T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "stop");
        T_CHECK(json_object_get(b, "result") == NULL && json_object_get(b, "is_truncated") == NULL,
                "v1 fields not forwarded");
        /* the kernel writes it from r.usage (the plugin writes none) */
        T_CHECK(lmt_json_int(r.json, "usage.total_tokens", 14), "usage in the body");
    }
    T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage 12/2/14");
    json_decref(b);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie_g2_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build %s", e.msg);
    T_STREQ(u.url, CHAT_URL "completions?access_token=24.test");
    b = pt_jparse(u.body);
    want = pt_jparse(G2_BODY);
    T_CHECK(b && json_equal(b, want), "body %s", u.body);
    T_STREQ(lmt_header(&u, "Accept"), "text/event-stream");
    json_decref(b);
    json_decref(want);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ernie_g2_stream_every_split");
    bad = every_split(p, G2, G2_STREAM, &r);
    T_CHECK(bad == 0, "split %zu gives a different result", bad);
    T_CHECK(r.rc == LM_DONE && r.done, "rc %d done %d (%s)", r.rc, r.done, r.err.msg);
    summarize(r.json, &s);
    T_STREQ(s.content, "Hi!");
    T_CHECK(s.ncontent == 2, "two content deltas (%d)", s.ncontent);
    T_CHECK(s.nfinish == 1, "one finish chunk");
    T_STREQ(s.finish, "stop");
    T_CHECK(s.nchunks == 3, "Hi, !, finish (%d chunks): %s", s.nchunks, r.json);
    T_CHECK(pt_usage_is(&r.usage, 12, 2, 14), "usage 12/2/14, got %lld/%lld/%lld",
            (long long)r.usage.prompt, (long long)r.usage.completion, (long long)r.usage.total);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie_g3_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G3, &u, &e) == LM_OK, "build %s", e.msg);
    b = pt_jparse(u.body);
    want = pt_jparse(G3_BODY);
    T_CHECK(b && json_equal(b, want), "body %s", u.body);
    json_decref(want);
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ernie_g3_response");
    respond(p, LM_OP_CHAT, G3, 200, G3_RESP, &r);
    T_CHECK(r.rc == LM_OK, "rc %d (%s)", r.rc, r.err.msg);
    b = pt_jparse(r.json);
    {
        json_t *c0 = json_array_get(json_object_get(b, "choices"), 0);
        json_t *m = json_object_get(c0, "message");
        json_t *tc = json_array_get(json_object_get(m, "tool_calls"), 0);
        json_t *fn = json_object_get(tc, "function");
        const char *id = json_string_value(json_object_get(tc, "id"));
        T_CHECK(json_array_size(json_object_get(m, "tool_calls")) == 1, "one tool call");
        T_CHECK(id && strncmp(id, "call_", 5) == 0 && strlen(id) > 5, "id %s", id ? id : "-");
        T_STREQ(json_string_value(json_object_get(tc, "type")), "function");
        T_STREQ(json_string_value(json_object_get(fn, "name")), "get_weather");
        T_CHECK(pt_args_are_paris(json_string_value(json_object_get(fn, "arguments"))),
                "arguments");
        T_STREQ(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
        T_CHECK(json_is_null(json_object_get(m, "content")), "content null");
        T_CHECK(json_object_get(tc, "index") == NULL, "no index in a whole response");
    }
    T_CHECK(pt_usage_is(&r.usage, 30, 10, 40), "usage 30/10/40");
    json_decref(b);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie_error_probe_18");
    respond(p, LM_OP_CHAT, G1, 200,
            "{\"error_code\":18,\"error_msg\":\"Open api qps request limit reached\"}", &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 429, "rc %d status %d", r.rc,
            r.err.http_status);
    T_STREQ(r.err.type, "rate_limit_error");
    T_STREQ(r.err.code, "18");
    T_STREQ(r.err.msg, "Open api qps request limit reached");
    lmt_result_clear(&r);
    T_END();
}

/* ------------------------------------------------------------------ errors */

static void test_errors(lmt_plugin *p)
{
    static const struct {
        int code, status;
        const char *type;
    } map[] = {{13, 401, "authentication_error"},
               {14, 401, "authentication_error"},
               {6, 403, "permission_error"},
               {336004, 403, "permission_error"},
               {4, 429, "rate_limit_error"},
               {17, 429, "rate_limit_error"},
               {18, 429, "rate_limit_error"},
               {19, 429, "rate_limit_error"},
               {336501, 429, "rate_limit_error"},
               {336502, 429, "rate_limit_error"},
               {1, 503, "api_error"},
               {2, 503, "api_error"},
               {336000, 503, "api_error"},
               {336100, 503, "api_error"},
               {100, 400, "invalid_request_error"},
               {336001, 400, "invalid_request_error"},
               {336002, 400, "invalid_request_error"},
               {336003, 400, "invalid_request_error"},
               {99999, 502, "api_error"},
               {0, 0, NULL}};
    lmt_result r;

    T_BEGIN("ernie_error_classes");
    for (int i = 0; map[i].type; i++) {
        char body[160], code[16];
        snprintf(body, sizeof body, "{\"error_code\":%d,\"error_msg\":\"m%d\"}", map[i].code,
                 map[i].code);
        snprintf(code, sizeof code, "%d", map[i].code);
        respond(p, LM_OP_CHAT, G1, 200, body, &r);
        T_CHECK(r.rc == LM_EUPSTREAM, "%d: rc %d", map[i].code, r.rc);
        T_CHECK(r.err.http_status == map[i].status, "%d: status %d, want %d", map[i].code,
                r.err.http_status, map[i].status);
        T_CHECK(strcmp(r.err.type, map[i].type) == 0, "%d: type %s", map[i].code, r.err.type);
        T_CHECK(strcmp(r.err.code, code) == 0, "%d: code %s", map[i].code, r.err.code);
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie_non_2xx_bodies");
    respond(p, LM_OP_CHAT, G1, 500, "{\"error_code\":336100,\"error_msg\":\"high load\"}", &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 503, "v1 body: %d", r.err.http_status);
    T_STREQ(r.err.code, "336100");
    lmt_result_clear(&r);
    respond(p, LM_OP_CHAT, G1, 429,
            "{\"error\":{\"code\":\"rpm_limit\",\"message\":\"slow down\",\"type\":"
            "\"rate_limit_error\"}}",
            &r);
    T_CHECK(r.err.http_status == 429, "openai body: %d", r.err.http_status);
    T_STREQ(r.err.code, "rpm_limit");
    lmt_result_clear(&r);
    respond(p, LM_OP_CHAT, G1, 503, "upstream connect error", &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "text body -> default %d",
            r.err.http_status);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie_malformed_upstream");
    {
        const char *bodies[] = {"{\"result\":", "{}", "\"str\"", "{\"result\":7}", NULL};
        for (int i = 0; bodies[i]; i++) {
            respond(p, LM_OP_CHAT, G1, 200, bodies[i], &r);
            T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "body %d: rc %d status %d", i,
                    r.rc, r.err.http_status);
            lmt_result_clear(&r);
        }
    }
    T_END();

    T_BEGIN("ernie_finish_reasons");
    {
        static const char *const cases[][2] = {
            {"{\"result\":\"a\",\"finish_reason\":\"length\"}", "length"},
            {"{\"result\":\"a\",\"is_truncated\":true,\"finish_reason\":\"normal\"}", "length"},
            {"{\"result\":\"\",\"need_clear_history\":true,\"ban_round\":1}", "content_filter"},
            {"{\"result\":\"a\",\"finish_reason\":\"content_filter\"}", "content_filter"},
            {"{\"result\":\"a\",\"finish_reason\":\"stop\"}", "stop"},
            {"{\"result\":\"a\"}", "stop"},
            {NULL, NULL}};
        for (int i = 0; cases[i][0]; i++) {
            json_t *b;
            respond(p, LM_OP_CHAT, G1, 200, cases[i][0], &r);
            b = pt_jparse(r.json);
            T_CHECK(r.rc == LM_OK, "case %d rc %d", i, r.rc);
            T_CHECK(
                b && strcmp(json_string_value(json_object_get(
                                json_array_get(json_object_get(b, "choices"), 0), "finish_reason")),
                            cases[i][1]) == 0,
                "case %d: %s", i, r.json);
            json_decref(b);
            lmt_result_clear(&r);
        }
    }
    T_END();
}

/* ------------------------------------------------------------------ requests */

static void test_messages(lmt_plugin *p)
{
    char got[1024];

    T_BEGIN("ernie_messages_system_anywhere");
    T_CHECK(messages_are(p,
                         "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"system\","
                         "\"content\":\"a\"},{\"role\":\"user\",\"content\":\"u1\"},{\"role\":"
                         "\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"b\"}]},{"
                         "\"role\":\"user\",\"content\":\"u2\"}]}",
                         "[{\"role\":\"user\",\"content\":\"u1\\nu2\"}]", got, sizeof got),
            "got %s", got);
    {
        int rc;
        lm_err e;
        json_t *b = built_body(p, LM_OP_CHAT,
                               "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"system\","
                               "\"content\":\"a\"},{\"role\":\"user\",\"content\":\"u1\"},{"
                               "\"role\":\"developer\",\"content\":\"b\"}]}",
                               &rc, &e);
        T_STREQ(json_string_value(json_object_get(b, "system")), "a\nb");
        json_decref(b);
    }
    T_END();

    T_BEGIN("ernie_messages_even_counts");
    /* trailing assistant dropped: [u, a] -> [u] */
    T_CHECK(messages_are(p,
                         "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"q\"},{\"role\":\"assistant\",\"content\":\"prefill\"}]}",
                         "[{\"role\":\"user\",\"content\":\"q\"}]", got, sizeof got),
            "got %s", got);
    /* [u, a, u, a] -> [u, a, u] */
    T_CHECK(messages_are(p,
                         "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"q1\"},{\"role\":\"assistant\",\"content\":\"r1\"},{\"role\":\"user\","
                         "\"content\":\"q2\"},{\"role\":\"assistant\",\"content\":\"r2\"}]}",
                         "[{\"role\":\"user\",\"content\":\"q1\"},{\"role\":\"assistant\","
                         "\"content\":\"r1\"},{\"role\":\"user\",\"content\":\"q2\"}]",
                         got, sizeof got),
            "got %s", got);
    T_END();

    T_BEGIN("ernie_messages_leading_assistant");
    T_CHECK(messages_are(p,
                         "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"assistant\","
                         "\"content\":\"Hello, how can I help?\"},{\"role\":\"user\",\"content\":"
                         "\"q\"}]}",
                         "[{\"role\":\"user\",\"content\":\"q\"}]", got, sizeof got),
            "got %s", got);
    T_END();

    T_BEGIN("ernie_messages_consecutive_roles");
    T_CHECK(messages_are(p,
                         "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"a\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                         "\"b\"},{\"type\":\"text\",\"text\":\"c\"}]},{\"role\":\"assistant\","
                         "\"content\":\"x\"},{\"role\":\"assistant\",\"content\":null},{\"role\":"
                         "\"assistant\",\"content\":\"y\"},{\"role\":\"user\",\"content\":\"d\"}]}",
                         "[{\"role\":\"user\",\"content\":\"a\\nb\\nc\"},{\"role\":\"assistant\","
                         "\"content\":\"x\\ny\"},{\"role\":\"user\",\"content\":\"d\"}]",
                         got, sizeof got),
            "got %s", got);
    T_END();

    T_BEGIN("ernie_messages_rejects");
    {
        /* Roles, content types, an empty list and "n" are the kernel's (reqcheck,
         * caps, flags); what is left is v1's own shape of the history. */
        const char *bad[] = {
            /* nothing but system */
            "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"}]}",
            /* a tool result nobody asked for */
            "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{"
            "\"role\":\"tool\",\"tool_call_id\":\"nope\",\"content\":\"1\"}]}",
            /* a tool result then a user turn: cannot alternate */
            "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{"
            "\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
            "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":"
            "\"tool\",\"tool_call_id\":\"c1\",\"content\":\"1\"},{\"role\":\"user\",\"content\":"
            "\"y\"}]}",
            "{\"model\":\"../x\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
            "{\"model\":\"a?b=c\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", NULL};
        for (int i = 0; bad[i]; i++) {
            lmt_ureq u;
            lm_err e;
            int rc = lmt_build(p, LM_OP_CHAT, bad[i], &u, &e);
            T_CHECK(rc == LM_EINVAL && e.http_status == 400, "case %d: rc %d status %d", i, rc,
                    e.http_status);
            T_STREQ(e.type, "invalid_request_error");
            lmt_ureq_clear(&u);
        }
    }
    {
        /* The kernel refuses image parts (no LM_CAP_VISION) and n > 1 (no
         * LM_PF_MULTI_CHOICE) before build_request. */
        lmt_ureq u;
        lm_err e;
        int rc =
            lmt_build(p, LM_OP_CHAT,
                      "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\","
                      "\"content\":[{\"type\":\"text\",\"text\":\"what?\"},{\"type\":"
                      "\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}]}",
                      &u, &e);
        T_CHECK(rc < 0 && e.http_status == 400, "image part: rc %d status %d", rc, e.http_status);
        T_STREQ(e.code, "vision_unsupported");
        lmt_ureq_clear(&u);
        rc = lmt_build(p, LM_OP_CHAT,
                       "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\","
                       "\"content\":\"x\"}],\"n\":2}",
                       &u, &e);
        T_CHECK(rc < 0 && e.http_status == 400, "n 2: rc %d status %d", rc, e.http_status);
        T_STREQ(e.code, "n_unsupported");
        lmt_ureq_clear(&u);
    }
    T_END();

    T_BEGIN("ernie_messages_tools_round_trip");
    T_CHECK(
        messages_are(p,
                     "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                     "\"Weather in Paris?\"},{\"role\":\"assistant\",\"content\":null,"
                     "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{"
                     "\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
                     "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
                     "\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_1\","
                     "\"content\":\"sunny\"},{\"role\":\"tool\",\"tool_call_id\":\"call_2\","
                     "\"content\":\"noon\"}]}",
                     "[{\"role\":\"user\",\"content\":\"Weather in Paris?\"},{\"role\":"
                     "\"assistant\",\"content\":\"\",\"function_call\":{\"name\":\"get_weather\","
                     "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},{\"role\":\"function\","
                     "\"name\":\"get_weather\",\"content\":\"sunny\"}]",
                     got, sizeof got),
        "got %s", got);
    T_END();
}

static void test_params(lmt_plugin *p)
{
    int rc;
    lm_err e;
    json_t *b;

    T_BEGIN("ernie_params_map");
    b = built_body(p, LM_OP_CHAT,
                   "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"q\"}],\"max_completion_tokens\":99,\"temperature\":0.3,\"top_p\":0.5,"
                   "\"stop\":\"END\",\"seed\":3,\"user\":\"u1\",\"frequency_penalty\":1,"
                   "\"presence_penalty\":0.5,\"logprobs\":true,\"n\":1,\"response_format\":{"
                   "\"type\":\"text\"},\"parallel_tool_calls\":true,\"disable_search\":true}",
                   &rc, &e);
    T_CHECK(rc == LM_OK, "rc %d %s", rc, e.msg);
    T_CHECK(json_integer_value(json_object_get(b, "max_output_tokens")) == 99, "max_output_tokens");
    T_CHECK(pt_near(json_number_value(json_object_get(b, "temperature")), 0.3),
            "temperature as sent");
    T_CHECK(pt_near(json_number_value(json_object_get(b, "top_p")), 0.5), "top_p");
    T_STREQ(json_string_value(json_array_get(json_object_get(b, "stop"), 0)), "END");
    T_STREQ(json_string_value(json_object_get(b, "user_id")), "u1");
    T_CHECK(pt_near(json_number_value(json_object_get(b, "penalty_score")), 1.5), "penalty 1+f/2");
    T_CHECK(json_is_true(json_object_get(b, "disable_search")), "disable_search kept");
    {
        const char *gone[] = {"max_completion_tokens",
                              "max_tokens",
                              "seed",
                              "user",
                              "frequency_penalty",
                              "presence_penalty",
                              "logprobs",
                              "n",
                              "response_format",
                              "parallel_tool_calls",
                              "stream",
                              "model",
                              NULL};
        for (int i = 0; gone[i]; i++)
            T_CHECK(json_object_get(b, gone[i]) == NULL, "%s dropped", gone[i]);
    }
    json_decref(b);
    T_END();

    T_BEGIN("ernie_params_ranges_declared");
    {
        /* The kernel clamps these before build_request (temperature 0 is
         * sent as 0.01, max_tokens 1 as 2): docs/wire-formats.md 2.1. */
        static const struct {
            const char *name;
            double min, max;
        } want[] = {{"temperature", 0.01, 1.0},        {"top_p", 0.0, 1.0},
                    {"penalty_score", 1.0, 2.0},       {"max_tokens", 2, 1e9},
                    {"max_completion_tokens", 2, 1e9}, {NULL, 0, 0}};
        const lm_param_range *r = lmt_provider(p)->param_ranges;
        int i;
        for (i = 0; want[i].name; i++)
            T_CHECK(r && r[i].name && strcmp(r[i].name, want[i].name) == 0 &&
                        pt_near(r[i].min, want[i].min) && pt_near(r[i].max, want[i].max),
                    "range %d (%s)", i, want[i].name);
        T_CHECK(r && r[i].name == NULL, "%d ranges", i);
        T_CHECK(lmt_provider(p)->flags == 0,
                "one choice per request (n > 1 refused by the kernel)");
    }
    /* Through the kit, which clamps as the relay does: what v1 receives. */
    b = built_body(p, LM_OP_CHAT,
                   "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"q\"}],\"temperature\":0,\"max_tokens\":1,\"penalty_score\":2.5}",
                   &rc, &e);
    T_CHECK(rc == LM_OK, "rc %d %s", rc, e.msg);
    T_CHECK(pt_near(json_number_value(json_object_get(b, "temperature")), 0.01),
            "temperature 0->0.01");
    T_CHECK(json_is_integer(json_object_get(b, "max_output_tokens")) &&
                json_integer_value(json_object_get(b, "max_output_tokens")) == 2,
            "max_tokens 1 -> max_output_tokens 2 (an integer)");
    T_CHECK(pt_near(json_number_value(json_object_get(b, "penalty_score")), 2.0), "penalty <= 2");
    json_decref(b);
    b = built_body(p, LM_OP_CHAT,
                   "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"q\"}],\"temperature\":1.7}",
                   &rc, &e);
    T_CHECK(pt_near(json_number_value(json_object_get(b, "temperature")), 1.0), "temperature <= 1");
    json_decref(b);
    T_END();

    T_BEGIN("ernie_params_mapping");
    b = built_body(p, LM_OP_CHAT,
                   "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"q\"}],\"max_tokens\":2,\"max_completion_tokens\":50,"
                   "\"frequency_penalty\":-1,\"stop\":[\"a\",\"b\",\"c\",\"d\"]}",
                   &rc, &e);
    T_CHECK(json_integer_value(json_object_get(b, "max_output_tokens")) == 2, "max_tokens wins");
    T_CHECK(pt_near(json_number_value(json_object_get(b, "penalty_score")), 1.0), "f <= 0: 1.0");
    T_CHECK(json_array_size(json_object_get(b, "stop")) == 4, "4 stops");
    json_decref(b);
    b = built_body(p, LM_OP_CHAT,
                   "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"q\"}],\"penalty_score\":1.2,\"frequency_penalty\":2}",
                   &rc, &e);
    T_CHECK(pt_near(json_number_value(json_object_get(b, "penalty_score")), 1.2),
            "penalty_score wins");
    json_decref(b);
    b = built_body(p, LM_OP_CHAT,
                   "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"q\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
                   &rc, &e);
    T_CHECK(rc == LM_EINVAL && e.http_status == 400, "5 stops: rc %d", rc);
    json_decref(b);
    T_END();

    T_BEGIN("ernie_tool_choice");
    {
        static const char *const cases[][2] = {
            {"\"none\"", NULL},
            {"\"required\"", "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}"},
            {"{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}",
             "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}"},
            {NULL, NULL}};
        for (int i = 0; cases[i][0]; i++) {
            char canon[1024];
            json_t *want = pt_jparse(cases[i][1]);
            snprintf(canon, sizeof canon,
                     "{\"model\":\"ERNIE-3.5-8K\",\"messages\":[{\"role\":\"user\",\"content\":"
                     "\"q\"}],\"tools\":" TOOLS ",\"tool_choice\":%s}",
                     cases[i][0]);
            b = built_body(p, LM_OP_CHAT, canon, &rc, &e);
            T_CHECK(rc == LM_OK, "case %d rc %d", i, rc);
            T_CHECK(json_object_get(b, "tools") == NULL, "case %d: no tools", i);
            if (i == 0)
                T_CHECK(json_object_get(b, "functions") == NULL &&
                            !json_object_get(b, "tool_choice"),
                        "none: no functions");
            else
                T_CHECK(json_equal(json_object_get(b, "tool_choice"), want) &&
                            json_array_size(json_object_get(b, "functions")) == 1,
                        "case %d", i);
            json_decref(want);
            json_decref(b);
        }
    }
    T_END();

    T_BEGIN("ernie_model_endpoints");
    {
        static const char *const cases[][2] = {{"ERNIE-4.0-8K", "completions_pro"},
                                               {"ernie-3.5-8k", "completions"},
                                               {"ERNIE-Bot", "completions"},
                                               {"ERNIE-Speed-8K", "ernie_speed"},
                                               {"ernie-lite-8k-0922", "eb-instant"},
                                               {"ERNIE-Bot-turbo", "eb-instant"},
                                               {"ERNIE-Functions-8K", "ernie-func-8k"},
                                               {"ERNIE-4.0-Turbo-8K", "ernie-4.0-turbo-8k"},
                                               {"My_Custom-Model", "my_custom-model"},
                                               {NULL, NULL}};
        for (int i = 0; cases[i][0]; i++) {
            char canon[256], want[256];
            lmt_ureq u;
            snprintf(canon, sizeof canon,
                     "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}",
                     cases[i][0]);
            snprintf(want, sizeof want, CHAT_URL "%s?access_token=24.test", cases[i][1]);
            lmt_build(p, LM_OP_CHAT, canon, &u, &e);
            T_STREQ(u.url, want);
            lmt_ureq_clear(&u);
        }
    }
    T_END();
}

/* ------------------------------------------------------------------ streams */

#define EV(body) "data: {\"id\":\"as-s\",\"object\":\"chat.completion\",\"created\":1," body "}\n\n"

static void test_streams(lmt_plugin *p)
{
    lmt_result r;
    summary s;
    size_t bad;
    char why[256] = "";

    T_BEGIN("ernie_stream_cut_before_is_end");
    {
        const char *body = EV("\"sentence_id\":0,\"is_end\":false,\"result\":\"Hi\",\"usage\":{"
                              "\"prompt_tokens\":12,\"completion_tokens\":1,\"total_tokens\":13}")
            EV("\"sentence_id\":1,\"is_end\":false,\"result\":\" there\"");
        bad = every_split(p, G2, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(!r.done && r.rc != LM_DONE, "no LM_DONE (rc %d)", r.rc);
        summarize(r.json, &s);
        T_STREQ(s.content, "Hi there");
        T_CHECK(s.nfinish == 0, "no finish chunk");
        T_CHECK(pt_usage_is(&r.usage, 12, 1, 13), "usage so far");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie_stream_error_midway_every_split");
    {
        const char *body =
            EV("\"sentence_id\":0,\"is_end\":false,\"result\":\"Hi\"") "data: "
                                                                       "{\"error_code\":336100,"
                                                                       "\"error_msg\":\"server "
                                                                       "high load\"}\n\n";
        bad = every_split(p, G2, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 503, "rc %d status %d", r.rc,
                r.err.http_status);
        T_STREQ(r.err.code, "336100");
        T_STREQ(r.err.msg, "server high load");
        summarize(r.json, &s);
        T_STREQ(s.content, "Hi");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie_stream_error_18_as_event");
    {
        const char *body =
            "data: {\"error_code\":18,\"error_msg\":\"Open api qps request limit reached\"}\n\n";
        bad = every_split(p, G2, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 429, "rc %d", r.rc);
        T_STREQ(r.err.code, "18");
        T_STREQ(r.err.type, "rate_limit_error");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie_stream_111_event_invalidates");
    {
        const char *body = "data: {\"error_code\":111,\"error_msg\":\"Access token expired\"}\n\n";
        lmt_side_set(p, SIDE, "24.test");
        stream_once(p, G2, body, 0, &r);
        T_CHECK(lmt_stream_conforms(&r, why, sizeof why), "not conforming: %s", why);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 401, "rc %d", r.rc);
        T_CHECK(cached_is(p, NULL), "token dropped for the next request");
        lmt_result_clear(&r);
        lmt_side_set(p, SIDE, "24.test");
    }
    T_END();

    T_BEGIN("ernie_stream_function_call_every_split");
    {
        const char *body =
            EV("\"sentence_id\":0,\"is_end\":true,\"result\":\"\",\"finish_reason\":"
               "\"function_call\",\"function_call\":{\"name\":\"get_weather\",\"thoughts\":\"t\","
               "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"},\"usage\":{\"prompt_tokens\":30,"
               "\"completion_tokens\":10,\"total_tokens\":40}");
        bad = every_split(p, G3S, body, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_DONE, "rc %d (%s)", r.rc, r.err.msg);
        summarize(r.json, &s);
        T_CHECK(s.tc_heads == 1, "one tool call head");
        T_CHECK(strncmp(s.tc_id, "call_", 5) == 0, "id %s", s.tc_id);
        T_STREQ(s.tc_name, "get_weather");
        T_CHECK(pt_args_are_paris(s.args), "args %s", s.args);
        T_STREQ(s.finish, "tool_calls");
        T_CHECK(pt_usage_is(&r.usage, 30, 10, 40), "usage");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ernie_stream_finish_variants");
    {
        static const char *const cases[][2] = {
            {EV("\"is_end\":false,\"result\":\"a\"")
                 EV("\"is_end\":true,\"result\":\"b\",\"is_truncated\":true"),
             "length"},
            {EV("\"is_end\":false,\"result\":\"a\"")
                 EV("\"is_end\":false,\"result\":\"\",\"need_clear_history\":true,\"ban_round\":"
                    "1") EV("\"is_end\":true,\"result\":\"never shown\""),
             "content_filter"},
            {EV("\"is_end\":true,\"result\":\"ab\""), "stop"},
            {NULL, NULL}};
        for (int i = 0; cases[i][0]; i++) {
            bad = every_split(p, G2, cases[i][0], &r);
            T_CHECK(bad == 0, "case %d: split %zu differs", i, bad);
            T_CHECK(r.rc == LM_DONE, "case %d: rc %d", i, r.rc);
            summarize(r.json, &s);
            T_CHECK(strcmp(s.finish, cases[i][1]) == 0 && s.nfinish == 1, "case %d: %s", i, r.json);
            T_CHECK(strstr(s.content, "never") == NULL, "case %d: content after the end", i);
            lmt_result_clear(&r);
        }
    }
    T_END();

    T_BEGIN("ernie_stream_crlf_and_malformed");
    {
        const char *crlf = "data: {\"result\":\"a\",\"is_end\":false}\r\n\r\n"
                           "data: {\"result\":\"b\",\"is_end\":true}\r\n\r\n";
        const char *broken = EV("\"is_end\":false,\"result\":\"a\"") "data: {\"result\":\n\n";
        bad = every_split(p, G2, crlf, &r);
        T_CHECK(bad == 0 && r.rc == LM_DONE, "crlf: split %zu rc %d", bad, r.rc);
        summarize(r.json, &s);
        T_STREQ(s.content, "ab");
        lmt_result_clear(&r);
        bad = every_split(p, G2, broken, &r);
        T_CHECK(bad == 0, "split %zu differs", bad);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "malformed: rc %d status %d",
                r.rc, r.err.http_status);
        lmt_result_clear(&r);
    }
    T_END();
}

/* ------------------------------------------------------------------ embeddings */

static void test_embed(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *want;
    const char *resp = "{\"id\":\"as-gjs275mj6s\",\"object\":\"embedding_list\",\"created\":"
                       "1687155816,\"data\":[{\"object\":\"embedding\",\"embedding\":[0.1],"
                       "\"index\":0},{\"object\":\"embedding\",\"embedding\":[0.2],\"index\":1}],"
                       "\"usage\":{\"prompt_tokens\":12,\"total_tokens\":12}}";

    T_BEGIN("ernie_embed");
    T_CHECK(lmt_build(p, LM_OP_EMBED,
                      "{\"model\":\"embedding-v1\",\"input\":[\"text1\",\"text2\"],"
                      "\"encoding_format\":\"float\",\"user\":\"u\"}",
                      &u, &e) == LM_OK,
            "build: %s", e.msg);
    T_STREQ(u.url, "http://mock/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/embedding-v1?"
                   "access_token=24.test");
    b = pt_jparse(u.body);
    want = pt_jparse("{\"input\":[\"text1\",\"text2\"],\"user_id\":\"u\"}");
    T_CHECK(json_equal(b, want), "body %s", u.body);
    json_decref(want);
    json_decref(b);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, resp, strlen(resp), &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    b = pt_jparse(r.json);
    want = pt_jparse("{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                     "\"embedding\":[0.1]},{\"object\":\"embedding\",\"index\":1,\"embedding\":"
                     "[0.2]}],\"model\":\"embedding-v1\",\"usage\":{\"prompt_tokens\":12,"
                     "\"total_tokens\":12}}"); /* usage: written by the kernel from r.usage */
    T_CHECK(json_equal(b, want), "got %s", r.json);
    T_CHECK(r.usage.prompt == 12 && r.usage.completion == 0 && r.usage.total == 12, "usage");
    json_decref(want);
    json_decref(b);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ernie_embed_models_and_limits");
    {
        static const char *const eps[][2] = {{"bge-large-zh", "bge_large_zh"},
                                             {"BGE_LARGE_EN", "bge_large_en"},
                                             {"tao-8k", "tao_8k"},
                                             {NULL, NULL}};
        for (int i = 0; eps[i][0]; i++) {
            char canon[128], want_url[256];
            snprintf(canon, sizeof canon, "{\"model\":\"%s\",\"input\":\"one\"}", eps[i][0]);
            snprintf(want_url, sizeof want_url,
                     "http://mock/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/%s?"
                     "access_token=24.test",
                     eps[i][1]);
            T_CHECK(lmt_build(p, LM_OP_EMBED, canon, &u, &e) == LM_OK, "%s", eps[i][0]);
            T_STREQ(u.url, want_url);
            T_STREQ(u.body, "{\"input\":[\"one\"]}");
            lmt_ureq_clear(&u);
        }
    }
    {
        int rc;
        /* More than 16 texts are split by the kernel into calls of 16. */
        T_CHECK(lmt_provider(p)->embed_max_inputs == 16, "embed_max_inputs %d",
                lmt_provider(p)->embed_max_inputs);
        rc = lmt_build(p, LM_OP_EMBED, "{\"model\":\"embedding-v1\",\"input\":[[1,2]]}", &u, &e);
        T_CHECK(rc < 0 && e.http_status == 400, "token arrays refused (rc %d)", rc);
        lmt_ureq_clear(&u);
    }
    respond(p, LM_OP_EMBED, "{\"model\":\"embedding-v1\",\"input\":\"x\"}", 200,
            "{\"error_code\":336501,\"error_msg\":\"Rate limit reached for RPM\"}", &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 429, "embed error %d", r.err.http_status);
    lmt_result_clear(&r);
    T_END();
}

/* Bytes of standard base64 text (no line breaks), or -1 when it is not. */
static long b64_len(const char *t)
{
    size_t n = strlen(t), pad = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)t[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '+' || c == '/' || (c == '=' && i + 2 >= n);
        if (!ok)
            return -1;
        pad += c == '=';
    }
    return n % 4 ? -1 : (long)(n / 4 * 3 - pad);
}

/* The upstream answer with two DIM-dimension vectors. */
static void dim_body(tbuf *body, int dim)
{
    tb_adds(body, "{\"id\":\"as-e\",\"object\":\"embedding_list\",\"created\":1,\"data\":[");
    for (int k = 0; k < 2; k++) {
        tb_adds(body, k ? ",{\"object\":\"embedding\",\"index\":1,\"embedding\":["
                        : "{\"object\":\"embedding\",\"index\":0,\"embedding\":[");
        for (int i = 0; i < dim; i++)
            tb_adds(body, i ? ",0.015625" : "-0.5");
        tb_adds(body, "]}");
    }
    tb_adds(body, "],\"usage\":{\"prompt_tokens\":2,\"total_tokens\":2}}");
}

/* The official openai client asks for encoding_format base64 by default. The
 * kernel owns that encoding: the plugin neither forwards it nor encodes, and
 * every dimension arrives (base64 of 4-byte floats; a quarter of them came
 * back before). With "float" the arrays come back as sent. */
static void test_embed_dimensions(lmt_plugin *p)
{
    enum { DIM = 1024 };
    static const char *const fmts[] = {"base64", "float"};
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    tbuf body = {0};
    char canon[160];

    T_BEGIN("ernie_embed_full_dimensions");
    dim_body(&body, DIM);
    for (int f = 0; f < 2; f++) {
        snprintf(canon, sizeof canon,
                 "{\"model\":\"bge-large-zh\",\"input\":[\"a\",\"b\"],\"encoding_format\":"
                 "\"%s\"}",
                 fmts[f]);
        T_CHECK(lmt_build(p, LM_OP_EMBED, canon, &u, &e) == LM_OK, "build: %s", e.msg);
        T_STREQ(u.body, "{\"input\":[\"a\",\"b\"]}");
        lmt_ureq_clear(&u);
        lmt_response(p, 200, body.p, body.n, &r);
        T_CHECK(r.rc == LM_OK, "%s: rc %d (%s)", fmts[f], r.rc, r.err.msg);
        for (int k = 0; k < 2; k++) {
            char path[32];
            snprintf(path, sizeof path, "data.%d.embedding", k);
            json_t *v = lmt_json_at(r.json, path);
            if (f == 0)
                T_CHECK(json_is_string(v) && b64_len(json_string_value(v)) == DIM * 4,
                        "base64 vector %d: %ld bytes, want %d", k,
                        json_is_string(v) ? b64_len(json_string_value(v)) : -1L, DIM * 4);
            else
                T_CHECK(json_array_size(v) == DIM &&
                            pt_near(json_real_value(json_array_get(v, 0)), -0.5) &&
                            pt_near(json_real_value(json_array_get(v, DIM - 1)), 0.015625),
                        "float vector %d: %zu of %d", k, json_array_size(v), DIM);
            json_decref(v);
        }
        lmt_result_clear(&r);
    }
    free(body.p);
    T_END();
}

static void test_config(void)
{
    char err[256];
    const char *no_secret[] = {"client_id", "ak", NULL};
    const char *bad_base[] = {"base_url",      "ftp://x", "client_id", "ak",
                              "client_secret", "sk",      NULL};
    const char *dflt[] = {"client_id", "ak", "client_secret", "sk", NULL};
    lmt_plugin *q;

    T_BEGIN("ernie_config");
    q = lmt_load(SO, no_secret, err, sizeof err);
    T_CHECK(q == NULL, "client_secret is required");
    lmt_unload(q);
    q = lmt_load(SO, bad_base, err, sizeof err);
    T_CHECK(q == NULL, "base_url must be http(s)");
    lmt_unload(q);
    q = lmt_load(SO, dflt, err, sizeof err);
    T_CHECK(q != NULL, "defaults load: %s", err);
    if (q) {
        lmt_ureq req, u;
        lm_err e;
        lmt_side_fetch(q, SIDE, 200, TOKEN_BODY, &req, NULL, &e);
        T_STREQ(req.url, "https://aip.baidubce.com/oauth/2.0/token?grant_type=client_credentials&"
                         "client_id=ak&client_secret=sk");
        lmt_ureq_clear(&req);
        lmt_build(q, LM_OP_CHAT, G1, &u, &e);
        T_STREQ(u.url, "https://aip.baidubce.com/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
                       "completions?access_token=24.test");
        lmt_ureq_clear(&u);
        lmt_unload(q);
    }
    T_END();
}

int main(void)
{
    lmt_plugin *p = pt_load(CFG);
    T_BEGIN("ernie_load");
    T_CHECK(p != NULL, "plugins/ernie.so loads");
    T_END();
    if (p == NULL)
        T_EXIT();
    T_BEGIN("ernie_provider_table");
    T_STREQ(lmt_provider(p)->name, "ernie");
    T_CHECK(lmt_provider(p)->framing == LM_FRAME_SSE, "SSE");
    T_CHECK(lmt_provider(p)->usage_mode == LM_USAGE_CUMULATIVE, "cumulative usage");
    T_CHECK(lmt_provider(p)->side_request != NULL && lmt_provider(p)->side_parse != NULL,
            "side_request/side_parse set");
    T_CHECK(!(lmt_provider(p)->caps & LM_CAP_VISION), "text only");
    T_END();
    test_token();
    test_token_failures();
    test_config();
    lmt_side_set(p, SIDE, "24.test");
    test_golden(p);
    test_refusal(p);
    lmt_side_set(p, SIDE, "24.test");
    test_errors(p);
    test_messages(p);
    test_params(p);
    test_streams(p);
    test_embed(p);
    test_embed_dimensions(p);
    lmt_unload(p);
    T_EXIT();
}
