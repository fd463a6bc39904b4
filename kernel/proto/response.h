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
 */
int lm_response_translate(lm_inst_t *inst, lm_call *call, int status, lm_str body, char **out_json,
                          size_t *out_len, lm_usage *usage, lm_err *e);
#endif
