/* passthru.c - an inbound API's body to the channel that speaks it, and its
 * answer back, unchanged but for the model (passthru.h). Thread: the
 * relay's worker. r->pt belongs to the attempt (lm_attempt_reset frees). */
#include "relay/passthru.h"

#include "core/errors.h"
#include "proto/inbound_pt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LM_PT_EVENT_MAX (4u * 1024 * 1024) /* one upstream event, as the stream framer's cap */

struct lm_passthru_s {
    lm_inpt_reader_t rd;
    lm_buf_t pend;     /* upstream bytes of an event not complete yet */
    int err_forwarded; /* the upstream's own error event went to the client */
};

/* The channel speaks the client's API: its plugin is the API's native one,
 * or the operator said so (`passthrough responses`). Scripts that rewrote
 * the request, or read the answer (on_event, on_response: they see the
 * canonical form), get the translated path. */
static int wanted(const lm_relay_t *r)
{
    const lm_chan_conf_t *ch = r->route->inst->chan;
    if (r->req == NULL || lm_inbound_is_chat(r->api) || r->ureq.local_status || r->op != LM_OP_CHAT)
        return 0;
    if (!(r->api->native_plugin && ch->plugin && strcmp(ch->plugin, r->api->native_plugin) == 0) &&
        !(ch->passthrough && strcmp(ch->passthrough, r->api->name) == 0))
        return 0;
    /* completions: only what the chat path cannot serve (echo, suffix,
     * logprobs, best_of, several prompts) passes; the rest is translated,
     * so its usage and include_usage are the chat path's */
    if (r->api == lm_inbound_get(LM_API_COMPLETIONS) && !r->native_only)
        return 0;
    unsigned reads = LM_LUA_BIT(LM_LUA_STAGE_EVENT) | LM_LUA_BIT(LM_LUA_STAGE_RESPONSE);
    return !lm_rlua_request_changed(r->lua) && !(r->lua && (lm_lua_call_stages(r->lua) & reads));
}

/* Responses and completions: the OpenAI plugin built <base>/chat/completions
 * (or, `completions native`, <base>/completions: kept); the same root serves
 * /responses and /completions. Another path (a custom chat_path) is not
 * known to have one: 0, and the request is translated. */
static int native_url(lm_ureq_t *u, const char *path)
{
    static const char chat[] = "/chat/completions";
    const char *url = lm_buf_cstr(&u->url);
    size_t n = u->url.len, k = sizeof(chat) - 1;
    if (n < k || strcmp(url + n - k, chat) != 0)
        return !strcmp(path, "/completions") && n >= 12 && !strcmp(url + n - 12, "/completions");
    u->url.len = n - k;
    return lm_buf_adds(&u->url, path) == 0;
}

static int has_header(const lm_ureq_t *u, const char *name)
{
    size_t k = strlen(name);
    for (size_t i = 0; i < u->nheaders; i++)
        if (strncasecmp(u->headers[i], name, k) == 0 && u->headers[i][k] == ':')
            return 1;
    return 0;
}

/* Claude Code's beta features (interleaved thinking, ...) ride on the
 * client's anthropic-beta header; the channel's own setting wins. */
static int add_beta(lm_relay_t *r)
{
    const char *beta = lm_http_header(r->req, "anthropic-beta");
    if (beta == NULL || has_header(&r->ureq, "anthropic-beta") || strpbrk(beta, "\r\n"))
        return 0;
    size_t n = strlen(beta) + sizeof("anthropic-beta: ");
    char **nh = realloc(r->ureq.headers, (r->ureq.nheaders + 1) * sizeof(*nh));
    char *h = nh ? malloc(n) : NULL;
    if (nh)
        r->ureq.headers = nh;
    if (h == NULL)
        return -1;
    snprintf(h, n, "anthropic-beta: %s", beta);
    r->ureq.headers[r->ureq.nheaders++] = h;
    return 0;
}

int lm_passthru_prepare(lm_relay_t *r, lm_err *e)
{
    if (!wanted(r))
        return 0;
    int api = r->api == lm_inbound_get(LM_API_RESPONSES)     ? LM_API_RESPONSES
              : r->api == lm_inbound_get(LM_API_COMPLETIONS) ? LM_API_COMPLETIONS
                                                             : LM_API_MESSAGES;
    lm_str body = lm_http_body(r->req);
    lm_buf_t nb = {0};
    if (lm_inpt_set_model(body.p, body.n, r->upstream_model, &nb) < 0 ||
        (api == LM_API_RESPONSES && !native_url(&r->ureq, "/responses")) ||
        (api == LM_API_COMPLETIONS && !native_url(&r->ureq, "/completions"))) {
        lm_buf_free(&nb);
        return 0;
    }
    lm_passthru_t *pt = calloc(1, sizeof(*pt));
    if (pt == NULL || (api == LM_API_MESSAGES && add_beta(r) < 0)) {
        free(pt);
        lm_buf_free(&nb);
        return lm_error_set(e, -1, 500, "api_error", NULL, "out of memory");
    }
    lm_buf_free(&r->ureq.body);
    r->ureq.body = nb;
    r->ureq.has_body = 1;
    r->ureq.json_body = 1;
    lm_inpt_reader_init(&pt->rd, api);
    r->pt = pt;
    r->clamped[0] = '\0'; /* the client's values go as sent: nothing was clamped */
    return 1;
}

/* What settle bills and stream_done looks at, as lm_stream_t keeps it. */
static void publish(lm_relay_t *r)
{
    r->st.emit.usage = lm_inpt_reader_usage(&r->pt->rd);
    r->st.emit.content_chars = r->pt->rd.chars;
    r->st.emit.finish_seen = r->pt->rd.finished;
}

/* One complete event: read it, then forward it as it came (the upstream's
 * error event too: the client sees the provider's own words). */
static int one_event(lm_relay_t *r, const char *p, size_t n)
{
    int rc = lm_inpt_reader_event(&r->pt->rd, p, n, &r->st.err);
    if (lm_buf_add(&r->out, p, n) < 0)
        return lm_error_set(&r->st.err, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    if (rc < 0) {
        r->pt->err_forwarded = 1;
        r->st.failed = 1;
    }
    return rc;
}

int lm_passthru_feed(lm_relay_t *r, const char *p, size_t n)
{
    lm_passthru_t *pt = r->pt;
    if (pt->rd.done)
        return LM_DONE; /* bytes after the end marker */
    if (lm_buf_add(&pt->pend, p, n) < 0)
        return lm_error_set(&r->st.err, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    size_t off = 0, len;
    int rc = LM_OK;
    while (rc == LM_OK && (len = lm_inpt_event_len(pt->pend.p + off, pt->pend.len - off)) > 0) {
        rc = one_event(r, pt->pend.p + off, len);
        off += len;
    }
    lm_buf_consume(&pt->pend, off);
    publish(r);
    if (rc == LM_OK && pt->pend.len > LM_PT_EVENT_MAX)
        return lm_error_set(&r->st.err, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                            "upstream stream event too large");
    return rc;
}

int lm_passthru_finish(lm_relay_t *r)
{
    lm_passthru_t *pt = r->pt;
    int rc = LM_OK;
    if (!pt->rd.done && pt->pend.len > 0 && lm_buf_add(&pt->pend, "\n\n", 2) == 0) {
        rc = one_event(r, pt->pend.p, pt->pend.len - 2);
        lm_buf_reset(&pt->pend);
        publish(r);
    }
    return rc < 0 ? rc : pt->rd.done ? LM_DONE : LM_OK;
}

void lm_passthru_end(lm_relay_t *r, const lm_err *e)
{
    if (e == NULL || r->pt->err_forwarded)
        return;
    int status;
    char *body;
    if (r->pt->rd.api == LM_API_COMPLETIONS) { /* as chat streams end: error, [DONE] */
        body = lm_error_body(e);
        lm_buf_adds(&r->out, "data: ");
        lm_buf_adds(&r->out, body ? body : "{\"error\":{}}");
        lm_buf_adds(&r->out, "\n\ndata: [DONE]\n\n");
        free(body);
        return;
    }
    if (r->api->error) { /* Anthropic's error event carries its error body */
        body = r->api->error(e, &status);
    } else { /* Responses' "error" event */
        json_t *o = json_pack("{s:s,s:s,s:s,s:n}", "type", "error", "code",
                              e->code[0] ? e->code : "upstream_error", "message",
                              e->msg[0] ? e->msg : "error", "param");
        body = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
    }
    lm_buf_adds(&r->out, "event: error\ndata: ");
    lm_buf_adds(&r->out, body ? body : "{\"type\":\"error\"}");
    lm_buf_adds(&r->out, "\n\n");
    free(body);
}

int lm_passthru_whole(lm_relay_t *r, lm_str body, char **out, size_t *out_len, lm_usage *u,
                      lm_err *e)
{
    lm_inpt_reader_t rd;
    lm_inpt_reader_init(&rd, r->pt->rd.api);
    *out = NULL;
    if (lm_inpt_reader_whole(&rd, body.p, body.n) < 0)
        return lm_error_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                            "upstream answer is not in the API's shape");
    if ((*out = malloc(body.n + 1)) == NULL)
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    memcpy(*out, body.p, body.n);
    (*out)[body.n] = '\0';
    *out_len = body.n;
    *u = lm_inpt_reader_usage(&rd);
    return 0;
}

void lm_passthru_free(lm_relay_t *r)
{
    if (r->pt == NULL)
        return;
    lm_buf_free(&r->pt->pend);
    free(r->pt);
    r->pt = NULL;
}
