/*
 * store_sqlite_int.h - what the SQLite backend's two files share: the
 * backend state (two connections and their prepared statements) and the
 * row decoders. Included by store_sqlite.c and store_sqlite_read.c only.
 */
#ifndef LM_STORE_SQLITE_INT_H
#define LM_STORE_SQLITE_INT_H
#include "store/backend.h"
#include "store/reqlog.h"
#include "store/rowdec.h"
#include "store/sqlite_ckpt.h"
#include "store/store.h"

#include <pthread.h>
#include <sqlite3.h>

/* Statements on the write connection (writer thread, and open). */
enum {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SAVE,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_INS_KEY,
    W_GET_KEY,
    W_UPD_KEY,
    W_DEL_KEY,
    W_INS_USAGE,
    W_ADD_USED,
    W_LOAD_KEYS,
    W_SET_ADMIN,
    W_DEL_ADMIN,
    W_INS_CHAN,
    W_UPD_CHAN,
    W_DEL_CHAN,
    W_CHAN_ID,
    W_CHAN_COUNT,
    W_INS_REQLOG,
    W_PRUNE_REQLOG_AGE,
    W_PRUNE_REQLOG_ROWS,
    W_COUNT
};

/* Statements on the read connection (admin queries, under rd_mu). */
enum {
    R_GET_KEY,
    R_LIST_KEYS,
    R_TOT_KEY,
    R_TOT_MODEL,
    R_TOT_SERVED,
    R_TOT_CHANNEL,
    R_TOT_DAY,
    R_TOT_NONE,
    R_USAGE_LIST,
    R_GET_ADMIN,
    R_GET_CHAN,
    R_LIST_CHAN,
    R_REQLOG_LIST,
    R_COUNT
};

/* Two connections: `w`, used only by the writer thread (and by open before
 * the thread starts), and `r`, a query_only connection for admin reads,
 * serialised by rd_mu. WAL lets `r` read while `w` writes. */
struct lm_store_db_s {
    lm_store_t *st; /* for lm_store_log */
    sqlite3 *w, *r;
    sqlite3_stmt *ws[W_COUNT], *rs[R_COUNT];
    int sync_full, busy_ms;
    int last_ext;             /* writer thread: extended code of the last failed statement */
    lm_store_settings_t wset; /* read back on `w` at open */
    pthread_mutex_t rd_mu;
    lm_sqlite_ckpt_t *ckpt; /* owned: started by open, stopped first by close */
};

/* A new key record (refs 1, acct NULL) from a row of KEY_COLS or
 * KEY_COLS_NOHASH; NULL on bad data or ENOMEM. */
lm_key_t *lm_sqlite_key_from_row(sqlite3_stmt *s);

/* store_sqlite_read.c: the admin queries (backend.h describes each). */
int lm_sqlite_reqlog_list(lm_store_db_t *db, const struct lm_reqlog_query_s *q,
                          struct lm_reqlog_rec_s *v, size_t *n);
int lm_sqlite_admin_token_get(lm_store_db_t *db, int role, unsigned char hash[32]);
int lm_sqlite_key_get(lm_store_db_t *db, int64_t id, lm_key_t **out);
int lm_sqlite_key_list(lm_store_db_t *db, int64_t after_id, size_t limit, lm_key_t **v, size_t *n);
int lm_sqlite_chan_get(lm_store_db_t *db, const char *name, lm_chan_rec_t **out);
int lm_sqlite_chan_list(lm_store_db_t *db, lm_chan_rec_t ***out, size_t *n);
int lm_sqlite_usage_totals(lm_store_db_t *db, int by, int64_t from_ms, int64_t to_ms,
                           int64_t key_id, lm_usage_total_t **out, size_t *n);
int lm_sqlite_usage_list(lm_store_db_t *db, int64_t key_id, int64_t before_id, size_t limit,
                         lm_usage_rec_t *v, size_t *n);
/* The stored name of an admin role. */
const char *lm_sqlite_role_name(int role);
#endif
