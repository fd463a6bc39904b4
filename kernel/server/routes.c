/* routes.c - the data-plane routes that answer without a relay: models,
 * health, the default 404. Thread: the connection's worker. */
#include "server/routes.h"

#include "core/errors.h"
#include "gov/auth.h"
#include "http/http.h"
#include "relay/rt.h"
#include "server/server.h"

#include <evhtp/evhtp.h>
#include <stdlib.h>
#include <string.h>

static int require_method(evhtp_request_t *req, htp_method m)
{
    if (req->method == m)
        return 1;
    lm_http_reply_simple(req, 405, "invalid_request_error", "method_not_allowed",
                         "method not allowed for this path");
    return 0;
}

static int authorized(evhtp_request_t *req, const lm_rt_t *rt)
{
    if (lm_auth_check(rt->conf, lm_http_header(req, "Authorization")))
        return 1;
    lm_http_reply_simple(req, 401, "invalid_request_error", "invalid_api_key",
                         "missing or invalid API key (send Authorization: Bearer <key>)");
    return 0;
}

static void models_reply(evhtp_request_t *req, const lm_rt_t *rt)
{
    const char *path = req->uri && req->uri->path ? req->uri->path->full : "/v1/models";
    if (strcmp(path, "/v1/models") == 0) {
        lm_http_reply(req, 200, "application/json", rt->models_json, strlen(rt->models_json), NULL);
        return;
    }
    const char *id = path + strlen("/v1/models/");
    const lm_route_t *route = lm_rt_route(rt, id);
    if (route == NULL) {
        lm_http_reply_simple(req, 404, "invalid_request_error", "model_not_found",
                             "The model does not exist or you do not have access to it.");
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:i,s:s}", "id", id, "object", "model", "created", 0,
                          "owned_by", route->inst->chan->plugin);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body)
        lm_http_reply(req, 200, "application/json", body, strlen(body), NULL);
    else
        lm_http_reply_simple(req, 500, "api_error", NULL, "out of memory");
    free(body);
}

void lm_routes_models(evhtp_request_t *req, void *arg)
{
    lm_server_t *s = arg;
    if (!require_method(req, htp_method_GET))
        return;
    lm_rt_t *rt = lm_server_acquire_rt(s);
    if (authorized(req, rt))
        models_reply(req, rt);
    lm_rt_unref(rt);
}

void lm_routes_health(evhtp_request_t *req, void *arg)
{
    (void)arg;
    static const char ok[] = "{\"status\":\"ok\"}";
    lm_http_reply(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

void lm_routes_default(evhtp_request_t *req, void *arg)
{
    (void)arg;
    lm_http_reply_simple(req, 404, "invalid_request_error", "not_found", "unknown path");
}
