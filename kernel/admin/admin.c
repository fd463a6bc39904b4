/*
 * admin.c - the admin API (admin.h, docs/admin.md).
 *
 * One thread serves this listener, so the blocking store calls below never
 * delay a data-plane worker. Every request is authenticated before it is
 * routed (an unknown path without a token is 401, not 404, so the route
 * table is not disclosed), then dispatched through one table that also
 * answers GET /admin/routes, which lets the tests walk every route.
 *
 * Input is strict: unknown JSON fields and query parameters are refused,
 * strings are checked with lm_store_text_ok (UTF-8, no NUL, bounded), money
 * is a decimal string of currency units or integer micro-units, bounded by
 * LM_ADMIN_MONEY_MAX. Error text comes from fixed strings here or from the
 * store's validation messages, never from SQLite.
 */
#include "admin/admin.h"
#include "core/b64.h"
#include "core/bearer.h"
#include "core/errors.h"

#include "conf/chanconf.h"
#include "core/log.h"
#include "gov/auth.h"
#include "gov/billing.h"
#include "http/admin_http.h"
#include "proto/reqcheck.h"
#include "relay/rt.h"
#include "server/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define ADMIN_TOKEN_MIN    20            /* operator-chosen tokens: >= 20 chars */
#define ADMIN_TOKEN_MAX    LM_BEARER_MAX /* same bound as data-plane keys */
#define ADMIN_PAGE_DEFAULT 100
#define ADMIN_PAGE_MAX     500
/* 10^9 units of currency: far above any real quota, far below int64. */
#define LM_ADMIN_MONEY_MAX ((int64_t)1000000000 * LM_MICRO)
#define ADMIN_TIME_MAX     INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
#define ADMIN_RPM_MAX      INT64_C(1000000000)
#define ADMIN_TPM_MAX      INT64_C(1000000000000)
#define ADMIN_CONC_MAX     INT64_C(1000000)

/* Store status -> HTTP. msg (may be empty) is the store's validation text,
 * which is built from fixed strings; database errors get a fixed message
 * (the SQLite text is only logged, by the store). */
static void send_store_error(lm_admin_http_req_t *req, int rc, const char *msg)
{
    switch (rc) {
    case LM_STORE_EINVAL:
        lm_admin_http_bad_request(req, NULL, msg && *msg ? msg : "invalid value");
        return;
    case LM_STORE_ENOTFOUND:
        lm_admin_http_error(req, 404, "not_found", NULL, "no such key");
        return;
    case LM_STORE_ECONFLICT:
        lm_admin_http_error(req, 409, "conflict", "quota",
                            "quota is below what the key has already used");
        return;
    case LM_STORE_EFULL:
    case LM_STORE_ECLOSED:
        lm_admin_http_error(req, 503, "unavailable", NULL, "the store is busy or closing; retry");
        return;
    default: lm_admin_http_error(req, 500, "internal_error", NULL, "internal store error"); return;
    }
}

/* ------------------------------------------------------------------------ */
/* tokens                                                                    */

static int fill_random(unsigned char *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

/* An operator-chosen token: printable ASCII without spaces (it travels in a
 * header), long enough to carry >= 128 bits when random. */
static int token_text_ok(const char *t)
{
    size_t n = strlen(t);
    if (n < ADMIN_TOKEN_MIN || n > ADMIN_TOKEN_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
            return 0;
    return 1;
}

/* First start: a 192-bit random token, stored as its SHA-256 and printed
 * once on stderr (after it is durable, so a crash cannot print a token that
 * was never stored). */
static int token_generate(lm_admin_env_t *env, char *err, size_t errlen)
{
    unsigned char rnd[24];
    char tok[8 + 32 + 1];
    if (fill_random(rnd, sizeof(rnd)) != 0) {
        snprintf(err, errlen, "admin: getrandom failed");
        return -1;
    }
    memcpy(tok, "lmadm-", 6);
    lm_b64_encode(rnd, sizeof(rnd), tok + 6, 1);
    OPENSSL_cleanse(rnd, sizeof(rnd));
    SHA256((const unsigned char *)tok, strlen(tok), env->token_hash);
    int rc = lm_store_admin_token_set(env->store, LM_ADMIN_ROLE_FULL, env->token_hash);
    if (rc != LM_STORE_OK) {
        OPENSSL_cleanse(tok, sizeof(tok));
        snprintf(err, errlen, "admin: cannot store the admin token: %s", lm_store_strerror(rc));
        return -1;
    }
    char line[128];
    int n = snprintf(line, sizeof(line), "longmen: admin token (shown once): %s\n", tok);
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nothing to do: the operator can set LONGMEN_ADMIN_TOKEN instead */
    }
    OPENSSL_cleanse(line, sizeof(line));
    OPENSSL_cleanse(tok, sizeof(tok));
    lm_log(LM_LOG_WARN, "admin: a new admin token was generated and printed above; it is "
                        "not shown again (set LONGMEN_ADMIN_TOKEN to replace it)");
    return 0;
}

/* The token of `role`: from the environment variable `var` when set
 * (replacing the stored digest), else the stored digest, else (full role)
 * a generated one. *have = 0 when the role has no token. */
static int token_bootstrap(lm_admin_env_t *env, int role, const char *var, unsigned char *hash,
                           int *have, char *err, size_t errlen)
{
    const char *v = getenv(var);
    *have = 0;
    if (v != NULL && *v == '\0' && role == LM_ADMIN_ROLE_READ) {
        int rc = lm_store_admin_token_set(env->store, role, NULL);
        if (rc != LM_STORE_OK) {
            snprintf(err, errlen, "admin: cannot remove the read-only token: %s",
                     lm_store_strerror(rc));
            return -1;
        }
        lm_log(LM_LOG_INFO, "admin: read-only token removed (%s is empty)", var);
        return 0;
    }
    if (v != NULL) {
        if (!token_text_ok(v)) {
            snprintf(err, errlen,
                     "%s must be %d to %d printable characters without spaces "
                     "(e.g. openssl rand -base64 32)",
                     var, ADMIN_TOKEN_MIN, ADMIN_TOKEN_MAX);
            return -1;
        }
        SHA256((const unsigned char *)v, strlen(v), hash);
        int rc = lm_store_admin_token_set(env->store, role, hash);
        if (rc != LM_STORE_OK) {
            snprintf(err, errlen, "admin: cannot store the token from %s: %s", var,
                     lm_store_strerror(rc));
            return -1;
        }
        lm_log(LM_LOG_INFO, "admin: %s token set from %s", role ? "read-only" : "admin", var);
        *have = 1;
        return 0;
    }
    int rc = lm_store_admin_token_get(env->store, role, hash);
    if (rc == LM_STORE_OK) {
        *have = 1;
        return 0;
    }
    if (rc != LM_STORE_ENOTFOUND) {
        snprintf(err, errlen, "admin: cannot read the admin token: %s", lm_store_strerror(rc));
        return -1;
    }
    if (role == LM_ADMIN_ROLE_READ)
        return 0;
    if (token_generate(env, err, errlen) != 0)
        return -1;
    *have = 1;
    return 0;
}

static int is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (host == NULL || strcmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

static void warn_exposed(lm_admin_env_t *env)
{
    if (env->server == NULL)
        return;
    lm_rt_t *rt = lm_server_acquire_rt(env->server);
    const lm_conf_t *c = rt->conf;
    if (!is_loopback(c->admin_host))
        lm_log(LM_LOG_WARN,
               "admin: admin_listen %s:%d is not a loopback address; the admin API is "
               "reachable from the network (plain HTTP, token only)",
               c->admin_host, c->admin_port);
    lm_rt_unref(rt);
}

/* ------------------------------------------------------------------------ */
/* authentication                                                            */

/* The bearer token of the request (borrowed) or NULL. */
static const char *bearer(lm_admin_http_req_t *req, size_t *len)
{
    return lm_bearer_token(lm_admin_http_header(req, "Authorization"), len);
}

/* 1 if tok is a data-plane key (store key or config key). */
static int is_client_key(lm_admin_env_t *env, lm_admin_http_req_t *req, const char *tok, size_t n)
{
    lm_key_t *k = lm_store_key_find(env->store, tok, n);
    if (k) {
        lm_key_release(k);
        return 1;
    }
    if (env->server == NULL)
        return 0;
    lm_rt_t *rt = lm_server_acquire_rt(env->server);
    int hit = lm_auth_check(rt->conf, lm_admin_http_header(req, "Authorization")) != NULL;
    lm_rt_unref(rt);
    return hit;
}

/* The caller's role, or -1 after replying 401/403. Both digests are
 * compared every time, in constant time. */
static int authenticate(lm_admin_env_t *env, lm_admin_http_req_t *req)
{
    size_t n = 0;
    const char *tok = bearer(req, &n);
    if (tok == NULL) {
        lm_admin_http_error(req, 401, "invalid_api_key", NULL,
                            "missing admin token (send Authorization: Bearer <admin token>)");
        return -1;
    }
    unsigned char d[32];
    SHA256((const unsigned char *)tok, n, d);
    int full = CRYPTO_memcmp(d, env->token_hash, 32) == 0;
    int read = CRYPTO_memcmp(d, env->read_hash, 32) == 0 && env->has_read;
    OPENSSL_cleanse(d, sizeof(d));
    if (full)
        return LM_ADMIN_ROLE_FULL;
    if (read)
        return LM_ADMIN_ROLE_READ;
    if (is_client_key(env, req, tok, n)) {
        lm_admin_http_error(req, 403, "permission_denied", NULL,
                            "a data-plane key cannot call the admin API");
        return -1;
    }
    lm_admin_http_error(req, 401, "invalid_api_key", NULL, "invalid admin token");
    return -1;
}

static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DD" (UTC midnight) or unix milliseconds. */
static int parse_time_ms(const char *s, int64_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(s) == 10 && s[4] == '-' && s[7] == '-') {
        int64_t y, m, d;
        char ys[5] = {s[0], s[1], s[2], s[3], 0}, ms[3] = {s[5], s[6], 0}, ds[3] = {s[8], s[9], 0};
        if (lm_admin_http_parse_uint(ys, 9999, &y) || lm_admin_http_parse_uint(ms, 12, &m) ||
            lm_admin_http_parse_uint(ds, 31, &d) || y < 1970 || m < 1 || d < 1 || d > mdays[m - 1])
            return -1;
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (m == 2 && d == 29 && !leap)
            return -1;
        *out = days_from_civil(y, m, d) * 86400 * 1000;
        return 0;
    }
    return lm_admin_http_parse_uint(s, ADMIN_TIME_MAX * 1000 + 999, out);
}

/* A key spec being read from JSON; strings borrow from the JSON document. */
typedef struct spec_in_s {
    lm_key_spec_t sp;
    const char **models, **cidrs;
    int have_rpm, have_tpm, have_conc;
} spec_in_t;

typedef struct field_err_s {
    const char *param;
    char msg[256];
} field_err_t;

static int ferr(field_err_t *fe, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ferr(field_err_t *fe, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fe->msg, sizeof(fe->msg), fmt, ap);
    va_end(ap);
    fe->param = param;
    return -1;
}

static int get_text(json_t *v, const char *k, size_t max, const char **out, field_err_t *fe)
{
    if (!json_is_string(v))
        return ferr(fe, k, "%s must be a string", k);
    if (!lm_store_text_ok(json_string_value(v), json_string_length(v), max))
        return ferr(fe, k, "%s must be valid UTF-8 without NUL, at most %zu bytes", k, max);
    *out = json_string_value(v);
    return 0;
}

static int get_int(json_t *v, const char *k, int64_t max, int64_t *out, field_err_t *fe)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return ferr(fe, k, "%s must be an integer from 0 to %lld", k, (long long)max);
    *out = json_integer_value(v);
    return 0;
}

/* quota: "12.5" (units), "unlimited" or null. */
static int get_quota(json_t *v, lm_key_spec_t *sp, field_err_t *fe)
{
    if (json_is_null(v)) {
        sp->unlimited = 1;
        sp->quota = 0;
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) > 32 ||
        strlen(json_string_value(v)) != json_string_length(v))
        return ferr(fe, "quota",
                    "quota must be a decimal string in units of currency (e.g. \"12.5\"), "
                    "\"unlimited\" or null; use quota_micro for integer micro-units");
    const char *s = json_string_value(v);
    if (strcmp(s, "unlimited") == 0) {
        sp->unlimited = 1;
        sp->quota = 0;
        return 0;
    }
    int64_t q;
    if (lm_money_parse(s, &q) != 0 || q > LM_ADMIN_MONEY_MAX)
        return ferr(fe, "quota",
                    "quota must be a non-negative decimal with at most 6 fraction digits and "
                    "at most 1000000000 units");
    sp->unlimited = 0;
    sp->quota = q;
    return 0;
}

static int get_list(json_t *v, const char *k, const char ***out, size_t *n, field_err_t *fe)
{
    if (!json_is_array(v))
        return ferr(fe, k, "%s must be an array of strings", k);
    size_t cnt = json_array_size(v);
    if (cnt > LM_STORE_LIST_MAX)
        return ferr(fe, k, "%s has more than %d entries", k, LM_STORE_LIST_MAX);
    const char **items = calloc(cnt ? cnt : 1, sizeof(*items));
    if (items == NULL)
        return ferr(fe, k, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        json_t *it = json_array_get(v, i);
        if (!json_is_string(it) || json_string_length(it) == 0 ||
            !lm_store_text_ok(json_string_value(it), json_string_length(it), LM_STORE_ITEM_MAX)) {
            free(items);
            return ferr(fe, k, "%s[%zu] must be a non-empty string of at most %d bytes", k, i,
                        LM_STORE_ITEM_MAX);
        }
        items[i] = json_string_value(it);
    }
    free((void *)*out);
    *out = items;
    *n = cnt;
    return 0;
}

/* The limit fields share one store flag; remember which ones were named. */
static int spec_limit(spec_in_t *in, const char *k, json_t *v, field_err_t *fe)
{
    lm_key_spec_t *sp = &in->sp;
    sp->set |= LM_KF_LIMITS;
    if (!strcmp(k, "rpm")) {
        in->have_rpm = 1;
        return get_int(v, k, ADMIN_RPM_MAX, &sp->rpm, fe);
    }
    if (!strcmp(k, "tpm")) {
        in->have_tpm = 1;
        return get_int(v, k, ADMIN_TPM_MAX, &sp->tpm, fe);
    }
    in->have_conc = 1;
    return get_int(v, k, ADMIN_CONC_MAX, &sp->max_concurrent, fe);
}

/* One field of a create or update body. */
static int spec_field(spec_in_t *in, const char *k, json_t *v, field_err_t *fe)
{
    static const struct {
        const char *name;
        unsigned flag;
        size_t off;
    } texts[] = {
        {"name", LM_KF_NAME, offsetof(lm_key_spec_t, name)},
        {"owner", LM_KF_OWNER, offsetof(lm_key_spec_t, owner)},
        {"group", LM_KF_GROUP, offsetof(lm_key_spec_t, group)},
    };
    lm_key_spec_t *sp = &in->sp;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (!strcmp(k, texts[i].name)) {
            sp->set |= texts[i].flag;
            return get_text(v, k, LM_STORE_TEXT_MAX,
                            (const char **)(void *)((char *)sp + texts[i].off), fe);
        }
    if (!strcmp(k, "quota")) {
        sp->set |= LM_KF_QUOTA;
        return get_quota(v, sp, fe);
    }
    if (!strcmp(k, "quota_micro")) {
        sp->set |= LM_KF_QUOTA;
        sp->unlimited = 0;
        return get_int(v, k, LM_ADMIN_MONEY_MAX, &sp->quota, fe);
    }
    if (!strcmp(k, "expires_at")) {
        sp->set |= LM_KF_EXPIRES;
        sp->expires_at = 0;
        return json_is_null(v) ? 0 : get_int(v, k, ADMIN_TIME_MAX, &sp->expires_at, fe);
    }
    if (!strcmp(k, "models")) {
        sp->set |= LM_KF_MODELS;
        return get_list(v, k, &in->models, &sp->nmodels, fe);
    }
    if (!strcmp(k, "cidrs")) {
        sp->set |= LM_KF_CIDRS;
        return get_list(v, k, &in->cidrs, &sp->ncidrs, fe);
    }
    if (!strcmp(k, "rpm") || !strcmp(k, "tpm") || !strcmp(k, "max_concurrent"))
        return spec_limit(in, k, v, fe);
    if (!strcmp(k, "enabled")) {
        sp->set |= LM_KF_ENABLED;
        if (!json_is_boolean(v))
            return ferr(fe, k, "enabled must be true or false");
        sp->enabled = json_is_true(v);
        return 0;
    }
    /* everything else, including read-only fields (id, prefix, used, ...)
     * and privileges this API does not have (role, budget, routes) */
    return ferr(fe, k, "unknown or read-only field");
}

/* Read every field of body into in (zeroed by the caller). 0 or -1. */
static int spec_read(json_t *body, spec_in_t *in, field_err_t *fe)
{
    const char *k;
    json_t *v;
    json_object_foreach (body, k, v) {
        /* names are printed into error messages: keep them sane */
        if (strlen(k) > 64 || !lm_store_text_ok(k, strlen(k), 64))
            return ferr(fe, NULL, "unknown field");
        if (spec_field(in, k, v, fe) != 0)
            return -1;
    }
    if (json_object_get(body, "quota") && json_object_get(body, "quota_micro"))
        return ferr(fe, "quota", "give quota or quota_micro, not both");
    in->sp.models = in->models;
    in->sp.cidrs = in->cidrs;
    return 0;
}

static void spec_free(spec_in_t *in)
{
    free((void *)in->models);
    free((void *)in->cidrs);
}

/* ------------------------------------------------------------------------ */
/* JSON out                                                                  */

static json_t *jtext(const char *s)
{
    json_t *j = json_string(s ? s : "");
    return j ? j : json_string(""); /* not UTF-8 (never stored so): empty */
}

static json_t *jmoney(int64_t micro)
{
    char buf[40];
    return json_string(lm_money_format(micro, buf, sizeof(buf)));
}

static json_t *jlist(char **items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, jtext(items[i]));
    return a;
}

/* A key record: never the hash or the secret, only the display prefix. */
static json_t *key_json(const lm_key_t *k)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(k->id));
    json_object_set_new(o, "object", json_string("key"));
    json_object_set_new(o, "prefix", jtext(k->prefix));
    json_object_set_new(o, "name", jtext(k->name));
    json_object_set_new(o, "owner", jtext(k->owner));
    json_object_set_new(o, "group", jtext(k->group));
    json_object_set_new(o, "unlimited", json_boolean(k->unlimited));
    json_object_set_new(o, "quota", k->unlimited ? json_null() : jmoney(k->quota));
    json_object_set_new(o, "quota_micro", k->unlimited ? json_null() : json_integer(k->quota));
    json_object_set_new(o, "used", jmoney(k->used));
    json_object_set_new(o, "used_micro", json_integer(k->used));
    json_object_set_new(o, "expires_at", json_integer(k->expires_at));
    json_object_set_new(o, "models", jlist(k->models, k->nmodels));
    json_object_set_new(o, "cidrs", jlist(k->cidrs, k->ncidrs));
    json_object_set_new(o, "rpm", json_integer(k->rpm));
    json_object_set_new(o, "tpm", json_integer(k->tpm));
    json_object_set_new(o, "max_concurrent", json_integer(k->max_concurrent));
    json_object_set_new(o, "enabled", json_boolean(k->enabled));
    json_object_set_new(o, "created_at", json_integer(k->created_at));
    json_object_set_new(o, "updated_at", json_integer(k->updated_at));
    return o;
}

static json_t *total_json(const lm_usage_total_t *t, int by)
{
    json_t *o = json_object();
    if (by != LM_USAGE_BY_NONE)
        json_object_set_new(o, "group", jtext(t->group));
    if (by == LM_USAGE_BY_KEY)
        json_object_set_new(o, "key_id", t->key_id > 0 ? json_integer(t->key_id) : json_null());
    json_object_set_new(o, "requests", json_integer(t->requests));
    json_object_set_new(o, "prompt_tokens", json_integer(t->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer(t->completion_tokens));
    json_object_set_new(o, "cached_tokens", json_integer(t->cached_tokens));
    json_object_set_new(o, "reasoning_tokens", json_integer(t->reasoning_tokens));
    json_object_set_new(o, "cost", jmoney(t->cost));
    json_object_set_new(o, "cost_micro", json_integer(t->cost));
    json_object_set_new(o, "aborted", json_integer(t->aborted));
    return o;
}

static json_t *row_json(const lm_usage_rec_t *r)
{
    const lm_usage_row_t *u = &r->row;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(r->id));
    json_object_set_new(o, "request_id", jtext(u->request_id));
    json_object_set_new(o, "attempt", json_integer(u->attempt));
    json_object_set_new(o, "key_id", u->key_id > 0 ? json_integer(u->key_id) : json_null());
    json_object_set_new(o, "channel", jtext(u->channel));
    json_object_set_new(o, "model_asked", jtext(u->model_asked));
    json_object_set_new(o, "model_served", jtext(u->model_served));
    json_object_set_new(o, "prompt_tokens", json_integer(u->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer(u->completion_tokens));
    json_object_set_new(o, "cached_tokens", json_integer(u->cached_tokens));
    json_object_set_new(o, "reasoning_tokens", json_integer(u->reasoning_tokens));
    json_object_set_new(o, "cost", jmoney(u->cost));
    json_object_set_new(o, "cost_micro", json_integer(u->cost));
    json_object_set_new(o, "latency_ms", json_integer(u->latency_ms));
    json_object_set_new(o, "ttft_ms", json_integer(u->ttft_ms));
    json_object_set_new(o, "status", json_integer(u->status));
    json_object_set_new(o, "client_aborted", json_boolean(u->client_aborted));
    json_t *raw = u->usage_json ? json_loads(u->usage_json, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_object_set_new(o, "usage", raw ? raw : json_null());
    json_object_set_new(o, "created_at_ms", json_integer(u->created_ms));
    return o;
}

/* ------------------------------------------------------------------------ */
/* routes                                                                    */

typedef struct actx_s {
    lm_admin_env_t *env;
    lm_admin_http_req_t *req;
    int64_t id;                      /* {id} routes */
    char name[LM_CHAN_NAME_MAX + 1]; /* {name} routes */
    int role;
} actx_t;

static const char *const no_params[] = {NULL};

static void h_health(actx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0)
        return;
    lm_store_settings_t s;
    if (lm_store_settings(a->env->store, &s) != LM_STORE_OK) {
        lm_admin_http_error(a->req, 503, "unavailable", NULL, "the store does not answer");
        return;
    }
    lm_admin_http_json(a->req, 200,
                       json_pack("{s:s, s:s, s:{s:s, s:i, s:I}}", "status", "ok", "role",
                                 a->role == LM_ADMIN_ROLE_READ ? "read" : "admin", "store",
                                 "journal_mode", s.journal_mode, "schema_version", s.schema_version,
                                 "queue_depth", (json_int_t)lm_store_queue_depth(a->env->store)));
}

/* Prometheus text exposition (longmen_* series; no secrets, names only). */
static void h_metrics(actx_t *a)
{
    lm_admin_http_query_t q;
    size_t len = 0;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0)
        return;
    char *txt = lm_server_metrics_render(a->env->server, &len);
    if (txt == NULL) {
        lm_admin_http_error(a->req, 503, "unavailable", NULL, "metrics are unavailable");
        return;
    }
    lm_admin_http_text(a->req, "text/plain; version=0.0.4; charset=utf-8", txt, len);
    free(txt);
}

static void h_reload(actx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0)
        return;
    if (a->env->server == NULL) {
        lm_admin_http_error(a->req, 503, "unavailable", NULL, "no server to reload");
        return;
    }
    lm_server_reload(a->env->server);
    lm_log(LM_LOG_INFO, "admin: reload requested");
    lm_admin_http_json(a->req, 202, json_pack("{s:s}", "status", "reload requested"));
}

static void reply_key(actx_t *a, int status, int64_t id, const char *secret)
{
    lm_key_t *k = NULL;
    int rc = lm_store_key_get(a->env->store, id, &k);
    if (rc != LM_STORE_OK) {
        send_store_error(a->req, rc, NULL);
        return;
    }
    json_t *o = key_json(k);
    lm_key_release(k);
    if (secret)
        json_object_set_new(o, "secret", json_string(secret));
    lm_admin_http_json(a->req, status, o);
}

static void h_key_create(actx_t *a)
{
    lm_admin_http_query_t q;
    json_t *body = lm_admin_http_body_object(a->req);
    if (body == NULL)
        return;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0) {
        json_decref(body);
        return;
    }
    spec_in_t in;
    field_err_t fe = {0};
    memset(&in, 0, sizeof(in));
    in.sp.enabled = 1;
    if (spec_read(body, &in, &fe) != 0) {
        lm_admin_http_bad_request(a->req, fe.param, fe.msg);
    } else if (!(in.sp.set & LM_KF_QUOTA)) {
        lm_admin_http_bad_request(a->req, "quota",
                                  "quota is required: a decimal amount (\"12.5\"), quota_micro, or "
                                  "\"unlimited\"");
    } else {
        char secret[LM_KEY_SECRET_SIZE], err[256] = "";
        int64_t id = 0;
        int rc = lm_store_key_create(a->env->store, &in.sp, secret, &id, err, sizeof(err));
        if (rc == LM_STORE_OK) {
            lm_log(LM_LOG_INFO, "admin: key %lld created", (long long)id);
            reply_key(a, 201, id, secret);
        } else {
            send_store_error(a->req, rc, err);
        }
        OPENSSL_cleanse(secret, sizeof(secret));
    }
    spec_free(&in);
    json_decref(body);
}

static void h_key_list(actx_t *a)
{
    static const char *const params[] = {"after", "limit", NULL};
    lm_admin_http_query_t q;
    int64_t after, limit;
    if (lm_admin_http_query_parse(a->req, params, &q) != 0)
        return;
    if (lm_admin_http_query_int(a->req, &q, "after", 0, INT64_MAX, 0, &after) != 0 ||
        lm_admin_http_query_int(a->req, &q, "limit", 1, ADMIN_PAGE_MAX, ADMIN_PAGE_DEFAULT,
                                &limit) != 0) {
        lm_admin_http_query_free(&q);
        return;
    }
    lm_admin_http_query_free(&q);
    lm_key_t **keys = NULL;
    size_t n = 0;
    int rc = lm_store_key_list(a->env->store, after, (size_t)limit + 1, &keys, &n);
    if (rc != LM_STORE_OK) {
        send_store_error(a->req, rc, NULL);
        return;
    }
    int more = n > (size_t)limit;
    if (more)
        n = (size_t)limit;
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, key_json(keys[i]));
    json_t *o = json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", more);
    json_object_set_new(o, "last_id", n ? json_integer(keys[n - 1]->id) : json_null());
    lm_store_key_list_free(keys, more ? n + 1 : n);
    lm_admin_http_json(a->req, 200, o);
}

static void h_key_get(actx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0)
        return;
    reply_key(a, 200, a->id, NULL);
}

/* rpm, tpm and max_concurrent are one store field set: keep the current
 * values of the ones the body did not name. */
static int fill_limits(actx_t *a, spec_in_t *in)
{
    if (!(in->sp.set & LM_KF_LIMITS) || (in->have_rpm && in->have_tpm && in->have_conc))
        return LM_STORE_OK;
    lm_key_t *k = NULL;
    int rc = lm_store_key_get(a->env->store, a->id, &k);
    if (rc != LM_STORE_OK)
        return rc;
    if (!in->have_rpm)
        in->sp.rpm = k->rpm;
    if (!in->have_tpm)
        in->sp.tpm = k->tpm;
    if (!in->have_conc)
        in->sp.max_concurrent = k->max_concurrent;
    lm_key_release(k);
    return LM_STORE_OK;
}

static void h_key_update(actx_t *a)
{
    lm_admin_http_query_t q;
    json_t *body = lm_admin_http_body_object(a->req);
    if (body == NULL)
        return;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0) {
        json_decref(body);
        return;
    }
    spec_in_t in;
    field_err_t fe = {0};
    memset(&in, 0, sizeof(in));
    if (spec_read(body, &in, &fe) != 0) {
        lm_admin_http_bad_request(a->req, fe.param, fe.msg);
    } else if (in.sp.set == 0) {
        lm_admin_http_bad_request(a->req, NULL, "nothing to update");
    } else {
        char err[256] = "";
        int rc = fill_limits(a, &in);
        if (rc == LM_STORE_OK)
            rc = lm_store_key_update(a->env->store, a->id, &in.sp, err, sizeof(err));
        if (rc == LM_STORE_OK) {
            lm_log(LM_LOG_INFO, "admin: key %lld updated", (long long)a->id);
            reply_key(a, 200, a->id, NULL);
        } else {
            send_store_error(a->req, rc, err);
        }
    }
    spec_free(&in);
    json_decref(body);
}

static void h_key_delete(actx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0)
        return;
    int rc = lm_store_key_delete(a->env->store, a->id);
    if (rc != LM_STORE_OK) {
        send_store_error(a->req, rc, NULL);
        return;
    }
    lm_log(LM_LOG_INFO, "admin: key %lld deleted", (long long)a->id);
    lm_admin_http_json(
        a->req, 200,
        json_pack("{s:I, s:s, s:b}", "id", (json_int_t)a->id, "object", "key", "deleted", 1));
}

static const char *const group_names[] = {
    [LM_USAGE_BY_KEY] = "key",
    [LM_USAGE_BY_MODEL] = "model",
    [LM_USAGE_BY_MODEL_SERVED] = "model_served",
    [LM_USAGE_BY_CHANNEL] = "channel",
    [LM_USAGE_BY_DAY] = "day",
    [LM_USAGE_BY_NONE] = "none",
};

static int parse_group_by(const char *s, int *by)
{
    for (int i = 0; i <= LM_USAGE_BY_NONE; i++)
        if (strcmp(s, group_names[i]) == 0)
            return *by = i, 0;
    return -1;
}

/* from/to: "YYYY-MM-DD" or unix ms; to is exclusive, absent = no end. */
static int usage_range(actx_t *a, const lm_admin_http_query_t *q, int64_t *from, int64_t *to)
{
    const char *f = lm_admin_http_query_get(q, "from"), *t = lm_admin_http_query_get(q, "to");
    *from = 0;
    *to = 0;
    if (f && parse_time_ms(f, from) != 0) {
        lm_admin_http_bad_request(a->req, "from",
                                  "from must be YYYY-MM-DD (UTC) or unix milliseconds");
        return -1;
    }
    if (t && (parse_time_ms(t, to) != 0 || *to == 0)) {
        lm_admin_http_bad_request(a->req, "to",
                                  "to must be YYYY-MM-DD (UTC) or unix milliseconds > 0");
        return -1;
    }
    if (t && *to <= *from) {
        lm_admin_http_bad_request(a->req, "to", "to must be after from");
        return -1;
    }
    return 0;
}

static void h_usage(actx_t *a)
{
    static const char *const params[] = {"group_by", "from", "to", "key_id", NULL};
    lm_admin_http_query_t q;
    int64_t from, to, key_id;
    int by = LM_USAGE_BY_NONE;
    if (lm_admin_http_query_parse(a->req, params, &q) != 0)
        return;
    const char *g = lm_admin_http_query_get(&q, "group_by");
    if (g && parse_group_by(g, &by) != 0) {
        lm_admin_http_bad_request(a->req, "group_by",
                                  "group_by must be key, model, model_served, channel, "
                                  "day or none");
        lm_admin_http_query_free(&q);
        return;
    }
    if (usage_range(a, &q, &from, &to) != 0 ||
        lm_admin_http_query_int(a->req, &q, "key_id", 1, INT64_MAX, 0, &key_id) != 0) {
        lm_admin_http_query_free(&q);
        return;
    }
    lm_admin_http_query_free(&q);
    lm_usage_total_t *t = NULL, *all = NULL;
    size_t n = 0, nall = 0;
    int rc = lm_store_usage_totals(a->env->store, by, from, to, key_id, &t, &n);
    if (rc == LM_STORE_OK)
        rc = lm_store_usage_totals(a->env->store, LM_USAGE_BY_NONE, from, to, key_id, &all, &nall);
    if (rc != LM_STORE_OK || nall != 1) {
        lm_store_usage_totals_free(t, n);
        lm_store_usage_totals_free(all, nall);
        send_store_error(a->req, rc == LM_STORE_OK ? LM_STORE_EDB : rc, NULL);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; by != LM_USAGE_BY_NONE && i < n; i++)
        json_array_append_new(data, total_json(&t[i], by));
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:o, s:o, s:o}", "object", "usage", "group_by", group_names[by],
                  "from", (json_int_t)from, "to", to ? json_integer(to) : json_null(), "key_id",
                  key_id ? json_integer(key_id) : json_null(), "data", data);
    json_object_set_new(o, "total", total_json(&all[0], LM_USAGE_BY_NONE));
    lm_store_usage_totals_free(t, n);
    lm_store_usage_totals_free(all, nall);
    lm_admin_http_json(a->req, 200, o);
}

/* Ledger rows, newest first; `after` is the cursor of the previous page
 * (its last_id): the next page holds rows with smaller ids. */
static void h_usage_rows(actx_t *a)
{
    static const char *const params[] = {"after", "limit", "key_id", NULL};
    lm_admin_http_query_t q;
    int64_t after, limit, key_id;
    if (lm_admin_http_query_parse(a->req, params, &q) != 0)
        return;
    if (lm_admin_http_query_int(a->req, &q, "after", 1, INT64_MAX, 0, &after) != 0 ||
        lm_admin_http_query_int(a->req, &q, "limit", 1, ADMIN_PAGE_MAX, ADMIN_PAGE_DEFAULT,
                                &limit) != 0 ||
        lm_admin_http_query_int(a->req, &q, "key_id", 1, INT64_MAX, 0, &key_id) != 0) {
        lm_admin_http_query_free(&q);
        return;
    }
    lm_admin_http_query_free(&q);
    lm_usage_rec_t *r = NULL;
    size_t n = 0;
    int rc = lm_store_usage_list(a->env->store, key_id, after, (size_t)limit + 1, &r, &n);
    if (rc != LM_STORE_OK) {
        send_store_error(a->req, rc, NULL);
        return;
    }
    size_t total = n;
    int more = n > (size_t)limit;
    if (more)
        n = (size_t)limit;
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, row_json(&r[i]));
    json_t *o = json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", more);
    json_object_set_new(o, "last_id", n ? json_integer(r[n - 1].id) : json_null());
    lm_store_usage_list_free(r, total);
    lm_admin_http_json(a->req, 200, o);
}

static void h_routes(actx_t *a);

/* ------------------------------------------------------------------------ */
/* channels                                                                  */

#define ADMIN_RELOAD_WAIT_MS 30000

/* Outcome of a check: status, code, param and message for the reply. */
typedef struct chk_s {
    int status;
    const char *code;
    char param[96];
    char msg[1024];
} chk_t;

static int chk_fail(chk_t *k, int status, const char *code, const char *param)
{
    k->status = status;
    k->code = code;
    if (param != k->param)
        snprintf(k->param, sizeof(k->param), "%s", param ? param : "");
    return -1;
}

static void send_chk(actx_t *a, chk_t *k)
{
    lm_admin_http_error(a->req, k->status, k->code, k->param[0] ? k->param : NULL, "%s", k->msg);
}

/* Replace every secret this process knows (the serving configuration, the
 * stored channels, rec) in text with "***" (AU-8). */
static void scrub_secrets(actx_t *a, const lm_chan_rec_t *rec, char *text)
{
    lm_chan_secrets_t sec;
    lm_rt_t *rt = lm_server_acquire_rt(a->env->server);
    if (lm_chan_secrets_collect(rt->conf, &sec) == 0) {
        lm_chan_secrets_scrub(&sec, text);
        lm_chan_secrets_free(&sec);
    }
    lm_rt_unref(rt);
    lm_chan_rec_t **v = NULL;
    size_t n = 0;
    if (lm_store_chan_list(a->env->store, &v, &n) == LM_STORE_OK)
        for (size_t i = 0; i < n; i++)
            lm_chan_rec_scrub(v[i], text);
    lm_store_chan_list_free(v, n);
    if (rec)
        lm_chan_rec_scrub(rec, text);
}

static const lm_chan_conf_t *conf_chan(const lm_conf_t *c, const char *name)
{
    for (size_t i = 0; c && i < c->nchans; i++)
        if (!strcmp(c->chans[i].name, name))
            return &c->chans[i];
    return NULL;
}

/* Does msg (from lm_rt_build) speak of channel `name`? */
static int mentions_channel(const char *msg, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = msg; (p = strstr(p, "channel ")) != NULL; p += 8)
        if (!strncmp(p + 8, name, n) && (p[8 + n] == ':' || p[8 + n] == '\0'))
            return 1;
    return 0;
}

/* "PATH:LINE: message" -> "message"; returns LINE (0 if not that form). */
static int strip_location(char *msg, const char *path)
{
    size_t pl = strlen(path);
    char *end;
    if (strncmp(msg, path, pl) != 0 || msg[pl] != ':')
        return 0;
    long line = strtol(msg + pl + 1, &end, 10);
    if (end == msg + pl + 1 || strncmp(end, ": ", 2) != 0)
        return 0;
    memmove(msg, end + 2, strlen(end + 2) + 1);
    return (int)line;
}

/* A failed candidate build: about rec (400, the field if known) or about
 * the rest of the configuration (409). */
static int build_failed(const lm_chan_rec_t *rec, const char *path, chk_t *k)
{
    if (!mentions_channel(k->msg, rec->name))
        return chk_fail(k, 409, "conflict", NULL);
    int line = strip_location(k->msg, path);
    char buf[96];
    const char *f = lm_chan_line_field(rec, line, buf, sizeof(buf));
    if (f == NULL)
        f = strstr(k->msg, " requires \"") ? "settings" : strstr(k->msg, ".so") ? "plugin" : NULL;
    return chk_fail(k, 400, "invalid_value", f);
}

/* Load and init every plugin of conf (consumed) strictly, like longmen -t,
 * on the control thread (plugin.h), then throw the generation away. 0 or
 * -1 with k->msg. */
static int build_check(actx_t *a, lm_conf_t *conf, chk_t *k)
{
    lm_chan_secrets_t sec;
    if (lm_chan_secrets_collect(conf, &sec) != 0) {
        lm_conf_free(conf);
        snprintf(k->msg, sizeof(k->msg), "out of memory");
        return -1;
    }
    int rc = lm_server_check_conf(a->env->server, conf, k->msg, sizeof(k->msg));
    lm_chan_secrets_scrub(&sec, k->msg);
    lm_chan_secrets_free(&sec);
    return rc;
}

/* Check rec before it is stored: the candidate configuration (the file,
 * the other enabled stored channels, rec) must parse, and when rec is
 * enabled every plugin must load and init as longmen -t checks it. A
 * disabled rec is only parsed (its plugin may be what is broken). conf is
 * the file's snapshot (consumed). 0, or -1 with k filled. */
static int chan_validate(actx_t *a, const lm_chan_rec_t *rec, lm_conf_t *conf, chk_t *k)
{
    char path[512];
    snprintf(path, sizeof(path), "%s", conf->path);
    if (rec->enabled &&
        lm_chan_conf_apply(conf, a->env->store, rec->name, 1, k->msg, sizeof(k->msg)) < 0) {
        lm_conf_free(conf);
        scrub_secrets(a, rec, k->msg);
        return chk_fail(k, 409, "conflict", NULL);
    }
    if (lm_chan_conf_add(conf, rec, k->param, sizeof(k->param), k->msg, sizeof(k->msg)) < 0) {
        lm_conf_free(conf);
        scrub_secrets(a, rec, k->msg);
        return chk_fail(k, 400, "invalid_value", k->param);
    }
    if (!rec->enabled) {
        lm_conf_free(conf);
        return 0;
    }
    if (build_check(a, conf, k) == 0)
        return 0;
    scrub_secrets(a, rec, k->msg);
    return build_failed(rec, path, k);
}

/* The "reload" member of a write reply: wait for the reload that applies
 * the change. */
static json_t *reload_json(actx_t *a)
{
    char err[1024] = "";
    uint64_t gen = 0;
    int rc = lm_server_reload_wait(a->env->server, ADMIN_RELOAD_WAIT_MS, &gen, err, sizeof(err));
    if (rc == 1)
        return json_pack("{s:b, s:I}", "applied", 1, "generation", (json_int_t)gen);
    scrub_secrets(a, NULL, err);
    lm_log(LM_LOG_WARN, "admin: a channel change is stored but not applied yet: %s", err);
    json_t *e = json_string(err);
    return json_pack("{s:b, s:o}", "applied", 0, "error", e ? e : json_string("reload failed"));
}

/* "active": the channel serves in the current generation; "shadowed": a
 * stored channel the file overrides. */
static void chan_status(json_t *o, const lm_rt_t *rt, const char *name, int stored, int shadowed)
{
    int active = 0;
    for (size_t i = 0; rt && i < rt->ninsts && !(stored && shadowed); i++)
        active |= !strcmp(rt->insts[i].chan->name, name);
    json_object_set_new(o, "active", json_boolean(active));
    if (stored)
        json_object_set_new(o, "shadowed", json_boolean(shadowed));
}

static json_t *stored_json(actx_t *a, const lm_chan_rec_t *c, const lm_conf_t *file)
{
    json_t *o = lm_chan_to_json(c);
    lm_rt_t *rt = lm_server_acquire_rt(a->env->server);
    chan_status(o, rt, c->name, 1, conf_chan(file, c->name) != NULL);
    lm_rt_unref(rt);
    return o;
}

/* The file's snapshot, or NULL after replying: 500 for a read, 409 for a
 * change (which cannot be checked against a file that does not load). */
static lm_conf_t *file_conf(actx_t *a, int write)
{
    chk_t k = {0};
    lm_conf_t *c = lm_server_conf_file(a->env->server, k.msg, sizeof(k.msg));
    if (c == NULL) {
        scrub_secrets(a, NULL, k.msg);
        lm_admin_http_error(a->req, write ? 409 : 500, write ? "conflict" : "config_error", NULL,
                            "the configuration file does not load: %s", k.msg);
    }
    return c;
}

static int chan_ready(actx_t *a)
{
    if (a->env->server != NULL)
        return 1;
    lm_admin_http_error(a->req, 503, "unavailable", NULL, "no server");
    return 0;
}

static void h_chan_list(actx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0 || !chan_ready(a))
        return;
    lm_conf_t *file = file_conf(a, 0);
    if (file == NULL)
        return;
    lm_chan_rec_t **v = NULL;
    size_t n = 0;
    int rc = lm_store_chan_list(a->env->store, &v, &n);
    if (rc != LM_STORE_OK) {
        lm_conf_free(file);
        send_store_error(a->req, rc, NULL);
        return;
    }
    json_t *data = json_array();
    lm_rt_t *rt = lm_server_acquire_rt(a->env->server);
    for (size_t i = 0; i < file->nchans; i++) {
        json_t *o = lm_chan_conf_to_json(&file->chans[i]);
        chan_status(o, rt, file->chans[i].name, 0, 0);
        json_array_append_new(data, o);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = lm_chan_to_json(v[i]);
        chan_status(o, rt, v[i]->name, 1, conf_chan(file, v[i]->name) != NULL);
        json_array_append_new(data, o);
    }
    lm_rt_unref(rt);
    lm_store_chan_list_free(v, n);
    lm_conf_free(file);
    lm_admin_http_json(a->req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static void h_chan_get(actx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0 || !chan_ready(a))
        return;
    lm_conf_t *file = file_conf(a, 0);
    if (file == NULL)
        return;
    lm_chan_rec_t *c = NULL;
    int rc = lm_store_chan_get(a->env->store, a->name, &c);
    const lm_chan_conf_t *fc = conf_chan(file, a->name);
    if (rc == LM_STORE_OK) {
        lm_admin_http_json(a->req, 200, stored_json(a, c, file));
    } else if (rc == LM_STORE_ENOTFOUND && fc) {
        json_t *o = lm_chan_conf_to_json(fc);
        lm_rt_t *rt = lm_server_acquire_rt(a->env->server);
        chan_status(o, rt, fc->name, 0, 0);
        lm_rt_unref(rt);
        lm_admin_http_json(a->req, 200, o);
    } else if (rc == LM_STORE_ENOTFOUND) {
        lm_admin_http_error(a->req, 404, "not_found", NULL, "no such channel");
    } else {
        send_store_error(a->req, rc, NULL);
    }
    lm_chan_rec_free(c);
    lm_conf_free(file);
}

/* 404, or 409 when the name belongs to the file. */
static void chan_missing(actx_t *a)
{
    lm_conf_t *file = file_conf(a, 1);
    if (file == NULL)
        return;
    if (conf_chan(file, a->name))
        lm_admin_http_error(
            a->req, 409, "conflict", "name",
            "channel %s is defined in the configuration file %s and is read-only here", a->name,
            file->path);
    else
        lm_admin_http_error(a->req, 404, "not_found", NULL, "no such channel");
    lm_conf_free(file);
}

/* Validate rec, store it (create or replace), reload and reply. Takes
 * nothing; rec stays the caller's. */
static void chan_commit(actx_t *a, const lm_chan_rec_t *rec, int create)
{
    chk_t k = {0};
    const char *param = NULL;
    if (lm_store_chan_check(rec, &param, k.msg, sizeof(k.msg)) != LM_STORE_OK ||
        lm_chan_check(rec, &param, k.msg, sizeof(k.msg)) != 0) {
        chk_fail(&k, 400, "invalid_value", param);
        send_chk(a, &k);
        return;
    }
    lm_conf_t *file = file_conf(a, 1);
    if (file == NULL)
        return;
    if (conf_chan(file, rec->name)) {
        lm_admin_http_error(a->req, 409, "conflict", "name",
                            "channel %s is defined in the configuration file %s", rec->name,
                            file->path);
        lm_conf_free(file);
        return;
    }
    if (chan_validate(a, rec, file, &k) != 0) {
        send_chk(a, &k);
        return;
    }
    char err[256] = "";
    int rc = create ? lm_store_chan_create(a->env->store, rec, NULL, err, sizeof(err))
                    : lm_store_chan_update(a->env->store, rec, err, sizeof(err));
    if (rc == LM_STORE_ECONFLICT) {
        lm_admin_http_error(a->req, 409, "conflict", "name", "%s", err);
        return;
    }
    if (rc == LM_STORE_ENOTFOUND) {
        lm_admin_http_error(a->req, 404, "not_found", NULL, "no such channel");
        return;
    }
    if (rc != LM_STORE_OK) {
        send_store_error(a->req, rc, err);
        return;
    }
    lm_log(LM_LOG_INFO, "admin: channel %s %s", rec->name, create ? "created" : "updated");
    json_t *reload = reload_json(a);
    lm_chan_rec_t *c = NULL;
    rc = lm_store_chan_get(a->env->store, rec->name, &c);
    if (rc != LM_STORE_OK) {
        json_decref(reload);
        send_store_error(a->req, rc, NULL);
        return;
    }
    json_t *o = stored_json(a, c, NULL);
    lm_chan_rec_free(c);
    json_object_set_new(o, "reload", reload);
    lm_admin_http_json(a->req, create ? 201 : 200, o);
}

/* The body as a record: base (the defaults or a copy of the stored one)
 * with the body's members applied. NULL after replying. */
static lm_chan_rec_t *chan_body(actx_t *a, lm_chan_rec_t *base, int merge, const lm_chan_rec_t *cur)
{
    lm_admin_http_query_t q;
    json_t *body = base ? lm_admin_http_body_object(a->req) : NULL;
    if (base == NULL)
        lm_admin_http_error(a->req, 500, "internal_error", NULL, "out of memory");
    if (body == NULL || lm_admin_http_query_parse(a->req, no_params, &q) != 0) {
        json_decref(body);
        lm_chan_rec_free(base);
        return NULL;
    }
    chk_t k = {0};
    const char *param = NULL;
    int rc = merge && json_object_size(body) == 0
                 ? (snprintf(k.msg, sizeof(k.msg), "nothing to update"), -1)
                 : lm_chan_from_json(base, body, merge, cur, &param, k.msg, sizeof(k.msg));
    json_decref(body);
    if (rc == 0 && a->name[0] && base->name && strcmp(base->name, a->name) != 0) {
        param = "name";
        snprintf(k.msg, sizeof(k.msg),
                 "the name cannot be changed (create a channel with the new name, then delete "
                 "this one)");
        rc = -1;
    }
    if (rc == 0 && (base->name == NULL || base->plugin == NULL || base->nmodels == 0)) {
        param = base->name == NULL ? "name" : base->plugin == NULL ? "plugin" : "models";
        snprintf(k.msg, sizeof(k.msg), "name, plugin and models are required");
        rc = -1;
    }
    if (rc != 0) {
        chk_fail(&k, 400, "invalid_value", param);
        send_chk(a, &k);
        lm_chan_rec_free(base);
        return NULL;
    }
    return base;
}

static void h_chan_create(actx_t *a)
{
    if (!chan_ready(a))
        return;
    lm_chan_rec_t *rec = chan_body(a, lm_chan_rec_new(), 0, NULL);
    if (rec == NULL)
        return;
    lm_chan_rec_t *old = NULL;
    if (lm_store_chan_name_ok(rec->name) &&
        lm_store_chan_get(a->env->store, rec->name, &old) == LM_STORE_OK)
        lm_admin_http_error(a->req, 409, "conflict", "name", "a channel named %s already exists",
                            rec->name);
    else
        chan_commit(a, rec, 1);
    lm_chan_rec_free(old);
    lm_chan_rec_free(rec);
}

/* PUT (replace: unnamed fields take their defaults) or PATCH (merge). */
static void chan_change(actx_t *a, int merge)
{
    lm_chan_rec_t *cur = NULL;
    if (!chan_ready(a))
        return;
    int rc = lm_store_chan_get(a->env->store, a->name, &cur);
    if (rc == LM_STORE_ENOTFOUND) {
        chan_missing(a);
        return;
    }
    if (rc != LM_STORE_OK) {
        send_store_error(a->req, rc, NULL);
        return;
    }
    lm_chan_rec_t *base = merge ? lm_chan_rec_dup(cur) : lm_chan_rec_new();
    if (base && !merge && (base->name = strdup(a->name)) == NULL) {
        lm_chan_rec_free(base);
        base = NULL;
    }
    lm_chan_rec_t *rec = chan_body(a, base, merge, cur);
    if (rec)
        chan_commit(a, rec, 0);
    lm_chan_rec_free(rec);
    lm_chan_rec_free(cur);
}

static void h_chan_put(actx_t *a)
{
    chan_change(a, 0);
}

static void h_chan_patch(actx_t *a)
{
    chan_change(a, 1);
}

static void h_chan_delete(actx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0 || !chan_ready(a))
        return;
    int rc = lm_store_chan_delete(a->env->store, a->name);
    if (rc == LM_STORE_ENOTFOUND) {
        chan_missing(a);
        return;
    }
    if (rc != LM_STORE_OK) {
        send_store_error(a->req, rc, NULL);
        return;
    }
    lm_log(LM_LOG_INFO, "admin: channel %s deleted", a->name);
    json_t *o = json_pack("{s:s, s:s, s:b}", "object", "channel", "name", a->name, "deleted", 1);
    json_object_set_new(o, "reload", reload_json(a));
    lm_admin_http_json(a->req, 200, o);
}

typedef struct route_s {
    const char *path; /* a trailing "{id}" matches a positive decimal id, "{name}" a channel name */
    int method;       /* LM_ADMIN_HTTP_* */
    const char *method_name;
    int write; /* refused to the read-only role */
    void (*fn)(actx_t *a);
} route_t;

static const route_t routes[] = {
    {"/admin/health", LM_ADMIN_HTTP_GET, "GET", 0, h_health},
    {"/admin/routes", LM_ADMIN_HTTP_GET, "GET", 0, h_routes},
    {"/admin/reload", LM_ADMIN_HTTP_POST, "POST", 1, h_reload},
    {"/admin/keys", LM_ADMIN_HTTP_GET, "GET", 0, h_key_list},
    {"/admin/keys", LM_ADMIN_HTTP_POST, "POST", 1, h_key_create},
    {"/admin/keys/{id}", LM_ADMIN_HTTP_GET, "GET", 0, h_key_get},
    {"/admin/keys/{id}", LM_ADMIN_HTTP_PATCH, "PATCH", 1, h_key_update},
    {"/admin/keys/{id}", LM_ADMIN_HTTP_DELETE, "DELETE", 1, h_key_delete},
    {"/admin/usage", LM_ADMIN_HTTP_GET, "GET", 0, h_usage},
    {"/admin/usage/rows", LM_ADMIN_HTTP_GET, "GET", 0, h_usage_rows},
    {"/admin/metrics", LM_ADMIN_HTTP_GET, "GET", 0, h_metrics},
    {"/admin/channels", LM_ADMIN_HTTP_GET, "GET", 0, h_chan_list},
    {"/admin/channels", LM_ADMIN_HTTP_POST, "POST", 1, h_chan_create},
    {"/admin/channels/{name}", LM_ADMIN_HTTP_GET, "GET", 0, h_chan_get},
    {"/admin/channels/{name}", LM_ADMIN_HTTP_PUT, "PUT", 1, h_chan_put},
    {"/admin/channels/{name}", LM_ADMIN_HTTP_PATCH, "PATCH", 1, h_chan_patch},
    {"/admin/channels/{name}", LM_ADMIN_HTTP_DELETE, "DELETE", 1, h_chan_delete},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static void h_routes(actx_t *a)
{
    lm_admin_http_query_t q;
    if (lm_admin_http_query_parse(a->req, no_params, &q) != 0)
        return;
    json_t *data = json_array();
    for (size_t i = 0; i < NROUTES; i++)
        json_array_append_new(data, json_pack("{s:s, s:s, s:b}", "method", routes[i].method_name,
                                              "path", routes[i].path, "write", routes[i].write));
    lm_admin_http_json(a->req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

/* Does `path` match pattern `pat`? For "{id}" patterns *id receives the id,
 * or -1 if the segment is present but not a valid id (-> 400); for
 * "{name}" patterns name receives the channel name, or "" if the segment
 * is not a valid one (-> 400). */
static int path_match(const char *pat, const char *path, int64_t *id, char *name, size_t nlen)
{
    const char *brace = strchr(pat, '{');
    if (brace == NULL)
        return strcmp(pat, path) == 0;
    size_t pre = (size_t)(brace - pat);
    if (strncmp(pat, path, pre) != 0 || path[pre] == '\0' || strchr(path + pre, '/'))
        return 0;
    if (strcmp(brace, "{name}") == 0) {
        name[0] = '\0';
        if (strlen(path + pre) < nlen && lm_store_chan_name_ok(path + pre))
            snprintf(name, nlen, "%s", path + pre);
        return 1;
    }
    if (lm_admin_http_parse_uint(path + pre, INT64_MAX, id) != 0 || *id == 0)
        *id = -1;
    return 1;
}

static void dispatch(actx_t *a, const char *path)
{
    char allow[64] = "";
    int matched = 0;
    for (size_t i = 0; i < NROUTES; i++) {
        int64_t id = 0;
        a->name[0] = '\0';
        if (!path_match(routes[i].path, path, &id, a->name, sizeof(a->name)))
            continue;
        matched = 1;
        if (!lm_admin_http_method_is(a->req, routes[i].method)) {
            size_t l = strlen(allow);
            snprintf(allow + l, sizeof(allow) - l, "%s%s", l ? ", " : "", routes[i].method_name);
            continue;
        }
        if (routes[i].write && a->role != LM_ADMIN_ROLE_FULL) {
            lm_admin_http_error(a->req, 403, "permission_denied", NULL,
                                "the read-only admin token cannot call %s %s",
                                routes[i].method_name, routes[i].path);
            return;
        }
        if (id < 0) {
            lm_admin_http_bad_request(a->req, "id", "the key id must be a positive integer");
            return;
        }
        if (strstr(routes[i].path, "{name}") && a->name[0] == '\0') {
            lm_admin_http_error(a->req, 400, "invalid_value", "name",
                                "a channel name matches [A-Za-z0-9_.-]+ (1 to %d characters)",
                                LM_CHAN_NAME_MAX);
            return;
        }
        a->id = id;
        routes[i].fn(a);
        return;
    }
    if (!matched) {
        lm_admin_http_error(a->req, 404, "not_found", NULL, "unknown admin path");
        return;
    }
    lm_admin_http_add_header(a->req, "Allow", allow);
    lm_admin_http_error(a->req, 405, "method_not_allowed", NULL,
                        "method not allowed here (allowed: %s)", allow);
}

static void on_request(lm_admin_http_req_t *req, void *arg)
{
    actx_t a = {.env = arg, .req = req};
    a.role = authenticate(a.env, req);
    if (a.role < 0)
        return;
    dispatch(&a, lm_admin_http_path(req));
}

int lm_admin_setup(struct evhtp *htp, lm_admin_env_t *env, char *err, size_t errlen)
{
    if (env == NULL || env->store == NULL) {
        snprintf(err, errlen, "admin: the admin API needs the store (data_dir)");
        return -1;
    }
    if (token_bootstrap(env, LM_ADMIN_ROLE_FULL, "LONGMEN_ADMIN_TOKEN", env->token_hash, &(int){0},
                        err, errlen) != 0 ||
        token_bootstrap(env, LM_ADMIN_ROLE_READ, "LONGMEN_ADMIN_READONLY_TOKEN", env->read_hash,
                        &env->has_read, err, errlen) != 0)
        return -1;
    if (env->has_read && CRYPTO_memcmp(env->read_hash, env->token_hash, 32) == 0) {
        snprintf(err, errlen, "admin: the read-only token must differ from the admin token");
        return -1;
    }
    warn_exposed(env);
    lm_admin_http_serve(htp, on_request, env);
    return 0;
}
