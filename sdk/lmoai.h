/*
 * lmoai.h - the OpenAI-compatible base for provider plugins (ABI 1.2).
 *
 * Many providers speak the OpenAI chat/embeddings wire format with a few
 * quirks (a renamed parameter, a model alias, a numeric error code in a 200
 * body, an extra finish reason). This base implements every provider
 * callback for such an API; a plugin describes only its quirks in one
 * static lmo_quirks and wires the base into its lm_provider table:
 *
 *     static const lmo_quirks q = {.flags = LMO_CLEAN, .finish = finish_map};
 *     static int acme_init(const lm_host_api *h, void *ictx, void **st, lm_err *e)
 *     {
 *         return lmo_init(&q, h, ictx, st, e);
 *     }
 *     static const lm_provider provider = {
 *         .hdr = LM_ABI_HDR(lm_provider), .name = "acme", .init = acme_init,
 *         LMO_CALLBACKS, ...
 *     };
 *
 * What the base does (see sdk/README.md, "The OpenAI-compatible base"):
 *   init      reads base_url and api_key (plus q->cfg_headers and the
 *             optional bool key stream_usage), builds <base><chat_path> and
 *             <base><embed_path> and "Authorization: Bearer <key>".
 *   build     copies the canonical request (or forwards call->raw_body
 *             untouched when the plugin has no request quirk), maps the
 *             model alias, renames/keeps parameters, asks for stream usage.
 *   response  a chat answer of a base without quirks (no LMO_CLEAN, fix or
 *             code_key) that is one object with a "choices" array and no
 *             "error" is read with the scanner (lmjscan.h) and left to the
 *             kernel to forward as it is (*out NULL, usage as the upstream
 *             wrote it); otherwise forwards with usage taken out or
 *             normalises; usage goes to *usage (the kernel writes it).
 *   event     OpenAI SSE chunks -> emit_raw first when the host has it
 *             (ABI 1.4) and no event quirk applies (no LMO_CLEAN, fix or
 *             code_key): the upstream's bytes go to the client when nothing
 *             in them must change; otherwise (and for what the host
 *             declines) emit_chunk, usage -> emit_usage (the usage-only
 *             chunk is never forwarded), [DONE] -> LM_DONE.
 *   map_error OpenAI {"error":{..}} bodies, provider numeric codes through
 *             q->codes, the channel key scrubbed from every message.
 *
 * Ownership: the instance (lmo_inst) and per-request state (lmo_req) belong
 * to the base; hooks borrow them. Hooks run on worker threads and must only
 * read the instance. Thread: as longmen.h.
 */
#ifndef LMOAI_H
#define LMOAI_H

#include "lmsdk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* lmo_quirks.flags */
enum {
    LMO_CLEAN = 1 << 0,         /* rebuild responses/chunks with the OpenAI members only */
    LMO_DEV_AS_SYSTEM = 1 << 1, /* role "developer" is sent as "system" */
    LMO_NULL_CONTENT = 1 << 2,  /* content null (or absent) is sent as "" */
    LMO_TEXT_ONLY = 1 << 3,     /* content is flattened to one string (lmsdk text rule) */
    LMO_STOP_ARRAY = 1 << 4,    /* a string stop is sent as [stop] */
    LMO_UPSTREAM_5XX = 1 << 5,  /* an upstream 5xx keeps its status and type (else 502 api_error,
                                   the kernel's default mapping) */
};

/* A provider's numeric error code range -> client status and code. */
typedef struct lmo_code {
    long long lo, hi;   /* inclusive range of the provider code */
    int status;         /* HTTP status the client gets */
    const char *code;   /* OpenAI "code"; NULL: the number as text */
    const char *finish; /* in a stream after content: end the choice with this
                           finish reason instead of failing (NULL: fail) */
} lmo_code;

#define LMO_MAX_HEADERS 4 /* q->cfg_headers entries read */

typedef struct lmo_inst lmo_inst;
typedef struct lmo_req lmo_req;

typedef struct lmo_quirks {
    unsigned flags;         /* LMO_* */
    const char *chat_path;  /* NULL: "/chat/completions" */
    const char *embed_path; /* NULL: "/embeddings" */
    /* Chat parameters sent upstream when either is set (else all are):
     * keep names them space-separated, params renames (to NULL: same name). */
    const char *keep;
    const lms_rename *params;
    const lms_rename *aliases;     /* model aliases, matched without case */
    const lms_rename *finish;      /* provider finish reasons before the OpenAI ones */
    const lms_rename *cfg_headers; /* config key -> upstream header, sent when set */
    /* Numeric error codes: a body (200 or not, or a stream chunk) whose
     * member code_key is a non-zero integer is an error; msg_key is its
     * message; a code outside the table gets status other_status. */
    const char *code_key, *msg_key;
    const lmo_code *codes;
    int other_status;
    /* Hooks (all optional). init: read more config or choose a base URL
     * when base_url is unset (*base empty). request: rewrite the upstream
     * body the base built. fix: adjust an upstream response or stream chunk
     * (root, mutable) before the base normalises it; `stream` says which. */
    int (*init)(lmo_inst *in, lm_str *base, lm_err *e);
    int (*request)(const lmo_inst *in, lm_call *c, const json_t *canon, json_t *body, lm_err *e);
    void (*fix)(const lmo_inst *in, lm_call *c, json_t *root, int stream);
} lmo_quirks;

/* Per channel; read-only after init. */
struct lmo_inst {
    const lm_host_api *h;
    void *ictx;
    const lmo_quirks *q;
    char *chat_url, *embed_url;
    char *auth;                  /* "Bearer <key>" or NULL */
    const char *key;             /* the key inside auth, for scrubbing */
    int stream_usage;            /* ask the upstream for stream usage (default 1) */
    lm_str hdr[LMO_MAX_HEADERS]; /* q->cfg_headers values (borrowed config), empty when unset */
    char *base;                  /* the API root without a trailing '/' (ABI 1.3 endpoints) */
    int native_completions;      /* channel setting `completions native`: LM_OP_COMPLETIONS
                                    goes to <base>/completions (else it is sent as chat) */
};

/* Per request (c->rstate). */
struct lmo_req {
    int op;
    int emitted;      /* stream: content or a tool call reached the client */
    uint64_t tc_seen; /* stream: tool-call indexes (< 64) whose head was sent */
};

/* The provider callbacks (init needs the quirks: call lmo_init from yours). */
int lmo_init(const lmo_quirks *q, const lm_host_api *h, void *ictx, void **istate, lm_err *e);
void lmo_fini(void *istate);
int lmo_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e);
int lmo_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                       lm_usage *usage, lm_err *e);
int lmo_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e);
int lmo_map_error(void *istate, lm_call *c, int status, lm_str body, lm_err *e);
void lmo_req_close(void *istate, lm_call *c);

/* The table fields every OpenAI-compatible plugin shares: SSE streams with
 * cumulative usage, and the base's callbacks. */
#define LMO_TABLE(nm, ver)                                                                         \
    .hdr = LM_ABI_HDR(lm_provider), .name = nm, .version = ver, .framing = LM_FRAME_SSE,           \
    .usage_mode = LM_USAGE_CUMULATIVE, LMO_CALLBACKS

/* The endpoints the base serves for any OpenAI-compatible API: chat,
 * embeddings and audio (<base>/audio/transcriptions, /audio/translations,
 * /audio/speech). A plugin adds the others its upstream has. */
#define LMO_ENDPOINTS (LM_EP_CHAT | LM_EP_EMBEDDINGS | LM_EP_AUDIO_TRANSCRIBE | LM_EP_AUDIO_SPEECH)

#define LMO_CALLBACKS                                                                              \
    .fini = lmo_fini, .build_request = lmo_build_request, .parse_response = lmo_parse_response,    \
    .parse_event = lmo_parse_event, .map_error = lmo_map_error, .req_close = lmo_req_close

/* ABI 1.3 endpoints (oai_endpoints.c): for an op other than chat and
 * embeddings, <base>/rerank, /moderations, /images/generations,
 * /completions or /audio/... (speech: JSON; the uploads: no body, the
 * kernel sends the client's form) with the client's body (model mapped); the answer is
 * forwarded with its usage read (rerank: usage.total_tokens, Cohere's
 * meta.billed_units, SiliconFlow's meta.tokens). A plugin opts in by
 * declaring the LM_EP_* bits in its table. */
int lmo_is_endpoint_op(int op);
/* The op this channel sends: LM_OP_COMPLETIONS without `completions native`
 * is sent as the chat request it already is (the kernel's mapping). */
int lmo_wire_op(const lmo_inst *in, const lm_call *c);
/* LM_OP_COMPLETIONS: the chat body's one user message becomes "prompt"
 * (other shapes: LM_ENOTSUP), and an upstream text_completion answer or
 * chunk (root, mutable) is rewritten as chat (text -> message/delta content). */
int lmo_completions_body(json_t *body, lm_err *e);
void lmo_completion_as_chat(json_t *root, int stream);
/* The upstream URL of op (new, host->free), or NULL on no memory. */
char *lmo_endpoint_url(const lmo_inst *in, int op);
int lmo_endpoint_response(lmo_inst *in, lm_call *c, lm_str body, json_t **out, lm_usage *usage,
                          lm_err *e);

/* Fill e from an error body j (status < 400: reported inside a 2xx body or
 * a stream, so 502 unless a code maps it). Returns 1 when j is an error. */
int lmo_error(const lmo_inst *in, const json_t *j, int status, lm_err *e);
/* An upstream finish reason as OpenAI's: q->finish first, then OpenAI's own
 * names (function_call -> tool_calls); unknown -> "stop"; "stop" after tool
 * calls -> "tool_calls"; NULL or "" -> NULL (still generating). */
const char *lmo_finish(const lmo_quirks *q, const char *reason, int had_tools);
/* The upstream model id for `model` after q->aliases (borrowed). */
const char *lmo_model(const lmo_quirks *q, const char *model);

#ifdef __cplusplus
}
#endif
#endif /* LMOAI_H */
