/*
 * longmen.h - the Longmen provider plugin ABI.
 *
 * This header is the reference documentation for plugin authors. A provider
 * plugin is a shared object that exports exactly one symbol,
 * longmen_plugin_entry(), returning a static lm_provider table. The plugin is
 * a pure translator: it turns the canonical (OpenAI-shaped) request into an
 * upstream HTTP request description, and upstream bytes back into canonical
 * responses and stream chunks. The kernel does all I/O, splits stream frames,
 * merges usage, owns "data: [DONE]" and the client-facing error shape.
 *
 * VERSIONING
 *   LM_ABI_MAJOR changes only on a breaking change; the host refuses a plugin
 *   built for another major ("plugin X built for ABI a.b, host is c.d").
 *   LM_ABI_MINOR grows when fields are appended. Both tables begin with an
 *   lm_abi_hdr whose `size` is sizeof() of the table as the *builder* saw it:
 *     - the host reads a plugin field only if it lies inside hdr.size
 *       (missing fields count as NULL / 0);
 *     - a plugin calls a host function only if LM_HOST_HAS(host, fn).
 *   Append only: never reorder, never change a signature, never reuse a slot.
 *   New behaviour gets a new name (build_request2). See sdk/ABI.md.
 *
 * THREADING
 *   init and fini run on the control thread. Every other callback may run
 *   concurrently on any worker thread: istate is read-only after init (or
 *   locked by the plugin); lm_call and its rstate belong to one request on
 *   one thread. Callbacks must not block and must do no I/O of their own.
 *
 * OWNERSHIP
 *   Arguments are borrowed for the duration of the call (lm_str, const
 *   json_t *). Functions named *_set_json_* and emit_* STEAL the json_t
 *   reference they are given (even on error). Anything returned to the host
 *   is either a Jansson new reference or memory from host->alloc.
 *
 * BUILD
 *   cc -std=c11 -fPIC -shared -fvisibility=hidden -Wl,-z,defs foo.c -ljansson
 *   No constructors/destructors, atexit, threads, pthread keys or global
 *   library setters (json_set_alloc_funcs, curl_global_*). All state lives in
 *   istate/rstate: the host may keep the mapping after dlclose.
 */
#ifndef LONGMEN_H
#define LONGMEN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LM_ABI_MAJOR 1
#define LM_ABI_MINOR 4

#if defined(__GNUC__)
#define LM_EXPORT       __attribute__((visibility("default")))
#define LM_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define LM_EXPORT
#define LM_PRINTF(f, a)
#endif

/* A borrowed byte slice; not NUL-terminated unless stated. */
typedef struct lm_str {
    const char *p;
    size_t n;
} lm_str;

#define LM_STR(lit) ((lm_str){(lit), sizeof(lit) - 1})

typedef struct lm_abi_hdr {
    uint16_t major; /* LM_ABI_MAJOR the table was built with */
    uint16_t minor; /* LM_ABI_MINOR the table was built with */
    uint32_t size;  /* sizeof() the table as its builder saw it */
} lm_abi_hdr;

#define LM_ABI_HDR(type)                                                                           \
    {                                                                                              \
        LM_ABI_MAJOR, LM_ABI_MINOR, (uint32_t)sizeof(type)                                         \
    }

/* Return codes. >= 0 is success-like; < 0 is an error with lm_err filled. */
enum {
    LM_OK = 0,
    LM_AGAIN = 1,    /* reserved for LM_FRAME_RAW: need more bytes */
    LM_DECLINED = 2, /* not handled here; the host applies its default */
    LM_DONE = 3,     /* parse_event: the upstream stream is complete */
    /* 1.4 (async tasks): parse_response/poll_parse: the upstream accepted an
     * asynchronous task and the answer is not ready; the host waits
     * lm_call.task_poll_ms and calls poll_request/poll_parse. */
    LM_PENDING = 4,
    LM_ERR = -1,
    LM_ENOMEM = -2,
    LM_EINVAL = -3,    /* the client request cannot be translated (400) */
    LM_EUPSTREAM = -4, /* the upstream answered with an error */
    LM_ENOTSUP = -5,   /* operation not supported by this provider */
    /* 1.1: parse_response/map_error refused a side value (an expired OAuth
     * token) and invalidated it with side_invalidate: the host fetches a
     * fresh value and rebuilds this attempt, once. A second refusal counts
     * as LM_EUPSTREAM. e must be filled like LM_EUPSTREAM. */
    LM_ERETRY = -6
};

/*
 * Caller-owned error record with fixed buffers, so error paths never
 * allocate. Fill it with lm_err_set() from a plugin. http_status is what the
 * client sees; type and code follow the OpenAI error shape. Never put a
 * secret (key, token, signed URL) into msg.
 */
typedef struct lm_err {
    int http_status;
    char type[32];
    char code[48];
    char msg[256];
} lm_err;

/* Token counts; -1 means "not reported". */
typedef struct lm_usage {
    int64_t prompt;
    int64_t completion;
    int64_t total;
    int64_t cached;    /* prompt tokens served from cache */
    int64_t reasoning; /* completion tokens spent on reasoning */
} lm_usage;

#define LM_USAGE_UNKNOWN                                                                           \
    {                                                                                              \
        -1, -1, -1, -1, -1                                                                         \
    }

/* Capabilities (lm_provider.caps). */
#define LM_CAP_CHAT   (1u << 0)
#define LM_CAP_STREAM (1u << 1)
#define LM_CAP_EMBED  (1u << 2)
#define LM_CAP_TOOLS  (1u << 3)
#define LM_CAP_VISION (1u << 4)

/* Provider flags (lm_provider.flags, ABI 1.2). */
#define LM_PF_MULTI_CHOICE (1u << 0) /* accepts "n" > 1 (several choices per request) */

/*
 * A numeric request parameter's allowed range (ABI 1.2). The kernel clamps a
 * top-level number of the request into [min, max] before build_request and
 * says so in the x-longmen-clamped response header: a value below min
 * becomes min (so a provider whose range is (0, 1] declares min 0.01 and
 * temperature 0 is sent as 0.01, never dropped), above max becomes max.
 * The list ends with an entry whose name is NULL.
 */
typedef struct lm_param_range {
    const char *name; /* "temperature", "top_p", "presence_penalty", ... */
    double min, max;
} lm_param_range;

/* Stream framing the kernel splits for the plugin (lm_provider.framing). */
enum { LM_FRAME_SSE = 0, LM_FRAME_NDJSON = 1, LM_FRAME_RAW = 2 };

/* How emit_usage values combine (lm_provider.usage_mode). */
enum {
    LM_USAGE_CUMULATIVE = 0, /* each report is a running total: last known wins */
    LM_USAGE_DELTA = 1       /* each report is an increment: reports are summed */
};

/* Operations (lm_call.op). 1.3 adds the endpoint operations; the kernel
 * calls a plugin with one only when its lm_provider.endpoints declares the
 * endpoint, so older plugins never see them. Their canonical request is the
 * client's body (OpenAI's shape, or Cohere/Jina's for rerank, "model"
 * mapped); parse_response returns that endpoint's answer (see sdk/ABI.md). */
enum {
    LM_OP_CHAT = 1,
    LM_OP_EMBED = 2,
    LM_OP_COMPLETIONS = 3, /* 1.3: POST /v1/completions (legacy text completions) */
    LM_OP_RERANK = 4,      /* 1.3: POST /v1/rerank */
    LM_OP_MODERATIONS = 5, /* 1.3: POST /v1/moderations */
    LM_OP_IMAGES = 6,      /* 1.3: POST /v1/images/generations */
    /* 1.3 (constants, no layout change): audio. For the two upload ops the
     * canonical request is the form's text fields ("model" mapped, no file);
     * build_request sets the URL and headers only and the kernel sends the
     * client's multipart body itself, unchanged but for the model. The kernel
     * answers with the upstream's body and Content-Type (parse_response is
     * not called on a 2xx; map_error is). Speech's canon is OpenAI's JSON
     * body; its 2xx answer (binary audio) is streamed to the client. */
    LM_OP_AUDIO_TRANSCRIBE = 7, /* POST /v1/audio/transcriptions (multipart) */
    LM_OP_AUDIO_TRANSLATE = 8,  /* POST /v1/audio/translations (multipart) */
    LM_OP_AUDIO_SPEECH = 9      /* POST /v1/audio/speech (JSON in, audio out) */
};

/* Data-plane endpoints a provider serves (lm_provider.endpoints, ABI 1.3).
 * A table built for 1.0-1.2, or one that leaves endpoints 0, serves chat
 * (LM_CAP_CHAT) and embeddings (LM_CAP_EMBED) as before. /v1/completions is
 * served for every chat provider through the chat path (docs/endpoints.md);
 * LM_EP_COMPLETIONS declares the provider's own completions API. */
#define LM_EP_CHAT             (1u << 0)
#define LM_EP_EMBEDDINGS       (1u << 1)
#define LM_EP_COMPLETIONS      (1u << 2)
#define LM_EP_RERANK           (1u << 3)
#define LM_EP_MODERATIONS      (1u << 4)
#define LM_EP_IMAGES           (1u << 5)
#define LM_EP_AUDIO_TRANSCRIBE (1u << 6) /* transcriptions and translations */
#define LM_EP_AUDIO_SPEECH     (1u << 7) /* text to speech */

/* Log levels for host->log. */
enum { LM_LOG_ERROR = 0, LM_LOG_WARN = 1, LM_LOG_INFO = 2, LM_LOG_DEBUG = 3 };

/* Config key types (lm_cfg_key.type). */
enum { LM_CFG_STR = 0, LM_CFG_INT = 1, LM_CFG_BOOL = 2 };

/*
 * A configuration key the plugin understands in its channel block. The host
 * refuses a channel that sets an unknown key or omits a required one, naming
 * the file and line. The list ends with an entry whose name is NULL.
 */
typedef struct lm_cfg_key {
    const char *name;
    int type;
    int required;
    const char *dflt; /* textual default, or NULL */
    const char *help;
} lm_cfg_key;

/* Opaque host objects; only touched through host functions. */
typedef struct lm_ureq lm_ureq; /* upstream request being built */
typedef struct lm_emit lm_emit; /* sink for canonical stream chunks */

/*
 * One client request as the plugin sees it. Host-owned; valid from
 * build_request until req_close returns. Only `rstate` is written by the
 * plugin. Fields may be appended (check hdr.size before reading new ones).
 */
typedef struct lm_call {
    lm_abi_hdr hdr;
    int op;                 /* LM_OP_CHAT or LM_OP_EMBED */
    int stream;             /* 1 when the client asked for a stream */
    const char *model;      /* upstream model id after mapping (NUL-term.) */
    const char *request_id; /* gateway request id (NUL-term.) */
    void *rstate;           /* plugin-owned per-request state; freed by req_close */
    /* The client's request body exactly as received, set only while it is
     * identical in meaning to `canon` (no model mapping or rewrite), so a
     * pass-through plugin can forward it without re-serialising. Empty
     * otherwise. Borrowed; duplicate keys were already rejected. */
    lm_str raw_body;

    /* minor >= 4: append below this line, never above. */

    /* ---- 1.4: asynchronous tasks (see lm_provider.poll_request) ----
     * Written by the plugin in parse_response or poll_parse before it
     * returns LM_PENDING; a plugin writes them only when hdr.size covers
     * them (an older host cannot poll: answer an error instead).
     * task_poll_ms: wait before the next poll (0: the host's backoff,
     * 500 ms doubling to 4 s). task_timeout_ms: how long the task may take
     * from the first LM_PENDING (0: 120 s); past it the client gets a 504
     * upstream_task_timeout. */
    uint32_t task_poll_ms;
    uint32_t task_timeout_ms;
} lm_call;

/* One stream event after the host split the frames. Borrowed. */
typedef struct lm_event {
    lm_str event; /* SSE "event:" name (empty if none; always empty for NDJSON) */
    lm_str data;  /* SSE data lines joined with '\n', or one NDJSON line */
    lm_str id;    /* SSE "id:" (empty if none) */
} lm_event;

/*
 * The host table, passed to init. Valid until fini returns. `ictx` is the
 * host's handle for the plugin instance (one channel) and is what log and
 * cfg_* take.
 */
typedef struct lm_host_api {
    lm_abi_hdr hdr;

    /* Logging: prefixed with the channel name; never log secrets. */
    void (*log)(void *ictx, int level, const char *fmt, ...) LM_PRINTF(3, 4);
    int (*log_enabled)(void *ictx, int level);

    /* Memory that the host frees (or the plugin frees with host->free). */
    void *(*alloc)(size_t n);
    void *(*realloc)(void *p, size_t n);
    void (*free)(void *p);

    /* Channel configuration. out is borrowed for the instance's life.
     * Return LM_OK, or LM_DECLINED when the key is unset and has no default. */
    int (*cfg_str)(void *ictx, const char *key, lm_str *out);
    int (*cfg_int)(void *ictx, const char *key, int64_t *out);
    int (*cfg_bool)(void *ictx, const char *key, int *out);

    /* Clocks: monotonic milliseconds, and Unix wall-clock seconds. */
    uint64_t (*now_ms)(void);
    int64_t (*unix_time)(void);

    /* Upstream request builder (only inside build_request).
     * The method defaults to POST. Headers are appended in order; the host
     * adds Content-Type: application/json when a JSON body is set.
     * set_url takes an absolute http(s) URL. set_body copies; set_json_body
     * steals `body` and serialises it compactly. */
    int (*ureq_set_method)(lm_ureq *u, const char *method);
    int (*ureq_set_url)(lm_ureq *u, lm_str url);
    int (*ureq_add_header)(lm_ureq *u, lm_str name, lm_str value);
    int (*ureq_set_body)(lm_ureq *u, lm_str body);
    int (*ureq_set_json_body)(lm_ureq *u, json_t *body);

    /* Stream sink (only inside parse_event).
     * emit_chunk: a complete OpenAI chat.completion.chunk (steals). The host
     *   fills missing id/object/created/model and keeps them constant.
     * emit_delta: one choice delta; the host wraps it in a chunk. `delta`
     *   is stolen (NULL means {}); finish_reason is NULL or an OpenAI reason.
     * emit_usage: a usage report, merged per lm_provider.usage_mode. The
     *   host sends the client a usage chunk only if the client asked. */
    int (*emit_chunk)(lm_emit *e, json_t *chunk);
    int (*emit_delta)(lm_emit *e, int index, json_t *delta, const char *finish_reason);
    int (*emit_usage)(lm_emit *e, const lm_usage *u);

    /* Answer locally (only inside build_request): the host performs no I/O
     * and hands `body` (copied) with `status` to parse_response, or, for a
     * stream, to the frame splitter and parse_event, exactly as if the
     * upstream had sent it. For offline providers, fixtures and caches. */
    int (*ureq_local_response)(lm_ureq *u, int status, lm_str body);

    /* minor >= 1: append below this line, never above. */

    /* ---- 1.1: side values (credentials fetched over HTTP) ----
     * A provider whose requests need a value obtained by another HTTP call
     * (Baidu's OAuth access token, a signed session) names it and lets the
     * host fetch, cache and share it: plugins never do I/O.
     *
     * side_get (only inside build_request): the cached value of `name` for
     * this channel. Returns LM_OK with *out set (borrowed until build_request
     * returns: copy it), or LM_AGAIN when there is no usable value yet. The
     * plugin then returns LM_AGAIN from build_request; the host fetches the
     * value with lm_provider.side_request/side_parse (one fetch per channel
     * and name, shared by every request and worker waiting on it; no worker
     * blocks) and calls build_request again. A value past 90% of its life
     * is still returned while a fresh one is fetched in the background.
     * A failed fetch fails the waiting requests with the error side_parse
     * gave. `name` is [a-z0-9_], at most 31 bytes.
     *
     * side_invalidate (any callback): the upstream refused `used`, the value
     * this request sent. If it is still the cached value it is dropped, so
     * the next side_get fetches again; a value already refreshed by another
     * request is kept. Thread-safe. */
    int (*side_get)(lm_ureq *u, const char *name, lm_str *out);
    void (*side_invalidate)(void *ictx, const char *name, lm_str used);

    /* ---- 1.4: verbatim stream events (emit_raw) ----
     * emit_raw (only inside parse_event): `chunk` is the JSON text of one
     * upstream event that already is an OpenAI chat.completion.chunk. The
     * host sends the client these bytes as they are when its stream
     * bookkeeping needs no change to them: id, object, created and model
     * present, the assistant role on each choice's first delta, one
     * finish_reason per choice, no "error" member, no line break. A "usage"
     * member is read as lm_usage_from_json() reads it, reported as
     * emit_usage would, and cut out of the bytes (the kernel writes its own
     * usage chunk); a chunk with no choices is reported and not forwarded.
     * Returns LM_OK when the chunk was handled, LM_DECLINED when nothing
     * was done: the plugin then parses the event and calls emit_chunk as
     * before (so emit_raw is only ever a shortcut: a plugin must keep its
     * tree path for hosts without it and for declined chunks). < 0: the
     * client is gone. `chunk` is borrowed. */
    int (*emit_raw)(lm_emit *e, lm_str chunk);
} lm_host_api;

#define LM_HOST_HAS(h, fn)                                                                         \
    ((h) != NULL && offsetof(lm_host_api, fn) + sizeof((h)->fn) <= (h)->hdr.size && (h)->fn != NULL)

/*
 * The provider table: static const data in the plugin.
 *
 * Required: name, init, build_request, parse_response; parse_event when caps
 * has LM_CAP_STREAM. Optional (NULL): fini, list_models, map_error,
 * req_close.
 */
typedef struct lm_provider {
    lm_abi_hdr hdr;
    const char *name;           /* provider name, [a-z0-9_-]+ */
    const char *version;        /* plugin version, semver */
    uint32_t caps;              /* LM_CAP_* */
    int framing;                /* LM_FRAME_* for streamed responses */
    int usage_mode;             /* LM_USAGE_* */
    const lm_cfg_key *cfg_keys; /* NULL-name terminated; may be NULL */

    /* Create the instance state for one channel. Control thread.
     * On failure fill e and return < 0; *istate is then ignored. */
    int (*init)(const lm_host_api *h, void *ictx, void **istate, lm_err *e);

    /* Free the instance state. Control thread; called exactly once, after
     * the last request that used this instance has ended. */
    void (*fini)(void *istate);

    /* Models this channel serves when its config lists none: a new
     * reference to a JSON array of strings. */
    int (*list_models)(void *istate, json_t **out, lm_err *e);

    /* Describe the upstream request for `canon` (the OpenAI-shaped request
     * body, borrowed; "model" already mapped to the upstream id) through
     * host->ureq_*. Return LM_EINVAL with e filled for a request the
     * provider cannot take. For streams, ask the upstream for usage. */
    int (*build_request)(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e);

    /* Translate a complete 2xx upstream body. On success set *out to a new
     * reference to the OpenAI response object (chat.completion or the
     * embeddings list), or leave *out NULL to have the host forward `body`
     * unchanged (it is already OpenAI-shaped). Fill *usage when known.
     * A provider that reports errors with status 200 returns LM_EUPSTREAM
     * with e filled. */
    int (*parse_response)(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                          lm_usage *usage, lm_err *e);

    /* Translate one stream event into zero or more emit_* calls. Return
     * LM_OK to continue, LM_DONE when the upstream says the stream ended,
     * or LM_EUPSTREAM with e filled for an in-stream error. */
    int (*parse_event)(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e);

    /* Map a non-2xx upstream response to the client error. Return LM_OK
     * with e filled, or LM_DECLINED for the host's default mapping. */
    int (*map_error)(void *istate, lm_call *c, int status, lm_str body, lm_err *e);

    /* Free c->rstate. Called once per build_request, success or not. */
    void (*req_close)(void *istate, lm_call *c);

    /* minor >= 1: append below this line, never above. */

    /* ---- 1.1: side values (see lm_host_api.side_get) ----
     * side_request: describe the HTTP call that obtains `name`, through
     * host->ureq_* as in build_request (no ureq_local_response). Worker
     * thread; istate is shared, so only read it.
     * side_parse: read the answer (any status). On success set *value to
     * memory from host->alloc (the host frees it) and *ttl_s to its lifetime
     * in seconds (0: until invalidated). On failure fill e (the status and
     * message every waiting client gets; never a secret) and return < 0.
     * Both are required when build_request can return LM_AGAIN. */
    int (*side_request)(void *istate, const char *name, lm_ureq *u, lm_err *e);
    int (*side_parse)(void *istate, const char *name, int status, lm_str body, char **value,
                      int64_t *ttl_s, lm_err *e);

    /* ---- 1.2: the kernel owns the client protocol ----
     * param_ranges: numeric parameters the kernel clamps (lm_param_range);
     * NULL-name terminated, may be NULL.
     * embed_max_inputs: the most inputs one upstream embeddings call takes;
     * the kernel splits a larger request into concurrent calls of at most
     * this many, joins `data` in input order and sums usage (0: no limit).
     * flags: LM_PF_*. Without LM_PF_MULTI_CHOICE the kernel answers a
     * request with "n" > 1 with a 400 before any upstream call. */
    const lm_param_range *param_ranges;
    int embed_max_inputs;
    uint32_t flags;

    /* ---- 1.3: more data-plane endpoints ----
     * endpoints: LM_EP_* this provider serves; 0 (or a 1.0-1.2 table) means
     * chat and embeddings as its caps say. A request for an endpoint no
     * channel of the model declares is a 400 naming the endpoint. */
    uint32_t endpoints;

    /* ---- 1.4: asynchronous tasks (DashScope image synthesis and the like) ----
     * A non-stream parse_response may return LM_PENDING: the upstream took
     * a task (its id kept in c->rstate) and answers later. The host then
     * polls on the worker's event loop, never blocking: after
     * c->task_poll_ms it calls poll_request to describe one poll (through
     * host->ureq_*, as in build_request; no ureq_local_response, no side
     * values), sends it, and hands the answer (any status) to poll_parse,
     * which returns LM_PENDING (poll again), LM_OK with *out and *usage as
     * parse_response sets them (the task's answer; *out must be set), or
     * < 0 with e filled (the task failed: e is the client's error, e.g.
     * 502 upstream_task_failed). A client that leaves stops the polling;
     * nothing is billed for a task that did not answer. Both are required
     * when parse_response can return LM_PENDING; setting one requires the
     * other. Worker thread; istate is shared, so only read it. */
    int (*poll_request)(void *istate, lm_call *c, lm_ureq *u, lm_err *e);
    int (*poll_parse)(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                      lm_usage *usage, lm_err *e);
} lm_provider;

/* The one exported symbol. Returns static data; must not allocate. */
typedef const lm_provider *(*lm_plugin_entry_fn)(void);
#define LM_PLUGIN_ENTRY "longmen_plugin_entry"

/* Helpers usable from plugins (header-only, no host call needed). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Fill an lm_err. type/code may be NULL. Returns `rc` for tail calls:
 *     return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", NULL,
 *                       "messages must be an array");                    */
static inline int lm_err_set(lm_err *e, int rc, int status, const char *type, const char *code,
                             const char *fmt, ...) LM_PRINTF(6, 7);
static inline int lm_err_set(lm_err *e, int rc, int status, const char *type, const char *code,
                             const char *fmt, ...)
{
    va_list ap;
    if (e == NULL)
        return rc;
    e->http_status = status;
    snprintf(e->type, sizeof(e->type), "%s", type ? type : "");
    snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return rc;
}

/* The OpenAI error type for an upstream HTTP status, for error maps. */
static inline const char *lm_err_type_for_status(int status)
{
    if (status == 401)
        return "authentication_error";
    if (status == 403)
        return "permission_error";
    if (status == 429)
        return "rate_limit_error";
    if (status >= 500)
        return "api_error";
    return "invalid_request_error";
}

/* An integer member of o, or -1 when absent or not an integer. */
static inline int64_t lm_json_int_or_unknown(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* Read an OpenAI-shaped "usage" object (prompt/completion/total_tokens and
 * the *_tokens_details) into *out; a missing total or completion is derived
 * from the other two. Returns 1 when any of the three counts was reported. */
static inline int lm_usage_from_json(const json_t *u, lm_usage *out)
{
    lm_usage r = LM_USAGE_UNKNOWN;
    if (!json_is_object(u))
        return 0;
    r.prompt = lm_json_int_or_unknown(u, "prompt_tokens");
    r.completion = lm_json_int_or_unknown(u, "completion_tokens");
    r.total = lm_json_int_or_unknown(u, "total_tokens");
    if (r.total < 0 && r.prompt >= 0 && r.completion >= 0)
        r.total = r.prompt + r.completion;
    if (r.completion < 0 && r.total >= 0 && r.prompt >= 0)
        r.completion = r.total - r.prompt;
    r.cached = lm_json_int_or_unknown(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
    r.reasoning =
        lm_json_int_or_unknown(json_object_get(u, "completion_tokens_details"), "reasoning_tokens");
    *out = r;
    return r.prompt >= 0 || r.completion >= 0 || r.total >= 0;
}

/* The OpenAI "usage" object for u (a new reference, or NULL): unknown
 * counts are 0; the details appear only when known. */
static inline json_t *lm_usage_to_json(const lm_usage *u)
{
    json_t *o =
        json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)(u->prompt < 0 ? 0 : u->prompt),
                  "completion_tokens", (json_int_t)(u->completion < 0 ? 0 : u->completion),
                  "total_tokens", (json_int_t)(u->total < 0 ? 0 : u->total));
    if (o && u->cached >= 0)
        json_object_set_new(o, "prompt_tokens_details",
                            json_pack("{s:I}", "cached_tokens", (json_int_t)u->cached));
    if (o && u->reasoning >= 0)
        json_object_set_new(o, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens", (json_int_t)u->reasoning));
    return o;
}

static inline lm_str lm_cstr(const char *s)
{
    lm_str r = {s, s ? strlen(s) : 0};
    return r;
}

#ifdef __cplusplus
}
#endif
#endif /* LONGMEN_H */
