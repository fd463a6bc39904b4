/*
 * claude.h - what the claude plugin's files share (internal; not installed).
 * claude.c: config, errors and the provider table; claude_request.c: the
 * Messages request; claude_reply.c: answers and streams. Functions here have
 * hidden visibility (the plugin exports only longmen_plugin_entry).
 */
#ifndef CLAUDE_H
#define CLAUDE_H

#include "lmsdk.h"

typedef struct cl_inst {
    const lm_host_api *h;
    lm_str base_url; /* no trailing '/' */
    lm_str api_key;
    lm_str version;
    lm_str beta; /* n == 0: not sent */
    int64_t max_tokens_default;
} cl_inst;

/* What a stream remembers of each Anthropic content block. */
enum { CL_OTHER = 0, CL_TEXT, CL_TOOL, CL_THINK };
typedef struct cl_block {
    int kind;
    int tool;     /* OpenAI tool_calls index (CL_TOOL) */
    int has_args; /* an argument fragment was emitted (CL_TOOL) */
} cl_block;

/* Per request (c->rstate, host memory, freed by req_close). */
typedef struct cl_req {
    int ntools;       /* tool_use blocks seen */
    cl_block *blocks; /* by Anthropic block index */
    size_t nblocks;
    int64_t in, cache_create, cache_read, out; /* token counts, -1 = unknown */
} cl_req;

int cl_build_request(void *ist, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e);
int cl_parse_response(void *ist, lm_call *c, int status, lm_str body, json_t **out, lm_usage *usage,
                      lm_err *e);
int cl_parse_event(void *ist, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e);
/* Fill e for an Anthropic error type and/or HTTP status (0: in-stream);
 * returns LM_EUPSTREAM. */
int cl_error(const char *atype, int status, const char *msg, lm_err *e);

#endif
