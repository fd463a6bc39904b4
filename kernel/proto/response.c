/* response.c - a whole (non-streamed) upstream answer through the plugin's
 * parse_response or map_error (response.h). Thread: the request's worker;
 * the client body it returns is the caller's to free(). */
#include "proto/response.h"

#include "core/b64.h"
#include "core/errors.h"
#include "lmjscan.h"
#include "plugin/plugin.h"
#include "proto/endpoint.h"

#include <stdlib.h>
#include <string.h>

static int map_error(lm_inst_t *inst, lm_call *call, int status, lm_str body, lm_err *e)
{
    const lm_provider *vt = &inst->plugin->vt;
    memset(e, 0, sizeof(*e));
    const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
    int mapped = vt->map_error ? vt->map_error(inst->istate, call, status, body, e) : LM_DECLINED;
    lm_plugin_leave(prev);
    if (mapped == LM_ERETRY && e->http_status != 0)
        return LM_ERETRY; /* a refused credential: the host refreshes it once */
    if (mapped != LM_OK || e->http_status == 0)
        lm_error_map_default(status, body, e);
    return LM_EUPSTREAM;
}

static int known(const lm_usage *u)
{
    return u->prompt >= 0 || u->completion >= 0 || u->total >= 0;
}

/* The one "usage" object of a non-stream answer. */
static int write_usage(json_t *out, int op, lm_usage *u)
{
    if (!known(u))
        lm_usage_from_openai(json_object_get(out, "usage"), u);
    if (op == LM_OP_EMBED && u->total < 0 && u->prompt >= 0)
        u->total = u->prompt;
    if (u->total < 0 && u->prompt >= 0 && u->completion >= 0)
        u->total = u->prompt + u->completion;
    if (!known(u)) { /* nothing reported: clients still read the object (billing estimates) */
        if (json_object_get(out, "usage") != NULL)
            return 0;
        lm_usage zero = {0, op == LM_OP_EMBED ? -1 : 0, 0, -1, -1};
        json_t *uj = op == LM_OP_EMBED
                         ? json_pack("{s:i,s:i}", "prompt_tokens", 0, "total_tokens", 0)
                         : lm_usage_to_openai(&zero);
        return uj ? json_object_set_new(out, "usage", uj) : -1;
    }
    json_t *uj =
        op == LM_OP_EMBED
            ? json_pack("{s:I,s:I}", "prompt_tokens", (json_int_t)(u->prompt > 0 ? u->prompt : 0),
                        "total_tokens", (json_int_t)(u->total > 0 ? u->total : 0))
            : lm_usage_to_openai(u);
    return uj ? json_object_set_new(out, "usage", uj) : -1;
}

/* A float array as base64 of little-endian float32 (a JSON string). */
static json_t *float32_b64(const json_t *arr)
{
    size_t n = json_array_size(arr), i;
    unsigned char *raw = malloc(n * 4 + 1);
    char *txt = malloc(LM_B64_LEN(n * 4) + 1);
    json_t *v, *s = NULL;
    if (raw == NULL || txt == NULL)
        goto out;
    json_array_foreach (arr, i, v) {
        float f = (float)json_number_value(v);
        uint32_t bits;
        memcpy(&bits, &f, 4);
        for (int k = 0; k < 4; k++)
            raw[i * 4 + (size_t)k] = (unsigned char)(bits >> (8 * k));
    }
    s = json_stringn(txt, lm_b64_encode(raw, n * 4, txt, 0));
out:
    free(raw);
    free(txt);
    return s;
}

static int encode_embeddings(json_t *out)
{
    size_t i;
    json_t *d;
    json_array_foreach (json_object_get(out, "data"), i, d) {
        json_t *emb = json_object_get(d, "embedding");
        if (!json_is_array(emb))
            continue; /* already text (an upstream that did it itself) */
        json_t *s = float32_b64(emb);
        if (s == NULL || json_object_set_new(d, "embedding", s) < 0)
            return -1;
    }
    return 0;
}

int lm_response_finish(json_t *out, int op, int want_base64, lm_usage *usage)
{
    if (op != LM_OP_CHAT && op != LM_OP_EMBED && op != LM_OP_COMPLETIONS) /* endpoint.h */
        return lm_endpoint_finish(out, op, usage);
    if (write_usage(out, op, usage) < 0)
        return -1;
    return op == LM_OP_EMBED && want_base64 ? encode_embeddings(out) : 0;
}

/* 1 when a pass-through body already says what the kernel would write:
 * no base64 to apply and a usage object with its total. Then its bytes go
 * out unchanged. Read with the scanner (no tree): the body must be one
 * valid JSON object, which the scanner checks in the same pass (a raw NUL,
 * which would cut the body short for a client, is refused too). -1 when
 * the body is not one JSON object. Unknown *usage is read from the body. */
static int verbatim_ok(lm_str body, int op, int want_base64, lm_usage *usage)
{
    lm_str u, total;
    long long t;
    int has = lm_jscan_get(body, "usage", &u);
    if (has < 0 || body.n == 0 || *body.p != '{')
        return -1;
    if (op == LM_OP_MODERATIONS || op == LM_OP_IMAGES)
        return 1;           /* their answers go out as the upstream wrote them */
    if (op == LM_OP_RERANK) /* results are sorted and usage written by the kernel */
        return 0;
    if (!known(usage) && has)
        lm_jscan_usage(u, usage);
    if (op == LM_OP_EMBED && want_base64)
        return 0;
    return has && u.p[0] == '{' && lm_jscan_get(u, "total_tokens", &total) == 1 &&
           lm_jscan_int(total, &t) == 0;
}

/* The kernel's writer on a translated answer, then its bytes. Steals out. */
static int dump_answer(json_t *out, int op, int want_base64, char **out_json, size_t *out_len,
                       lm_usage *usage, lm_err *e)
{
    if (lm_response_finish(out, op, want_base64, usage) < 0) {
        json_decref(out);
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    }
    /* json_dumps' bytes, written by lm_jdump at a fraction of the cost */
    if ((*out_json = lm_jdump(out, out_len)) == NULL &&
        (*out_json = json_dumps(out, JSON_COMPACT)) != NULL)
        *out_len = strlen(*out_json); /* Jansson's own text: a NUL is always escaped in it */
    json_decref(out);
    if (*out_json == NULL)
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    return LM_OK;
}

/* The verbatim answer: own's bytes handed over when the caller gave the
 * buffer that holds body (no copy of a body that may be megabytes), else a
 * copy. */
static int verbatim_out(lm_str body, lm_buf_t *own, char **out_json, size_t *out_len, lm_err *e)
{
    if (own != NULL && own->len == body.n && (*out_json = lm_buf_take(own, out_len)) != NULL)
        return LM_OK; /* lm_buf_cstr already ended it with a NUL */
    *out_json = malloc(body.n + 1);
    if (*out_json == NULL)
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    memcpy(*out_json, body.p, body.n);
    (*out_json)[body.n] = '\0';
    *out_len = body.n;
    return LM_OK;
}

static int translate(lm_inst_t *inst, lm_call *call, int status, lm_str body, lm_buf_t *own,
                     int want_base64, char **out_json, size_t *out_len, lm_usage *usage, lm_err *e)
{
    const lm_provider *vt = &inst->plugin->vt;
    json_t *out = NULL;

    *out_json = NULL;
    *out_len = 0;
    *usage = (lm_usage)LM_USAGE_UNKNOWN;
    if (status < 200 || status > 299)
        return map_error(inst, call, status, body, e);
    memset(e, 0, sizeof(*e));
    const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
    int rc = vt->parse_response(inst->istate, call, status, body, &out, usage, e);
    lm_plugin_leave(prev);
    if (rc < 0) {
        json_decref(out);
        if (e->http_status == 0)
            lm_error_set(e, rc, 502, "api_error", "upstream_error",
                         "the upstream response could not be translated");
        return rc;
    }
    if (rc == LM_PENDING) { /* 1.4: an asynchronous task to poll (relay/poll.h) */
        json_decref(out);
        if (call->stream || vt->poll_request == NULL)
            return lm_error_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                                "the provider answered with a task this gateway cannot poll");
        return LM_PENDING;
    }
    if (out == NULL) {
        /* Forwarded verbatim as application/json: it must be one JSON
         * object. gzip bytes, garbage or a raw NUL inside (which would cut
         * the body short) are the upstream's failure, not an answer. */
        int ok = verbatim_ok(body, call->op, want_base64, usage);
        if (ok < 0)
            return lm_error_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                                "the upstream answered with a body that is not a JSON object");
        if (ok)
            return verbatim_out(body, own, out_json, out_len, e);
        json_t *chk = json_loadb(body.p, body.n, 0, NULL);
        if (!json_is_object(chk)) { /* valid for the scanner, not for Jansson: a huge number */
            json_decref(chk);
            return lm_error_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                                "the upstream answered with a body that is not a JSON object");
        }
        out = chk; /* the kernel's writer has something to change */
    }
    return dump_answer(out, call->op, want_base64, out_json, out_len, usage, e);
}

int lm_response_poll(lm_inst_t *inst, lm_call *call, int status, lm_str body, char **out_json,
                     size_t *out_len, lm_usage *usage, int64_t *units, lm_err *e)
{
    const lm_provider *vt = &inst->plugin->vt;
    json_t *out = NULL;

    *out_json = NULL;
    *out_len = 0;
    *usage = (lm_usage)LM_USAGE_UNKNOWN;
    *units = -1;
    memset(e, 0, sizeof(*e));
    const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
    int rc = vt->poll_parse(inst->istate, call, status, body, &out, usage, e);
    lm_plugin_leave(prev);
    if (rc < 0 || rc == LM_PENDING || out == NULL) {
        json_decref(out);
        if (rc == LM_PENDING)
            return LM_PENDING;
        if (rc >= 0)
            rc = LM_EUPSTREAM; /* done without an answer: the plugin's bug, the client's 502 */
        if (e->http_status == 0)
            lm_error_set(e, rc, 502, "api_error", "upstream_task_failed",
                         "the upstream task's answer could not be read");
        return rc;
    }
    const json_t *data = json_object_get(out, "data");
    if (call->op == LM_OP_IMAGES && json_is_array(data)) /* what was delivered is billed */
        *units = (int64_t)json_array_size(data);
    return dump_answer(out, call->op, 0, out_json, out_len, usage, e);
}

int lm_response_translate(lm_inst_t *inst, lm_call *call, int status, lm_str body, int want_base64,
                          char **out_json, size_t *out_len, lm_usage *usage, lm_err *e)
{
    return translate(inst, call, status, body, NULL, want_base64, out_json, out_len, usage, e);
}

int lm_response_translate_buf(lm_inst_t *inst, lm_call *call, int status, lm_buf_t *body,
                              int want_base64, char **out_json, size_t *out_len, lm_usage *usage,
                              lm_err *e)
{
    lm_str b = {lm_buf_cstr(body), body->len};
    return translate(inst, call, status, b, body, want_base64, out_json, out_len, usage, e);
}
