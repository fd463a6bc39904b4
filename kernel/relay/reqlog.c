/* reqlog.c - a request's request-log row (reqlog.h). No secret reaches it:
 * the request body stored is the canonical request (headers, and so
 * Authorization, are never part of it) and keys appear by id and name.
 * Thread: the relay's worker. */
#include "relay/reqlog.h"
#include "core/clock.h"
#include "core/log.h"
#include "relay/relay_int.h"
#include "store/reqlog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* [{"channel":"a","status":500,"ms":12}, ...] into out[outlen]. */
static void attempts_json(const lm_relay_t *r, char *out, size_t outlen)
{
    const lm_trace_t *t = &r->trace;
    size_t off = 0;
    out[off++] = '[';
    for (int i = 0; i < t->natt && off + 200 < outlen; i++) {
        const lm_trace_att_t *a = &t->att[i];
        json_t *ch = json_string(a->route ? a->route->inst->chan->name : "");
        char *name = ch ? json_dumps(ch, JSON_ENCODE_ANY) : NULL; /* quoted and escaped */
        json_decref(ch);
        int n = snprintf(out + off, outlen - off, "%s{\"channel\":%.64s,\"status\":%d,\"ms\":%lld}",
                         i ? "," : "", name ? name : "\"\"", a->status,
                         (long long)((a->end_ns - a->start_ns) / 1000000));
        free(name);
        if (n < 0 || (size_t)n >= outlen - off)
            break;
        off += (size_t)n;
    }
    out[off++] = ']';
    out[off] = '\0';
}

void lm_reqlog_record(lm_relay_t *r)
{
    const lm_trace_t *t = &r->trace;
    char att[1024];
    attempts_json(r, att, sizeof(att) - 2);
    lm_usage u = r->st_init ? r->st.emit.usage : r->usage;
    char *req_body = NULL;
    if (t->bodies > 0 && r->canon)
        req_body = json_dumps(r->canon, JSON_COMPACT);
    char *resp_body = t->bodies > 0 && t->answer.len ? strndup(t->answer.p, t->answer.len) : NULL;
    lm_reqlog_row_t row = {.request_id = r->id,
                           .key_id = r->gov.key ? r->gov.key->id : 0,
                           .key_name = r->gov.key_name,
                           .model_asked = r->client_model,
                           .model_served = r->route ? r->upstream_model : "",
                           .channel = r->route ? r->route->inst->chan->name : "",
                           .api = r->api->name,
                           .finish_reason = t->finish,
                           .error_code = t->error_code[0]  ? t->error_code
                                         : r->stream_error ? r->st.err.code
                                                           : "",
                           .attempts_json = att,
                           .status = r->client_status,
                           .latency_ms = (int64_t)((uint64_t)lm_clock_ms() - r->t_start_ms),
                           .ttft_ms = r->ttft_ms > 0 ? r->ttft_ms : 0,
                           .prompt_tokens = u.prompt > 0 ? u.prompt : 0,
                           .completion_tokens = u.completion > 0 ? u.completion : 0,
                           .cost = r->charge,
                           .stream = r->call.stream,
                           .request_body = req_body,
                           .response_body = resp_body};
    int rc = lm_store_reqlog_submit(r->w->svc->store, &row);
    if (rc != LM_STORE_OK)
        lm_log(LM_LOG_DEBUG, "%s: request log row dropped (%s)", r->id, lm_store_strerror(rc));
    free(req_body);
    free(resp_body);
}
