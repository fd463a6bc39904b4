/*
 * lmsdk_p2.h - helpers found shared while porting the gemini and claude
 * plugins to ABI 1.2, kept apart from lmsdk.h until they are folded into it.
 * Same rules as lmsdk.h: json_t * results are new references (NULL with e
 * filled on failure), stolen arguments are stolen even on failure, lm_err
 * is caller-owned, every function touches only its arguments.
 */
#ifndef LMSDK_P2_H
#define LMSDK_P2_H

#include "lmsdk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- channel config (init) ---- */

/* A string config value safe in a header (no control characters). An unset
 * or empty key gives dflt (NULL: "" when optional, an error when required).
 * *out borrows the host's copy. LM_OK, or LM_EINVAL with e naming the key. */
int lms_p2_cfg_text(const lm_host_api *h, void *ictx, const char *key, const char *dflt,
                    int required, lm_str *out, lm_err *e);
/* The "base_url" key: an absolute http(s) URL without a query, trailing
 * '/' removed. */
int lms_p2_cfg_base_url(const lm_host_api *h, void *ictx, const char *dflt, lm_str *out, lm_err *e);

/* init's last step: a copy of the n bytes at `is` in host memory becomes
 * *istate. Its first member must be the host table (const lm_host_api *),
 * so lms_p2_fini can free it. LM_OK or LM_ENOMEM. */
int lms_p2_istate(const lm_host_api *h, const void *is, size_t n, void **istate, lm_err *e);
/* lm_provider.fini for such an istate (one block, nothing else owned). */
void lms_p2_fini(void *istate);

/* The one exported symbol, returning the plugin's static table. */
#define LMS_P2_ENTRY(table)                                                                        \
    LM_EXPORT const lm_provider *longmen_plugin_entry(void);                                       \
    LM_EXPORT const lm_provider *longmen_plugin_entry(void)                                        \
    {                                                                                              \
        return &(table);                                                                           \
    }

/* ---- the upstream request ---- */

/* POST base+path with the headers (name/value pairs, ending with a NULL
 * name) and the JSON body (stolen). LM_OK or < 0 with e filled. */
typedef struct lms_p2_header {
    const char *name;
    lm_str value;
} lms_p2_header;
int lms_p2_post_json(const lm_host_api *h, lm_ureq *u, lm_str base, const char *path,
                     const lms_p2_header *hdrs, json_t *body, lm_err *e);

/* Append `items` (an array, stolen) to `turns` as {"role":role, key:items},
 * or onto the last turn's `key` array when that turn has the same role:
 * providers that alternate roles want consecutive turns merged. An empty
 * array adds nothing. */
int lms_p2_push_turn(json_t *turns, const char *role, const char *key, json_t *items, lm_err *e);

/* The arguments of an OpenAI tool call's `function` as a JSON object (a
 * string is parsed; missing, null or "" is {}); a 400 naming the function
 * when they are not a JSON object. */
json_t *lms_p2_call_args(const json_t *function, lm_err *e);

/* OpenAI function tools as [{"name","description"?,params_key:parameters?}]
 * in order; tools of another type are skipped; a function without a string
 * name is a 400. An empty array when there is none. */
json_t *lms_p2_functions(const json_t *tools, const char *params_key, lm_err *e);

/* OpenAI tool_choice, checked: */
enum { LMS_TC_UNSET = 0, LMS_TC_AUTO, LMS_TC_NONE, LMS_TC_REQUIRED, LMS_TC_FUNCTION };
/* LMS_TC_* (>= 0; *name borrows the function name for LMS_TC_FUNCTION) or
 * LM_EINVAL with e filled. */
int lms_p2_tool_choice(const json_t *tool_choice, const char **name, lm_err *e);

/* ---- the answer ---- */

/* One assistant message gathered from a provider's parts, in order. */
typedef struct lms_p2_reply {
    lms_buf text, think; /* content and reasoning_content */
    json_t *calls;       /* OpenAI tool calls, or NULL */
    size_t ntext;        /* text parts seen (content is null only without them) */
} lms_p2_reply;

void lms_p2_reply_text(lms_p2_reply *r, const char *s, size_t n, int thought);
/* Add one tool call (stolen, e.g. from lms_tool_call). */
int lms_p2_reply_call(lms_p2_reply *r, json_t *call, lm_err *e);
size_t lms_p2_reply_ncalls(const lms_p2_reply *r);
/* {"index","message":{"role":"assistant","content","reasoning_content"?,
 * "tool_calls"?},"logprobs":null,"finish_reason"}. content is null when
 * there are tool calls and no text part. */
json_t *lms_p2_reply_choice(const lms_p2_reply *r, int index, const char *finish, lm_err *e);
void lms_p2_reply_free(lms_p2_reply *r);

/* A chat.completion around `choices` (stolen): id "chatcmpl-<id>" (id NULL:
 * the request id), model (NULL: c->model), created from h. The kernel adds
 * "usage". */
json_t *lms_p2_completion(const lm_host_api *h, const lm_call *c, const char *id, const char *model,
                          json_t *choices, lm_err *e);

#ifdef __cplusplus
}
#endif
#endif /* LMSDK_P2_H */
