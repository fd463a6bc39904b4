/*
 * gemini.h - what the gemini plugin's files share (internal; not installed).
 * gemini.c: config, errors and the provider table; gemini_request.c: the
 * upstream request (chat and embeddings); gemini_reply.c: answers and
 * streams. Functions here have hidden visibility (the plugin exports only
 * longmen_plugin_entry).
 */
#ifndef GEMINI_H
#define GEMINI_H

#include "lmsdk.h"

#define GM_MAX_CAND 8 /* Gemini's candidateCount limit */

typedef struct gm_inst {
    const lm_host_api *h;
    lm_str base_url; /* no trailing '/' */
    lm_str api_key;
} gm_inst;

/* Per request (owned by c->rstate): tool-call numbering across a stream. */
typedef struct gm_req {
    int ncalls;              /* ids call_<request id>_<k> handed out */
    int ntools[GM_MAX_CAND]; /* tool_calls index per candidate */
} gm_req;

int gm_build_request(void *ist, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e);
int gm_parse_response(void *ist, lm_call *c, int status, lm_str body, json_t **out, lm_usage *usage,
                      lm_err *e);
int gm_parse_event(void *ist, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e);
/* Fill e from a Google error object (status 0: take error.code); returns
 * LM_EUPSTREAM. */
int gm_google_error(const json_t *err, int status, lm_err *e);

#endif
