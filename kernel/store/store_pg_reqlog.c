/*
 * store_pg_reqlog.c - the request log (reqlog.h) on PostgreSQL: insert and
 * prune on the writer connection (inside the batch's transaction, each in
 * the core's savepoint: a failed row is rolled back alone), the filtered
 * list on the read connection. Every statement takes its values as
 * parameters. Records from the list are new and the caller's.
 */
#include "store/reqlog.h"
#include "store/store_pg_int.h"

#include <stdlib.h>
#include <string.h>

/* Several instances prune the one table; one at a time (the others skip
 * that round) so their DELETEs never wait on each other. Arbitrary. */
#define PRUNE_LOCK "SELECT pg_try_advisory_xact_lock(7469323632)"

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t n = c >= 0xC2 && c <= 0xDF   ? 2
               : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4
                                        : 0;
    /* the second byte's range excludes overlongs, surrogates and > U+10FFFF */
    unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (n == 0 || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* A UTF8 database refuses a malformed text (a body cut at 256 KiB inside a
 * character, an upstream's stray bytes) and the row would be lost: NULL
 * when s is well formed, else a new copy with each bad byte as '?'. */
static char *utf8_fix(const char *s)
{
    if (s == NULL)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t k;
    while (*p && (k = utf8_seq(p)) > 0)
        p += k;
    if (*p == '\0')
        return NULL;
    char *out = strdup(s);
    if (out == NULL)
        return NULL;
    for (unsigned char *q = (unsigned char *)out + (p - (const unsigned char *)s); *q;)
        if ((k = utf8_seq(q)) > 0)
            q += k;
        else
            *q++ = '?';
    return out;
}

/* t, or its repaired copy (kept in *fix to be freed). */
static const char *valid_text(const char *t, char **fix)
{
    *fix = utf8_fix(t);
    return *fix ? *fix : t;
}

#define REQLOG_COLS                                                                                \
    "request_id, created_at, key_id, key_name, model_asked, model_served, channel, api, "          \
    "finish_reason, error_code, attempts, status, latency_ms, ttft_ms, prompt_tokens, "            \
    "completion_tokens, cost, stream, request_body, response_body"

int lm_pg_reqlog_insert(lm_store_db_t *db, const lm_reqlog_row_t *r)
{
    const char *texts[] = {r->request_id,    r->key_name,     r->model_asked,   r->model_served,
                           r->channel,       r->api,          r->finish_reason, r->error_code,
                           r->attempts_json, r->request_body, r->response_body};
    enum { NT = sizeof(texts) / sizeof(texts[0]) };
    const char *dflt[NT] = {[5] = "chat", [8] = "[]"};
    char *fix[NT];
    lm_pg_params_t p = {.n = 0};
    for (size_t i = 0; i < NT; i++)
        texts[i] = valid_text(texts[i], &fix[i]);
    lm_pg_text(&p, texts[0]);
    lm_pg_i64(&p, r->created_ms);
    if (r->key_id > 0)
        lm_pg_i64(&p, r->key_id);
    else
        lm_pg_null(&p);
    for (size_t i = 1; i < 9; i++)
        lm_pg_text(&p, texts[i] ? texts[i] : dflt[i]);
    const int64_t nums[] = {r->status,        r->latency_ms,        r->ttft_ms,
                            r->prompt_tokens, r->completion_tokens, r->cost,
                            r->stream ? 1 : 0};
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        lm_pg_i64(&p, nums[i]);
    for (size_t i = 9; i < NT; i++) /* bodies: NULL when not kept */
        if (texts[i])
            lm_pg_text(&p, texts[i]);
        else
            lm_pg_null(&p);
    PGresult *res = lm_pg_exec(&db->w, "request log insert",
                               "INSERT INTO request_log (" REQLOG_COLS ") VALUES ($1, $2, $3, $4, "
                               "$5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, "
                               "$19, $20)",
                               &p);
    for (size_t i = 0; i < NT; i++)
        free(fix[i]);
    if (res == NULL)
        return lm_pgconn_constraint(&db->w) ? LM_STORE_ECONFLICT : LM_STORE_EDB;
    PQclear(res);
    return LM_STORE_OK;
}

/* One DELETE with p; LM_STORE_OK or the failure. */
static int prune_run(lm_store_db_t *db, const char *sql, const lm_pg_params_t *p)
{
    PGresult *r = lm_pg_exec(&db->w, "request log prune", sql, p);
    if (r == NULL)
        return LM_STORE_EDB;
    PQclear(r);
    return LM_STORE_OK;
}

int lm_pg_reqlog_prune(lm_store_db_t *db, int64_t older_than_ms, int64_t keep_rows)
{
    if (older_than_ms <= 0 && keep_rows <= 0)
        return LM_STORE_OK;
    PGresult *r = lm_pg_exec(&db->w, "request log prune lock", PRUNE_LOCK, NULL);
    if (r == NULL)
        return LM_STORE_EDB;
    int mine = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!mine) /* another instance prunes now; the next round catches up */
        return LM_STORE_OK;
    int rc = LM_STORE_OK;
    if (older_than_ms > 0) {
        lm_pg_params_t p = {.n = 0};
        lm_pg_i64(&p, older_than_ms);
        rc = prune_run(db, "DELETE FROM request_log WHERE created_at < $1::bigint", &p);
    }
    if (rc == LM_STORE_OK && keep_rows > 0) {
        lm_pg_params_t p = {.n = 0};
        lm_pg_i64(&p, keep_rows);
        rc = prune_run(db,
                       "DELETE FROM request_log WHERE id <= (SELECT id FROM request_log "
                       "ORDER BY id DESC LIMIT 1 OFFSET $1::bigint)",
                       &p);
    }
    return rc;
}

int lm_pg_reqlog_list(lm_store_db_t *db, const lm_reqlog_query_t *q, lm_reqlog_rec_t *v, size_t *n)
{
    /* $1 key, $2 model, $3 channel ('' = any), $4 status (0 = any), $5..$6
     * created_at range, $7 before id, $8 limit, $9 bodies */
    lm_pg_params_t p = {.n = 0};
    char *fix[3];
    lm_pg_text(&p, valid_text(q->key_name, &fix[0]));
    lm_pg_text(&p, valid_text(q->model, &fix[1]));
    lm_pg_text(&p, valid_text(q->channel, &fix[2]));
    lm_pg_i64(&p, q->status);
    lm_pg_i64(&p, q->since_ms);
    lm_pg_i64(&p, q->until_ms);
    lm_pg_i64(&p, q->before_id);
    lm_pg_i64(&p, (int64_t)q->limit);
    lm_pg_text(&p, q->bodies ? "true" : "false");
    pthread_mutex_lock(&db->rd_mu);
    PGresult *r = lm_pg_exec(
        &db->r, "request log list",
        "SELECT id, request_id, created_at, key_id, key_name, model_asked, model_served, channel, "
        "api, finish_reason, error_code, attempts, status, latency_ms, ttft_ms, prompt_tokens, "
        "completion_tokens, cost, stream, CASE WHEN $9::boolean THEN request_body END, "
        "CASE WHEN $9::boolean THEN response_body END FROM request_log "
        "WHERE ($1::text = '' OR key_name = $1::text) "
        "AND ($2::text = '' OR model_asked = $2::text OR model_served = $2::text) "
        "AND ($3::text = '' OR channel = $3::text) AND ($4::bigint = 0 OR status = $4::bigint) "
        "AND created_at >= $5::bigint AND created_at < $6::bigint AND id < $7::bigint "
        "ORDER BY id DESC LIMIT $8::bigint",
        &p);
    pthread_mutex_unlock(&db->rd_mu);
    for (int i = 0; i < 3; i++)
        free(fix[i]);
    *n = 0;
    if (r == NULL)
        return LM_STORE_EDB;
    int rc = LM_STORE_OK;
    for (int i = 0; i < PQntuples(r) && *n < q->limit; i++) {
        lm_rowdec_t d = lm_pg_rowdec(r, i);
        if (lm_rowdec_reqlog(&d, &v[(*n)++]) != 0) { /* counted: the caller frees it */
            rc = LM_STORE_ENOMEM;
            break;
        }
    }
    PQclear(r);
    return rc;
}
