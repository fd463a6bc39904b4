/* endpoint.c - request checks and answer finishing of the 1.3 endpoint
 * operations (endpoint.h). Pure; the caller owns every JSON value. */
#include "proto/endpoint.h"

#include "conf/priceunit.h"

#include <stdlib.h>
#include <string.h>

static int bad(lm_err *e, const char *field, const char *msg)
{
    lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", "invalid_value", "'%s' %s", field, msg);
    return -1;
}

static int optional_kinds(const json_t *canon, lm_err *e)
{
    const json_t *tn = json_object_get(canon, "top_n"), *rd;
    if (tn && !json_is_null(tn) && (!json_is_integer(tn) || json_integer_value(tn) < 1))
        return bad(e, "top_n", "must be a positive integer");
    rd = json_object_get(canon, "return_documents");
    if (rd && !json_is_null(rd) && !json_is_boolean(rd))
        return bad(e, "return_documents", "must be a boolean");
    return 0;
}

/* documents: strings, or objects whose "text" is sent (as a string). */
static int rerank_request(json_t *canon, lm_err *e)
{
    const json_t *q = json_object_get(canon, "query");
    json_t *docs = json_object_get(canon, "documents"), *d;
    size_t i;
    int changed = 0;
    if (!json_is_string(q) || json_string_length(q) == 0)
        return bad(e, "query", "is required (a non-empty string)");
    if (!json_is_array(docs) || json_array_size(docs) == 0)
        return bad(e, "documents", "is required (a non-empty array of strings or objects)");
    if (json_array_size(docs) > LM_RERANK_MAX_DOCS)
        return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", "too_many_documents",
                          "'documents' has %zu entries; at most %d are accepted",
                          json_array_size(docs), LM_RERANK_MAX_DOCS),
               -1;
    json_array_foreach (docs, i, d) {
        const json_t *t = json_is_object(d) ? json_object_get(d, "text") : d;
        if (!json_is_string(t))
            return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", "invalid_value",
                              "'documents[%zu]' must be a string or an object with a string "
                              "\"text\"",
                              i),
                   -1;
        if (json_is_object(d)) {
            if (json_array_set(docs, i, (json_t *)t) < 0)
                return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory"), -1;
            changed = 1;
        }
    }
    return optional_kinds(canon, e) < 0 ? -1 : changed;
}

static int images_request(const json_t *canon, lm_err *e)
{
    const json_t *p = json_object_get(canon, "prompt"), *n = json_object_get(canon, "n");
    const char *rf = json_string_value(json_object_get(canon, "response_format"));
    if (!json_is_string(p) || json_string_length(p) == 0)
        return bad(e, "prompt", "is required (a non-empty string)");
    if (n && !json_is_null(n) &&
        (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 10))
        return bad(e, "n", "must be an integer from 1 to 10");
    if (json_object_get(canon, "response_format") &&
        !json_is_null(json_object_get(canon, "response_format")) &&
        (rf == NULL || (strcmp(rf, "url") != 0 && strcmp(rf, "b64_json") != 0)))
        return bad(e, "response_format", "must be \"url\" or \"b64_json\"");
    return 0;
}

static int moderations_request(const json_t *canon, lm_err *e)
{
    const json_t *in = json_object_get(canon, "input");
    if (!json_is_string(in) && !(json_is_array(in) && json_array_size(in) > 0))
        return bad(e, "input", "is required (a string or a non-empty array)");
    return 0;
}

int lm_endpoint_request(int op, json_t *canon, lm_err *e)
{
    if (!json_is_string(json_object_get(canon, "model")))
        return bad(e, "model", "is required");
    switch (op) {
    case LM_OP_RERANK: return rerank_request(canon, e);
    case LM_OP_IMAGES: return images_request(canon, e);
    case LM_OP_MODERATIONS: return moderations_request(canon, e);
    default:
        return lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", NULL, "unknown endpoint"), -1;
    }
}

static int by_score(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    double sx = json_number_value(json_object_get(x, "relevance_score"));
    double sy = json_number_value(json_object_get(y, "relevance_score"));
    if (sx != sy)
        return sx > sy ? -1 : 1;
    json_int_t ix = json_integer_value(json_object_get(x, "index"));
    json_int_t iy = json_integer_value(json_object_get(y, "index"));
    return ix < iy ? -1 : ix > iy;
}

static int rerank_results(json_t *out)
{
    json_t *res = json_object_get(out, "results"), *it;
    size_t n = json_array_size(res), i;
    if (n == 0)
        return json_is_array(res) ? 0 : json_object_set_new(out, "results", json_array());
    json_t **v = malloc(n * sizeof(*v));
    if (v == NULL)
        return -1;
    json_array_foreach (res, i, it) {
        json_t *d = json_object_get(it, "document");
        if (json_is_string(d))
            json_object_set_new(it, "document", json_pack("{s:O}", "text", d));
        v[i] = json_incref(it);
    }
    qsort(v, n, sizeof(*v), by_score);
    json_array_clear(res);
    int rc = 0;
    for (i = 0; i < n; i++)
        if (json_array_append_new(res, v[i]) < 0)
            rc = -1;
    free(v);
    return rc;
}

int lm_endpoint_finish(json_t *out, int op, lm_usage *u)
{
    if (op != LM_OP_RERANK)
        return 0;
    if (rerank_results(out) < 0)
        return -1;
    if (u->prompt < 0 && u->total < 0)
        lm_usage_from_json(json_object_get(out, "usage"), u);
    if (u->total < 0 && u->prompt >= 0)
        u->total = u->prompt;
    if (u->prompt < 0 && u->total >= 0)
        u->prompt = u->total;
    json_t *uj =
        json_pack("{s:I,s:I}", "prompt_tokens", (json_int_t)(u->prompt > 0 ? u->prompt : 0),
                  "total_tokens", (json_int_t)(u->total > 0 ? u->total : 0));
    return uj ? json_object_set_new(out, "usage", uj) : -1;
}

static int64_t chars(const json_t *v)
{
    int64_t n = 0;
    size_t i;
    const json_t *it;
    if (json_is_string(v)) {
        const unsigned char *p = (const unsigned char *)json_string_value(v);
        for (size_t k = 0; k < json_string_length(v); k++)
            n += (p[k] & 0xc0) != 0x80; /* count lead bytes: code points */
        return n;
    }
    json_array_foreach (v, i, it) /* strings, or {"type":"text","text":...} parts */
        n += chars(json_is_object(it) ? json_object_get(it, "text") : it);
    return n;
}

int64_t lm_endpoint_units(int op, const json_t *canon, int unit)
{
    if (op == LM_OP_RERANK && unit == LM_UNIT_1K_SEARCHES)
        return ((int64_t)json_array_size(json_object_get(canon, "documents")) + 99) / 100;
    if (op == LM_OP_IMAGES && unit == LM_UNIT_IMAGE) {
        const json_t *n = json_object_get(canon, "n");
        return json_is_integer(n) && json_integer_value(n) > 0 ? json_integer_value(n) : 1;
    }
    if (op == LM_OP_MODERATIONS && unit == LM_UNIT_1M_CHARS)
        return chars(json_object_get(canon, "input"));
    return 0;
}
