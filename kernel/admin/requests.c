/*
 * requests.c - GET /admin/requests (requests.h): the request log, newest
 * first. Filters: key (name), model (asked or served), channel, status,
 * since/until (unix ms); paging by cursor (the previous page's next_cursor)
 * or by offset-free limit; bodies=1 adds the stored bodies. Admin thread.
 */
#include "admin/requests.h"
#include "store/reqlog.h"

#include <string.h>

static json_t *opt_text(const char *s)
{
    return s && *s ? lm_admin_jtext(s) : json_null();
}

/* lm_admin_page_item_fn over lm_reqlog_rec_t; arg points at bodies. */
static json_t *rec_json(const void *item, const void *arg)
{
    const lm_reqlog_rec_t *r = item;
    int bodies = *(const int *)arg;
    const lm_reqlog_row_t *w = &r->row;
    json_t *o = json_object();
    json_t *att = w->attempts_json ? json_loads(w->attempts_json, 0, NULL) : NULL;
    json_object_set_new(o, "id", json_integer(r->id));
    json_object_set_new(o, "request_id", lm_admin_jtext(w->request_id));
    json_object_set_new(o, "created_at_ms", json_integer(w->created_ms));
    json_object_set_new(o, "key_id", w->key_id > 0 ? json_integer(w->key_id) : json_null());
    json_object_set_new(o, "key", opt_text(w->key_name));
    json_object_set_new(o, "model_asked", lm_admin_jtext(w->model_asked));
    json_object_set_new(o, "model_served", lm_admin_jtext(w->model_served));
    json_object_set_new(o, "channel", lm_admin_jtext(w->channel));
    json_object_set_new(o, "api", lm_admin_jtext(w->api));
    json_object_set_new(o, "status", json_integer(w->status));
    json_object_set_new(o, "error_code", opt_text(w->error_code));
    json_object_set_new(o, "finish_reason", opt_text(w->finish_reason));
    json_object_set_new(o, "attempts", att ? att : json_array());
    json_object_set_new(o, "latency_ms", json_integer(w->latency_ms));
    json_object_set_new(o, "ttft_ms", json_integer(w->ttft_ms));
    json_object_set_new(o, "prompt_tokens", json_integer(w->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer(w->completion_tokens));
    json_object_set_new(o, "cost", lm_admin_jmoney(w->cost));
    json_object_set_new(o, "cost_micro", json_integer(w->cost));
    json_object_set_new(o, "stream", json_boolean(w->stream));
    if (bodies) {
        json_object_set_new(o, "request_body", opt_text(w->request_body));
        json_object_set_new(o, "response_body", opt_text(w->response_body));
    }
    return o;
}

void lm_admin_requests_list(lm_admin_ctx_t *a)
{
    static const char *const params[] = {"key",   "model",  "channel", "status", "since",
                                         "until", "cursor", "limit",   "bodies", NULL};
    lm_admin_http_query_t q;
    int64_t status, since, until, cursor, limit, bodies;
    if (lm_admin_http_query_parse(a->req, params, &q) != 0)
        return;
    if (lm_admin_http_query_int(a->req, &q, "status", 100, 599, 0, &status) != 0 ||
        lm_admin_http_query_int(a->req, &q, "since", 0, ADMIN_TIME_MAX * 1000, 0, &since) != 0 ||
        lm_admin_http_query_int(a->req, &q, "until", 1, ADMIN_TIME_MAX * 1000, 0, &until) != 0 ||
        lm_admin_page_query(a, &q, "cursor", 1, &cursor, &limit) != 0 ||
        lm_admin_http_query_int(a->req, &q, "bodies", 0, 1, 0, &bodies) != 0) {
        lm_admin_http_query_free(&q);
        return;
    }
    lm_reqlog_query_t rq = {.key_name = lm_admin_http_query_get(&q, "key"),
                            .model = lm_admin_http_query_get(&q, "model"),
                            .channel = lm_admin_http_query_get(&q, "channel"),
                            .status = status,
                            .since_ms = since,
                            .until_ms = until,
                            .before_id = cursor,
                            .limit = (size_t)limit + 1, /* one more: is there a next page */
                            .bodies = (int)bodies};
    lm_reqlog_rec_t *r = NULL;
    size_t n = 0;
    int rc = lm_store_reqlog_list(a->env->store, &rq, &r, &n);
    lm_admin_http_query_free(&q); /* rq borrowed from it until here */
    if (rc != LM_STORE_OK) {
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    int with_bodies = (int)bodies, more;
    const void *last;
    json_t *o = lm_admin_page_json(r, n, sizeof(*r), limit, rec_json, &with_bodies, &last, &more);
    json_object_set_new(o, "next_cursor",
                        more ? json_integer(((const lm_reqlog_rec_t *)last)->id) : json_null());
    lm_store_reqlog_list_free(r, n);
    lm_admin_http_json(a->req, 200, o);
}
