/* response.c - a whole (non-streamed) upstream answer through the plugin's
 * parse_response or map_error (response.h). Thread: the request's worker;
 * the client body it returns is the caller's to free(). */
#include "proto/response.h"

#include "core/errors.h"
#include "plugin/plugin.h"

#include <stdlib.h>
#include <string.h>

static int map_error(lm_inst_t *inst, lm_call *call, int status, lm_str body, lm_err *e)
{
    const lm_provider *vt = &inst->plugin->vt;
    memset(e, 0, sizeof(*e));
    const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
    int mapped = vt->map_error ? vt->map_error(inst->istate, call, status, body, e) : LM_DECLINED;
    lm_plugin_leave(prev);
    if (mapped == LM_ERETRY && e->http_status != 0)
        return LM_ERETRY; /* a refused credential: the host refreshes it once */
    if (mapped != LM_OK || e->http_status == 0)
        lm_error_map_default(status, body, e);
    return LM_EUPSTREAM;
}

int lm_response_translate(lm_inst_t *inst, lm_call *call, int status, lm_str body, char **out_json,
                          size_t *out_len, lm_usage *usage, lm_err *e)
{
    const lm_provider *vt = &inst->plugin->vt;
    json_t *out = NULL;

    *out_json = NULL;
    *out_len = 0;
    *usage = (lm_usage)LM_USAGE_UNKNOWN;
    if (status < 200 || status > 299)
        return map_error(inst, call, status, body, e);
    memset(e, 0, sizeof(*e));
    const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
    int rc = vt->parse_response(inst->istate, call, status, body, &out, usage, e);
    lm_plugin_leave(prev);
    if (rc < 0) {
        json_decref(out);
        if (e->http_status == 0)
            lm_error_set(e, rc, 502, "api_error", "upstream_error",
                         "the upstream response could not be translated");
        return rc;
    }
    if (out == NULL) {
        /* Forwarded verbatim as application/json: it must be one JSON
         * object. gzip bytes, garbage or a raw NUL inside (which would cut
         * the body short) are the upstream's failure, not an answer. */
        json_t *chk = json_loadb(body.p, body.n, 0, NULL);
        int is_obj = json_is_object(chk);
        json_decref(chk);
        if (!is_obj)
            return lm_error_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                                "the upstream answered with a body that is not a JSON object");
        *out_json = malloc(body.n + 1);
        if (*out_json == NULL)
            return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
        memcpy(*out_json, body.p, body.n);
        (*out_json)[body.n] = '\0';
        *out_len = body.n;
        return LM_OK;
    }
    *out_json = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    if (*out_json == NULL)
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    *out_len = strlen(*out_json); /* Jansson's own text: a NUL is always escaped in it */
    return LM_OK;
}
