/*
 * qwen.h - what the qwen plugin's files share (plugin-internal; hidden
 * visibility, so nothing here leaves the .so).
 */
#ifndef QWEN_H
#define QWEN_H

#include "lmsdk.h"

#include <stdio.h>

/* One channel; read-only after init. root and workspace are borrowed from
 * the channel config (valid for the instance's life); auth ("Bearer <key>")
 * lives in the same allocation and key points into it. */
typedef struct qw_inst {
    const lm_host_api *h;
    lm_str root;      /* base URL without a trailing / or /api/v1 */
    lm_str workspace; /* X-DashScope-WorkSpace, empty when unset */
    lm_str key;       /* NUL-terminated (the tail of auth): scrubbed from messages */
    char *auth;
    uint32_t task_timeout_ms; /* image_task_timeout: how long an image task may take */
} qw_inst;

/* One request (c->rstate, host->alloc'd, freed by req_close). */
typedef struct qw_req {
    int content_sent; /* stream: some delta reached the client (moderation then ends it) */
    char task_id[96]; /* images: DashScope's task id, polled until it answers */
} qw_req;

/* qwen.c */
int qw_is_inspection(const char *code);
int qw_fill_error(const qw_inst *in, const json_t *j, int status, lm_err *e);

/* qwen_req.c */
int qw_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e);

/* qwen_rerank.c (ABI 1.3: POST /v1/rerank on DashScope's text-rerank) */
int qw_build_rerank(const qw_inst *in, const char *model, const json_t *canon, lm_ureq *u,
                    lm_err *e);
int qw_parse_rerank(lm_call *c, const json_t *j, json_t **out, lm_usage *usage, lm_err *e);
/* qwen_image.c (ABI 1.4: POST /v1/images/generations on DashScope's
 * asynchronous image synthesis, polled by the kernel) */
int qw_image_size(const char *size, char *out, size_t n); /* "1024x1024" -> "1024*1024"; -1 */
int qw_build_image(const qw_inst *in, const char *model, const json_t *canon, lm_ureq *u,
                   lm_err *e);
int qw_parse_image(const qw_inst *in, lm_call *c, const json_t *j, json_t **out, lm_err *e);
int qw_poll_request(void *istate, lm_call *c, lm_ureq *u, lm_err *e);
int qw_poll_parse(void *istate, lm_call *c, int status, lm_str body, json_t **out, lm_usage *usage,
                  lm_err *e);
/* qwen_req.c: headers, URL (root + path) and body (stolen) of an upstream call */
int qw_send(const qw_inst *in, lm_ureq *u, const char *path, int stream, json_t *body, lm_err *e);

/* qwen_resp.c */
int qw_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                      lm_usage *usage, lm_err *e);
int qw_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e);

#endif
