/* err.c - error constructors and secret scrubbing for plugins (lmsdk.h). */
#include "lmsdk.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fill(lm_err *e, int rc, int status, const char *type, const char *code, const char *fmt,
                va_list ap) LM_PRINTF(6, 0);
static int fill(lm_err *e, int rc, int status, const char *type, const char *code, const char *fmt,
                va_list ap)
{
    if (e == NULL)
        return rc;
    e->http_status = status;
    snprintf(e->type, sizeof(e->type), "%s", type);
    snprintf(e->code, sizeof(e->code), "%s", code ? code : "");
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    return rc;
}

int lms_oom(lm_err *e)
{
    return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
}

int lms_bad_request(lm_err *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fill(e, LM_EINVAL, 400, "invalid_request_error", NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int lms_unsupported(lm_err *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fill(e, LM_ENOTSUP, 400, "invalid_request_error", "unsupported_parameter", fmt, ap);
    va_end(ap);
    return rc;
}

int lms_bad_upstream(lm_err *e, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "upstream_error",
                      "malformed upstream response: %s", what);
}

int lms_upstream_error(lm_err *e, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    if (status < 400 || status > 599)
        status = 502;
    va_start(ap, fmt);
    int rc = fill(e, LM_EUPSTREAM, status, lm_err_type_for_status(status), code, fmt, ap);
    va_end(ap);
    return rc;
}

void lms_scrub(char *msg, const char *secret)
{
    size_t kn = secret ? strlen(secret) : 0;
    char *hit;
    if (msg == NULL || kn < 4)
        return;
    while ((hit = strstr(msg, secret)) != NULL) {
        memcpy(hit, "***", 3);
        memmove(hit + 3, hit + kn, strlen(hit + kn) + 1);
    }
}
