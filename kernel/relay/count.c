/* count.c - count_tokens: the upstream's count on a Claude channel, the
 * estimate elsewhere (count.h). Thread: the relay's worker. The transfer
 * (r->up) belongs to the pool until count_done. */
#include "relay/count.h"

#include "core/log.h"
#include "proto/inbound_pt.h"
#include "proto/msgs.h"
#include "relay/output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LM_COUNT_BODY_MAX (64u * 1024) /* an answer is {"input_tokens":N} */

static int reply_estimate(lm_relay_t *r)
{
    char out[64];
    snprintf(out, sizeof(out), "{\"input_tokens\":%lld}", (long long)r->prompt_est);
    lm_relay_to(r, LM_RELAY_DONE);
    r->client_status = 200;
    if (r->req)
        lm_http_reply(r->req, 200, "application/json", out, strlen(out), r->id);
    return 0;
}

static size_t count_data(void *arg, int status, int whole_json, const char *p, size_t n)
{
    lm_relay_t *r = arg;
    (void)whole_json;
    r->status = status;
    if (r->body.len + n <= LM_COUNT_BODY_MAX && lm_buf_add(&r->body, p, n) < 0)
        return 0;
    return n;
}

/* The upstream's count (2xx with an integer input_tokens) or its refusal
 * of the request (400, 404, 413: Anthropic's shape, passed on); anything
 * else (its key refused, limited, down) is the channel's trouble, not the
 * client's: the estimate answers. */
static void count_done(void *arg, int ok, int timeout, const char *why)
{
    lm_relay_t *r = arg;
    r->up = NULL;
    lm_relay_to(r, LM_RELAY_DONE);
    json_t *j = ok ? json_loadb(lm_buf_cstr(&r->body), r->body.len, 0, NULL) : NULL;
    int counted =
        r->status >= 200 && r->status < 300 && json_is_integer(json_object_get(j, "input_tokens"));
    int refused = (r->status == 400 || r->status == 404 || r->status == 413) &&
                  json_is_object(json_object_get(j, "error"));
    json_decref(j);
    if (r->req && (counted || refused)) {
        r->client_status = counted ? 200 : r->status;
        lm_out_route_header(r);
        lm_http_reply(r->req, r->client_status, "application/json", lm_buf_cstr(&r->body),
                      r->body.len, r->id);
    } else if (r->req) {
        lm_log(LM_LOG_INFO, "%s: count_tokens upstream on channel %s failed (%d%s%s); estimated",
               r->id, r->route->inst->chan->name, r->status, timeout ? ", timeout" : "",
               ok    ? ""
               : why ? why
                     : "");
        lm_out_route_header(r);
        reply_estimate(r);
    }
    lm_relay_maybe_free(r);
}

static const lm_upstream_sink_t count_sink = {count_data, count_done, NULL};

/* The plugin builds its Messages request (URL, auth headers) for a stub;
 * its path gets /count_tokens and the client's body replaces the stub's. */
static int start_upstream(lm_relay_t *r)
{
    const lm_route_t *route = r->route;
    const lm_provider *vt = &route->inst->plugin->vt;
    lm_err e;
    snprintf(r->upstream_model, sizeof(r->upstream_model), "%s", route->upstream);
    r->call = (lm_call){.hdr = LM_ABI_HDR(lm_call),
                        .op = LM_OP_CHAT,
                        .model = r->upstream_model,
                        .request_id = r->id};
    json_t *stub = json_pack("{s:s,s:i,s:[{s:s,s:s}]}", "model", r->upstream_model, "max_tokens", 1,
                             "messages", "role", "user", "content", "x");
    r->ureq.inst = route->inst;
    r->ureq.chan = route->inst->chan;
    r->call_open = 1; /* req_close at the relay's end */
    const lm_plugin_t *prev = lm_plugin_enter(route->inst->plugin);
    int rc = stub ? vt->build_request(route->inst->istate, &r->call, stub, &r->ureq, &e) : LM_ERR;
    lm_plugin_leave(prev);
    json_decref(stub);
    static const char path[] = "/v1/messages";
    const char *url = lm_buf_cstr(&r->ureq.url);
    size_t n = r->ureq.url.len, k = sizeof(path) - 1;
    if (rc < 0 || r->ureq.local_status || n < k || strcmp(url + n - k, path) != 0 ||
        lm_buf_adds(&r->ureq.url, "/count_tokens") < 0)
        return -1;
    lm_str body = lm_http_body(r->req);
    lm_buf_t nb = {0};
    if (lm_inpt_set_model(body.p, body.n, r->upstream_model, &nb) < 0) {
        lm_buf_free(&nb);
        return -1;
    }
    lm_buf_free(&r->ureq.body);
    r->ureq.body = nb;
    r->ureq.has_body = r->ureq.json_body = 1;
    char why[256];
    const lm_chan_conf_t *ch = route->inst->chan;
    r->up = lm_upstream_start(r->w->up, &r->ureq, ch->connect_timeout_ms, ch->first_byte_timeout_ms,
                              &count_sink, r, why, sizeof(why));
    if (r->up == NULL) {
        lm_log(LM_LOG_INFO, "%s: count_tokens upstream not started: %s", r->id, why);
        return -1;
    }
    lm_relay_to(r, LM_RELAY_UPSTREAM);
    return 0;
}

int lm_count_run(lm_relay_t *r)
{
    lm_str body = lm_http_body(r->req);
    char *model = NULL;
    lm_err e;
    if (lm_msgs_count_tokens(body.p, body.n, &r->prompt_est, &model, &e) < 0) {
        free(model);
        return lm_out_error(r, &e);
    }
    snprintf(r->client_model, sizeof(r->client_model), "%s", model);
    free(model);
    r->ncands = lm_rt_candidates(r->rt, r->client_model, r->cands, LM_MAX_CANDIDATES);
    if (r->ncands == 0) {
        lm_err_set(&e, -1, 404, "not_found_error", NULL,
                   "The model '%.128s' does not exist or you do not have access to it.",
                   r->client_model);
        return lm_out_error(r, &e);
    }
    r->route = &r->cands[0];
    const char *native = r->api->native_plugin;
    const char *plugin = r->route->inst->chan->plugin;
    if (native && plugin && strcmp(native, plugin) == 0 && start_upstream(r) == 0)
        return 0;
    return reply_estimate(r);
}
