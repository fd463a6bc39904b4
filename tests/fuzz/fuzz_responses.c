/* Fuzz the Responses API translators (proto/responses_*): the input is
 * tried as a request body, as a whole canonical answer, and, one line per
 * chunk, as a canonical stream; the stream ends cleanly or with an error
 * by the last byte. Every SSE event and every answer must be well-formed
 * JSON: a malformed one aborts. */
#include "proto/responses.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "responses";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must_be_object(const char *p, size_t n)
{
    json_t *j = json_loadb(p, n, 0, NULL);
    if (!json_is_object(j))
        abort();
    json_decref(j);
}

/* Each event is "event: <type>\ndata: <json>\n\n". */
static void check_sse(const lm_buf_t *b)
{
    const char *p = b->len ? b->p : "", *end = p + b->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (strncmp(p, "event: ", 7) != 0 || nl == NULL || strncmp(nl + 1, "data: ", 6) != 0)
            abort();
        const char *data = nl + 7, *stop = strstr(data, "\n\n");
        if (stop == NULL)
            abort();
        must_be_object(data, (size_t)(stop - data));
        p = stop + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    lm_err e;
    json_t *echo = NULL;
    json_t *canon = lm_resp_request(s, size, &echo, &e);
    json_decref(canon);

    size_t n = 0;
    lm_usage u = {size % 7 ? (int64_t)size : -1, 3, -1, -1, size % 3 ? 1 : -1};
    char *ans = lm_resp_answer(s, size, size % 2 ? &u : NULL, echo, &n);
    if (ans)
        must_be_object(ans, n);
    free(ans);

    lm_buf_t out = {0};
    lm_resp_stream_t *st = lm_resp_stream_new("m", "fuzz", 1, echo);
    if (st) {
        const char *p = s, *end = s + size;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
            lm_resp_stream_chunk(st, p, len, &out);
            p += len + 1;
        }
        if (size && data[size - 1] % 2)
            lm_err_set(&e, -1, 502, "api_error", NULL, "upstream failed");
        lm_resp_stream_end(st, size % 5 ? &u : NULL, size && data[size - 1] % 2 ? &e : NULL, &out);
        if (!out.failed)
            check_sse(&out);
        lm_resp_stream_free(st);
    }
    lm_buf_free(&out);
    json_decref(echo);
    return 0;
}
