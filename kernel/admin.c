/* admin.c - admin API routes (see admin.h). */
#include "admin.h"

#include "errors.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static void reply(evhtp_request_t *req, int status, const char *body)
{
    evhtp_headers_add_header(req->headers_out,
                             evhtp_header_new("Content-Type", "application/json", 0, 0));
    evbuffer_add(req->buffer_out, body, strlen(body));
    evhtp_send_reply(req, (evhtp_res)status);
}

static void route_default(evhtp_request_t *req, void *arg)
{
    (void)arg;
    reply(req, 404,
          "{\"error\":{\"message\":\"unknown admin path\",\"type\":\"invalid_request_error\","
          "\"param\":null,\"code\":\"not_found\"}}");
}

int lm_admin_setup(evhtp_t *htp, lm_admin_env_t *env, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    evhtp_set_gencb(htp, route_default, env);
    return 0;
}
