/*
 * admin.c - the admin API's entry point (admin.h, docs/admin.md): the route
 * table, dispatch, and the small routes (health, routes, reload, metrics).
 * Setup runs on the control thread; requests on the admin thread.
 *
 * One thread serves this listener, so the blocking store calls never
 * delay a data-plane worker. Every request is authenticated before it is
 * routed (an unknown path without a token is 401, not 404, so the route
 * table is not disclosed), then dispatched through one table that also
 * answers GET /admin/routes, which lets the tests walk every route.
 *
 * Input is strict: unknown JSON fields and query parameters are refused,
 * strings are checked with lm_store_text_ok (UTF-8, no NUL, bounded), money
 * is a decimal string of currency units or integer micro-units, bounded by
 * LM_ADMIN_MONEY_MAX (keys.c). Error text comes from fixed strings or from
 * the store's validation messages, never from SQLite.
 */
#include "admin/admin.h"
#include "admin/auth.h"
#include "admin/channels.h"
#include "admin/console.h"
#include "admin/ctx.h"
#include "admin/keys.h"
#include "admin/requests.h"
#include "admin/status.h"
#include "admin/usage.h"
#include "core/log.h"
#include "relay/rt.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (env->ctl.arg == NULL)
        return;
    lm_rt_t *rt = env->ctl.acquire_rt(env->ctl.arg);
    const lm_conf_t *c = rt->conf;
    if (!is_loopback(c->admin_host))
        lm_log(LM_LOG_WARN,
               "admin: admin_listen %s:%d is not a loopback address; the admin API is "
               "reachable from the network (plain HTTP, token only)",
               c->admin_host, c->admin_port);
    lm_rt_unref(rt);
}

static void h_health(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a))
        return;
    lm_store_settings_t s;
    if (lm_store_settings(a->env->store, &s) != LM_STORE_OK) {
        lm_admin_http_error(a->req, 503, "unavailable", NULL, "the store does not answer");
        return;
    }
    lm_admin_http_json(a->req, 200,
                       json_pack("{s:s, s:s, s:{s:s, s:i, s:I, s:{s:I, s:I}}}", "status", "ok",
                                 "role", a->role == LM_ADMIN_ROLE_READ ? "read" : "admin", "store",
                                 "journal_mode", s.journal_mode, "schema_version", s.schema_version,
                                 "queue_depth", (json_int_t)lm_store_queue_depth(a->env->store),
                                 "checkpoints", "background", (json_int_t)s.checkpoints_background,
                                 "writer", (json_int_t)s.checkpoints_inline));
}

/* Prometheus text exposition (longmen_* series; no secrets, names only). */
static void h_metrics(lm_admin_ctx_t *a)
{
    size_t len = 0;
    if (!lm_admin_no_query(a))
        return;
    char *txt = a->env->ctl.metrics_render(a->env->ctl.arg, &len);
    if (txt == NULL) {
        lm_admin_http_error(a->req, 503, "unavailable", NULL, "metrics are unavailable");
        return;
    }
    lm_admin_http_text(a->req, "text/plain; version=0.0.4; charset=utf-8", txt, len);
    free(txt);
}

static void h_reload(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a))
        return;
    if (a->env->ctl.arg == NULL) {
        lm_admin_http_error(a->req, 503, "unavailable", NULL, "no server to reload");
        return;
    }
    a->env->ctl.reload(a->env->ctl.arg);
    lm_log(LM_LOG_INFO, "admin: reload requested");
    lm_admin_http_json(a->req, 202, json_pack("{s:s}", "status", "reload requested"));
}

static void h_routes(lm_admin_ctx_t *a);

typedef struct route_s {
    const char *path; /* a trailing "{id}" matches a positive decimal id, "{name}" a channel name */
    int method;       /* LM_ADMIN_HTTP_* */
    const char *method_name;
    int write; /* refused to the read-only role */
    lm_admin_handler_t fn;
} route_t;

static const route_t routes[] = {
    {"/admin/health", LM_ADMIN_HTTP_GET, "GET", 0, h_health},
    {"/admin/routes", LM_ADMIN_HTTP_GET, "GET", 0, h_routes},
    {"/admin/reload", LM_ADMIN_HTTP_POST, "POST", 1, h_reload},
    {"/admin/check", LM_ADMIN_HTTP_POST, "POST", 1, lm_admin_check},
    {"/admin/status", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_status},
    {"/admin/session", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_console_whoami},
    {"/admin/session", LM_ADMIN_HTTP_DELETE, "DELETE", 0, lm_admin_console_signout},
    {"/admin/keys", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_keys_list},
    {"/admin/keys", LM_ADMIN_HTTP_POST, "POST", 1, lm_admin_keys_create},
    {"/admin/keys/{id}", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_keys_get},
    {"/admin/keys/{id}", LM_ADMIN_HTTP_PATCH, "PATCH", 1, lm_admin_keys_update},
    {"/admin/keys/{id}", LM_ADMIN_HTTP_DELETE, "DELETE", 1, lm_admin_keys_delete},
    {"/admin/usage", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_usage_totals},
    {"/admin/usage/rows", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_usage_rows},
    {"/admin/requests", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_requests_list},
    {"/admin/usage/series", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_usage_series},
    {"/admin/metrics", LM_ADMIN_HTTP_GET, "GET", 0, h_metrics},
    {"/admin/channels", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_channels_list},
    {"/admin/channels", LM_ADMIN_HTTP_POST, "POST", 1, lm_admin_channels_create},
    {"/admin/channels/{name}", LM_ADMIN_HTTP_GET, "GET", 0, lm_admin_channels_get},
    {"/admin/channels/{name}", LM_ADMIN_HTTP_PUT, "PUT", 1, lm_admin_channels_put},
    {"/admin/channels/{name}", LM_ADMIN_HTTP_PATCH, "PATCH", 1, lm_admin_channels_patch},
    {"/admin/channels/{name}", LM_ADMIN_HTTP_DELETE, "DELETE", 1, lm_admin_channels_delete},
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static void h_routes(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a))
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

static void dispatch(lm_admin_ctx_t *a, const char *path)
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
    lm_admin_ctx_t a = {.env = arg, .req = req};
    if (lm_admin_console_public(a.env, req))
        return;
    a.role = lm_admin_auth_check(a.env, req, &a.session);
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
    if (lm_admin_auth_setup(env, err, errlen) != 0)
        return -1;
    warn_exposed(env);
    lm_admin_http_serve(htp, on_request, env);
    return 0;
}
