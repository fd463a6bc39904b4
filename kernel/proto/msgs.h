/*
 * msgs.h - the Anthropic Messages API (/v1/messages) as an inbound API
 * (proto/inbound.h): msgs_req.c translates the request, msgs_reply.c the
 * whole answer and errors, msgs_stream.c the stream. Pure translation;
 * thread: the request's worker. Returned text is the caller's to free().
 */
#ifndef LM_MSGS_H
#define LM_MSGS_H
#include "core/buf.h"
#include "longmen.h"

struct lm_inbound_s;
/* The table (msgs_reply.c); inbound.c lists it. Not including inbound.h
 * keeps the two modules free of a cycle. */
extern const struct lm_inbound_s lm_msgs_api;

/* msgs_req.c: a Messages request body -> a canonical chat request (new
 * reference), or NULL with e filled (400 naming the field, e.g.
 * "messages.1.content.0.source"). */
json_t *lm_msgs_request(const char *body, size_t n, lm_err *e);
/* inbound_native.c: the canonical stand-in of a request lm_msgs_request
 * refused for what only Anthropic takes (server tools, their calls and
 * results in history, PDF documents): those are dropped or replaced by a
 * placeholder, then translated. Only a channel that passes the client's
 * body through may serve it (relay/passthru.h). Same returns. */
json_t *lm_msgs_request_native(const char *body, size_t n, lm_err *e);
/* msgs_req.c: the gateway's estimate of a request's input tokens (UTF-8
 * bytes of system, messages and tools / 4, plus a little per message), for
 * count_tokens: 0 with *tokens and *model (new, free()) set, or -1 with e
 * filled (the 400s of lm_msgs_request; max_tokens is not required). */
int lm_msgs_count_tokens(const char *body, size_t n, int64_t *tokens, char **model, lm_err *e);

/* msgs_reply.c: the hooks of inbound.h (answer, error). The error body is
 * Anthropic's {"type":"error","error":{"type","message"}}; 503 goes out as
 * 529 overloaded_error. */
char *lm_msgs_answer(const char *json, size_t n, const lm_usage *u, size_t *out_len);
char *lm_msgs_error(const lm_err *e, int *status);
/* Anthropic's stop_reason for a canonical finish_reason (static). */
const char *lm_msgs_stop_reason(const char *finish);

/* msgs_stream.c: the stream hooks of inbound.h. Events: message_start and
 * a ping on the first chunk, then content_block_start / _delta (text_delta,
 * thinking_delta from reasoning_content, input_json_delta) / _stop, and at
 * the end message_delta (stop_reason, usage) and message_stop, or an error
 * event. */
void *lm_msgs_stream_new(const char *model, const char *request_id);
int lm_msgs_stream_chunk(void *st, const char *json, size_t n, lm_buf_t *out);
int lm_msgs_stream_end(void *st, const lm_usage *u, const lm_err *e, lm_buf_t *out);
void lm_msgs_stream_free(void *st);
#endif
