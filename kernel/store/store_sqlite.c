/*
 * store_sqlite.c - the SQLite backend (backend.h): schema, migrations,
 * settings (DB-2), open/close (control thread) and one statement per write
 * (writer thread). Records it returns are new and the caller's.
 */
#include "store/store_sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* statements                                                                */

#define KEY_COLS_REST                                                                              \
    "prefix, name, owner, grp, quota, used, expires_at, models, cidrs, rpm, "                      \
    "tpm, "                                                                                        \
    "max_concurrent, enabled, created_at, updated_at"
#define KEY_COLS        "id, hash, " KEY_COLS_REST
#define KEY_COLS_NOHASH "id, NULL, " KEY_COLS_REST
#define TOTAL_COLS                                                                                 \
    "COUNT(*), COALESCE(SUM(prompt_tokens), 0), "                                                  \
    "COALESCE(SUM(completion_tokens), 0), "                                                        \
    "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), "                        \
    "COALESCE(SUM(cost), 0), COALESCE(SUM(client_aborted), 0)"
#define TOTAL_WHERE                                                                                \
    " FROM usage WHERE created_at >= ?1 AND created_at < ?2 AND (?3 = 0 OR "                       \
    "key_id = ?3)"
#define USAGE_COLS                                                                                 \
    "request_id, attempt, key_id, channel, model_asked, model_served, "                            \
    "prompt_tokens, "                                                                              \
    "completion_tokens, cached_tokens, reasoning_tokens, cost, latency_ms, "                       \
    "ttft_ms, status, "                                                                            \
    "client_aborted, usage_json, created_at, api, cached"
#define REQLOG_COLS                                                                                \
    "request_id, created_at, key_id, key_name, model_asked, model_served, channel, api, "          \
    "finish_reason, error_code, attempts, status, latency_ms, ttft_ms, prompt_tokens, "            \
    "completion_tokens, cost, stream, request_body, response_body"
#define CHAN_COLS                                                                                  \
    "id, name, plugin, models, settings, priority, weight, max_inflight, "                         \
    "connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, request_timeout_ms, "             \
    "price_input, price_output, price_cached_input, price_per_request, enabled, "                  \
    "created_at, updated_at"

static const char *const w_sql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVE] = "SAVEPOINT op",
    [W_RELEASE] = "RELEASE op",
    [W_ROLLBACK_TO] = "ROLLBACK TO op",
    [W_INS_KEY] = "INSERT INTO keys (hash, prefix, name, owner, grp, quota, "
                  "used, expires_at, "
                  "models, cidrs, rpm, tpm, max_concurrent, enabled, "
                  "created_at, updated_at) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, "
                  "?12, ?13, ?14, ?14)",
    [W_GET_KEY] = "SELECT " KEY_COLS " FROM keys WHERE id = ?1 AND deleted_at IS NULL",
    [W_UPD_KEY] = "UPDATE keys SET name = ?2, owner = ?3, grp = ?4, quota = ?5, "
                  "expires_at = ?6, "
                  "models = ?7, cidrs = ?8, rpm = ?9, tpm = ?10, max_concurrent = ?11, "
                  "enabled = ?12, updated_at = ?13 WHERE id = ?1 AND deleted_at IS NULL",
    [W_DEL_KEY] = "UPDATE keys SET deleted_at = ?2, enabled = 0, updated_at = ?2 "
                  "WHERE id = ?1 AND deleted_at IS NULL",
    [W_INS_USAGE] = "INSERT INTO usage (" USAGE_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                    "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) "
                    "ON CONFLICT (request_id, attempt) DO NOTHING",
    [W_ADD_USED] = "UPDATE keys SET used = used + ?1 WHERE id = ?2",
    [W_LOAD_KEYS] = "SELECT " KEY_COLS " FROM keys WHERE deleted_at IS NULL ORDER BY id",
    [W_SET_ADMIN] = "INSERT INTO admin_tokens (role, hash, created_at) VALUES (?1, ?2, ?3) "
                    "ON CONFLICT (role) DO UPDATE SET hash = excluded.hash, "
                    "created_at = excluded.created_at",
    [W_DEL_ADMIN] = "DELETE FROM admin_tokens WHERE role = ?1",
    /* ?1 name, ?2 plugin, ?3 models, ?4 settings, ?5..?15 numbers, ?16 enabled, ?17 now */
    [W_INS_CHAN] = "INSERT INTO channels (name, plugin, models, settings, priority, weight, "
                   "max_inflight, connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, "
                   "request_timeout_ms, price_input, price_output, price_cached_input, "
                   "price_per_request, enabled, created_at, updated_at) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
                   "?16, ?17, ?17)",
    [W_UPD_CHAN] = "UPDATE channels SET plugin = ?2, models = ?3, settings = ?4, priority = ?5, "
                   "weight = ?6, max_inflight = ?7, connect_timeout_ms = ?8, "
                   "first_byte_timeout_ms = ?9, idle_timeout_ms = ?10, request_timeout_ms = ?11, "
                   "price_input = ?12, price_output = ?13, price_cached_input = ?14, "
                   "price_per_request = ?15, enabled = ?16, updated_at = ?17 WHERE name = ?1",
    [W_DEL_CHAN] = "DELETE FROM channels WHERE name = ?1",
    [W_CHAN_ID] = "SELECT id FROM channels WHERE name = ?1",
    [W_CHAN_COUNT] = "SELECT COUNT(*) FROM channels",
    [W_INS_REQLOG] = "INSERT INTO request_log (" REQLOG_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                     "?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    [W_PRUNE_REQLOG_AGE] = "DELETE FROM request_log WHERE created_at < ?1",
    [W_PRUNE_REQLOG_ROWS] = "DELETE FROM request_log WHERE id <= (SELECT id FROM request_log "
                            "ORDER BY id DESC LIMIT 1 OFFSET ?1)",
};
static const char *const r_sql[R_COUNT] = {
    [R_GET_KEY] = "SELECT " KEY_COLS_NOHASH " FROM keys WHERE id = ?1 AND deleted_at IS NULL",
    [R_LIST_KEYS] = "SELECT " KEY_COLS_NOHASH " FROM keys WHERE id > ?1 AND deleted_at IS NULL "
                    "ORDER BY id LIMIT ?2",
    [R_TOT_KEY] = "SELECT CAST(COALESCE(key_id, 0) AS TEXT), COALESCE(key_id, "
                  "0), " TOTAL_COLS TOTAL_WHERE " GROUP BY 2 ORDER BY 2",
    [R_TOT_MODEL] = "SELECT model_asked, 0, " TOTAL_COLS TOTAL_WHERE " GROUP BY 1 ORDER BY 1",
    [R_TOT_SERVED] = "SELECT model_served, 0, " TOTAL_COLS TOTAL_WHERE " GROUP BY 1 ORDER BY 1",
    [R_TOT_CHANNEL] = "SELECT channel, 0, " TOTAL_COLS TOTAL_WHERE " GROUP BY 1 ORDER BY 1",
    [R_TOT_DAY] = "SELECT strftime('%Y-%m-%d', created_at / 1000, 'unixepoch'), "
                  "0, " TOTAL_COLS TOTAL_WHERE " GROUP BY 1 ORDER BY 1",
    [R_TOT_NONE] = "SELECT '', 0, " TOTAL_COLS TOTAL_WHERE,
    [R_USAGE_LIST] = "SELECT id, " USAGE_COLS " FROM usage WHERE (?1 = 0 OR key_id = ?1) "
                     "AND id < ?2 ORDER BY id DESC LIMIT ?3",
    [R_GET_ADMIN] = "SELECT hash FROM admin_tokens WHERE role = ?1",
    [R_GET_CHAN] = "SELECT " CHAN_COLS " FROM channels WHERE name = ?1",
    [R_LIST_CHAN] = "SELECT " CHAN_COLS " FROM channels ORDER BY name LIMIT ?1",
    /* ?1 key, ?2 model, ?3 channel ('' = any), ?4 status (0 = any), ?5..?6 created_at
     * range, ?7 before id, ?8 limit, ?9 bodies */
    [R_REQLOG_LIST] =
        "SELECT id, request_id, created_at, key_id, key_name, model_asked, model_served, channel, "
        "api, finish_reason, error_code, attempts, status, latency_ms, ttft_ms, prompt_tokens, "
        "completion_tokens, cost, stream, CASE WHEN ?9 THEN request_body END, "
        "CASE WHEN ?9 THEN response_body END FROM request_log "
        "WHERE (?1 = '' OR key_name = ?1) AND (?2 = '' OR model_asked = ?2 OR model_served = ?2) "
        "AND (?3 = '' OR channel = ?3) AND (?4 = 0 OR status = ?4) AND created_at >= ?5 "
        "AND created_at < ?6 AND id < ?7 ORDER BY id DESC LIMIT ?8",
};

/* Versioned migrations: migrations[i] brings the schema from version i to
 * i + 1. Append only; never edit a released one. */
static const char *const migrations[] = {
    /* 1: keys and the usage ledger */
    "CREATE TABLE keys ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  hash BLOB NOT NULL UNIQUE CHECK (typeof(hash) = 'blob' AND length(hash) "
    "= 32),"
    "  prefix TEXT NOT NULL CHECK (length(prefix) <= 8),"
    "  name TEXT NOT NULL,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  grp TEXT NOT NULL DEFAULT '',"
    "  quota INTEGER CHECK (quota IS NULL OR (typeof(quota) = 'integer' AND "
    "quota >= 0)),"
    "  used INTEGER NOT NULL DEFAULT 0 CHECK (typeof(used) = 'integer' AND "
    "used >= 0),"
    "  expires_at INTEGER NOT NULL DEFAULT 0 CHECK (expires_at >= 0),"
    "  models TEXT NOT NULL DEFAULT '[]',"
    "  cidrs TEXT NOT NULL DEFAULT '[]',"
    "  rpm INTEGER NOT NULL DEFAULT 0 CHECK (rpm >= 0),"
    "  tpm INTEGER NOT NULL DEFAULT 0 CHECK (tpm >= 0),"
    "  max_concurrent INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent >= 0),"
    "  enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  deleted_at INTEGER,"
    "  CHECK (quota IS NULL OR used <= quota)"
    ");"
    "CREATE TABLE usage ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  request_id TEXT NOT NULL,"
    "  attempt INTEGER NOT NULL CHECK (attempt >= 0),"
    "  key_id INTEGER REFERENCES keys (id),"
    "  channel TEXT NOT NULL DEFAULT '',"
    "  model_asked TEXT NOT NULL DEFAULT '',"
    "  model_served TEXT NOT NULL DEFAULT '',"
    "  prompt_tokens INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),"
    "  completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens "
    ">= 0),"
    "  cached_tokens INTEGER NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),"
    "  reasoning_tokens INTEGER NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= "
    "0),"
    "  cost INTEGER NOT NULL CHECK (typeof(cost) = 'integer' AND cost >= 0),"
    "  latency_ms INTEGER NOT NULL DEFAULT 0,"
    "  ttft_ms INTEGER NOT NULL DEFAULT 0,"
    "  status INTEGER NOT NULL DEFAULT 0,"
    "  client_aborted INTEGER NOT NULL DEFAULT 0 CHECK (client_aborted IN (0, "
    "1)),"
    "  usage_json TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE (request_id, attempt)"
    ");"
    "CREATE INDEX usage_key_created ON usage (key_id, created_at);"
    "CREATE INDEX usage_created ON usage (created_at);"
    "PRAGMA user_version = 1;",
    /* 2: admin tokens (SHA-256 only), one per role */
    "CREATE TABLE admin_tokens ("
    "  role TEXT PRIMARY KEY CHECK (role IN ('admin', 'read')),"
    "  hash BLOB NOT NULL CHECK (typeof(hash) = 'blob' AND length(hash) = 32),"
    "  created_at INTEGER NOT NULL"
    ");"
    "PRAGMA user_version = 2;",
    /* 3: channels managed through the admin API (chanconf.c renders them as
     * configuration); models and settings are JSON text */
    "CREATE TABLE channels ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),"
    "  plugin TEXT NOT NULL CHECK (length(plugin) BETWEEN 1 AND 64),"
    "  models TEXT NOT NULL,"
    "  settings TEXT NOT NULL,"
    "  priority INTEGER NOT NULL CHECK (priority >= 0),"
    "  weight INTEGER NOT NULL CHECK (weight >= 1),"
    "  max_inflight INTEGER NOT NULL CHECK (max_inflight >= 1),"
    "  connect_timeout_ms INTEGER NOT NULL CHECK (connect_timeout_ms >= 1),"
    "  first_byte_timeout_ms INTEGER NOT NULL CHECK (first_byte_timeout_ms >= 1),"
    "  idle_timeout_ms INTEGER NOT NULL CHECK (idle_timeout_ms >= 1),"
    "  request_timeout_ms INTEGER NOT NULL CHECK (request_timeout_ms >= 1),"
    "  price_input INTEGER NOT NULL CHECK (price_input >= 0),"
    "  price_output INTEGER NOT NULL CHECK (price_output >= 0),"
    "  price_cached_input INTEGER NOT NULL CHECK (price_cached_input >= 0),"
    "  price_per_request INTEGER NOT NULL CHECK (price_per_request >= 0),"
    "  enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "PRAGMA user_version = 3;",
    /* 4: the inbound API each request came in by (rows before it: chat) */
    "ALTER TABLE usage ADD COLUMN api TEXT NOT NULL DEFAULT 'chat';"
    "PRAGMA user_version = 4;",
    /* 5: rows answered from the response cache (docs/cache.md): cost 0 */
    "ALTER TABLE usage ADD COLUMN cached INTEGER NOT NULL DEFAULT 0 CHECK (cached IN (0, 1));"
    "PRAGMA user_version = 5;",
    /* 6: the request log (docs/observability.md): one row per client request
     * when request_log is on; pruned by age and row count */
    "CREATE TABLE request_log ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  request_id TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  key_id INTEGER,"
    "  key_name TEXT NOT NULL DEFAULT '',"
    "  model_asked TEXT NOT NULL DEFAULT '',"
    "  model_served TEXT NOT NULL DEFAULT '',"
    "  channel TEXT NOT NULL DEFAULT '',"
    "  api TEXT NOT NULL DEFAULT 'chat',"
    "  finish_reason TEXT NOT NULL DEFAULT '',"
    "  error_code TEXT NOT NULL DEFAULT '',"
    "  attempts TEXT NOT NULL DEFAULT '[]',"
    "  status INTEGER NOT NULL DEFAULT 0,"
    "  latency_ms INTEGER NOT NULL DEFAULT 0,"
    "  ttft_ms INTEGER NOT NULL DEFAULT 0,"
    "  prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    "  completion_tokens INTEGER NOT NULL DEFAULT 0,"
    "  cost INTEGER NOT NULL DEFAULT 0,"
    "  stream INTEGER NOT NULL DEFAULT 0 CHECK (stream IN (0, 1)),"
    "  request_body TEXT,"
    "  response_body TEXT"
    ");"
    "CREATE INDEX request_log_created ON request_log (created_at);"
    "PRAGMA user_version = 6;",
};
#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ------------------------------------------------------------------------ */
/* writer connection: helpers and transactions                               */

static int64_t now_s(void)
{
    return lm_store_now_ms() / 1000;
}

static int step_once(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

static void bind_text(sqlite3_stmt *s, int i, const char *t)
{
    sqlite3_bind_text(s, i, t ? t : "", -1, SQLITE_TRANSIENT);
}

/* The ledger's statements, once per row: every parameter is bound before
 * each step, so the bindings need no clearing, and texts are not copied
 * (SQLITE_STATIC): they outlive the step, and a binding left pointing at
 * a freed row is replaced before the statement runs again. */
static int step_rebound(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc;
}

static void bind_static(sqlite3_stmt *s, int i, const char *t)
{
    sqlite3_bind_text(s, i, t ? t : "", -1, SQLITE_STATIC);
}

/* Log the write connection's last error, keep it for transient(). */
static int db_status(lm_store_db_t *db, const char *what)
{
    int ext = sqlite3_extended_errcode(db->w);
    db->last_ext = ext;
    lm_store_log(db->st, 0, "%s: %s (%d)", what, sqlite3_errmsg(db->w), ext);
    return (ext & 0xff) == SQLITE_CONSTRAINT ? LM_STORE_ECONFLICT : LM_STORE_EDB;
}

/* Run control statement `which`; 0 or -1 (logged as what). */
static int w_exec(lm_store_db_t *db, int which, const char *what)
{
    if (step_once(db->ws[which]) == SQLITE_DONE)
        return 0;
    db_status(db, what);
    return -1;
}

static int sq_begin(lm_store_db_t *db)
{
    db->last_ext = 0;
    return w_exec(db, W_BEGIN, "BEGIN IMMEDIATE");
}

static int sq_savepoint(lm_store_db_t *db)
{
    db->last_ext = 0;
    return w_exec(db, W_SAVE, "SAVEPOINT");
}

static int sq_rollback_to(lm_store_db_t *db)
{
    return w_exec(db, W_ROLLBACK_TO, "ROLLBACK TO");
}

static int sq_release(lm_store_db_t *db)
{
    return w_exec(db, W_RELEASE, "RELEASE");
}

static int sq_commit(lm_store_db_t *db)
{
    db->last_ext = 0;
    return w_exec(db, W_COMMIT, "COMMIT");
}

static void sq_rollback(lm_store_db_t *db)
{
    if (!sqlite3_get_autocommit(db->w))
        step_once(db->ws[W_ROLLBACK]);
}

/* Errors that concern the database as a whole (locked by another process,
 * disk full, I/O): the batch is rolled back and retried, never dropped. */
static int sq_transient(lm_store_db_t *db)
{
    switch (db->last_ext & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_NOMEM:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL: return 1;
    default: return 0;
    }
}

/* ------------------------------------------------------------------------ */
/* writer connection: operations                                             */

static int sq_usage_insert(lm_store_db_t *db, const lm_usage_row_t *r, int64_t *id)
{
    sqlite3_stmt *s = db->ws[W_INS_USAGE];
    bind_static(s, 1, r->request_id);
    sqlite3_bind_int64(s, 2, r->attempt);
    if (r->key_id > 0)
        sqlite3_bind_int64(s, 3, r->key_id);
    else
        sqlite3_bind_null(s, 3);
    bind_static(s, 4, r->channel);
    bind_static(s, 5, r->model_asked);
    bind_static(s, 6, r->model_served);
    sqlite3_bind_int64(s, 7, r->prompt_tokens);
    sqlite3_bind_int64(s, 8, r->completion_tokens);
    sqlite3_bind_int64(s, 9, r->cached_tokens);
    sqlite3_bind_int64(s, 10, r->reasoning_tokens);
    sqlite3_bind_int64(s, 11, r->cost);
    sqlite3_bind_int64(s, 12, r->latency_ms);
    sqlite3_bind_int64(s, 13, r->ttft_ms);
    sqlite3_bind_int64(s, 14, r->status);
    sqlite3_bind_int(s, 15, r->client_aborted ? 1 : 0);
    if (r->usage_json)
        bind_static(s, 16, r->usage_json);
    else
        sqlite3_bind_null(s, 16);
    sqlite3_bind_int64(s, 17, r->created_ms);
    bind_static(s, 18, r->api ? r->api : "chat");
    sqlite3_bind_int(s, 19, r->cached ? 1 : 0);
    if (step_rebound(s) != SQLITE_DONE)
        return db_status(db, "usage insert");
    if (sqlite3_changes(db->w) == 0)
        return LM_STORE_DUP;
    *id = sqlite3_last_insert_rowid(db->w);
    if (r->cost > 0 && r->key_id > 0) {
        s = db->ws[W_ADD_USED];
        sqlite3_bind_int64(s, 1, r->cost);
        sqlite3_bind_int64(s, 2, r->key_id);
        if (step_rebound(s) != SQLITE_DONE)
            return db_status(db, "usage: add to used");
        if (sqlite3_changes(db->w) != 1)
            return LM_STORE_ENOTFOUND;
    }
    return LM_STORE_OK;
}

/* ------------------------------------------------------------------------ */
/* the request log (store/reqlog.h)                                          */

static void bind_opt_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        bind_text(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

static int sq_reqlog_insert(lm_store_db_t *db, const lm_reqlog_row_t *r)
{
    sqlite3_stmt *s = db->ws[W_INS_REQLOG];
    const char *texts[] = {r->key_name, r->model_asked,   r->model_served, r->channel,
                           r->api,      r->finish_reason, r->error_code,   r->attempts_json};
    const int64_t nums[] = {r->status,        r->latency_ms,        r->ttft_ms,
                            r->prompt_tokens, r->completion_tokens, r->cost,
                            r->stream ? 1 : 0};
    bind_text(s, 1, r->request_id);
    sqlite3_bind_int64(s, 2, r->created_ms);
    if (r->key_id > 0)
        sqlite3_bind_int64(s, 3, r->key_id);
    else
        sqlite3_bind_null(s, 3);
    for (int i = 0; i < 8; i++)
        bind_text(s, 4 + i, texts[i] ? texts[i] : i == 4 ? "chat" : i == 7 ? "[]" : "");
    for (int i = 0; i < 7; i++)
        sqlite3_bind_int64(s, 12 + i, nums[i]);
    bind_opt_text(s, 19, r->request_body);
    bind_opt_text(s, 20, r->response_body);
    if (step_once(s) != SQLITE_DONE)
        return db_status(db, "request log insert");
    return LM_STORE_OK;
}

static int sq_reqlog_prune(lm_store_db_t *db, int64_t older_than_ms, int64_t keep_rows)
{
    sqlite3_stmt *s;
    if (older_than_ms > 0) {
        s = db->ws[W_PRUNE_REQLOG_AGE];
        sqlite3_bind_int64(s, 1, older_than_ms);
        if (step_once(s) != SQLITE_DONE)
            return db_status(db, "request log prune");
    }
    if (keep_rows > 0) {
        s = db->ws[W_PRUNE_REQLOG_ROWS];
        sqlite3_bind_int64(s, 1, keep_rows);
        if (step_once(s) != SQLITE_DONE)
            return db_status(db, "request log prune");
    }
    return LM_STORE_OK;
}

static void bind_quota(sqlite3_stmt *s, int i, int unlimited, int64_t quota)
{
    if (unlimited)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_int64(s, i, quota);
}

/* The key columns name .. enabled, then the time, from parameter i on
 * (the INSERT and UPDATE statements list them in this order). */
static void bind_key_cols(sqlite3_stmt *s, int i, const lm_store_key_cols_t *c)
{
    bind_text(s, i, c->name);
    bind_text(s, i + 1, c->owner);
    bind_text(s, i + 2, c->group);
    bind_quota(s, i + 3, c->unlimited, c->quota);
    sqlite3_bind_int64(s, i + 4, c->expires_at);
    bind_text(s, i + 5, c->models_json);
    bind_text(s, i + 6, c->cidrs_json);
    sqlite3_bind_int64(s, i + 7, c->rpm);
    sqlite3_bind_int64(s, i + 8, c->tpm);
    sqlite3_bind_int64(s, i + 9, c->max_concurrent);
    sqlite3_bind_int(s, i + 10, c->enabled ? 1 : 0);
    sqlite3_bind_int64(s, i + 11, now_s());
}

static int sq_key_insert(lm_store_db_t *db, const unsigned char hash[32], const char *prefix,
                         const lm_store_key_cols_t *c, int64_t *id)
{
    sqlite3_stmt *s = db->ws[W_INS_KEY];
    sqlite3_bind_blob(s, 1, hash, 32, SQLITE_TRANSIENT);
    bind_text(s, 2, prefix);
    bind_key_cols(s, 3, c);
    if (step_once(s) != SQLITE_DONE)
        return db_status(db, "key insert");
    *id = sqlite3_last_insert_rowid(db->w);
    return LM_STORE_OK;
}

/* Read one live key on the writer connection. */
static lm_key_t *sq_key_read(lm_store_db_t *db, int64_t id)
{
    sqlite3_stmt *s = db->ws[W_GET_KEY];
    lm_key_t *k = NULL;
    sqlite3_bind_int64(s, 1, id);
    if (sqlite3_step(s) == SQLITE_ROW)
        k = lm_sqlite_key_from_row(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return k;
}

static int sq_key_update(lm_store_db_t *db, int64_t id, const lm_store_key_cols_t *c)
{
    sqlite3_stmt *s = db->ws[W_UPD_KEY];
    sqlite3_bind_int64(s, 1, id);
    bind_key_cols(s, 2, c);
    if (step_once(s) != SQLITE_DONE)
        return db_status(db, "key update");
    return sqlite3_changes(db->w) == 1 ? LM_STORE_OK : LM_STORE_ENOTFOUND;
}

static int sq_key_delete(lm_store_db_t *db, int64_t id)
{
    sqlite3_stmt *s = db->ws[W_DEL_KEY];
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now_s());
    if (step_once(s) != SQLITE_DONE)
        return db_status(db, "key delete");
    return sqlite3_changes(db->w) == 1 ? LM_STORE_OK : LM_STORE_ENOTFOUND;
}

static int sq_admin_token_set(lm_store_db_t *db, int role, const unsigned char *hash)
{
    sqlite3_stmt *s = db->ws[hash == NULL ? W_DEL_ADMIN : W_SET_ADMIN];
    sqlite3_bind_text(s, 1, lm_sqlite_role_name(role), -1, SQLITE_STATIC);
    if (hash) {
        sqlite3_bind_blob(s, 2, hash, 32, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, now_s());
    }
    if (step_once(s) != SQLITE_DONE)
        return db_status(db, "admin token");
    return LM_STORE_OK;
}

/* One integer from a statement with at most one bound name; -1 if no row. */
static int64_t w_int(lm_store_db_t *db, int which, const char *name)
{
    sqlite3_stmt *s = db->ws[which];
    int64_t v = -1;
    if (name)
        bind_text(s, 1, name);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return v;
}

static int64_t sq_chan_id(lm_store_db_t *db, const char *name)
{
    return w_int(db, W_CHAN_ID, name);
}

static int64_t sq_chan_count(lm_store_db_t *db)
{
    return w_int(db, W_CHAN_COUNT, NULL);
}

static void bind_chan(sqlite3_stmt *s, const lm_chan_rec_t *c, const char *models_json,
                      const char *settings_json)
{
    bind_text(s, 1, c->name);
    bind_text(s, 2, c->plugin);
    bind_text(s, 3, models_json);
    bind_text(s, 4, settings_json);
    for (size_t i = 0; i < LM_ROWDEC_CHAN_NNUMS; i++)
        sqlite3_bind_int64(
            s, 5 + (int)i,
            *(const int64_t *)(const void *)((const char *)c + lm_rowdec_chan_num_off[i]));
    sqlite3_bind_int(s, 16, c->enabled ? 1 : 0);
    sqlite3_bind_int64(s, 17, now_s());
}

static int sq_chan_insert(lm_store_db_t *db, const lm_chan_rec_t *c, const char *models_json,
                          const char *settings_json, int64_t *id)
{
    sqlite3_stmt *s = db->ws[W_INS_CHAN];
    bind_chan(s, c, models_json, settings_json);
    if (step_once(s) != SQLITE_DONE)
        return db_status(db, "channel insert");
    *id = sqlite3_last_insert_rowid(db->w);
    return LM_STORE_OK;
}

static int sq_chan_update(lm_store_db_t *db, const lm_chan_rec_t *c, const char *models_json,
                          const char *settings_json)
{
    sqlite3_stmt *s = db->ws[W_UPD_CHAN];
    bind_chan(s, c, models_json, settings_json);
    if (step_once(s) != SQLITE_DONE)
        return db_status(db, "channel update");
    return sqlite3_changes(db->w) == 1 ? LM_STORE_OK : LM_STORE_ENOTFOUND;
}

static int sq_chan_delete(lm_store_db_t *db, const char *name)
{
    sqlite3_stmt *s = db->ws[W_DEL_CHAN];
    bind_text(s, 1, name);
    if (step_once(s) != SQLITE_DONE)
        return db_status(db, "channel delete");
    return sqlite3_changes(db->w) == 1 ? LM_STORE_OK : LM_STORE_ENOTFOUND;
}

/* ------------------------------------------------------------------------ */
/* open / close                                                              */

static int pragma_int(sqlite3 *conn, const char *sql, int *out)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(conn, sql, -1, &s, NULL) != SQLITE_OK)
        return -1;
    int rc = -1;
    if (sqlite3_step(s) == SQLITE_ROW) {
        *out = sqlite3_column_int(s, 0);
        rc = 0;
    }
    sqlite3_finalize(s);
    return rc;
}

static int pragma_text(sqlite3 *conn, const char *sql, char *out, size_t len)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(conn, sql, -1, &s, NULL) != SQLITE_OK)
        return -1;
    int rc = -1;
    if (sqlite3_step(s) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        snprintf(out, len, "%s", t ? (const char *)t : "");
        rc = 0;
    }
    sqlite3_finalize(s);
    return rc;
}

static int read_settings(sqlite3 *conn, lm_store_settings_t *o)
{
    memset(o, 0, sizeof(*o));
    if (pragma_text(conn, "PRAGMA journal_mode", o->journal_mode, sizeof(o->journal_mode)) ||
        pragma_int(conn, "PRAGMA busy_timeout", &o->busy_timeout_ms) ||
        pragma_int(conn, "PRAGMA foreign_keys", &o->foreign_keys) ||
        pragma_int(conn, "PRAGMA synchronous", &o->synchronous) ||
        pragma_int(conn, "PRAGMA user_version", &o->schema_version))
        return -1;
    return 0;
}

/* DB-2: apply and verify on one connection. */
static int configure(lm_store_db_t *db, sqlite3 *conn, const char *which, char *err, size_t errlen,
                     lm_store_settings_t *out)
{
    char jm[16];
    lm_store_settings_t s;
    sqlite3_busy_timeout(conn, db->busy_ms);
    sqlite3_extended_result_codes(conn, 1);
    /* secure_delete: a deleted channel's literal provider key or a key
     * record is overwritten, not left in free pages. */
    if (sqlite3_exec(conn, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(conn, "PRAGMA secure_delete = ON", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(conn,
                     db->sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                     NULL, NULL, NULL) != SQLITE_OK ||
        pragma_text(conn, "PRAGMA journal_mode = WAL", jm, sizeof(jm)) != 0) {
        lm_store_seterr(err, errlen, "store: %s connection: cannot apply settings: %s", which,
                        sqlite3_errmsg(conn));
        return -1;
    }
    if (read_settings(conn, &s) != 0) {
        lm_store_seterr(err, errlen, "store: %s connection: cannot read settings back: %s", which,
                        sqlite3_errmsg(conn));
        return -1;
    }
    if (strcmp(s.journal_mode, "wal") != 0) {
        lm_store_seterr(err, errlen, "store: %s connection: journal_mode is \"%s\", not \"wal\"",
                        which, s.journal_mode);
        return -1;
    }
    if (s.busy_timeout_ms < 5000) {
        lm_store_seterr(err, errlen, "store: %s connection: busy_timeout is %d ms, need >= 5000",
                        which, s.busy_timeout_ms);
        return -1;
    }
    if (s.foreign_keys != 1) {
        lm_store_seterr(err, errlen, "store: %s connection: foreign_keys is %d, need 1", which,
                        s.foreign_keys);
        return -1;
    }
    if (s.synchronous < 1) {
        lm_store_seterr(err, errlen, "store: %s connection: synchronous is %d, need >= 1 (NORMAL)",
                        which, s.synchronous);
        return -1;
    }
    if (out)
        *out = s;
    return 0;
}

static int migrate(lm_store_db_t *db, char *err, size_t errlen)
{
    int v = 0;
    if (sqlite3_exec(db->w, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot start the migration: %s",
                        sqlite3_errmsg(db->w));
        return -1;
    }
    if (pragma_int(db->w, "PRAGMA user_version", &v) != 0) {
        lm_store_seterr(err, errlen, "store: cannot read the schema version: %s",
                        sqlite3_errmsg(db->w));
        goto fail;
    }
    if (v > NMIGRATIONS) {
        lm_store_seterr(err, errlen,
                        "store: database schema version %d is newer than this build (%d)", v,
                        NMIGRATIONS);
        goto fail;
    }
    for (int i = v; i < NMIGRATIONS; i++) {
        char *msg = NULL;
        if (sqlite3_exec(db->w, migrations[i], NULL, NULL, &msg) != SQLITE_OK) {
            lm_store_seterr(err, errlen, "store: migration %d failed: %s", i + 1, msg ? msg : "?");
            sqlite3_free(msg);
            goto fail;
        }
    }
    if (sqlite3_exec(db->w, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot commit the migration: %s",
                        sqlite3_errmsg(db->w));
        goto fail;
    }
    if (v < NMIGRATIONS)
        lm_store_log(db->st, 2, "schema migrated from version %d to %d", v, NMIGRATIONS);
    return 0;
fail:
    sqlite3_exec(db->w, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static int mkdirs(const char *dir)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    struct stat sb;
    return (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) ? 0 : -1;
}

/* The store holds literal provider secrets (stored channels): the data
 * directory must be 0700 and the database files 0600. Files are tightened
 * always; the directory only when it is ours and not a shared (sticky)
 * directory such as /tmp, else a warning says so. */
static void tighten_perms(lm_store_t *st, const char *dir, const char *path)
{
    struct stat sb;
    if (stat(dir, &sb) == 0 && (sb.st_mode & 077)) {
        if (sb.st_uid == geteuid() && !(sb.st_mode & S_ISVTX) && chmod(dir, 0700) == 0)
            lm_store_log(st, 1,
                         "data directory %s was accessible to other users (mode %03o); now 0700",
                         dir, (unsigned)(sb.st_mode & 0777));
        else
            lm_store_log(st, 1,
                         "data directory %s is accessible to other users (mode %03o); it holds "
                         "secrets: make it 0700",
                         dir, (unsigned)(sb.st_mode & 0777));
    }
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        char p[4224];
        snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
        if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 077)) {
            if (chmod(p, 0600) == 0)
                lm_store_log(st, 1, "%s was accessible to other users (mode %03o); now 0600", p,
                             (unsigned)(sb.st_mode & 0777));
            else
                lm_store_log(st, 0, "cannot make %s 0600: %s", p, strerror(errno));
        }
    }
}

static int sq_load_keys(lm_store_db_t *db, int (*each)(void *arg, lm_key_t *k), void *arg,
                        char *err, size_t errlen)
{
    sqlite3_stmt *s = db->ws[W_LOAD_KEYS];
    int rc = -1, sr;
    while ((sr = sqlite3_step(s)) == SQLITE_ROW) {
        lm_key_t *k = lm_sqlite_key_from_row(s);
        int r = k ? each(arg, k) : -1;
        if (r == -1)
            lm_store_seterr(err, errlen, "store: cannot load key %lld",
                            (long long)sqlite3_column_int64(s, 0));
        if (r != 0)
            goto out;
    }
    if (sr != SQLITE_DONE) {
        lm_store_seterr(err, errlen, "store: cannot load keys: %s", sqlite3_errmsg(db->w));
        goto out;
    }
    rc = 0;
out:
    sqlite3_reset(s);
    return rc;
}

static void sq_close(lm_store_db_t *db)
{
    if (db == NULL)
        return;
    lm_sqlite_ckpt_stop(db->ckpt);
    for (int i = 0; i < W_COUNT; i++)
        sqlite3_finalize(db->ws[i]);
    for (int i = 0; i < R_COUNT; i++)
        sqlite3_finalize(db->rs[i]);
    if (db->r)
        sqlite3_close(db->r);
    if (db->w)
        sqlite3_close(db->w); /* the last connection checkpoints and removes -wal/-shm */
    pthread_mutex_destroy(&db->rd_mu);
    free(db);
}

/* The database file path (created 0600 in a 0700 directory) into path. */
static int make_file(lm_store_t *st, const lm_store_opts_t *o, char *path, size_t len, char *err,
                     size_t errlen)
{
    if (o->dir == NULL || o->dir[0] == '\0') {
        lm_store_seterr(err, errlen, "store: no data directory");
        return -1;
    }
    if (!sqlite3_threadsafe()) {
        lm_store_seterr(err, errlen, "store: SQLite was built without thread support");
        return -1;
    }
    if (mkdirs(o->dir) != 0) {
        lm_store_seterr(err, errlen, "store: cannot create data directory %s: %s", o->dir,
                        strerror(errno));
        return -1;
    }
    if ((size_t)snprintf(path, len, "%s/longmen.db", o->dir) >= len) {
        lm_store_seterr(err, errlen, "store: data directory path too long");
        return -1;
    }
    /* create the file 0600 first: SQLite gives -wal and -shm the same mode */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        lm_store_seterr(err, errlen, "store: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    tighten_perms(st, o->dir, path);
    return 0;
}

/* Both connections configured, the schema migrated. */
static int connect_both(lm_store_db_t *db, const char *path, char *err, size_t errlen)
{
    /* SQLite's memory statistics (unused here) cost a global mutex round
     * per allocation, a few thousand instructions per ledger row. Only
     * possible before SQLite initialises; later it is refused (and the
     * statistics stay on), which changes nothing else. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE;
    if (sqlite3_open_v2(path, &db->w, flags, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot open %s: %s", path,
                        db->w ? sqlite3_errmsg(db->w) : "out of memory");
        return -1;
    }
    /* A new database gets 1 KiB pages: a ledger row touches about six pages
     * (the row, three indexes, the AUTOINCREMENT counter, the key's used),
     * each a WAL frame of a whole page, so 4 KiB pages wrote and checksummed
     * 24 KiB per one-row commit and made checkpoints four times larger.
     * Governance at one connection: about 8% more requests/s and a third of
     * the p99. An existing database keeps its page size (WAL mode cannot
     * change it), so this only acts before the first table exists. */
    if (sqlite3_exec(db->w, "PRAGMA page_size = 1024", NULL, NULL, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot set the page size: %s", sqlite3_errmsg(db->w));
        return -1;
    }
    if (configure(db, db->w, "write", err, errlen, &db->wset) != 0)
        return -1;
    if (migrate(db, err, errlen) != 0)
        return -1;
    db->wset.schema_version = NMIGRATIONS;
    if (sqlite3_open_v2(path, &db->r,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE,
                        NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot open %s for reading: %s", path,
                        db->r ? sqlite3_errmsg(db->r) : "out of memory");
        return -1;
    }
    if (configure(db, db->r, "read", err, errlen, NULL) != 0)
        return -1;
    if (sqlite3_exec(db->r, "PRAGMA query_only = ON", NULL, NULL, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: %s", sqlite3_errmsg(db->r));
        return -1;
    }
    return 0;
}

static int prepare_all(lm_store_db_t *db, char *err, size_t errlen)
{
    for (int i = 0; i < W_COUNT; i++)
        if (sqlite3_prepare_v3(db->w, w_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &db->ws[i], NULL) !=
            SQLITE_OK) {
            lm_store_seterr(err, errlen, "store: prepare: %s", sqlite3_errmsg(db->w));
            return -1;
        }
    for (int i = 0; i < R_COUNT; i++)
        if (sqlite3_prepare_v3(db->r, r_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &db->rs[i], NULL) !=
            SQLITE_OK) {
            lm_store_seterr(err, errlen, "store: prepare: %s", sqlite3_errmsg(db->r));
            return -1;
        }
    return 0;
}

static lm_store_db_t *sq_open(lm_store_t *st, const lm_store_opts_t *o, char *err, size_t errlen)
{
    char path[4200];
    if (make_file(st, o, path, sizeof(path), err, errlen) != 0)
        return NULL;
    lm_store_db_t *db = calloc(1, sizeof(*db));
    if (db == NULL) {
        lm_store_seterr(err, errlen, "store: out of memory");
        return NULL;
    }
    db->st = st;
    db->sync_full = o->sync_full;
    db->busy_ms = o->busy_timeout_ms ? o->busy_timeout_ms : 5000;
    pthread_mutex_init(&db->rd_mu, NULL);
    if (connect_both(db, path, err, errlen) != 0 || prepare_all(db, err, errlen) != 0 ||
        (db->ckpt = lm_sqlite_ckpt_start(st, db->w, path, db->sync_full, err, errlen)) == NULL) {
        sq_close(db);
        return NULL;
    }
    return db;
}

static int sq_settings(lm_store_db_t *db, lm_store_settings_t *out)
{
    pthread_mutex_lock(&db->rd_mu);
    int rc = read_settings(db->r, out);
    pthread_mutex_unlock(&db->rd_mu);
    if (rc != 0)
        return LM_STORE_EDB;
    lm_sqlite_ckpt_counts(db->ckpt, &out->checkpoints_background, &out->checkpoints_inline);
    /* the write connection must agree (checked at open, owned by the writer now) */
    if (strcmp(db->wset.journal_mode, out->journal_mode) != 0 || db->wset.busy_timeout_ms < 5000 ||
        db->wset.foreign_keys != 1 || db->wset.synchronous < 1)
        return LM_STORE_EDB;
    return LM_STORE_OK;
}

const lm_store_backend_t lm_store_sqlite = {
    .open = sq_open,
    .close = sq_close,
    .load_keys = sq_load_keys,
    .settings = sq_settings,
    .begin = sq_begin,
    .savepoint = sq_savepoint,
    .rollback_to = sq_rollback_to,
    .release = sq_release,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .transient = sq_transient,
    .usage_insert = sq_usage_insert,
    .key_insert = sq_key_insert,
    .key_read = sq_key_read,
    .key_update = sq_key_update,
    .key_delete = sq_key_delete,
    .admin_token_set = sq_admin_token_set,
    .chan_id = sq_chan_id,
    .chan_count = sq_chan_count,
    .chan_insert = sq_chan_insert,
    .chan_update = sq_chan_update,
    .chan_delete = sq_chan_delete,
    .admin_token_get = lm_sqlite_admin_token_get,
    .key_get = lm_sqlite_key_get,
    .key_list = lm_sqlite_key_list,
    .chan_get = lm_sqlite_chan_get,
    .chan_list = lm_sqlite_chan_list,
    .usage_totals = lm_sqlite_usage_totals,
    .usage_list = lm_sqlite_usage_list,
    .reqlog_insert = sq_reqlog_insert,
    .reqlog_prune = sq_reqlog_prune,
    .reqlog_list = lm_sqlite_reqlog_list,
};
