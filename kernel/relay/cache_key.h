/*
 * cache_key.h - what makes two requests the same for the response cache:
 * the canonical request (after on_request: the model routes resolve, the
 * messages, tools, tool_choice, response_format and every other
 * parameter) without the fields that do not change the answer (stream,
 * stream_options, user), with the inbound API and the answer's form
 * (whole or stream) added; objects in key order, every value written with
 * a type tag and a length (nothing to escape, nothing ambiguous), the
 * bytes hashed with SHA-256.
 * Threads: any (pure functions).
 */
#ifndef LM_CACHE_KEY_H
#define LM_CACHE_KEY_H
#include "relay/cache_store.h"

#include <jansson.h>

/* The key of a request into out: 0, or -1 when out of memory (or nested
 * deeper than reqcheck allows). canon is not changed. */
int lm_cache_key(const json_t *canon, const char *api, int stream,
                 unsigned char out[LM_CACHE_KEY_LEN]);
/* 1 when the request asks for a reproducible answer: temperature 0. A
 * temperature > 0, or none (the providers' default is 1), counts only with
 * sampled (cache_sampled on). */
int lm_cache_key_deterministic(const json_t *canon, int sampled);
#endif
