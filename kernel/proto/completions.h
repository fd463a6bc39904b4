/*
 * completions.h - POST /v1/completions (OpenAI's legacy text completions)
 * through the chat path, as an inbound API (inbound.h). The mapping
 * (docs/endpoints.md):
 *   prompt (a string, or an array of one string) -> one user message;
 *   max_tokens, temperature, top_p, stop, n, presence_penalty,
 *   frequency_penalty, seed, user, logit_bias, stream, stream_options kept
 *   as they are (stream_options.include_usage: a last chunk with usage);
 *   echo, best_of > 1, suffix and logprobs are refused (400 naming them);
 *   the answer's choices[].message.content -> choices[].text, object
 *   "text_completion"; each stream chunk's delta.content -> choices[].text.
 * Thread: the request's worker. Pure translators.
 */
#ifndef LM_COMPLETIONS_H
#define LM_COMPLETIONS_H
#include "core/buf.h"
#include "longmen.h"

/* The inbound table (inbound.h); declared without it to keep the modules apart. */
extern const struct lm_inbound_s lm_cmpl_api;

/* The client body -> the canonical chat request (new), or NULL with e
 * filled (400 naming the field). */
json_t *lm_cmpl_request(const char *body, size_t n, lm_err *e);
/* A body lm_cmpl_request refused for what only an upstream serving
 * /v1/completions itself takes (echo, suffix, logprobs, best_of, several or
 * token prompts) -> a canonical stand-in (new: those fields left out, the
 * prompts joined by newlines, a token prompt as "[tokens]") for routing,
 * limits and scripts; the request is then served only by a channel with
 * `passthrough completions` (relay/passthru.h). NULL with e otherwise. */
json_t *lm_cmpl_request_native(const char *body, size_t n, lm_err *e);
/* A canonical chat.completion (JSON text) with usage u -> the
 * text_completion body (new, free(); *out_len set), or NULL on no memory. */
char *lm_cmpl_answer(const char *json, size_t n, const lm_usage *u, size_t *out_len);
/* One canonical chunk -> a text_completion chunk as an SSE event appended
 * to out (nothing for a chunk without text or finish). 0, or -1. */
int lm_cmpl_stream_chunk(const char *json, size_t n, lm_buf_t *out);
/* The usage chunk of a stream (include_usage): a text_completion chunk with
 * id, created and model (NULL: "cmpl", 0, ""), no choices, and usage u,
 * appended to out as an SSE event. 0, or -1 on no memory. */
int lm_cmpl_usage_chunk(const char *id, int64_t created, const char *model, const lm_usage *u,
                        lm_buf_t *out);
#endif
