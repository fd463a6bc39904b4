/* responses_api.c - the Responses API's inbound table (proto/inbound.h):
 * the relay's hooks, each a thin call of the translators of responses.h.
 * Static data; thread: the request's worker. The hooks get no request
 * context, so the response object repeats the API's defaults for the
 * request fields it echoes (instructions, tools, ...); the SDKs parse
 * with their own request's values, not these. */
#include "proto/inbound.h"
#include "proto/responses.h"

#include <time.h>

static json_t *request(const char *body, size_t n, lm_err *e)
{
    return lm_resp_request(body, n, NULL, e);
}

static char *answer(const char *json, size_t n, const lm_usage *u, size_t *out_len)
{
    return lm_resp_answer(json, n, u, NULL, out_len);
}

static void *stream_new(const char *model, const char *request_id)
{
    return lm_resp_stream_new(model, request_id, (int64_t)time(NULL), NULL);
}

static int stream_chunk(void *st, const char *json, size_t n, lm_buf_t *out)
{
    return lm_resp_stream_chunk(st, json, n, out);
}

static int stream_end(void *st, const lm_usage *u, const lm_err *e, lm_buf_t *out)
{
    return lm_resp_stream_end(st, u, e, out);
}

static void stream_free(void *st)
{
    lm_resp_stream_free(st);
}

/* Errors keep OpenAI's shape (error == NULL), as the SDKs expect. */
const lm_inbound_t lm_resp_api = {.name = "responses",
                                  .request = request,
                                  .request_native = lm_resp_request_native,
                                  .answer = answer,
                                  .stream_new = stream_new,
                                  .stream_chunk = stream_chunk,
                                  .stream_end = stream_end,
                                  .stream_free = stream_free};
