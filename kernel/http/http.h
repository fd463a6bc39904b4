/*
 * http.h - the HTTP front (libevhtp's only home). The relay talks to the
 * client through these calls; all of them run on the connection's worker
 * thread and are no-ops once the client is gone.
 */
#ifndef LM_HTTP_H
#define LM_HTTP_H
#include "longmen.h"

#include <stddef.h>

struct evhtp_request;
typedef struct evhtp_request lm_http_req_t;
struct sockaddr;

enum { LM_HTTP_GET = 1, LM_HTTP_POST, LM_HTTP_OTHER };

/* LM_HTTP_GET, LM_HTTP_POST or LM_HTTP_OTHER. */
int lm_http_method(lm_http_req_t *r);
/* The request path without the query (borrowed), never NULL. */
const char *lm_http_path(lm_http_req_t *r);
/* Request header value (borrowed) or NULL. */
const char *lm_http_header(lm_http_req_t *r, const char *name);
/* The client's socket address (borrowed), or NULL. */
const struct sockaddr *lm_http_peer(lm_http_req_t *r);
/* Add a response header before the reply is sent (copied). */
void lm_http_add_header(lm_http_req_t *r, const char *name, const char *value);
/* The buffered request body (borrowed, contiguous). A body with a
 * Content-Length arrived into one chunk reserved to it (front.c), so this
 * copies nothing; a chunked one is pulled up to one piece here. */
lm_str lm_http_body(lm_http_req_t *r);
/* A complete reply with a body. */
void lm_http_reply(lm_http_req_t *r, int status, const char *ctype, const char *body, size_t n,
                   const char *request_id);
void lm_http_reply_error(lm_http_req_t *r, const lm_err *e, const char *request_id);
/* An OpenAI error reply built from its parts (no request id). */
void lm_http_reply_simple(lm_http_req_t *r, int status, const char *type, const char *code,
                          const char *msg);
/* Move the buffered request body out of r without copying it (its memory
 * changes owner): *s views it, contiguous, until lm_http_body_free; r's
 * body is empty afterwards. NULL on no memory (then r keeps its body). */
typedef struct lm_http_body_s lm_http_body_t;
lm_http_body_t *lm_http_body_take(lm_http_req_t *r, lm_str *s);
void lm_http_body_free(lm_http_body_t *b);
/* Streaming: 200 text/event-stream, then chunks, then the end. */
void lm_http_stream_start(lm_http_req_t *r, const char *request_id);
/* The same with another Content-Type (a binary body relayed as it comes). */
void lm_http_stream_start_as(lm_http_req_t *r, const char *ctype, const char *request_id);
void lm_http_stream_write(lm_http_req_t *r, const char *p, size_t n);
void lm_http_stream_end(lm_http_req_t *r);
/* Bytes queued for the client and not yet written to the socket. */
size_t lm_http_out_pending(lm_http_req_t *r);
/* Tie the request's lifecycle to ctx (the relay; borrowed, it must live
 * until the fini call): body pieces, client errors, the request's end and
 * "output drained" go to the front's lm_http_calls_t with ctx (front.h). */
void lm_http_bind_relay(lm_http_req_t *r, void *ctx);
#endif
