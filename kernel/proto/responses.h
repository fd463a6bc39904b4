/*
 * responses.h - the OpenAI Responses API (POST /v1/responses, stateless) as
 * pure translators around the canonical chat form (docs/architecture.md):
 *
 *   responses_req.c     the request body -> a canonical chat request, and
 *                       the "echo" (what the response object repeats back)
 *   responses_input.c   `input` items -> chat messages
 *   responses_out.c     the response object; a whole canonical
 *                       chat.completion -> that object
 *   responses_stream.c  canonical chunks, one by one -> the Responses SSE
 *                       events (per-request state)
 *   responses_api.c     the inbound table the relay calls (proto/inbound.h)
 *
 * No I/O, no globals. Thread: the request's worker. Every json_t returned
 * is a new reference and every char * is the caller's to free(); inputs
 * are borrowed. Errors are 400s whose message names the field in the
 * Responses API's terms ("input[2].call_id is required").
 */
#ifndef LM_RESPONSES_H
#define LM_RESPONSES_H
#include "core/buf.h"
#include "longmen.h"

struct lm_inbound_s;
/* responses_api.c: the inbound table (proto/inbound.h) that inbound.c
 * lists. Not including inbound.h keeps the two modules free of a cycle. */
extern const struct lm_inbound_s lm_resp_api;

/* responses_req.c: a Responses request body -> a canonical chat request
 * (new reference), or NULL with e filled (400). When echo is not NULL,
 * *echo is set to a new object of the request fields the response object
 * repeats (instructions, tools, tool_choice, temperature, ...); pass it to
 * lm_resp_answer / lm_resp_stream_new. Stateful features (store: true,
 * previous_response_id, conversation, background), built-in tools and
 * inputs that need stored files are refused with a 400 naming them. */
json_t *lm_resp_request(const char *body, size_t n, json_t **echo, lm_err *e);
/* inbound_native.c: the canonical stand-in of a body lm_resp_request
 * refused for what only an upstream serving /responses takes (state,
 * built-in tools, include, reasoning): left out, then translated. Only a
 * pass-through attempt may serve it (relay/passthru.h). Same returns. */
json_t *lm_resp_request_native(const char *body, size_t n, lm_err *e);

/* responses_req.c: fill e as a 400 invalid_request_error with code and a
 * printf-style message. Returns -1. */
__attribute__((format(printf, 3, 4))) int lm_resp_bad(lm_err *e, const char *code, const char *fmt,
                                                      ...);

/* responses_input.c: append the chat messages of `input` (a string, or an
 * array of items) to the array msgs. 0, or -1 with e filled (400). */
int lm_resp_input(const json_t *input, json_t *msgs, lm_err *e);

/* responses_out.c: a response object with status "in_progress", output []
 * and usage null: id "resp_<base>", the echo's fields (defaults when echo
 * is NULL). New reference, or NULL on no memory. */
json_t *lm_resp_object(const char *base, int64_t created, const char *model, const json_t *echo);
/* The Responses usage object for u (unknown counts are 0). New. */
json_t *lm_resp_usage(const lm_usage *u);
/* Set status "completed", or "incomplete" with incomplete_details.reason
 * for finish "length" (max_output_tokens) and "content_filter". Returns 1
 * when the response is incomplete. */
int lm_resp_set_status(json_t *resp, const char *finish);
/* A whole canonical chat.completion (JSON text) whose usage is u (NULL:
 * read the answer's own usage) -> the response object as compact JSON
 * (new, free(); *out_len set), or NULL when the text is not a
 * chat.completion object or on no memory. */
char *lm_resp_answer(const char *json, size_t n, const lm_usage *u, const json_t *echo,
                     size_t *out_len);

/* responses_stream.c: one streamed response. */
typedef struct lm_resp_stream_s lm_resp_stream_t;
/* New state (free with lm_resp_stream_free), or NULL on no memory. model
 * and request_id are copied; echo is copied when not NULL. */
lm_resp_stream_t *lm_resp_stream_new(const char *model, const char *request_id, int64_t created,
                                     const json_t *echo);
/* One canonical chat.completion.chunk (JSON text): its events appended to
 * out as "event: <type>\ndata: <json>\n\n". Choices other than index 0,
 * and anything after the end, are ignored; text that is not a JSON object
 * is skipped. 0, or -1 on no memory. */
int lm_resp_stream_chunk(lm_resp_stream_t *st, const char *json, size_t n, lm_buf_t *out);
/* The stream's end. e NULL: a clean end, closing every open item and
 * ending with response.completed (or response.incomplete); u is the usage
 * reported (-1 unknown: the usage a chunk carried, if any). e not NULL:
 * response.failed carrying e. Only the first call writes. 0 or -1. */
int lm_resp_stream_end(lm_resp_stream_t *st, const lm_usage *u, const lm_err *e, lm_buf_t *out);
void lm_resp_stream_free(lm_resp_stream_t *st);
#endif
