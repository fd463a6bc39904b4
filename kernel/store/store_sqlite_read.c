/*
 * store_sqlite_read.c - the SQLite backend's admin queries (admin threads,
 * serialised by rd_mu) and its row decoders; every record is the caller's.
 */
#include "store/store_sqlite_int.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* rows into records                                                         */

/* The column getters of rowdec.h over the current row of a statement. */
static int get_null(const lm_rowdec_t *d, int col)
{
    return sqlite3_column_type(d->res, col) == SQLITE_NULL;
}

static int64_t get_num(const lm_rowdec_t *d, int col)
{
    return sqlite3_column_int64(d->res, col);
}

static const char *get_text(const lm_rowdec_t *d, int col)
{
    return (const char *)sqlite3_column_text(d->res, col);
}

/* The hash is a 32-byte blob; anything else (NULL where the query leaves
 * it out) leaves the record's zeroes. */
static int get_hash(const lm_rowdec_t *d, int col, unsigned char out[32])
{
    if (sqlite3_column_type(d->res, col) != SQLITE_BLOB || sqlite3_column_bytes(d->res, col) != 32)
        return 1;
    memcpy(out, sqlite3_column_blob(d->res, col), 32);
    return 0;
}

/* A decoder over the current row of s. */
static lm_rowdec_t dec(sqlite3_stmt *s)
{
    return (lm_rowdec_t){
        .res = s, .is_null = get_null, .num = get_num, .text = get_text, .hash = get_hash};
}

lm_key_t *lm_sqlite_key_from_row(sqlite3_stmt *s)
{
    lm_rowdec_t d = dec(s);
    return lm_rowdec_key(&d);
}

/* A new record from a row of CHAN_COLS, or NULL. */
static lm_chan_rec_t *chan_from_row(sqlite3_stmt *s)
{
    lm_rowdec_t d = dec(s);
    return lm_rowdec_chan(&d);
}

/* ------------------------------------------------------------------------ */
/* admin queries (read connection)                                           */

const char *lm_sqlite_role_name(int role)
{
    return role == LM_ADMIN_ROLE_READ ? "read" : "admin";
}

/* Done with statement s of the read connection: reset it, let others in. */
static void rd_done(lm_store_db_t *db, sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&db->rd_mu);
}

int lm_sqlite_admin_token_get(lm_store_db_t *db, int role, unsigned char hash[32])
{
    pthread_mutex_lock(&db->rd_mu);
    sqlite3_stmt *s = db->rs[R_GET_ADMIN];
    sqlite3_bind_text(s, 1, lm_sqlite_role_name(role), -1, SQLITE_STATIC);
    int rc = LM_STORE_ENOTFOUND;
    int sr = sqlite3_step(s);
    if (sr == SQLITE_ROW && sqlite3_column_bytes(s, 0) == 32) {
        memcpy(hash, sqlite3_column_blob(s, 0), 32);
        rc = LM_STORE_OK;
    } else if (sr != SQLITE_DONE) {
        rc = LM_STORE_EDB;
    }
    rd_done(db, s);
    return rc;
}

int lm_sqlite_key_get(lm_store_db_t *db, int64_t id, lm_key_t **out)
{
    pthread_mutex_lock(&db->rd_mu);
    sqlite3_stmt *s = db->rs[R_GET_KEY];
    int rc = LM_STORE_ENOTFOUND;
    sqlite3_bind_int64(s, 1, id);
    int sr = sqlite3_step(s);
    if (sr == SQLITE_ROW) {
        *out = lm_sqlite_key_from_row(s);
        rc = *out ? LM_STORE_OK : LM_STORE_ENOMEM;
    } else if (sr != SQLITE_DONE) {
        rc = LM_STORE_EDB;
    }
    rd_done(db, s);
    return rc;
}

int lm_sqlite_key_list(lm_store_db_t *db, int64_t after_id, size_t limit, lm_key_t **v, size_t *n)
{
    size_t cnt = 0;
    int rc = LM_STORE_OK;
    pthread_mutex_lock(&db->rd_mu);
    sqlite3_stmt *s = db->rs[R_LIST_KEYS];
    sqlite3_bind_int64(s, 1, after_id);
    sqlite3_bind_int64(s, 2, (int64_t)limit);
    int sr;
    while ((sr = sqlite3_step(s)) == SQLITE_ROW && cnt < limit) {
        if ((v[cnt] = lm_sqlite_key_from_row(s)) == NULL) {
            rc = LM_STORE_ENOMEM;
            break;
        }
        cnt++;
    }
    if (rc == LM_STORE_OK && sr != SQLITE_DONE && sr != SQLITE_ROW)
        rc = LM_STORE_EDB;
    rd_done(db, s);
    *n = cnt;
    return rc;
}

int lm_sqlite_chan_get(lm_store_db_t *db, const char *name, lm_chan_rec_t **out)
{
    pthread_mutex_lock(&db->rd_mu);
    sqlite3_stmt *s = db->rs[R_GET_CHAN];
    int rc = LM_STORE_ENOTFOUND;
    sqlite3_bind_text(s, 1, name ? name : "", -1, SQLITE_TRANSIENT);
    int sr = sqlite3_step(s);
    if (sr == SQLITE_ROW) {
        *out = chan_from_row(s);
        rc = *out ? LM_STORE_OK : LM_STORE_ENOMEM;
    } else if (sr != SQLITE_DONE) {
        rc = LM_STORE_EDB;
    }
    rd_done(db, s);
    return rc;
}

int lm_sqlite_chan_list(lm_store_db_t *db, lm_chan_rec_t ***out, size_t *n)
{
    lm_chan_rec_t **v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = LM_STORE_OK, sr;
    pthread_mutex_lock(&db->rd_mu);
    sqlite3_stmt *s = db->rs[R_LIST_CHAN];
    sqlite3_bind_int64(s, 1, LM_CHAN_MAX);
    while ((sr = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            lm_chan_rec_t **nv = realloc(v, nc * sizeof(*nv));
            if (nv == NULL) {
                rc = LM_STORE_ENOMEM;
                break;
            }
            v = nv;
            cap = nc;
        }
        if ((v[cnt] = chan_from_row(s)) == NULL) {
            rc = LM_STORE_ENOMEM;
            break;
        }
        cnt++;
    }
    if (rc == LM_STORE_OK && sr != SQLITE_DONE)
        rc = LM_STORE_EDB;
    rd_done(db, s);
    *out = v;
    *n = cnt;
    return rc;
}

int lm_sqlite_usage_totals(lm_store_db_t *db, int by, int64_t from_ms, int64_t to_ms,
                           int64_t key_id, lm_usage_total_t **out, size_t *n)
{
    static const int which[] = {R_TOT_KEY,     R_TOT_MODEL, R_TOT_SERVED,
                                R_TOT_CHANNEL, R_TOT_DAY,   R_TOT_NONE};
    lm_usage_total_t *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = LM_STORE_OK, sr;
    pthread_mutex_lock(&db->rd_mu);
    sqlite3_stmt *s = db->rs[which[by]];
    sqlite3_bind_int64(s, 1, from_ms);
    sqlite3_bind_int64(s, 2, to_ms);
    sqlite3_bind_int64(s, 3, key_id);
    while ((sr = sqlite3_step(s)) == SQLITE_ROW) {
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 16;
            lm_usage_total_t *nv = realloc(v, nc * sizeof(*nv));
            if (nv == NULL) {
                rc = LM_STORE_ENOMEM;
                break;
            }
            v = nv;
            cap = nc;
        }
        lm_rowdec_t d = dec(s);
        if (lm_rowdec_total(&d, &v[cnt]) != 0) {
            rc = LM_STORE_ENOMEM;
            break;
        }
        cnt++;
    }
    if (rc == LM_STORE_OK && sr != SQLITE_DONE) {
        lm_store_log(db->st, 0, "usage totals: %s", sqlite3_errmsg(db->r));
        rc = LM_STORE_EDB;
    }
    rd_done(db, s);
    *out = v;
    *n = cnt;
    return rc;
}

int lm_sqlite_usage_list(lm_store_db_t *db, int64_t key_id, int64_t before_id, size_t limit,
                         lm_usage_rec_t *v, size_t *n)
{
    size_t cnt = 0;
    int rc = LM_STORE_OK, sr;
    pthread_mutex_lock(&db->rd_mu);
    sqlite3_stmt *s = db->rs[R_USAGE_LIST];
    sqlite3_bind_int64(s, 1, key_id);
    sqlite3_bind_int64(s, 2, before_id);
    sqlite3_bind_int64(s, 3, (int64_t)limit);
    while ((sr = sqlite3_step(s)) == SQLITE_ROW && cnt < limit) {
        lm_rowdec_t d = dec(s);
        if (lm_rowdec_usage(&d, &v[cnt++]) != 0) { /* counted: the caller frees it */
            rc = LM_STORE_ENOMEM;
            break;
        }
    }
    if (rc == LM_STORE_OK && sr != SQLITE_DONE && sr != SQLITE_ROW)
        rc = LM_STORE_EDB;
    rd_done(db, s);
    *n = cnt;
    return rc;
}

int lm_sqlite_reqlog_list(lm_store_db_t *db, const lm_reqlog_query_t *q, lm_reqlog_rec_t *v,
                          size_t *n)
{
    size_t cnt = 0;
    int rc = LM_STORE_OK, sr;
    pthread_mutex_lock(&db->rd_mu);
    sqlite3_stmt *s = db->rs[R_REQLOG_LIST];
    const char *texts[] = {q->key_name, q->model, q->channel};
    for (int i = 0; i < 3; i++)
        sqlite3_bind_text(s, 1 + i, texts[i] ? texts[i] : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, q->status);
    sqlite3_bind_int64(s, 5, q->since_ms);
    sqlite3_bind_int64(s, 6, q->until_ms);
    sqlite3_bind_int64(s, 7, q->before_id);
    sqlite3_bind_int64(s, 8, (int64_t)q->limit);
    sqlite3_bind_int(s, 9, q->bodies ? 1 : 0);
    while ((sr = sqlite3_step(s)) == SQLITE_ROW && cnt < q->limit) {
        lm_rowdec_t d = dec(s);
        if (lm_rowdec_reqlog(&d, &v[cnt++]) != 0) { /* counted: the caller frees it */
            rc = LM_STORE_ENOMEM;
            break;
        }
    }
    if (rc == LM_STORE_OK && sr != SQLITE_DONE && sr != SQLITE_ROW)
        rc = LM_STORE_EDB;
    rd_done(db, s);
    *n = cnt;
    return rc;
}
