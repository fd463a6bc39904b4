/* response.h - translate a whole (non-streamed) upstream answer. */
#ifndef LM_RESPONSE_H
#define LM_RESPONSE_H
#include "plugin/host.h"

/*
 * For 2xx, run parse_response; for anything else, map_error (or the
 * default map). On success returns LM_OK and sets *out_json to the client
 * body (new, free()), *out_len to its length and *usage. A body forwarded
 * verbatim must be a JSON object (else a 502 upstream_error). On failure returns < 0 with e filled;
 * LM_ERETRY means the plugin invalidated a side value (rebuild, once).
 *
 * The kernel is the one writer of what every client reads the same way
 * (ABI 1.2): the "usage" object of a translated answer comes from *usage
 * (read from the plugin's JSON when the plugin reported none; total derived
 * from its parts), and want_base64 turns every float-array embedding into
 * base64 of little-endian float32, as the OpenAI API does.
 */
int lm_response_translate(lm_inst_t *inst, lm_call *call, int status, lm_str body, int want_base64,
                          char **out_json, size_t *out_len, lm_usage *usage, lm_err *e);

/* ABI 1.4: a non-stream parse_response may return LM_PENDING (an
 * asynchronous task, out and usage unset): lm_response_translate returns it
 * as is, or a 502 when the plugin cannot poll (no poll_request).
 *
 * lm_response_poll: read one poll's answer (any status) with poll_parse.
 * Returns LM_PENDING (poll again), LM_OK with *out_json (new, free()),
 * *out_len and *usage like lm_response_translate, or < 0 with e filled (a
 * 502 upstream_task_failed when the plugin left it empty). *units is the
 * number of images an LM_OP_IMAGES answer delivered (-1: not known). */
int lm_response_poll(lm_inst_t *inst, lm_call *call, int status, lm_str body, char **out_json,
                     size_t *out_len, lm_usage *usage, int64_t *units, lm_err *e);

/* The same for a body held in a buffer: a verbatim answer takes the
 * buffer's bytes as *out_json (body is then left empty) instead of copying
 * them; otherwise body is unchanged. */
int lm_response_translate_buf(lm_inst_t *inst, lm_call *call, int status, lm_buf_t *body,
                              int want_base64, char **out_json, size_t *out_len, lm_usage *usage,
                              lm_err *e);

/* Exported for the unit tests: the usage writer and the base64 encoder
 * applied to a translated answer `out` of operation op. -1 on no memory. */
int lm_response_finish(json_t *out, int op, int want_base64, lm_usage *usage);
#endif
