/*
 * store_sqlite_read.c - the SQLite backend's admin queries (admin threads,
 * serialised by rd_mu) and its row decoders; every record is the caller's.
 */
#include "store/store_sqlite_int.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* rows into records                                                         */

char *lm_sqlite_col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    int n = sqlite3_column_bytes(s, i);
    char *r = malloc((size_t)n + 1);
    if (r == NULL)
        return NULL;
    if (t)
        memcpy(r, t, (size_t)n);
    r[n] = '\0';
    return r;
}

lm_key_t *lm_sqlite_key_from_row(sqlite3_stmt *s)
{
    lm_key_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    atomic_init(&k->refs, 1);
    k->id = sqlite3_column_int64(s, 0);
    if (sqlite3_column_type(s, 1) == SQLITE_BLOB && sqlite3_column_bytes(s, 1) == 32)
        memcpy(k->hash, sqlite3_column_blob(s, 1), 32);
    const unsigned char *pfx = sqlite3_column_text(s, 2);
    snprintf(k->prefix, sizeof(k->prefix), "%s", pfx ? (const char *)pfx : "");
    k->name = lm_sqlite_col_text(s, 3);
    k->owner = lm_sqlite_col_text(s, 4);
    k->group = lm_sqlite_col_text(s, 5);
    if (sqlite3_column_type(s, 6) == SQLITE_NULL) {
        k->unlimited = 1;
        k->quota = 0;
    } else {
        k->quota = sqlite3_column_int64(s, 6);
    }
    k->used = sqlite3_column_int64(s, 7);
    k->expires_at = sqlite3_column_int64(s, 8);
    int bad = k->name == NULL || k->owner == NULL || k->group == NULL;
    bad |= lm_store_list_decode((const char *)sqlite3_column_text(s, 9), &k->models, &k->nmodels);
    bad |= lm_store_list_decode((const char *)sqlite3_column_text(s, 10), &k->cidrs, &k->ncidrs);
    k->rpm = sqlite3_column_int64(s, 11);
    k->tpm = sqlite3_column_int64(s, 12);
    k->max_concurrent = sqlite3_column_int64(s, 13);
    k->enabled = sqlite3_column_int(s, 14) != 0;
    k->created_at = sqlite3_column_int64(s, 15);
    k->updated_at = sqlite3_column_int64(s, 16);
    if (!bad && k->ncidrs) {
        k->nets = calloc(k->ncidrs, sizeof(*k->nets));
        bad = k->nets == NULL;
        for (size_t i = 0; !bad && i < k->ncidrs; i++)
            bad = lm_store_cidr_parse(k->cidrs[i], &k->nets[i]) != 0;
    }
    if (bad) {
        lm_store_key_free(k);
        return NULL;
    }
    return k;
}

const size_t lm_sqlite_chan_num_off[11] = {
    offsetof(lm_chan_rec_t, priority),
    offsetof(lm_chan_rec_t, weight),
    offsetof(lm_chan_rec_t, max_inflight),
    offsetof(lm_chan_rec_t, connect_timeout_ms),
    offsetof(lm_chan_rec_t, first_byte_timeout_ms),
    offsetof(lm_chan_rec_t, idle_timeout_ms),
    offsetof(lm_chan_rec_t, request_timeout_ms),
    offsetof(lm_chan_rec_t, price_input),
    offsetof(lm_chan_rec_t, price_output),
    offsetof(lm_chan_rec_t, price_cached_input),
    offsetof(lm_chan_rec_t, price_per_request),
};

/* A new record from a row of CHAN_COLS, or NULL. */
static lm_chan_rec_t *chan_from_row(sqlite3_stmt *s)
{
    lm_chan_rec_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->id = sqlite3_column_int64(s, 0);
    c->name = lm_sqlite_col_text(s, 1);
    c->plugin = lm_sqlite_col_text(s, 2);
    int bad = c->name == NULL || c->plugin == NULL;
    bad |= lm_store_list_decode((const char *)sqlite3_column_text(s, 3), &c->models, &c->nmodels);
    bad |= lm_store_chan_settings_decode((const char *)sqlite3_column_text(s, 4), c);
    for (size_t i = 0; i < CHAN_NNUMS; i++)
        *(int64_t *)(void *)((char *)c + lm_sqlite_chan_num_off[i]) =
            sqlite3_column_int64(s, 5 + (int)i);
    c->enabled = sqlite3_column_int(s, 16) != 0;
    c->created_at = sqlite3_column_int64(s, 17);
    c->updated_at = sqlite3_column_int64(s, 18);
    if (bad) {
        lm_chan_rec_free(c);
        return NULL;
    }
    return c;
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

/* One row of a totals statement into t; 0, or -1 on ENOMEM. */
static int total_from_row(sqlite3_stmt *s, lm_usage_total_t *t)
{
    memset(t, 0, sizeof(*t));
    t->group = lm_sqlite_col_text(s, 0);
    if (t->group == NULL)
        return -1;
    t->key_id = sqlite3_column_int64(s, 1);
    t->requests = sqlite3_column_int64(s, 2);
    t->prompt_tokens = sqlite3_column_int64(s, 3);
    t->completion_tokens = sqlite3_column_int64(s, 4);
    t->cached_tokens = sqlite3_column_int64(s, 5);
    t->reasoning_tokens = sqlite3_column_int64(s, 6);
    t->cost = sqlite3_column_int64(s, 7);
    t->aborted = sqlite3_column_int64(s, 8);
    return 0;
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
        if (total_from_row(s, &v[cnt]) != 0) {
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

/* One ledger row into r (strings new); 0, or -1 on ENOMEM. */
static int rec_from_row(sqlite3_stmt *s, lm_usage_rec_t *r)
{
    lm_usage_row_t *u = &r->row;
    r->id = sqlite3_column_int64(s, 0);
    u->request_id = lm_sqlite_col_text(s, 1);
    u->attempt = sqlite3_column_int64(s, 2);
    u->key_id = sqlite3_column_int64(s, 3);
    u->channel = lm_sqlite_col_text(s, 4);
    u->model_asked = lm_sqlite_col_text(s, 5);
    u->model_served = lm_sqlite_col_text(s, 6);
    u->prompt_tokens = sqlite3_column_int64(s, 7);
    u->completion_tokens = sqlite3_column_int64(s, 8);
    u->cached_tokens = sqlite3_column_int64(s, 9);
    u->reasoning_tokens = sqlite3_column_int64(s, 10);
    u->cost = sqlite3_column_int64(s, 11);
    u->latency_ms = sqlite3_column_int64(s, 12);
    u->ttft_ms = sqlite3_column_int64(s, 13);
    u->status = sqlite3_column_int64(s, 14);
    u->client_aborted = sqlite3_column_int(s, 15);
    u->usage_json = sqlite3_column_type(s, 16) == SQLITE_NULL ? NULL : lm_sqlite_col_text(s, 16);
    u->created_ms = sqlite3_column_int64(s, 17);
    u->api = lm_sqlite_col_text(s, 18);
    u->cached = sqlite3_column_int(s, 19);
    if (!u->api || !u->request_id || !u->channel || !u->model_asked || !u->model_served ||
        (sqlite3_column_type(s, 16) != SQLITE_NULL && !u->usage_json))
        return -1;
    return 0;
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
        if (rec_from_row(s, &v[cnt++]) != 0) { /* counted: the caller frees it */
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

/* A nullable text column as a new string, NULL when NULL. 0, or -1 on ENOMEM. */
static int opt_text(sqlite3_stmt *s, int i, const char **out)
{
    *out = NULL;
    if (sqlite3_column_type(s, i) == SQLITE_NULL)
        return 0;
    return (*out = lm_sqlite_col_text(s, i)) ? 0 : -1;
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
        lm_reqlog_rec_t *r = &v[cnt++]; /* counted: the caller frees what it holds */
        lm_reqlog_row_t *w = &r->row;
        const char **texts_out[] = {
            &w->request_id,   NULL,        NULL,    &w->key_name,      &w->model_asked,
            &w->model_served, &w->channel, &w->api, &w->finish_reason, &w->error_code,
            &w->attempts_json};
        int64_t *nums[] = {&w->status,        &w->latency_ms,        &w->ttft_ms,
                           &w->prompt_tokens, &w->completion_tokens, &w->cost};
        r->id = sqlite3_column_int64(s, 0);
        w->created_ms = sqlite3_column_int64(s, 2);
        w->key_id = sqlite3_column_int64(s, 3);
        int bad = 0;
        for (int i = 0; i < 11; i++)
            if (texts_out[i] && opt_text(s, 1 + i, texts_out[i]) != 0)
                bad = 1;
        for (int i = 0; i < 6; i++)
            *nums[i] = sqlite3_column_int64(s, 12 + i);
        w->stream = sqlite3_column_int(s, 18);
        if (bad || opt_text(s, 19, &w->request_body) || opt_text(s, 20, &w->response_body)) {
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
