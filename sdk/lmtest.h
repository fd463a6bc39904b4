/*
 * lmtest.h - the plugin test kit: drive a provider plugin through recorded
 * cases without starting the server. It uses the kernel's own host table,
 * frame splitter and usage merge, so what passes here behaves the same in
 * the gateway. Link with build/liblmtest.a (see sdk/README.md).
 *
 * All returned strings are malloc'd and freed by lmt_result_clear().
 */
#ifndef LONGMEN_LMTEST_H
#define LONGMEN_LMTEST_H

#include "longmen.h"

typedef struct lmt_plugin lmt_plugin;

/* What build_request produced. */
typedef struct lmt_ureq {
    char *method; /* "POST" unless the plugin changed it */
    char *url;
    char **headers; /* "Name: value" strings, in order */
    size_t nheaders;
    char *body; /* NUL-terminated copy of the body ("" if none) */
    size_t body_len;
} lmt_ureq;

/* What a response or a stream produced. */
typedef struct lmt_result {
    int rc;         /* last plugin return code */
    lm_err err;     /* filled when rc < 0 */
    char *json;     /* parse_response: the OpenAI body (forwarded or translated);
                       stream: a JSON array of every chunk the client would get,
                       in order, excluding the usage chunk and [DONE] */
    lm_usage usage; /* merged usage */
    int done;       /* stream: the plugin returned LM_DONE */
} lmt_result;

/*
 * Load `so_path` and create one instance with the given channel config:
 * cfg is a NULL-terminated list of alternating key, value strings, e.g.
 *   const char *cfg[] = {"base_url", "http://mock", "api_key", "k", NULL};
 * Returns NULL and writes a message to errbuf on failure (the same message
 * the gateway would log: wrong ABI, no entry point, failing init, ...).
 */
lmt_plugin *lmt_load(const char *so_path, const char *const *cfg, char *errbuf, size_t errlen);
void lmt_unload(lmt_plugin *p);

/* The provider table (borrowed). */
const lm_provider *lmt_provider(lmt_plugin *p);

/*
 * Run build_request for `canon_json` (the OpenAI request body as the client
 * sent it; the kit maps nothing, so put the upstream model id in it).
 * op is LM_OP_CHAT or LM_OP_EMBED; stream is taken from canon "stream".
 * Returns the plugin's rc; on rc < 0, *e is filled.
 */
int lmt_build(lmt_plugin *p, int op, const char *canon_json, lmt_ureq *out, lm_err *e);
/* The same, with canon_json also handed as the client's raw bytes
 * (lm_call.raw_body), as the gateway does while canon still means them:
 * exercises a plugin's pass-through path. */
int lmt_build_raw(lmt_plugin *p, int op, const char *canon_json, lmt_ureq *out, lm_err *e);
void lmt_ureq_clear(lmt_ureq *u);
/* The value of header `name` (case-insensitive) in u, or NULL. Borrowed. */
const char *lmt_header(const lmt_ureq *u, const char *name);

/* The next two act on the call opened by the last lmt_build (same lm_call,
 * same rstate), as the gateway does; build again for each new case.
 *
 * Run parse_response (2xx) or map_error (else) on a whole upstream body,
 * the way the gateway would (including its default error mapping). */
void lmt_response(lmt_plugin *p, int status, const char *body, size_t len, lmt_result *out);

/* Feed a streamed upstream body through the kernel splitter in pieces of
 * `split` bytes (0 = all at once) and collect what the client would get
 * (emit_raw enabled, as in the gateway without a Lua on_event: a chunk the
 * host takes verbatim is collected as the upstream wrote it). */
void lmt_stream(lmt_plugin *p, const char *body, size_t len, size_t split, lmt_result *out);

void lmt_result_clear(lmt_result *r);

/* Asynchronous tasks (ABI 1.4), on the call of the last lmt_build after
 * lmt_response returned LM_PENDING: run poll_request (what it built goes to
 * *req) and then poll_parse on (status, body of len bytes) the way the gateway does.
 * Returns (and sets out->rc to) LM_PENDING, LM_OK with out->json, or < 0
 * with out->err filled. */
int lmt_poll(lmt_plugin *p, int status, const char *body, size_t len, lmt_ureq *req,
             lmt_result *out);
/* The call of the last lmt_build (borrowed): what the plugin wrote into it,
 * e.g. task_poll_ms and task_timeout_ms. */
const lm_call *lmt_call(lmt_plugin *p);

/* The split-invariance check every plugin test wants: build `canon` and
 * stream `body` (NUL-terminated) whole into *ref, then again, freshly built,
 * at every split size 1..len. Returns the first split whose result (json,
 * rc, done, usage, error) differs from *ref, or 0 when all agree. Clear
 * *ref with lmt_result_clear. */
size_t lmt_stream_every_split(lmt_plugin *p, const char *canon, const char *body, lmt_result *ref);

/* Stream conformance, as a client library expects it: every chunk is a
 * chat.completion.chunk with the stream's one id; per choice exactly one
 * delta carries "role":"assistant" and it is the first; at most one
 * finish_reason and nothing after it (exactly one when the stream ended
 * with r->done); tool-call deltas name their call (id, type, name) on its
 * first fragment and calls start in index order; no chunk carries usage
 * (the kernel sends usage once, after the last choice). Returns 1, or 0
 * with the first violation in why. */
int lmt_stream_conforms(const lmt_result *r, char *why, size_t whylen);

/* JSON assertions for plugin tests. path is dot-separated, numbers index
 * arrays: "choices.0.message.tool_calls.0.function.name".
 *   lmt_json_at: the value at path in json text (a new reference; NULL
 *     when the text does not parse or the path is absent).
 *   lmt_json_str: 1 when the value at path is the string `want`.
 *   lmt_json_int: 1 when it is the integer `want`.
 *   lmt_json_has: 1 when path exists. */
json_t *lmt_json_at(const char *json, const char *path);
int lmt_json_str(const char *json, const char *path, const char *want);
int lmt_json_int(const char *json, const char *path, long long want);
int lmt_json_has(const char *json, const char *path);

/*
 * Side values (ABI 1.1). The kit keeps the channel's side cache exactly as
 * the kernel does: lmt_build returns LM_AGAIN while build_request waits for
 * a value, and side_invalidate drops it here too.
 *   lmt_side_set: store `value` for `name` (lifetime unlimited).
 *   lmt_side_value: the cached value, or NULL (copy; free() it).
 *   lmt_side_fetch: run side_request (what it built goes to *req) and then
 *     side_parse on (status, body); a value it returns is cached. Returns
 *     side_parse's (or side_request's) return code, with e filled on error,
 *     and the lifetime it declared in *ttl_s (may be NULL).
 */
void lmt_side_set(lmt_plugin *p, const char *name, const char *value);
char *lmt_side_value(lmt_plugin *p, const char *name);
int lmt_side_fetch(lmt_plugin *p, const char *name, int status, const char *body, lmt_ureq *req,
                   int64_t *ttl_s, lm_err *e);

#endif
