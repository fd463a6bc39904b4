/*
 * ernie.h - what the files of the ernie plugin (Baidu ERNIE through the
 * legacy Qianfan v1 "wenxinworkshop" API, docs/wire-formats.md 2.1 and 9.2;
 * decisions in sdk/notes/ernie.md) share. One job per file:
 *   ernie.c         the provider table, channel config, build_request
 *   ernie_auth.c    the OAuth access token (ABI 1.1 side value), v1 errors
 *   ernie_chat.c    the chat request body (messages, parameters, functions)
 *   ernie_resp.c    whole chat answers, finish reasons, non-2xx bodies
 *   ernie_stream.c  stream events
 *   ernie_embed.c   embeddings request and answer
 * Internal only: nothing here is exported from the .so.
 */
#ifndef ERNIE_H
#define ERNIE_H

#include "lmsdk.h"

#define EB1_SIDE "access_token"

/* Per channel; read-only after init (workers share it). */
typedef struct eb1_inst {
    const lm_host_api *h;
    void *ictx;
    char *base;       /* API root without a trailing '/' */
    char *token_url;  /* full OAuth URL; holds the secret: never log it */
    char *client_id;  /* kept only to scrub messages */
    char *client_sec; /* kept only to scrub messages */
} eb1_inst;

/* Per request (c->rstate, malloc'd); freed by req_close. */
typedef struct eb1_req {
    char *token; /* the access token this attempt sent (malloc'd) */
    int called;  /* stream: the function call went out (v1 has one per answer) */
} eb1_req;

/* A NUL-terminated malloc'd copy of s[0..n) (NULL on allocation failure). */
char *eb1_dup(const char *s, size_t n);
/* Append s percent-encoded (RFC 3986 unreserved characters kept). */
void eb1_buf_pct(lms_buf *b, const char *s, size_t n);
void eb1_debug(const eb1_inst *in, const char *what, const char *name);

/* ernie_auth.c */
int eb1_side_request(void *istate, const char *name, lm_ureq *u, lm_err *e);
int eb1_side_parse(void *istate, const char *name, int status, lm_str body, char **value,
                   int64_t *ttl_s, lm_err *e);
/* Fill e from a v1, OAuth-style or OpenAI-style error body; http_status > 0
 * is the upstream's non-2xx status. Returns the v1 error_code (-1 for the
 * other shapes) when j is an error, 0 when it is not. */
json_int_t eb1_fill_error(const eb1_inst *in, const eb1_req *rs, const json_t *j, int http_status,
                          lm_err *e);
/* The return code for a body with error_code `code`: for a refused token
 * (110/111) the token is invalidated and, when `retry`, LM_ERETRY. */
int eb1_refusal(const eb1_inst *in, const eb1_req *rs, json_int_t code, int retry);

/* ernie_chat.c: the v1 chat body for canon (*out, new); < 0 with e filled. */
int eb1_chat_body(const eb1_inst *in, const lm_call *c, const json_t *canon, json_t **out,
                  lm_err *e);

/* ernie_resp.c */
const char *eb1_finish(const json_t *j, int has_call);
int eb1_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                       lm_usage *usage, lm_err *e);
int eb1_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e);

/* ernie_stream.c */
int eb1_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e);

/* ernie_embed.c */
int eb1_embed_body(const json_t *canon, json_t **out, lm_err *e);
int eb1_parse_embed(const lm_call *c, const json_t *j, json_t **out, lm_usage *usage, lm_err *e);

#endif /* ERNIE_H */
