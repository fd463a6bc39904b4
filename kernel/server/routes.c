/* routes.c - the data-plane routes: chat, embeddings, Anthropic messages
 * and OpenAI responses handed to the relay (/v1/messages/count_tokens too),
 * /v1/models, /healthz, the default 404. Thread: the connection's worker;
 * replies are sent here, nothing is returned to own. */
#include "server/routes.h"

#include "core/clock.h"
#include "core/errors.h"
#include "gov/authguard.h"
#include "gov/gov.h"
#include "http/http.h"
#include "plugin/endpoints.h"
#include "proto/inbound.h"
#include "proto/msgs.h"
#include "relay/count.h"
#include "relay/relay.h"
#include "relay/rt.h"
#include "relay/services.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int require_method(lm_http_req_t *req, int m)
{
    if (lm_http_method(req) == m)
        return 1;
    lm_http_reply_simple(req, 405, "invalid_request_error", "method_not_allowed",
                         "method not allowed for this path");
    return 0;
}

/* The caller is anyone chat accepts: a config key or a usable virtual
 * key (lm_gov_auth, same errors), behind the same brute-force guard
 * (AU-4): a blocked address gets 429, a 401 counts as a failure. */
/* 1 when the caller's key is good; then *key is its virtual key (one
 * reference the caller drops with lm_key_release) or NULL for a config key. */
static int authorized(lm_http_req_t *req, const lm_relay_services_t *svc, const lm_rt_t *rt,
                      lm_key_t **key)
{
    lm_authguard_t *guard = svc->authguard;
    const struct sockaddr *peer = lm_http_peer(req);
    int64_t wait = lm_authguard_blocked(guard, peer, (int64_t)(uint64_t)lm_clock_ms());
    if (wait > 0) {
        char v[32];
        snprintf(v, sizeof(v), "%lld", (long long)wait);
        lm_http_add_header(req, "Retry-After", v);
        lm_http_reply_simple(req, 429, "rate_limit_error", "too_many_auth_failures",
                             "too many failed authentications from this address; retry later");
        return 0;
    }
    lm_gov_t g;
    lm_err e;
    int rc = lm_gov_auth(&g, rt->conf, svc->store, lm_http_header(req, "Authorization"), peer, &e);
    *key = rc == 0 ? g.key : NULL;
    g.key = NULL;      /* the caller's reference now */
    lm_gov_end(&g, 0); /* listing models books nothing */
    if (rc == 0)
        return 1;
    if (e.http_status == 401) {
        lm_authguard_fail(guard, peer, (int64_t)(uint64_t)lm_clock_ms());
        lm_shared_auth_fail(svc->shared, peer); /* every instance counts (docs/redis.md) */
    }
    lm_http_reply_error(req, &e, NULL);
    return 0;
}

/* The model list a key restricted to some models may see: only those. */
static void models_list_for(lm_http_req_t *req, const lm_rt_t *rt, const lm_key_t *key)
{
    json_t *all = json_loads(rt->models_json, 0, NULL), *keep = json_array(), *m;
    size_t i;
    char *body = NULL;
    if (all && keep) {
        json_array_foreach (json_object_get(all, "data"), i, m)
            if (lm_key_model_allowed(key, json_string_value(json_object_get(m, "id"))))
                json_array_append(keep, m);
        json_object_set(all, "data", keep);
        body = json_dumps(all, JSON_COMPACT);
    }
    json_decref(keep);
    json_decref(all);
    if (body)
        lm_http_reply(req, 200, "application/json", body, strlen(body), NULL);
    else
        lm_http_reply_simple(req, 500, "api_error", NULL, "out of memory");
    free(body);
}

static void models_reply(lm_http_req_t *req, const lm_rt_t *rt, const lm_key_t *key)
{
    const char *path = lm_http_path(req);
    int restricted = key && !lm_key_model_allowed(key, NULL); /* NULL: only an open key passes */
    if (strncmp(path, "/v1/models/", strlen("/v1/models/")) != 0) {
        if (restricted)
            models_list_for(req, rt, key);
        else
            lm_http_reply(req, 200, "application/json", rt->models_json, strlen(rt->models_json),
                          NULL);
        return;
    }
    const char *id = path + strlen("/v1/models/");
    const lm_route_t *route = lm_rt_route(rt, id);
    if (route == NULL || (restricted && !lm_key_model_allowed(key, id))) {
        lm_http_reply_simple(req, 404, "invalid_request_error", "model_not_found",
                             "The model does not exist or you do not have access to it.");
        return;
    }
    json_t *o = json_pack("{s:s,s:s,s:i,s:s,s:o*}", "id", id, "object", "model", "created", 0,
                          "owned_by", route->inst->chan->plugin, "endpoints",
                          lm_endpoints_json(lm_rt_model_endpoints(rt, id)));
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body)
        lm_http_reply(req, 200, "application/json", body, strlen(body), NULL);
    else
        lm_http_reply_simple(req, 500, "api_error", NULL, "out of memory");
    free(body);
}

static void route_models(lm_http_req_t *req, void *arg)
{
    const lm_relay_services_t *svc = arg;
    if (!require_method(req, LM_HTTP_GET))
        return;
    lm_rt_t *rt = svc->acquire_rt(svc->arg);
    lm_key_t *key = NULL;
    if (authorized(req, svc, rt, &key))
        models_reply(req, rt, key);
    if (key)
        lm_key_release(key);
    lm_rt_unref(rt);
}

static void route_health(lm_http_req_t *req, void *arg)
{
    (void)arg;
    static const char ok[] = "{\"status\":\"ok\"}";
    lm_http_reply(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

static void route_default(lm_http_req_t *req, void *arg)
{
    (void)arg;
    lm_http_reply_simple(req, 404, "invalid_request_error", "not_found", "unknown path");
}

/* ---- the relay routes: the front's per-request calls ---- */

static void relay_begin(lm_http_req_t *r, void *user, int op)
{
    (void)lm_relay_begin(r, user, op); /* it binds itself (lm_http_bind_relay) */
}

static int relay_body(void *ctx, size_t have, size_t n)
{
    return lm_relay_body(ctx, have, n);
}

static void relay_run(lm_http_req_t *r, void *ctx)
{
    lm_relay_run(ctx, lm_http_method(r) == LM_HTTP_POST);
}

static void relay_gone(void *ctx)
{
    lm_relay_client_gone(ctx);
}

static void relay_fini(void *ctx)
{
    lm_relay_client_fini(ctx);
}

static void relay_writable(void *ctx)
{
    lm_relay_client_writable(ctx);
}

void lm_routes_relay_calls(lm_http_calls_t *c)
{
    c->begin = relay_begin;
    c->body = relay_body;
    c->run = relay_run;
    c->gone = relay_gone;
    c->fini = relay_fini;
    c->writable = relay_writable;
}

int lm_routes_add(lm_http_front_t *f, const lm_relay_services_t *svc)
{
    if (lm_http_front_body_route(f, "/v1/chat/completions", LM_OP_CHAT) < 0 ||
        lm_http_front_body_route(f, "/v1/embeddings", LM_OP_EMBED) < 0 ||
        lm_http_front_body_route(f, "/v1/completions",
                                 LM_INBOUND_TAG(LM_OP_CHAT, LM_API_COMPLETIONS)) < 0 ||
        lm_http_front_body_route(f, "/v1/rerank", LM_INBOUND_TAG(LM_OP_RERANK, LM_API_RERANK)) <
            0 ||
        lm_http_front_body_route(f, "/v1/moderations",
                                 LM_INBOUND_TAG(LM_OP_MODERATIONS, LM_API_MODERATIONS)) < 0 ||
        lm_http_front_body_route(f, "/v1/images/generations",
                                 LM_INBOUND_TAG(LM_OP_IMAGES, LM_API_IMAGES)) < 0 ||
        lm_http_front_body_route(f, "/v1/audio/transcriptions",
                                 LM_INBOUND_TAG(LM_OP_AUDIO_TRANSCRIBE, LM_API_AUDIO)) < 0 ||
        lm_http_front_body_route(f, "/v1/audio/translations",
                                 LM_INBOUND_TAG(LM_OP_AUDIO_TRANSLATE, LM_API_AUDIO)) < 0 ||
        lm_http_front_body_route(f, "/v1/audio/speech",
                                 LM_INBOUND_TAG(LM_OP_AUDIO_SPEECH, LM_API_AUDIO)) < 0 ||
        lm_http_front_body_route(f, "/v1/responses", LM_INBOUND_TAG(LM_OP_CHAT, LM_API_RESPONSES)) <
            0 ||
        /* before /v1/messages: libevhtp takes the first path that matches */
        lm_http_front_body_route(f, "/v1/messages/count_tokens",
                                 LM_INBOUND_TAG(LM_OP_COUNT_TOKENS, LM_API_MESSAGES)) < 0 ||
        lm_http_front_body_route(f, "/v1/messages", LM_INBOUND_TAG(LM_OP_CHAT, LM_API_MESSAGES)) <
            0 ||
        lm_http_front_route(f, "/v1/models", route_models, (void *)svc) < 0 ||
        lm_http_front_route(f, "/v1/models/*", route_models, (void *)svc) < 0 ||
        lm_http_front_route(f, "/healthz", route_health, NULL) < 0 ||
        lm_http_front_route(f, NULL, route_default, NULL) < 0)
        return -1;
    return 0;
}
