/* completions_api.c - the /v1/completions inbound table (proto/inbound.h):
 * the relay's hooks over the translators of completions.h. Static data;
 * thread: the request's worker. */
#include "core/errors.h"
#include "proto/completions.h"
#include "proto/inbound.h"

#include <stdlib.h>

static void *stream_new(const char *model, const char *request_id)
{
    (void)model;
    (void)request_id;
    return malloc(1); /* no state: the hooks need a non-NULL handle */
}

static int stream_chunk(void *st, const char *json, size_t n, lm_buf_t *out)
{
    (void)st;
    return lm_cmpl_stream_chunk(json, n, out);
}

/* An error event in OpenAI's shape, then [DONE], as chat streams end. */
static int stream_end(void *st, const lm_usage *u, const lm_err *e, lm_buf_t *out)
{
    (void)st;
    (void)u;
    if (e) {
        char *body = lm_error_body(e);
        int rc =
            body ? lm_buf_adds(out, "data: ") | lm_buf_adds(out, body) | lm_buf_adds(out, "\n\n")
                 : -1;
        free(body);
        if (rc < 0)
            return -1;
    }
    return lm_buf_adds(out, "data: [DONE]\n\n");
}

static void stream_free(void *st)
{
    free(st);
}

const lm_inbound_t lm_cmpl_api = {.name = "completions",
                                  .request = lm_cmpl_request,
                                  .answer = lm_cmpl_answer,
                                  .stream_new = stream_new,
                                  .stream_chunk = stream_chunk,
                                  .stream_end = stream_end,
                                  .stream_free = stream_free};
