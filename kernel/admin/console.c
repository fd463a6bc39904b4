/*
 * console.c - the web console's files and sessions (console.h,
 * docs/console.md). The files are public (they hold no data); every API
 * call they make is authenticated by the session cookie like a token.
 */
#include "admin/console.h"
#include "admin/auth.h"
#include "admin/console_assets.h"
#include "core/clock.h"
#include "core/log.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Scripts and styles only from this origin, no inline code, no framing:
 * a name that slipped into HTML still could not run. */
static const char csp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                          "form-action 'none'; frame-ancestors 'none'";

static const lm_console_asset_t *asset_for(const char *path)
{
    const char *name = NULL;
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0)
        name = "index.html";
    else if (strncmp(path, "/console/", 9) == 0)
        name = path + 9;
    for (size_t i = 0; name && i < lm_console_nassets; i++)
        if (strcmp(lm_console_assets[i].name, name) == 0)
            return &lm_console_assets[i];
    return NULL;
}

/* One tag's q value (1000 = 1.0); -1 if malformed. */
static int q_of(const char *p, size_t n)
{
    const char *q = NULL;
    for (size_t i = 0; i + 2 < n && q == NULL; i++)
        if (p[i] == ';' && (p[i + 1] == 'q' || p[i + 1] == 'Q') && p[i + 2] == '=')
            q = p + i + 3;
    if (q == NULL)
        return 1000;
    int v = 0, scale = 1000, seen = 0;
    for (; q < p + n && *q != ' ' && *q != ';'; q++) {
        if (*q == '.') {
            scale = scale == 1000 ? 100 : -1;
            continue;
        }
        if (*q < '0' || *q > '9' || scale < 0)
            return -1;
        v = scale == 1000 ? (*q - '0') * 1000 : v + (*q - '0') * scale;
        if (scale != 1000)
            scale /= 10;
        seen = 1;
    }
    return seen && v <= 1000 ? v : -1;
}

int lm_admin_console_wants_zh(const char *al)
{
    int best = -1, zh = 0;
    while (al && *al) {
        while (*al == ' ' || *al == ',')
            al++;
        size_t n = strcspn(al, ",");
        int q = n ? q_of(al, n) : -1;
        if (q > best) {
            best = q;
            zh =
                n >= 2 && strncasecmp(al, "zh", 2) == 0 && (n == 2 || al[2] == '-' || al[2] == ';');
        }
        al += n;
    }
    return zh;
}

static void send_asset(lm_admin_http_req_t *req, const lm_console_asset_t *f)
{
    lm_admin_http_add_header(req, "Content-Security-Policy", csp);
    lm_admin_http_add_header(req, "X-Content-Type-Options", "nosniff");
    lm_admin_http_add_header(req, "X-Frame-Options", "DENY");
    lm_admin_http_add_header(req, "Referrer-Policy", "no-referrer");
    static const char en[] = "<html lang=\"en\"";
    const char *at = strcmp(f->name, "index.html") == 0 ? strstr((const char *)f->data, en) : NULL;
    if (at == NULL || !lm_admin_console_wants_zh(lm_admin_http_header(req, "Accept-Language"))) {
        lm_admin_http_text(req, f->ctype, (const char *)f->data, f->len);
        return;
    }
    /* The page starts in the language the browser asks for; the script
     * reads <html lang> unless the operator picked one. */
    lm_admin_http_add_header(req, "Vary", "Accept-Language");
    size_t pre = (size_t)(at - (const char *)f->data), tail = f->len - pre - (sizeof(en) - 1);
    static const char zh[] = "<html lang=\"zh-CN\"";
    char *buf = malloc(f->len + sizeof(zh));
    if (buf == NULL) {
        lm_admin_http_text(req, f->ctype, (const char *)f->data, f->len);
        return;
    }
    memcpy(buf, f->data, pre);
    memcpy(buf + pre, zh, sizeof(zh) - 1);
    memcpy(buf + pre + sizeof(zh) - 1, at + sizeof(en) - 1, tail);
    lm_admin_http_text(req, f->ctype, buf, pre + sizeof(zh) - 1 + tail);
    free(buf);
}

static void set_cookie(lm_admin_http_req_t *req, const char *id, int64_t max_age)
{
    char c[160];
    snprintf(c, sizeof(c), "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Strict",
             LM_ADMIN_SESSION_COOKIE, id, (long long)max_age);
    lm_admin_http_add_header(req, "Set-Cookie", c);
    OPENSSL_cleanse(c, sizeof(c));
}

static json_t *session_json(const lm_admin_session_t *s)
{
    int64_t left = s->expires_ms - (int64_t)(uint64_t)lm_clock_ms();
    return json_pack("{s:s, s:s, s:s, s:I}", "object", "session", "role",
                     s->role == LM_ADMIN_ROLE_READ ? "read" : "admin", "csrf_token", s->csrf,
                     "expires_in", (json_int_t)(left > 0 ? left / 1000 : 0));
}

/* POST /admin/session {"token": "..."}: the same token check and the same
 * brute-force guard as a bearer token. */
static void sign_in(lm_admin_env_t *env, lm_admin_http_req_t *req)
{
    if (lm_admin_auth_blocked(env, req))
        return;
    json_t *body = lm_admin_http_body_object(req);
    if (body == NULL)
        return;
    json_t *t = json_object_get(body, "token");
    if (json_object_size(body) != 1 || !json_is_string(t)) {
        json_decref(body);
        lm_admin_http_bad_request(req, "token", "send {\"token\": \"<admin token>\"}");
        return;
    }
    int role = lm_admin_auth_token_role(env, json_string_value(t), json_string_length(t));
    json_decref(body);
    if (role < 0) {
        lm_admin_auth_failed(env, req);
        lm_admin_http_error(req, 401, "invalid_api_key", NULL, "invalid admin token");
        return;
    }
    char id[LM_ADMIN_SESSION_IDLEN + 1];
    lm_admin_session_t *s =
        lm_admin_session_new(&env->sessions, role, (int64_t)(uint64_t)lm_clock_ms(), id);
    if (s == NULL) {
        lm_admin_http_error(req, 500, "internal_error", NULL, "cannot start a session");
        return;
    }
    set_cookie(req, id, env->sessions.ttl_ms / 1000);
    OPENSSL_cleanse(id, sizeof(id));
    lm_log(LM_LOG_INFO, "admin: console sign-in (%s)",
           role == LM_ADMIN_ROLE_READ ? "read-only" : "admin");
    lm_admin_http_json(req, 200, session_json(s));
}

int lm_admin_console_public(lm_admin_env_t *env, lm_admin_http_req_t *req)
{
    const char *path = lm_admin_http_path(req);
    if (strcmp(path, "/admin/session") == 0 && lm_admin_http_method_is(req, LM_ADMIN_HTTP_POST)) {
        sign_in(env, req);
        return 1;
    }
    if (strncmp(path, "/admin", 6) == 0 || !lm_admin_http_method_is(req, LM_ADMIN_HTTP_GET))
        return 0;
    const lm_console_asset_t *f = asset_for(path);
    if (f == NULL)
        return 0;
    send_asset(req, f);
    return 1;
}

void lm_admin_console_whoami(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a))
        return;
    if (a->session == NULL) { /* a bearer token: its role, no session */
        lm_admin_http_json(a->req, 200,
                           json_pack("{s:s, s:s, s:n}", "object", "session", "role",
                                     a->role == LM_ADMIN_ROLE_READ ? "read" : "admin",
                                     "csrf_token"));
        return;
    }
    lm_admin_http_json(a->req, 200, session_json(a->session));
}

void lm_admin_console_signout(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a))
        return;
    if (a->session == NULL) { /* a bearer token: nothing to end */
        lm_admin_http_json(a->req, 200, json_pack("{s:s, s:b}", "object", "session", "deleted", 0));
        return;
    }
    lm_admin_session_drop(a->session);
    set_cookie(a->req, "", 0);
    lm_admin_http_json(a->req, 200, json_pack("{s:s, s:b}", "object", "session", "deleted", 1));
}
