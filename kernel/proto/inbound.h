/*
 * inbound.h - the client-facing APIs the gateway speaks (inbound APIs), as
 * one table each. The kernel runs every request in the canonical form
 * (an OpenAI chat request in, canonical chat.completion / .chunk out, see
 * docs/architecture.md); an inbound API only translates at the two edges:
 *
 *   client body --request--> canonical chat request (json)
 *   canonical chat.completion text + usage --answer--> the API's body
 *   each canonical chunk --stream_chunk--> the API's SSE events,
 *   and the end (usage, or an error) --stream_end--> its last events
 *   an error (lm_err) --error--> the API's error body and status
 *
 * Everything between (keys, limits, Lua stages, routing, retries, health,
 * billing, the ledger, metrics, the access log) is the same code for every
 * API. The chat completions API is the identity: all its hooks are NULL and
 * the relay does no extra work for it. To add an API: write its table in
 * new files (e.g. proto/foo_*.c), give it an LM_API_* id below and an entry
 * in inbound.c, and a body route in server/routes.c with
 * LM_INBOUND_TAG(op, id).
 *
 * Thread: every hook runs on the request's worker and must not block. The
 * tables are static and shared; per-request stream state is the hook's own.
 */
#ifndef LM_INBOUND_H
#define LM_INBOUND_H
#include "core/buf.h"
#include "longmen.h"

/* The inbound APIs. Numbers are only used inside one process. */
enum {
    LM_API_CHAT = 0,      /* /v1/chat/completions and /v1/embeddings: identity */
    LM_API_MESSAGES = 1,  /* /v1/messages: Anthropic Messages (proto/msgs.h) */
    LM_API_RESPONSES = 2, /* /v1/responses: OpenAI Responses (proto/responses.h) */
    /* 1.3 endpoints: identity like chat (the body goes to the plugin as it
     * is), named apart for Lua's req.api, the ledger and the access log */
    LM_API_RERANK = 3,      /* /v1/rerank */
    LM_API_MODERATIONS = 4, /* /v1/moderations */
    LM_API_IMAGES = 5,      /* /v1/images/generations */
    LM_API_COMPLETIONS = 6, /* /v1/completions through chat (proto/completions.h) */
    LM_API_AUDIO = 7,       /* /v1/audio/...: identity, the relay's audio.h reads the body */
    LM_API_COUNT = 8        /* room for more (the table in inbound.c is sparse) */
};

/* A body route's tag carries the operation and the inbound API. */
#define LM_INBOUND_TAG(op, api) ((op) | ((api) << 8))
#define LM_INBOUND_OP(tag)      ((tag)&0xff)
#define LM_INBOUND_API(tag)     (((tag) >> 8) & 0xff)

typedef struct lm_inbound_s {
    /* "chat", "messages", "responses": what Lua sees as req.api, the ledger's api column
     * and the access log's api= field. Static. */
    const char *name;
    /* A request header that may carry the gateway key when Authorization
     * is absent (sent as a bearer token), or NULL. */
    const char *key_header;
    /* The client body -> the canonical chat request (new reference), or
     * NULL with e filled (a 400 naming the field in the API's terms). The
     * kernel's own request checks run on the result as for chat. */
    json_t *(*request)(const char *body, size_t n, lm_err *e);
    /* A whole canonical chat.completion (JSON text, n bytes) whose usage
     * is u -> the API's body (new, free(); *out_len set), or NULL on no
     * memory. */
    char *(*answer)(const char *json, size_t n, const lm_usage *u, size_t *out_len);
    /* Stream state for one attempt (new; freed by stream_free), or NULL on
     * no memory. model: what the client asked for (copied). */
    void *(*stream_new)(const char *model, const char *request_id);
    /* One canonical chunk (JSON text) -> SSE bytes appended to out. 0, or
     * -1 on no memory. */
    int (*stream_chunk)(void *st, const char *json, size_t n, lm_buf_t *out);
    /* The stream's end: e NULL for a clean end (u: what was reported, -1
     * unknown), else the error to send as the API's error event. 0 or -1. */
    int (*stream_end)(void *st, const lm_usage *u, const lm_err *e, lm_buf_t *out);
    void (*stream_free)(void *st);
    /* e -> the API's error body (new, free(); never NULL) and the HTTP
     * status it is sent with (*status). NULL hook: OpenAI's shape. */
    char *(*error)(const lm_err *e, int *status);
    /* The plugin whose upstream speaks this API itself ("claude" for
     * Messages), or NULL: on its channels the body passes through
     * (relay/passthru.h). A channel's `passthrough <api>` setting says the
     * same for its own upstream. Static. */
    const char *native_plugin;
    /* When request refused the body (400): a canonical stand-in for what
     * only the native API takes, or NULL with e. A request served from it
     * must pass through (NULL hook: the refusal stands). */
    json_t *(*request_native)(const char *body, size_t n, lm_err *e);
    /* 1: stream_end gets u only when the client asked for usage
     * (stream_options.include_usage), else NULL; 0: always. */
    int usage_if_asked;
} lm_inbound_t;

/* The table of API id (LM_API_*); the chat table for an unknown id.
 * Borrowed, static. */
const lm_inbound_t *lm_inbound_get(int id);
/* 1 when api is the identity (chat completions): no hook to call. */
static inline int lm_inbound_is_chat(const lm_inbound_t *api)
{
    return api->request == NULL;
}
#endif
