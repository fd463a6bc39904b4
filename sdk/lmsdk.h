/*
 * lmsdk.h - helpers for provider plugins (ABI 1.2 and later).
 *
 * The plugin ABI (longmen.h) says what crosses the boundary; this library
 * holds what every translating plugin otherwise writes again: errors,
 * a growable buffer, content flattening, data URLs, tool calls, finish
 * reasons, the response envelope, stream event helpers, parameter maps,
 * channel config, the upstream request, and answers gathered from parts.
 * It is linked statically into each plugin (liblmsdk.a, built with -fPIC and
 * hidden visibility), so it adds no symbol to the plugin and no ABI: a
 * plugin carries the version it was built with.
 *
 * Rules it follows (and so every plugin that uses it):
 *   - Text parts of one message are joined with a single "\n" (LMS_TEXT_JOIN),
 *     whatever the provider: the same request sends the same prompt on every
 *     channel, and two parts never merge into one word.
 *   - A missing tool-call argument text is "{}" (valid JSON an SDK can parse).
 *   - Usage is never written by a plugin into a response: the plugin fills
 *     lm_usage (unknown counts -1) and the kernel writes the "usage" object.
 *   - A stream plugin emits deltas and at most one finish reason per choice;
 *     the kernel adds the assistant role to the first delta, drops a second
 *     finish_reason and synthesises "stop" (or "tool_calls") when the upstream
 *     ended without one.
 *
 * Ownership: functions returning json_t * return a new reference (NULL on
 * allocation failure unless stated); *_set / lms_oset / lms_aadd steal
 * their value even on failure. lm_err is always caller-owned.
 * Thread: every function is pure or touches only its arguments.
 */
#ifndef LMSDK_H
#define LMSDK_H

#include "longmen.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LMS_TEXT_JOIN "\n"

/* ---- errors: each fills e and returns the LM_* code, for tail calls ---- */

int lms_oom(lm_err *e);                                                /* 500, LM_ENOMEM */
int lms_bad_request(lm_err *e, const char *fmt, ...) LM_PRINTF(2, 3);  /* 400, LM_EINVAL */
int lms_unsupported(lm_err *e, const char *fmt, ...) LM_PRINTF(2, 3);  /* 400, LM_ENOTSUP */
int lms_bad_upstream(lm_err *e, const char *fmt, ...) LM_PRINTF(2, 3); /* 502, LM_EUPSTREAM */
/* An error the upstream reported: status as given (0 -> 502), the OpenAI
 * type for that status, `code` (may be NULL). LM_EUPSTREAM. */
int lms_upstream_error(lm_err *e, int status, const char *code, const char *fmt, ...)
    LM_PRINTF(4, 5);
/* Replace every occurrence of `secret` (>= 4 bytes) in msg with "***". */
void lms_scrub(char *msg, const char *secret);

/* ---- JSON conveniences ---- */

const char *lms_jstr(const json_t *o, const char *key); /* string member or NULL */
int lms_nonempty(const char *s);
int lms_streq(const char *a, const char *b);         /* NULL-safe */
int lms_oset(json_t *o, const char *key, json_t *v); /* steals v; -1 when v is NULL */
int lms_aadd(json_t *a, json_t *v);                  /* steals v; -1 when v is NULL */
/* v as compact JSON text, in a JSON string (new). */
json_t *lms_json_text(const json_t *v);
/* Parse `data` as a JSON object (new) or fill e with a 502 naming `what`. */
json_t *lms_parse_object(lm_str data, const char *what, lm_err *e);

/* Copy canon members to body under the provider's names. A NULL `to`
 * copies under the same name. The list ends with from == NULL. */
typedef struct lms_rename {
    const char *from, *to;
} lms_rename;
int lms_copy_params(const json_t *canon, json_t *body, const lms_rename *map);

/* ---- growable buffer (NUL-terminated, sticky out-of-memory) ---- */

typedef struct lms_buf {
    char *p;
    size_t n, cap;
    int oom;
} lms_buf;

void lms_buf_add(lms_buf *b, const char *s, size_t n);
void lms_buf_adds(lms_buf *b, const char *s);
void lms_buf_addf(lms_buf *b, const char *fmt, ...) LM_PRINTF(2, 3);
void lms_buf_free(lms_buf *b);
/* The contents as a JSON string (new; NULL after an out-of-memory). */
json_t *lms_buf_json(const lms_buf *b);

/* ---- content ---- */

enum {
    LMS_TEXT_ONLY = 0,  /* an image or other non-text part is a 400 */
    LMS_SKIP_OTHER = 1, /* non-text parts are skipped */
};
/* Append the text of OpenAI message content (string, null or an array of
 * parts) to out, text parts joined with LMS_TEXT_JOIN. `where` names the
 * field in errors ("messages[2].content"). LM_OK or < 0 with e filled. */
int lms_content_text(const json_t *content, int mode, const char *where, lms_buf *out, lm_err *e);
/* The same as a new JSON string, or NULL with e filled. */
json_t *lms_content_string(const json_t *content, int mode, const char *where, lm_err *e);
/* 1 when content has an image part. */
int lms_content_has_image(const json_t *content);

typedef struct lms_data_url {
    lm_str media_type; /* "image/png" */
    lm_str data;       /* the text after the comma (base64 when is_base64) */
    int is_base64;
} lms_data_url;
/* The URL of an image_url part ({"image_url":{"url":..}} or a bare string). */
const char *lms_image_url(const json_t *part);
/* 0 with out filled (borrowing url) for data:<type>[;base64],<data>; -1 when
 * url is not a well-formed data URL. */
int lms_data_url_parse(const char *url, lms_data_url *out);

/* ---- tool calls ---- */

/* OpenAI arguments text for a provider's arguments value: a string as is,
 * an object/array as compact JSON, missing or null as "{}". (new) */
json_t *lms_tool_args_text(const json_t *args);
/* The arguments text parsed to an object for providers that want one
 * (new; NULL when it is not a JSON object: the caller reports the field). */
json_t *lms_tool_args_object(const char *text);
/* A stable tool-call id for the n-th call of this request: call_<id>_<n>. */
json_t *lms_tool_call_id(const lm_call *c, size_t n);
/* One OpenAI tool call {"id","type":"function","function":{name,arguments}}.
 * id and args are stolen (id NULL: lms_tool_call_id(c, n)). */
json_t *lms_tool_call(const lm_call *c, size_t n, json_t *id, const char *name, json_t *args);

/* ---- finish reasons ---- */

/* Provider reason -> OpenAI reason by a table ending with from == NULL.
 * NULL or "" -> NULL (still generating). An unknown reason is "stop", and
 * "stop" after tool calls is "tool_calls". */
const char *lms_finish_map(const lms_rename *map, const char *reason, int had_tools);

/* ---- responses ---- */

/* A chat.completion with one choice: {"role":"assistant","content":text}
 * (text may be NULL: content null), optional tool_calls (stolen), the
 * finish reason, id "chatcmpl-<request id>" and created from h. The kernel
 * adds "usage". */
json_t *lms_chat_response(const lm_host_api *h, const lm_call *c, const char *text, size_t n,
                          json_t *tool_calls, const char *finish_reason);
/* An embeddings list from an array of float arrays (stolen), in order.
 * The kernel adds "usage" and applies encoding_format. */
json_t *lms_embedding_list(const lm_call *c, json_t *vectors);
/* The stop parameter as an array of at most max strings (new), NULL when
 * absent; -1 with e filled when it is neither a string nor such an array. */
int lms_stop_list(const json_t *stop, size_t max, json_t **out, lm_err *e);

/* ---- streams ---- */

/* 1 for the OpenAI end marker "data: [DONE]". */
int lms_event_is_done(const lm_event *ev);
/* Emit helpers: LM_OK or < 0 with e filled (the client went away). */
int lms_emit_text(const lm_host_api *h, lm_emit *out, int index, const char *key, const char *s,
                  size_t n, lm_err *e);
int lms_emit_finish(const lm_host_api *h, lm_emit *out, int index, const char *reason, lm_err *e);
int lms_emit_usage(const lm_host_api *h, lm_emit *out, const lm_usage *u, lm_err *e);
/* One tool-call delta. The first fragment of a call carries id and name;
 * later ones carry only arguments text (args stolen, may be NULL). */
int lms_emit_tool_call(const lm_host_api *h, lm_emit *out, int index, int call_index, json_t *id,
                       const char *name, json_t *args, lm_err *e);

/* ---- channel config (init) ---- */

/* A string config value safe in a header (no control characters). An unset
 * or empty key gives dflt (NULL: "" when optional, an error when required).
 * *out borrows the host's copy. LM_OK, or LM_EINVAL with e naming the key. */
int lms_cfg_text(const lm_host_api *h, void *ictx, const char *key, const char *dflt, int required,
                 lm_str *out, lm_err *e);
/* The "base_url" key: an absolute http(s) URL without a query, trailing
 * '/' removed. */
int lms_cfg_base_url(const lm_host_api *h, void *ictx, const char *dflt, lm_str *out, lm_err *e);

/* init's last step: a copy of the n bytes at `is` in host memory becomes
 * *istate. Its first member must be the host table (const lm_host_api *),
 * so lms_fini can free it. LM_OK or LM_ENOMEM. */
int lms_istate(const lm_host_api *h, const void *is, size_t n, void **istate, lm_err *e);
/* lm_provider.fini for such an istate (one block, nothing else owned). */
void lms_fini(void *istate);

/* The one exported symbol, returning the plugin's static table. */
#define LMS_ENTRY(table)                                                                           \
    LM_EXPORT const lm_provider *longmen_plugin_entry(void);                                       \
    LM_EXPORT const lm_provider *longmen_plugin_entry(void)                                        \
    {                                                                                              \
        return &(table);                                                                           \
    }

/* ---- the upstream request ---- */

/* POST base+path with the headers (name/value pairs, ending with a NULL
 * name) and the JSON body (stolen). LM_OK or < 0 with e filled. */
typedef struct lms_header {
    const char *name;
    lm_str value;
} lms_header;
int lms_post_json(const lm_host_api *h, lm_ureq *u, lm_str base, const char *path,
                  const lms_header *hdrs, json_t *body, lm_err *e);
/* The same with one "Authorization: <auth>" header (none when auth is NULL). */
int lms_post_json_auth(const lm_host_api *h, lm_ureq *u, lm_str base, const char *path,
                       const char *auth, json_t *body, lm_err *e);

/* Append `items` (an array, stolen) to `turns` as {"role":role, key:items},
 * or onto the last turn's `key` array when that turn has the same role:
 * providers that alternate roles want consecutive turns merged. An empty
 * array adds nothing. */
int lms_push_turn(json_t *turns, const char *role, const char *key, json_t *items, lm_err *e);

/* The arguments of an OpenAI tool call's `function` as a JSON object (a
 * string is parsed; missing, null or "" is {}); a 400 naming the function
 * when they are not a JSON object. */
json_t *lms_call_args(const json_t *function, lm_err *e);

/* OpenAI function tools as [{"name","description"?,params_key:parameters?}]
 * in order; tools of another type are skipped; a function without a string
 * name is a 400. An empty array when there is none. */
json_t *lms_functions(const json_t *tools, const char *params_key, lm_err *e);

/* OpenAI tool_choice, checked: */
enum { LMS_TC_UNSET = 0, LMS_TC_AUTO, LMS_TC_NONE, LMS_TC_REQUIRED, LMS_TC_FUNCTION };
/* LMS_TC_* (>= 0; *name borrows the function name for LMS_TC_FUNCTION) or
 * LM_EINVAL with e filled. */
int lms_tool_choice(const json_t *tool_choice, const char **name, lm_err *e);

/* ---- the answer ---- */

/* One assistant message gathered from a provider's parts, in order. */
typedef struct lms_reply {
    lms_buf text, think; /* content and reasoning_content */
    json_t *calls;       /* OpenAI tool calls, or NULL */
    size_t ntext;        /* text parts seen (content is null only without them) */
} lms_reply;

void lms_reply_text(lms_reply *r, const char *s, size_t n, int thought);
/* Add one tool call (stolen, e.g. from lms_tool_call). */
int lms_reply_call(lms_reply *r, json_t *call, lm_err *e);
size_t lms_reply_ncalls(const lms_reply *r);
/* {"index","message":{"role":"assistant","content","reasoning_content"?,
 * "tool_calls"?},"logprobs":null,"finish_reason"}. content is null when
 * there are tool calls and no text part. */
json_t *lms_reply_choice(const lms_reply *r, int index, const char *finish, lm_err *e);
void lms_reply_free(lms_reply *r);

/* A chat.completion around `choices` (stolen): id "chatcmpl-<id>" (id NULL:
 * the request id), model (NULL: c->model), created from h. The kernel adds
 * "usage". */
json_t *lms_completion(const lm_host_api *h, const lm_call *c, const char *id, const char *model,
                       json_t *choices, lm_err *e);

#ifdef __cplusplus
}
#endif
#endif /* LMSDK_H */
