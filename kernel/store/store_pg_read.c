/*
 * store_pg_read.c - the PostgreSQL backend's admin queries (admin threads,
 * serialised by rd_mu on the read connection) and its row decoders; every
 * record is the caller's.
 */
#include "store/store_pg_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* rows into records                                                         */

int64_t lm_pg_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 64 hex digits into 32 bytes; 0 or -1. */
static int unhex32(const char *t, unsigned char out[32])
{
    if (strlen(t) != 64)
        return -1;
    for (int i = 0; i < 32; i++) {
        int hi = hexval(t[2 * i]), lo = hexval(t[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* The column getters of rowdec.h over one row of a PGresult. */
static int get_null(const lm_rowdec_t *d, int col)
{
    return PQgetisnull(d->res, d->row, col);
}

static int64_t get_num(const lm_rowdec_t *d, int col)
{
    return lm_pg_int(d->res, d->row, col);
}

static const char *get_text(const lm_rowdec_t *d, int col)
{
    return PQgetisnull(d->res, d->row, col) ? NULL : PQgetvalue(d->res, d->row, col);
}

/* The hash comes as hex text (NULL where the query leaves it out). */
static int get_hash(const lm_rowdec_t *d, int col, unsigned char out[32])
{
    if (PQgetisnull(d->res, d->row, col))
        return 1;
    return unhex32(PQgetvalue(d->res, d->row, col), out);
}

lm_rowdec_t lm_pg_rowdec(const PGresult *r, int row)
{
    return (lm_rowdec_t){.res = (void *)(uintptr_t)r,
                         .row = row,
                         .is_null = get_null,
                         .num = get_num,
                         .text = get_text,
                         .hash = get_hash};
}

lm_key_t *lm_pg_key_from_row(const PGresult *r, int i)
{
    lm_rowdec_t d = lm_pg_rowdec(r, i);
    return lm_rowdec_key(&d);
}

static lm_chan_rec_t *chan_from_row(const PGresult *r, int i)
{
    lm_rowdec_t d = lm_pg_rowdec(r, i);
    return lm_rowdec_chan(&d);
}

/* ------------------------------------------------------------------------ */
/* admin queries (read connection)                                           */

const char *lm_pg_role_name(int role)
{
    return role == LM_ADMIN_ROLE_READ ? "read" : "admin";
}

/* One query on the read connection. */
static PGresult *rd(lm_store_db_t *db, const char *what, const char *sql, const lm_pg_params_t *p)
{
    pthread_mutex_lock(&db->rd_mu);
    PGresult *r = lm_pg_exec(&db->r, what, sql, p);
    pthread_mutex_unlock(&db->rd_mu);
    return r;
}

int lm_pg_admin_token_get(lm_store_db_t *db, int role, unsigned char hash[32])
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_text(&p, lm_pg_role_name(role));
    PGresult *r =
        rd(db, "admin token", "SELECT encode(hash, 'hex') FROM admin_tokens WHERE role = $1", &p);
    if (r == NULL)
        return LM_STORE_EDB;
    int rc = PQntuples(r) == 1 && unhex32(PQgetvalue(r, 0, 0), hash) == 0 ? LM_STORE_OK
                                                                          : LM_STORE_ENOTFOUND;
    PQclear(r);
    return rc;
}

int lm_pg_key_get(lm_store_db_t *db, int64_t id, lm_key_t **out)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_i64(&p, id);
    PGresult *r =
        rd(db, "key get",
           "SELECT " PG_KEY_COLS_NOHASH " FROM keys WHERE id = $1 AND deleted_at IS NULL", &p);
    if (r == NULL)
        return LM_STORE_EDB;
    int rc = LM_STORE_ENOTFOUND;
    if (PQntuples(r) == 1) {
        *out = lm_pg_key_from_row(r, 0);
        rc = *out ? LM_STORE_OK : LM_STORE_ENOMEM;
    }
    PQclear(r);
    return rc;
}

int lm_pg_key_list(lm_store_db_t *db, int64_t after_id, size_t limit, lm_key_t **v, size_t *n)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_i64(&p, after_id);
    lm_pg_i64(&p, (int64_t)limit);
    PGresult *r = rd(db, "key list",
                     "SELECT " PG_KEY_COLS_NOHASH " FROM keys WHERE id > $1 AND deleted_at IS "
                     "NULL ORDER BY id LIMIT $2",
                     &p);
    *n = 0;
    if (r == NULL)
        return LM_STORE_EDB;
    int rc = LM_STORE_OK;
    for (int i = 0; i < PQntuples(r) && *n < limit; i++) {
        if ((v[*n] = lm_pg_key_from_row(r, i)) == NULL) {
            rc = LM_STORE_ENOMEM;
            break;
        }
        (*n)++;
    }
    PQclear(r);
    return rc;
}

int lm_pg_chan_get(lm_store_db_t *db, const char *name, lm_chan_rec_t **out)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_text(&p, name);
    PGresult *r =
        rd(db, "channel get", "SELECT " PG_CHAN_COLS " FROM channels WHERE name = $1", &p);
    if (r == NULL)
        return LM_STORE_EDB;
    int rc = LM_STORE_ENOTFOUND;
    if (PQntuples(r) == 1) {
        *out = chan_from_row(r, 0);
        rc = *out ? LM_STORE_OK : LM_STORE_ENOMEM;
    }
    PQclear(r);
    return rc;
}

int lm_pg_chan_list(lm_store_db_t *db, lm_chan_rec_t ***out, size_t *n)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_i64(&p, LM_CHAN_MAX);
    PGresult *r =
        rd(db, "channel list", "SELECT " PG_CHAN_COLS " FROM channels ORDER BY name LIMIT $1", &p);
    *out = NULL;
    *n = 0;
    if (r == NULL)
        return LM_STORE_EDB;
    int rows = PQntuples(r), rc = LM_STORE_OK;
    lm_chan_rec_t **v = calloc((size_t)rows + 1, sizeof(*v));
    if (v == NULL)
        rc = LM_STORE_ENOMEM;
    for (int i = 0; v && i < rows; i++) {
        if ((v[i] = chan_from_row(r, i)) == NULL) {
            rc = LM_STORE_ENOMEM;
            break;
        }
        (*n)++;
    }
    PQclear(r);
    *out = v;
    return rc;
}

#define TOTAL_COLS                                                                                 \
    "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "             \
    "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), "                        \
    "COALESCE(SUM(cost), 0), COALESCE(SUM(client_aborted), 0)"
#define TOTAL_WHERE                                                                                \
    " FROM usage WHERE created_at >= $1 AND created_at < $2 AND ($3::bigint = 0 OR key_id = "      \
    "$3::bigint)"

int lm_pg_usage_totals(lm_store_db_t *db, int by, int64_t from_ms, int64_t to_ms, int64_t key_id,
                       lm_usage_total_t **out, size_t *n)
{
    static const char *const sql[] = {
        "SELECT COALESCE(key_id, 0)::text, COALESCE(key_id, 0), " TOTAL_COLS TOTAL_WHERE
        " GROUP BY 2 ORDER BY 2",
        "SELECT model_asked, 0, " TOTAL_COLS TOTAL_WHERE " GROUP BY 1 ORDER BY 1",
        "SELECT model_served, 0, " TOTAL_COLS TOTAL_WHERE " GROUP BY 1 ORDER BY 1",
        "SELECT channel, 0, " TOTAL_COLS TOTAL_WHERE " GROUP BY 1 ORDER BY 1",
        "SELECT to_char(to_timestamp(created_at / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), "
        "0, " TOTAL_COLS TOTAL_WHERE " GROUP BY 1 ORDER BY 1",
        "SELECT '', 0, " TOTAL_COLS TOTAL_WHERE,
    };
    lm_pg_params_t p = {.n = 0};
    lm_pg_i64(&p, from_ms);
    lm_pg_i64(&p, to_ms);
    lm_pg_i64(&p, key_id);
    PGresult *r = rd(db, "usage totals", sql[by], &p);
    *out = NULL;
    *n = 0;
    if (r == NULL)
        return LM_STORE_EDB;
    int rows = PQntuples(r), rc = LM_STORE_OK;
    lm_usage_total_t *v = calloc((size_t)rows + 1, sizeof(*v));
    if (v == NULL)
        rc = LM_STORE_ENOMEM;
    for (int i = 0; v && i < rows; i++) {
        lm_rowdec_t d = lm_pg_rowdec(r, i);
        if (lm_rowdec_total(&d, &v[i]) != 0) {
            rc = LM_STORE_ENOMEM;
            break;
        }
        (*n)++;
    }
    PQclear(r);
    *out = v;
    return rc;
}

int lm_pg_usage_list(lm_store_db_t *db, int64_t key_id, int64_t before_id, size_t limit,
                     lm_usage_rec_t *v, size_t *n)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_i64(&p, key_id);
    lm_pg_i64(&p, before_id);
    lm_pg_i64(&p, (int64_t)limit);
    PGresult *r =
        rd(db, "usage list",
           "SELECT id, " PG_USAGE_COLS " FROM usage WHERE ($1::bigint = 0 OR key_id = $1::bigint) "
           "AND id < $2::bigint ORDER BY id DESC LIMIT $3",
           &p);
    *n = 0;
    if (r == NULL)
        return LM_STORE_EDB;
    int rc = LM_STORE_OK;
    for (int i = 0; i < PQntuples(r) && *n < limit; i++) {
        lm_rowdec_t d = lm_pg_rowdec(r, i);
        if (lm_rowdec_usage(&d, &v[(*n)++]) != 0) { /* counted: the caller frees it */
            rc = LM_STORE_ENOMEM;
            break;
        }
    }
    PQclear(r);
    return rc;
}
