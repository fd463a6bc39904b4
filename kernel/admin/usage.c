/*
 * usage.c - /admin/usage: totals grouped by key, model, channel or day, and
 * the ledger rows. Admin thread only; replies own their JSON.
 */
#include "admin/usage.h"

#include <string.h>

static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DD" (UTC midnight) or unix milliseconds. */
static int parse_time_ms(const char *s, int64_t *out)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(s) == 10 && s[4] == '-' && s[7] == '-') {
        int64_t y, m, d;
        char ys[5] = {s[0], s[1], s[2], s[3], 0}, ms[3] = {s[5], s[6], 0}, ds[3] = {s[8], s[9], 0};
        if (lm_admin_http_parse_uint(ys, 9999, &y) || lm_admin_http_parse_uint(ms, 12, &m) ||
            lm_admin_http_parse_uint(ds, 31, &d) || y < 1970 || m < 1 || d < 1 || d > mdays[m - 1])
            return -1;
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (m == 2 && d == 29 && !leap)
            return -1;
        *out = days_from_civil(y, m, d) * 86400 * 1000;
        return 0;
    }
    return lm_admin_http_parse_uint(s, ADMIN_TIME_MAX * 1000 + 999, out);
}

static json_t *total_json(const lm_usage_total_t *t, int by)
{
    json_t *o = json_object();
    if (by != LM_USAGE_BY_NONE)
        json_object_set_new(o, "group", lm_admin_jtext(t->group));
    if (by == LM_USAGE_BY_KEY)
        json_object_set_new(o, "key_id", t->key_id > 0 ? json_integer(t->key_id) : json_null());
    json_object_set_new(o, "requests", json_integer(t->requests));
    json_object_set_new(o, "prompt_tokens", json_integer(t->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer(t->completion_tokens));
    json_object_set_new(o, "cached_tokens", json_integer(t->cached_tokens));
    json_object_set_new(o, "reasoning_tokens", json_integer(t->reasoning_tokens));
    json_object_set_new(o, "cost", lm_admin_jmoney(t->cost));
    json_object_set_new(o, "cost_micro", json_integer(t->cost));
    json_object_set_new(o, "aborted", json_integer(t->aborted));
    return o;
}

/* lm_admin_page_item_fn over lm_usage_rec_t. */
static json_t *row_json(const void *item, const void *arg)
{
    const lm_usage_rec_t *r = item;
    const lm_usage_row_t *u = &r->row;
    (void)arg;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(r->id));
    json_object_set_new(o, "request_id", lm_admin_jtext(u->request_id));
    json_object_set_new(o, "attempt", json_integer(u->attempt));
    json_object_set_new(o, "key_id", u->key_id > 0 ? json_integer(u->key_id) : json_null());
    json_object_set_new(o, "channel", lm_admin_jtext(u->channel));
    json_object_set_new(o, "model_asked", lm_admin_jtext(u->model_asked));
    json_object_set_new(o, "model_served", lm_admin_jtext(u->model_served));
    json_object_set_new(o, "prompt_tokens", json_integer(u->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer(u->completion_tokens));
    json_object_set_new(o, "cached_tokens", json_integer(u->cached_tokens));
    json_object_set_new(o, "reasoning_tokens", json_integer(u->reasoning_tokens));
    json_object_set_new(o, "cost", lm_admin_jmoney(u->cost));
    json_object_set_new(o, "cost_micro", json_integer(u->cost));
    json_object_set_new(o, "latency_ms", json_integer(u->latency_ms));
    json_object_set_new(o, "ttft_ms", json_integer(u->ttft_ms));
    json_object_set_new(o, "status", json_integer(u->status));
    json_object_set_new(o, "client_aborted", json_boolean(u->client_aborted));
    json_object_set_new(o, "cached", json_boolean(u->cached));
    json_object_set_new(o, "api", json_string(u->api && u->api[0] ? u->api : "chat"));
    json_t *raw = u->usage_json ? json_loads(u->usage_json, JSON_REJECT_DUPLICATES, NULL) : NULL;
    json_object_set_new(o, "usage", raw ? raw : json_null());
    json_object_set_new(o, "created_at_ms", json_integer(u->created_ms));
    return o;
}

static const char *const group_names[] = {
    [LM_USAGE_BY_KEY] = "key",
    [LM_USAGE_BY_MODEL] = "model",
    [LM_USAGE_BY_MODEL_SERVED] = "model_served",
    [LM_USAGE_BY_CHANNEL] = "channel",
    [LM_USAGE_BY_DAY] = "day",
    [LM_USAGE_BY_NONE] = "none",
};

static int parse_group_by(const char *s, int *by)
{
    for (int i = 0; i <= LM_USAGE_BY_NONE; i++)
        if (strcmp(s, group_names[i]) == 0)
            return *by = i, 0;
    return -1;
}

/* from/to: "YYYY-MM-DD" or unix ms; to is exclusive, absent = no end. */
static int usage_range(lm_admin_ctx_t *a, const lm_admin_http_query_t *q, int64_t *from,
                       int64_t *to)
{
    const char *f = lm_admin_http_query_get(q, "from"), *t = lm_admin_http_query_get(q, "to");
    *from = 0;
    *to = 0;
    if (f && parse_time_ms(f, from) != 0) {
        lm_admin_http_bad_request(a->req, "from",
                                  "from must be YYYY-MM-DD (UTC) or unix milliseconds");
        return -1;
    }
    if (t && (parse_time_ms(t, to) != 0 || *to == 0)) {
        lm_admin_http_bad_request(a->req, "to",
                                  "to must be YYYY-MM-DD (UTC) or unix milliseconds > 0");
        return -1;
    }
    if (t && *to <= *from) {
        lm_admin_http_bad_request(a->req, "to", "to must be after from");
        return -1;
    }
    return 0;
}

void lm_admin_usage_totals(lm_admin_ctx_t *a)
{
    static const char *const params[] = {"group_by", "from", "to", "key_id", NULL};
    lm_admin_http_query_t q;
    int64_t from, to, key_id;
    int by = LM_USAGE_BY_NONE;
    if (lm_admin_http_query_parse(a->req, params, &q) != 0)
        return;
    const char *g = lm_admin_http_query_get(&q, "group_by");
    if (g && parse_group_by(g, &by) != 0) {
        lm_admin_http_bad_request(a->req, "group_by",
                                  "group_by must be key, model, model_served, channel, "
                                  "day or none");
        lm_admin_http_query_free(&q);
        return;
    }
    if (usage_range(a, &q, &from, &to) != 0 ||
        lm_admin_http_query_int(a->req, &q, "key_id", 1, INT64_MAX, 0, &key_id) != 0) {
        lm_admin_http_query_free(&q);
        return;
    }
    lm_admin_http_query_free(&q);
    lm_usage_total_t *t = NULL, *all = NULL;
    size_t n = 0, nall = 0;
    int rc = lm_store_usage_totals(a->env->store, by, from, to, key_id, &t, &n);
    if (rc == LM_STORE_OK)
        rc = lm_store_usage_totals(a->env->store, LM_USAGE_BY_NONE, from, to, key_id, &all, &nall);
    if (rc != LM_STORE_OK || nall != 1) {
        lm_store_usage_totals_free(t, n);
        lm_store_usage_totals_free(all, nall);
        lm_admin_store_error(a->req, rc == LM_STORE_OK ? LM_STORE_EDB : rc, NULL);
        return;
    }
    json_t *data = json_array();
    for (size_t i = 0; by != LM_USAGE_BY_NONE && i < n; i++)
        json_array_append_new(data, total_json(&t[i], by));
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:o, s:o, s:o}", "object", "usage", "group_by", group_names[by],
                  "from", (json_int_t)from, "to", to ? json_integer(to) : json_null(), "key_id",
                  key_id ? json_integer(key_id) : json_null(), "data", data);
    json_object_set_new(o, "total", total_json(&all[0], LM_USAGE_BY_NONE));
    lm_store_usage_totals_free(t, n);
    lm_store_usage_totals_free(all, nall);
    lm_admin_http_json(a->req, 200, o);
}

/* Ledger rows, newest first; `after` is the cursor of the previous page
 * (its last_id): the next page holds rows with smaller ids. */
void lm_admin_usage_rows(lm_admin_ctx_t *a)
{
    static const char *const params[] = {"after", "limit", "key_id", NULL};
    lm_admin_http_query_t q;
    int64_t after, limit, key_id;
    if (lm_admin_http_query_parse(a->req, params, &q) != 0)
        return;
    if (lm_admin_page_query(a, &q, "after", 1, &after, &limit) != 0 ||
        lm_admin_http_query_int(a->req, &q, "key_id", 1, INT64_MAX, 0, &key_id) != 0) {
        lm_admin_http_query_free(&q);
        return;
    }
    lm_admin_http_query_free(&q);
    lm_usage_rec_t *r = NULL;
    size_t n = 0;
    int rc = lm_store_usage_list(a->env->store, key_id, after, (size_t)limit + 1, &r, &n);
    if (rc != LM_STORE_OK) {
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    int more;
    const void *last;
    json_t *o = lm_admin_page_json(r, n, sizeof(*r), limit, row_json, NULL, &last, &more);
    json_object_set_new(o, "last_id",
                        last ? json_integer(((const lm_usage_rec_t *)last)->id) : json_null());
    lm_store_usage_list_free(r, n);
    lm_admin_http_json(a->req, 200, o);
}
