/* completions_api.c - the /v1/completions inbound table (proto/inbound.h):
 * the relay's hooks over the translators of completions.h. Static data;
 * thread: the request's worker. */
#include "core/errors.h"
#include "proto/completions.h"
#include "proto/inbound.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What the usage chunk repeats of the stream's first chunk. */
typedef struct cmpl_st_s {
    int seen;
    char id[128];
    char model[256];
    int64_t created;
} cmpl_st_t;

static void *stream_new(const char *model, const char *request_id)
{
    cmpl_st_t *s = calloc(1, sizeof(*s));
    if (s) {
        snprintf(s->id, sizeof(s->id), "%s", request_id ? request_id : "cmpl");
        snprintf(s->model, sizeof(s->model), "%s", model ? model : "");
    }
    return s;
}

static int stream_chunk(void *st, const char *json, size_t n, lm_buf_t *out)
{
    cmpl_st_t *s = st;
    if (!s->seen) { /* once: the usage chunk has the stream's id and model */
        json_t *j = json_loadb(json, n, 0, NULL);
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *model = json_string_value(json_object_get(j, "model"));
        if (id)
            snprintf(s->id, sizeof(s->id), "%s", id);
        if (model)
            snprintf(s->model, sizeof(s->model), "%s", model);
        s->created = json_integer_value(json_object_get(j, "created"));
        s->seen = j != NULL;
        json_decref(j);
    }
    return lm_cmpl_stream_chunk(json, n, out);
}

/* An error event in OpenAI's shape, or the usage chunk when the client
 * asked for it (u non-NULL: usage_if_asked), then [DONE], as chat streams
 * end. */
static int stream_end(void *st, const lm_usage *u, const lm_err *e, lm_buf_t *out)
{
    const cmpl_st_t *s = st;
    if (e == NULL && u && (u->prompt >= 0 || u->completion >= 0) &&
        lm_cmpl_usage_chunk(s->id, s->created, s->model, u, out) < 0)
        return -1;
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
                                  .stream_free = stream_free,
                                  .request_native = lm_cmpl_request_native,
                                  .usage_if_asked = 1};
