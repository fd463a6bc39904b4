/*
 * store_pg_int.h - what the PostgreSQL backend's two files share: the
 * backend state (three connections), parameter lists and the row decoders.
 * Included by store_pg.c, store_pg_read.c and store_pg_reqlog.c only.
 */
#ifndef LM_STORE_PG_INT_H
#define LM_STORE_PG_INT_H
#include "store/backend.h"
#include "store/pgconn.h"
#include "store/rowdec.h"
#include "store/store.h"

#include <pthread.h>

/* `w` belongs to the writer thread (and open), `r` to the admin readers
 * (under rd_mu), `watch` to the change watcher (lm_store_pg.changes). */
struct lm_store_db_s {
    lm_store_t *st;
    lm_pgconn_t w, r, watch;
    pthread_mutex_t rd_mu;
    int in_tx; /* writer: a transaction is open on w */
};

/* Text parameters of one statement (numbers formatted into num). */
#define PG_MAXP 24
typedef struct lm_pg_params_s {
    const char *v[PG_MAXP];
    int len[PG_MAXP], fmt[PG_MAXP];
    char num[PG_MAXP][24];
    int n;
} lm_pg_params_t;
void lm_pg_text(lm_pg_params_t *p, const char *t); /* NULL = "" */
void lm_pg_null(lm_pg_params_t *p);
void lm_pg_i64(lm_pg_params_t *p, int64_t v);
void lm_pg_bytes(lm_pg_params_t *p, const unsigned char *b, int len);
/* Run sql with p on connection c; the result or NULL (see lm_pgconn_exec). */
PGresult *lm_pg_exec(lm_pgconn_t *c, const char *what, const char *sql, const lm_pg_params_t *p);

#define PG_KEY_REST                                                                                \
    "prefix, name, owner, grp, quota, used, expires_at, models, cidrs, rpm, tpm, "                 \
    "max_concurrent, enabled, created_at, updated_at"
#define PG_KEY_COLS        "id, encode(hash, 'hex'), " PG_KEY_REST
#define PG_KEY_COLS_NOHASH "id, NULL, " PG_KEY_REST
#define PG_USAGE_COLS                                                                              \
    "request_id, attempt, key_id, channel, model_asked, model_served, prompt_tokens, "             \
    "completion_tokens, cached_tokens, reasoning_tokens, cost, latency_ms, ttft_ms, status, "      \
    "client_aborted, usage_json, created_at, api, cached"
#define PG_CHAN_COLS                                                                               \
    "id, name, plugin, models, settings, priority, weight, max_inflight, "                         \
    "connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, request_timeout_ms, "             \
    "price_input, price_output, price_cached_input, price_per_request, enabled, "                  \
    "created_at, updated_at"

int64_t lm_pg_int(const PGresult *r, int row, int col);
/* A new key record (refs 1, acct NULL) from row of PG_KEY_COLS(_NOHASH). */
lm_key_t *lm_pg_key_from_row(const PGresult *r, int row);
/* A decoder (rowdec.h) over row `row` of r; valid while r is. */
lm_rowdec_t lm_pg_rowdec(const PGresult *r, int row);

/* store_pg_read.c: the admin queries (backend.h describes each). */
int lm_pg_admin_token_get(lm_store_db_t *db, int role, unsigned char hash[32]);
int lm_pg_key_get(lm_store_db_t *db, int64_t id, lm_key_t **out);
int lm_pg_key_list(lm_store_db_t *db, int64_t after_id, size_t limit, lm_key_t **v, size_t *n);
int lm_pg_chan_get(lm_store_db_t *db, const char *name, lm_chan_rec_t **out);
int lm_pg_chan_list(lm_store_db_t *db, lm_chan_rec_t ***out, size_t *n);
int lm_pg_usage_totals(lm_store_db_t *db, int by, int64_t from_ms, int64_t to_ms, int64_t key_id,
                       lm_usage_total_t **out, size_t *n);
int lm_pg_usage_list(lm_store_db_t *db, int64_t key_id, int64_t before_id, size_t limit,
                     lm_usage_rec_t *v, size_t *n);
const char *lm_pg_role_name(int role);

/* store_pg_reqlog.c: the request log (backend.h, reqlog.h). */
int lm_pg_reqlog_insert(lm_store_db_t *db, const struct lm_reqlog_row_s *r);
int lm_pg_reqlog_prune(lm_store_db_t *db, int64_t older_than_ms, int64_t keep_rows);
int lm_pg_reqlog_list(lm_store_db_t *db, const struct lm_reqlog_query_s *q,
                      struct lm_reqlog_rec_s *v, size_t *n);
#endif
