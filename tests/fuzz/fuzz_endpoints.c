/* Fuzz the 1.3 endpoint translators: the input is tried as a
 * /v1/completions body (proto/completions.h), as a canonical answer and,
 * one line per chunk, as canonical stream chunks; and as a rerank, images
 * and moderations body with the rerank answer finisher (proto/endpoint.h).
 * Every answer and SSE event must be a JSON object: a malformed one aborts. */
#include "proto/completions.h"
#include "proto/endpoint.h"
#include "proto/reqcheck.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "endpoints";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must_be_object(const char *p, size_t n)
{
    json_t *j = json_loadb(p, n, 0, NULL);
    if (!json_is_object(j))
        abort();
    json_decref(j);
}

static void check_sse(const lm_buf_t *b)
{
    const char *p = b->len ? b->p : "", *end = p + b->len;
    while (p < end) {
        const char *stop = strstr(p, "\n\n");
        if (strncmp(p, "data: ", 6) != 0 || stop == NULL)
            abort();
        must_be_object(p + 6, (size_t)(stop - p - 6));
        p = stop + 2;
    }
}

static void endpoint_ops(const char *s, size_t size)
{
    static const int ops[] = {LM_OP_RERANK, LM_OP_IMAGES, LM_OP_MODERATIONS};
    lm_err e;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        json_t *req = lm_reqcheck_parse(s, size, &e);
        if (req)
            (void)lm_endpoint_request(ops[i], req, &e);
        json_decref(req);
    }
    json_t *ans = json_loadb(s, size, 0, NULL);
    lm_usage u = LM_USAGE_UNKNOWN;
    if (json_is_object(ans) && lm_endpoint_finish(ans, LM_OP_RERANK, &u) == 0 &&
        !json_is_array(json_object_get(ans, "results")))
        abort();
    json_decref(ans);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    lm_err e;
    json_decref(lm_cmpl_request(s, size, &e));

    size_t n = 0;
    lm_usage u = {size % 7 ? (int64_t)size : -1, 3, -1, -1, -1};
    char *ans = lm_cmpl_answer(s, size, &u, &n);
    if (ans)
        must_be_object(ans, n);
    free(ans);

    lm_buf_t out = {0};
    const char *p = s, *end = s + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        (void)lm_cmpl_stream_chunk(p, len, &out);
        p += len + (nl != NULL);
    }
    check_sse(&out);
    lm_buf_free(&out);
    endpoint_ops(s, size);
    return 0;
}
