/*
 * auth.c - the admin tokens: bootstrap at setup (control thread), then the
 * check of every request (admin thread). Tokens are kept only as SHA-256.
 */
#include "admin/auth.h"
#include "core/b64.h"
#include "core/bearer.h"
#include "core/clock.h"
#include "core/log.h"
#include "gov/auth.h"
#include "relay/rt.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define ADMIN_TOKEN_MIN 20            /* operator-chosen tokens: >= 20 chars */
#define ADMIN_TOKEN_MAX LM_BEARER_MAX /* same bound as data-plane keys */

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
    if (env->ctl.arg == NULL)
        return 0;
    lm_rt_t *rt = env->ctl.acquire_rt(env->ctl.arg);
    int hit = lm_auth_check(rt->conf, lm_admin_http_header(req, "Authorization")) != NULL;
    lm_rt_unref(rt);
    return hit;
}

/* Both digests are compared every time, in constant time. The role of
 * tok, or -1 when it is neither token. */
int lm_admin_auth_token_role(const lm_admin_env_t *env, const char *tok, size_t n)
{
    unsigned char d[32];
    SHA256((const unsigned char *)tok, n, d);
    int full = CRYPTO_memcmp(d, env->token_hash, 32) == 0;
    int read = CRYPTO_memcmp(d, env->read_hash, 32) == 0 && env->has_read;
    OPENSSL_cleanse(d, sizeof(d));
    return full ? LM_ADMIN_ROLE_FULL : read ? LM_ADMIN_ROLE_READ : -1;
}

int lm_admin_auth_blocked(lm_admin_env_t *env, lm_admin_http_req_t *req)
{
    int64_t wait = lm_authguard_blocked(env->authguard, lm_admin_http_peer(req),
                                        (int64_t)(uint64_t)lm_clock_ms());
    if (wait <= 0)
        return 0;
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)wait);
    lm_admin_http_add_header(req, "Retry-After", v);
    lm_admin_http_error(req, 429, "too_many_auth_failures", NULL,
                        "too many failed authentications from this address; retry later");
    return 1;
}

void lm_admin_auth_failed(lm_admin_env_t *env, lm_admin_http_req_t *req)
{
    lm_authguard_fail(env->authguard, lm_admin_http_peer(req), (int64_t)(uint64_t)lm_clock_ms());
}

/* A console request: the session cookie, and for anything but GET the
 * CSRF token in X-CSRF-Token (a cross-site form or fetch cannot read it). */
static int session_check(lm_admin_env_t *env, lm_admin_http_req_t *req, lm_admin_session_t **out)
{
    lm_admin_session_t *s = lm_admin_session_find(
        &env->sessions, lm_admin_http_header(req, "Cookie"), (int64_t)(uint64_t)lm_clock_ms());
    if (s == NULL) {
        lm_admin_http_error(req, 401, "invalid_api_key", NULL,
                            "missing admin token (send Authorization: Bearer <admin token>, or "
                            "sign in to the console again)");
        return -1;
    }
    if (!lm_admin_http_method_is(req, LM_ADMIN_HTTP_GET) &&
        !lm_admin_session_csrf_ok(s, lm_admin_http_header(req, "X-CSRF-Token"))) {
        lm_admin_http_error(req, 403, "csrf_failed", NULL,
                            "missing or wrong X-CSRF-Token for this console session");
        return -1;
    }
    *out = s;
    return s->role;
}

int lm_admin_auth_check(lm_admin_env_t *env, lm_admin_http_req_t *req, lm_admin_session_t **sess)
{
    size_t n = 0;
    const char *tok = bearer(req, &n);
    *sess = NULL;
    if (lm_admin_auth_blocked(env, req))
        return -1;
    if (tok == NULL && lm_admin_http_header(req, "Authorization") == NULL)
        return session_check(env, req, sess);
    if (tok == NULL) {
        lm_admin_http_error(req, 401, "invalid_api_key", NULL,
                            "missing admin token (send Authorization: Bearer <admin token>)");
        return -1;
    }
    int role = lm_admin_auth_token_role(env, tok, n);
    if (role >= 0)
        return role;
    if (is_client_key(env, req, tok, n)) {
        lm_admin_http_error(req, 403, "permission_denied", NULL,
                            "a data-plane key cannot call the admin API");
        return -1;
    }
    lm_admin_auth_failed(env, req);
    lm_admin_http_error(req, 401, "invalid_api_key", NULL, "invalid admin token");
    return -1;
}

int lm_admin_auth_setup(lm_admin_env_t *env, char *err, size_t errlen)
{
    if (token_bootstrap(env, LM_ADMIN_ROLE_FULL, "LONGMEN_ADMIN_TOKEN", env->token_hash, &(int){0},
                        err, errlen) != 0 ||
        token_bootstrap(env, LM_ADMIN_ROLE_READ, "LONGMEN_ADMIN_READONLY_TOKEN", env->read_hash,
                        &env->has_read, err, errlen) != 0)
        return -1;
    const char *ttl = getenv("LONGMEN_ADMIN_SESSION_TTL");
    int64_t sec = LM_ADMIN_SESSION_TTL_MS / 1000;
    if (ttl && (lm_admin_http_parse_uint(ttl, 30 * 86400, &sec) != 0 || sec == 0)) {
        snprintf(err, errlen, "LONGMEN_ADMIN_SESSION_TTL must be seconds from 1 to 2592000");
        return -1;
    }
    env->sessions.ttl_ms = sec * 1000;
    if (env->has_read && CRYPTO_memcmp(env->read_hash, env->token_hash, 32) == 0) {
        snprintf(err, errlen, "admin: the read-only token must differ from the admin token");
        return -1;
    }
    return 0;
}
