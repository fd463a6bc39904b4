/*
 * ctx.c - what every admin resource file shares: store status replies and
 * JSON values. Admin thread only; JSON values are new references.
 */
#include "admin/ctx.h"
#include "core/money.h"

const char *const lm_admin_no_params[] = {NULL};

/* Store status -> HTTP. msg (may be empty) is the store's validation text,
 * which is built from fixed strings; database errors get a fixed message
 * (the SQLite text is only logged, by the store). */
void lm_admin_store_error(lm_admin_http_req_t *req, int rc, const char *msg)
{
    switch (rc) {
    case LM_STORE_EINVAL:
        lm_admin_http_bad_request(req, NULL, msg && *msg ? msg : "invalid value");
        return;
    case LM_STORE_ENOTFOUND:
        lm_admin_http_error(req, 404, "not_found", NULL, "no such key");
        return;
    case LM_STORE_ECONFLICT:
        lm_admin_http_error(req, 409, "conflict", "quota",
                            "quota is below what the key has already used");
        return;
    case LM_STORE_EFULL:
    case LM_STORE_ECLOSED:
        lm_admin_http_error(req, 503, "unavailable", NULL, "the store is busy or closing; retry");
        return;
    default: lm_admin_http_error(req, 500, "internal_error", NULL, "internal store error"); return;
    }
}

json_t *lm_admin_jtext(const char *s)
{
    json_t *j = json_string(s ? s : "");
    return j ? j : json_string(""); /* not UTF-8 (never stored so): empty */
}

json_t *lm_admin_jmoney(int64_t micro)
{
    char buf[40];
    return json_string(lm_money_format(micro, buf, sizeof(buf)));
}

int lm_admin_no_query(lm_admin_ctx_t *a)
{
    lm_admin_http_query_t q;
    return lm_admin_http_query_parse(a->req, lm_admin_no_params, &q) == 0;
}

json_t *lm_admin_body(lm_admin_ctx_t *a)
{
    json_t *body = lm_admin_http_body_object(a->req);
    if (body != NULL && !lm_admin_no_query(a)) {
        json_decref(body);
        return NULL;
    }
    return body;
}

int lm_admin_page_query(lm_admin_ctx_t *a, const lm_admin_http_query_t *q, const char *cursor,
                        int64_t cursor_min, int64_t *after, int64_t *limit)
{
    if (lm_admin_http_query_int(a->req, q, cursor, cursor_min, INT64_MAX, 0, after) != 0)
        return -1;
    return lm_admin_http_query_int(a->req, q, "limit", 1, ADMIN_PAGE_MAX, ADMIN_PAGE_DEFAULT,
                                   limit);
}

json_t *lm_admin_page_json(const void *v, size_t n, size_t size, int64_t limit,
                           lm_admin_page_item_fn item, const void *arg, const void **last,
                           int *more)
{
    *more = n > (size_t)limit;
    if (*more)
        n = (size_t)limit;
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, item((const char *)v + i * size, arg));
    *last = n ? (const char *)v + (n - 1) * size : NULL;
    return json_pack("{s:s, s:o, s:b}", "object", "list", "data", data, "has_more", *more);
}
