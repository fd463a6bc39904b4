/*
 * qwen_image.c - POST /v1/images/generations on DashScope's asynchronous
 * image synthesis (wanx2.1-t2i-turbo, wanx-v1, qwen-image, ...), ABI 1.4:
 *   {model, prompt, n, size "1024x1024", negative_prompt?, seed?}
 *   -> POST /api/v1/services/aigc/text2image/image-synthesis with
 *      X-DashScope-Async: enable and
 *      {model, input{prompt, negative_prompt}, parameters{size "1024*1024", n, seed}}
 *   <- {output{task_id, task_status PENDING|RUNNING}}: LM_PENDING, the kernel polls
 *   -> GET /api/v1/tasks/{task_id} (same Authorization) until
 *   <- task_status SUCCEEDED: output.results[{url}] -> {created, data[{url}]}
 *      FAILED|UNKNOWN|CANCELED: 502 upstream_task_failed with DashScope's message.
 * The gateway does not fetch the image URLs, so response_format b64_json is a
 * 400 unsupported. Thread: a worker; the instance is read only.
 */
#include "qwen.h"

#include <stddef.h>
#include <string.h>

#define QW_PATH_IMAGE "/api/v1/services/aigc/text2image/image-synthesis"
#define QW_PATH_TASKS "/api/v1/tasks/"

int qw_image_size(const char *size, char *out, size_t n)
{
    size_t i = 0, w = 0, h = 0;
    if (size == NULL || n == 0)
        return -1;
    for (; size[i] >= '0' && size[i] <= '9'; i++)
        w++;
    if (w == 0 || w > 5 || (size[i] != 'x' && size[i] != 'X' && size[i] != '*'))
        return -1;
    for (i++; size[i] >= '0' && size[i] <= '9'; i++)
        h++;
    if (h == 0 || h > 5 || size[i] != '\0' || size[0] == '0' || size[w + 1] == '0')
        return -1;
    if ((size_t)snprintf(out, n, "%.*s*%s", (int)w, size, size + w + 1) >= n)
        return -1;
    return 0;
}

int qw_build_image(const qw_inst *in, const char *model, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const char *rf = lms_jstr(canon, "response_format"), *size = lms_jstr(canon, "size");
    const json_t *n = json_object_get(canon, "n"), *neg = json_object_get(canon, "negative_prompt"),
                 *seed = json_object_get(canon, "seed");
    char dsize[16];
    json_t *input, *params, *body;

    if (lms_streq(rf, "b64_json"))
        return lm_err_set(e, LM_ENOTSUP, 400, "invalid_request_error", "unsupported",
                          "response_format b64_json is not supported for this provider: "
                          "DashScope answers with image URLs (use \"url\")");
    if (size != NULL && qw_image_size(size, dsize, sizeof dsize) < 0)
        return lms_bad_request(e, "size must be WIDTHxHEIGHT, e.g. \"1024x1024\"");
    if (neg != NULL && !json_is_null(neg) && !json_is_string(neg))
        return lms_bad_request(e, "negative_prompt must be a string");
    input = json_pack("{s:O}", "prompt", json_object_get(canon, "prompt"));
    params = json_object();
    if (input == NULL || params == NULL ||
        (json_is_string(neg) && json_object_set(input, "negative_prompt", (json_t *)neg) < 0) ||
        (size != NULL && lms_oset(params, "size", json_string(dsize)) < 0) ||
        (json_is_integer(n) && json_object_set(params, "n", (json_t *)n) < 0) ||
        (json_is_integer(seed) && json_object_set(params, "seed", (json_t *)seed) < 0)) {
        json_decref(input);
        json_decref(params);
        return lms_oom(e);
    }
    body = json_pack("{s:s,s:o,s:o}", "model", model, "input", input, "parameters", params);
    if (body == NULL)
        return lms_oom(e);
    if (in->h->ureq_add_header(u, LM_STR("X-DashScope-Async"), LM_STR("enable")) < 0) {
        json_decref(body);
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "qwen: building the request failed");
    }
    return qw_send(in, u, QW_PATH_IMAGE, 0, body, e);
}

/* 1 when the host's lm_call has the 1.4 task fields (it can poll). */
static int host_polls(const lm_call *c)
{
    return c->hdr.size >= offsetof(lm_call, task_timeout_ms) + sizeof(c->task_timeout_ms);
}

/* A task id goes into a URL path: DashScope's are UUIDs. */
static int valid_task_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= sizeof(((qw_req *)0)->task_id))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
              (id[i] >= '0' && id[i] <= '9') || id[i] == '-' || id[i] == '_'))
            return 0;
    return 1;
}

/* output.task_status FAILED, UNKNOWN, CANCELED (or anything unknown). */
static int task_failed(const qw_inst *in, const json_t *o, const char *st, lm_err *e)
{
    const char *code = lms_jstr(o, "code"), *msg = lms_jstr(o, "message");
    lms_upstream_error(e, 502, "upstream_task_failed", "the upstream image task ended %s%s%s%s%s",
                       st ? st : "without a status", code ? ": " : "", code ? code : "",
                       msg ? ": " : "", msg ? msg : "");
    lms_scrub(e->msg, in->key.p);
    return LM_EUPSTREAM;
}

/* SUCCEEDED: the URLs of the images made ({code, message} entries are
 * images that failed; none made is a failed task). */
static int task_answer(const qw_inst *in, lm_call *c, const json_t *o, json_t **out, lm_err *e)
{
    const json_t *res = json_object_get(o, "results"), *v;
    json_t *data = json_array();
    size_t i;
    if (data == NULL)
        return lms_oom(e);
    json_array_foreach (res, i, v) {
        const char *url = lms_jstr(v, "url");
        if (url != NULL && lms_aadd(data, json_pack("{s:s}", "url", url)) < 0) {
            json_decref(data);
            return lms_oom(e);
        }
    }
    if (json_array_size(data) == 0) {
        json_decref(data);
        v = json_array_get(res, 0);
        return task_failed(in, json_is_object(v) ? v : o, "without an image", e);
    }
    *out = json_pack("{s:I,s:o}", "created", (json_int_t)in->h->unix_time(), "data", data);
    (void)c;
    return *out ? LM_OK : lms_oom(e);
}

/* The submit's answer and every poll's: the task's state. */
static int task_state(const qw_inst *in, lm_call *c, const json_t *j, json_t **out, lm_err *e)
{
    const json_t *o = json_object_get(j, "output");
    const char *st = lms_jstr(o, "task_status");
    if (lms_streq(st, "PENDING") || lms_streq(st, "RUNNING") || lms_streq(st, "SUSPENDED"))
        return LM_PENDING;
    if (lms_streq(st, "SUCCEEDED"))
        return task_answer(in, c, o, out, e);
    return task_failed(in, o, st, e);
}

int qw_parse_image(const qw_inst *in, lm_call *c, const json_t *j, json_t **out, lm_err *e)
{
    qw_req *rs = c->rstate;
    const char *id = lms_jstr(json_object_get(j, "output"), "task_id");
    if (!host_polls(c))
        return lm_err_set(e, LM_ENOTSUP, 502, "api_error", "upstream_error",
                          "this gateway cannot poll DashScope image tasks (ABI 1.4 needed)");
    if (!valid_task_id(id))
        return lms_bad_upstream(e, "an image task answer without a usable output.task_id");
    snprintf(rs->task_id, sizeof rs->task_id, "%s", id);
    c->task_timeout_ms = in->task_timeout_ms;
    return task_state(in, c, j, out, e);
}

int qw_poll_request(void *istate, lm_call *c, lm_ureq *u, lm_err *e)
{
    const qw_inst *in = istate;
    const lm_host_api *h = in->h;
    const qw_req *rs = c->rstate;
    char url[512];
    int len = snprintf(url, sizeof url, "%.*s%s%s", (int)in->root.n, in->root.p, QW_PATH_TASKS,
                       rs ? rs->task_id : "");
    if (rs == NULL || rs->task_id[0] == '\0' || len < 0 || (size_t)len >= sizeof url)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "qwen: no task to poll");
    if (h->ureq_set_method(u, "GET") < 0 || h->ureq_set_url(u, (lm_str){url, (size_t)len}) < 0 ||
        h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(in->auth)) < 0 ||
        (in->workspace.n > 0 &&
         h->ureq_add_header(u, LM_STR("X-DashScope-WorkSpace"), in->workspace) < 0))
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "qwen: building the task poll failed");
    return LM_OK;
}

int qw_poll_parse(void *istate, lm_call *c, int status, lm_str body, json_t **out, lm_usage *usage,
                  lm_err *e)
{
    const qw_inst *in = istate;
    json_t *j;
    int rc;
    (void)usage; /* images are billed per image by the kernel */
    *out = NULL;
    if (status == 429 || status >= 500)
        return LM_PENDING; /* the task runs on; a busy status endpoint is asked again */
    j = lms_parse_object(body, "the DashScope task status", e);
    if (j == NULL)
        return LM_EUPSTREAM;
    if (status < 200 || status > 299) /* the task is unknown there (404) or not ours */
        rc = task_failed(in, j, "unreadable (the task status was refused)", e);
    else
        rc = task_state(in, c, j, out, e);
    json_decref(j);
    return rc;
}
