/* errors.c - the OpenAI error body, the status -> type table and the default
 * upstream error map (errors.h). Pure; any thread; lm_error_body returns
 * text the caller frees. */
#include "core/errors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lm_error_set(lm_err *e, int rc, int status, const char *type, const char *code, const char *msg)
{
    return lm_err_set(e, rc, status, type, code, "%s", msg);
}

const char *lm_error_type_for(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "invalid_request_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static void copy_str(char *dst, size_t n, json_t *v)
{
    if (json_is_string(v))
        snprintf(dst, n, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(dst, n, "%lld", (long long)json_integer_value(v));
}

void lm_error_map_default(int status, lm_str body, lm_err *e)
{
    int out = status;
    if (status >= 500)
        out = 502;
    else if (status < 400)
        out = 502; /* a non-2xx that is not an error status: treat as bad gateway */
    memset(e, 0, sizeof(*e));
    e->http_status = out;
    json_t *root = body.n ? json_loadb(body.p, body.n, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_t *err = json_object_get(root, "error");
    if (json_is_object(err)) {
        copy_str(e->msg, sizeof(e->msg), json_object_get(err, "message"));
        copy_str(e->type, sizeof(e->type), json_object_get(err, "type"));
        copy_str(e->code, sizeof(e->code), json_object_get(err, "code"));
    } else if (json_is_string(err)) {
        copy_str(e->msg, sizeof(e->msg), err);
    } else if (json_is_object(root)) {
        copy_str(e->msg, sizeof(e->msg), json_object_get(root, "message"));
        copy_str(e->code, sizeof(e->code), json_object_get(root, "code"));
    }
    json_decref(root);
    if (e->msg[0] == '\0')
        snprintf(e->msg, sizeof(e->msg), "upstream returned HTTP %d", status);
    if (status >= 500 || status < 400) {
        snprintf(e->type, sizeof(e->type), "api_error");
        if (e->code[0] == '\0')
            snprintf(e->code, sizeof(e->code), "upstream_error");
    }
    if (e->type[0] == '\0')
        snprintf(e->type, sizeof(e->type), "%s", lm_error_type_for(out));
}

char *lm_error_body(const lm_err *e)
{
    const char *type = e->type[0] ? e->type : lm_error_type_for(e->http_status);
    json_t *o =
        json_pack("{s:{s:s,s:s,s:n,s:o}}", "error", "message", e->msg[0] ? e->msg : "error", "type",
                  type, "param", "code", e->code[0] ? json_string(e->code) : json_null());
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL) /* invalid UTF-8 in msg, or no memory: a safe fixed body */
        s = strdup("{\"error\":{\"message\":\"error\",\"type\":\"api_error\",\"param\":null,"
                   "\"code\":null}}");
    return s;
}
