/*
 * ollama.h - what the ollama plugin's files share (plugin-internal; hidden
 * visibility, so nothing here leaves the .so).
 */
#ifndef OLLAMA_H
#define OLLAMA_H

#include "lmsdk.h"

#include <stdio.h>

/* One channel; read-only after init. base is borrowed from the channel
 * config (valid for the instance's life); auth ("Bearer <key>", or NULL
 * without api_key) lives in the same allocation. */
typedef struct ol_inst {
    const lm_host_api *h;
    lm_str base; /* without /api and without a trailing '/' */
    char *auth;
    size_t auth_n;
} ol_inst;

/* One request (c->rstate, host->alloc'd, freed by req_close). */
typedef struct ol_req {
    int ntools; /* stream: tool calls so far, their running index (Ollama's
                   function.index counts within one message only) */
} ol_req;

/* ollama.c: an Ollama error message with the HTTP status -> e. */
void ol_error(int status, const char *msg, lm_err *e);

/* ollama_req.c */
int ol_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e);

/* ollama_resp.c */
int ol_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                      lm_usage *usage, lm_err *e);
int ol_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e);

#endif
