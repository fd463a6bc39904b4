/*
 * reqcheck.h - client request bodies: depth pre-scan, strict parse and
 * validation of the OpenAI fields the gateway relies on. Pure functions.
 */
#ifndef LM_REQCHECK_H
#define LM_REQCHECK_H
#include "longmen.h"

#define LM_JSON_MAX_DEPTH 64

/* 1 if the nesting of [ and { (outside strings) never exceeds max. */
int lm_reqcheck_depth_ok(const char *p, size_t n, int max);
/* Pre-scan, parse (duplicate keys rejected, invalid UTF-8 and \u0000
 * rejected) and require an object. Returns a new reference or NULL with e
 * filled (400). */
json_t *lm_reqcheck_parse(const char *p, size_t n, lm_err *e);
/* Validate a chat completion request; 0 or -1 with e filled (400). */
int lm_reqcheck_chat(const json_t *req, lm_err *e);
/* Validate an embeddings request. */
int lm_reqcheck_embed(const json_t *req, lm_err *e);
#endif
