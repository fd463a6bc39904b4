/* reply.c - an assistant message gathered from provider parts and the
 * chat.completion around its choices (lmsdk.h). */
#include "lmsdk.h"

#include <stdio.h>

void lms_reply_text(lms_reply *r, const char *s, size_t n, int thought)
{
    lms_buf_add(thought ? &r->think : &r->text, s, n);
    if (!thought)
        r->ntext++;
}

int lms_reply_call(lms_reply *r, json_t *call, lm_err *e)
{
    if (r->calls == NULL)
        r->calls = json_array();
    if (r->calls == NULL) {
        json_decref(call);
        return lms_oom(e);
    }
    return lms_aadd(r->calls, call) < 0 ? lms_oom(e) : LM_OK;
}

size_t lms_reply_ncalls(const lms_reply *r)
{
    return json_array_size(r->calls);
}

json_t *lms_reply_choice(const lms_reply *r, int index, const char *finish, lm_err *e)
{
    int null_content = r->ntext == 0 && lms_reply_ncalls(r) > 0;
    /* json_pack steals an "o" value even when it fails (or it is NULL). */
    json_t *msg = json_pack("{s:s,s:o}", "role", "assistant", "content",
                            null_content ? json_null() : lms_buf_json(&r->text));
    if (msg && r->think.n > 0 && lms_oset(msg, "reasoning_content", lms_buf_json(&r->think)) < 0)
        json_decref(msg), msg = NULL;
    if (msg && r->calls && json_object_set(msg, "tool_calls", r->calls) < 0)
        json_decref(msg), msg = NULL;
    json_t *c = json_pack("{s:i,s:o,s:n,s:s}", "index", index, "message", msg, "logprobs",
                          "finish_reason", finish ? finish : "stop");
    if (c == NULL)
        lms_oom(e);
    return c;
}

void lms_reply_free(lms_reply *r)
{
    lms_buf_free(&r->text);
    lms_buf_free(&r->think);
    json_decref(r->calls);
    *r = (lms_reply){0};
}

json_t *lms_completion(const lm_host_api *h, const lm_call *c, const char *id, const char *model,
                       json_t *choices, lm_err *e)
{
    char idbuf[160];
    snprintf(idbuf, sizeof(idbuf), "chatcmpl-%s",
             id ? id : (c && c->request_id ? c->request_id : "lm"));
    if (model == NULL)
        model = c && c->model ? c->model : "";
    json_t *r = json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", idbuf, "object", "chat.completion",
                          "created", (json_int_t)(LM_HOST_HAS(h, unix_time) ? h->unix_time() : 0),
                          "model", model, "choices", choices);
    if (r == NULL)
        lms_oom(e);
    return r;
}
