/*
 * store_pg.c - the PostgreSQL backend (backend.h): schema and migrations
 * (the SQLite ones in PostgreSQL's SQL, versioned in lm_meta), open/close
 * (control thread), one statement per write (writer thread) and the change
 * counter the watcher polls. Several instances share one database: every
 * admin write bumps lm_meta.changes in its own transaction. Records it
 * returns are new and the caller's.
 */
#include "store/store_pg_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* schema                                                                    */

/* Created before the numbered migrations, under the same advisory lock:
 * the schema version and the change counter (one row). */
#define META_SQL                                                                                   \
    "CREATE TABLE IF NOT EXISTS lm_meta (id INTEGER PRIMARY KEY CHECK (id = 1), "                  \
    "schema_version INTEGER NOT NULL, changes BIGINT NOT NULL, chan_changes BIGINT NOT NULL);"     \
    "INSERT INTO lm_meta VALUES (1, 0, 0, 0) ON CONFLICT (id) DO NOTHING;"
/* An arbitrary constant: instances starting together migrate one at a time. */
#define MIGRATE_LOCK "SELECT pg_advisory_xact_lock(7469323631)"

/* migrations[i] brings the schema from version i to i + 1, as SQLite's.
 * One difference: keys has no CHECK (used <= quota). Several instances
 * admit against their own view of used, so their rows together may pass a
 * quota; such a row must still be recorded (the ledger is the truth), and
 * the quota then refuses further requests. Lowering a quota below used is
 * refused by the UPDATE itself (pg_key_update). */
static const char *const migrations[] = {
    /* 1: keys and the usage ledger */
    "CREATE TABLE keys ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  hash BYTEA NOT NULL UNIQUE CHECK (length(hash) = 32),"
    "  prefix TEXT NOT NULL CHECK (length(prefix) <= 8),"
    "  name TEXT NOT NULL,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  grp TEXT NOT NULL DEFAULT '',"
    "  quota BIGINT CHECK (quota IS NULL OR quota >= 0),"
    "  used BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),"
    "  expires_at BIGINT NOT NULL DEFAULT 0 CHECK (expires_at >= 0),"
    "  models TEXT NOT NULL DEFAULT '[]',"
    "  cidrs TEXT NOT NULL DEFAULT '[]',"
    "  rpm BIGINT NOT NULL DEFAULT 0 CHECK (rpm >= 0),"
    "  tpm BIGINT NOT NULL DEFAULT 0 CHECK (tpm >= 0),"
    "  max_concurrent BIGINT NOT NULL DEFAULT 0 CHECK (max_concurrent >= 0),"
    "  enabled SMALLINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL,"
    "  deleted_at BIGINT"
    ");"
    "CREATE TABLE usage ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  request_id TEXT NOT NULL,"
    "  attempt BIGINT NOT NULL CHECK (attempt >= 0),"
    "  key_id BIGINT REFERENCES keys (id),"
    "  channel TEXT NOT NULL DEFAULT '',"
    "  model_asked TEXT NOT NULL DEFAULT '',"
    "  model_served TEXT NOT NULL DEFAULT '',"
    "  prompt_tokens BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),"
    "  completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),"
    "  cached_tokens BIGINT NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),"
    "  reasoning_tokens BIGINT NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),"
    "  cost BIGINT NOT NULL CHECK (cost >= 0),"
    "  latency_ms BIGINT NOT NULL DEFAULT 0,"
    "  ttft_ms BIGINT NOT NULL DEFAULT 0,"
    "  status BIGINT NOT NULL DEFAULT 0,"
    "  client_aborted SMALLINT NOT NULL DEFAULT 0 CHECK (client_aborted IN (0, 1)),"
    "  usage_json TEXT,"
    "  created_at BIGINT NOT NULL,"
    "  UNIQUE (request_id, attempt)"
    ");"
    "CREATE INDEX usage_key_created ON usage (key_id, created_at);"
    "CREATE INDEX usage_created ON usage (created_at);",
    /* 2: admin tokens (SHA-256 only), one per role */
    "CREATE TABLE admin_tokens ("
    "  role TEXT PRIMARY KEY CHECK (role IN ('admin', 'read')),"
    "  hash BYTEA NOT NULL CHECK (length(hash) = 32),"
    "  created_at BIGINT NOT NULL"
    ");",
    /* 3: channels managed through the admin API; models and settings JSON text */
    "CREATE TABLE channels ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),"
    "  plugin TEXT NOT NULL CHECK (length(plugin) BETWEEN 1 AND 64),"
    "  models TEXT NOT NULL,"
    "  settings TEXT NOT NULL,"
    "  priority BIGINT NOT NULL CHECK (priority >= 0),"
    "  weight BIGINT NOT NULL CHECK (weight >= 1),"
    "  max_inflight BIGINT NOT NULL CHECK (max_inflight >= 1),"
    "  connect_timeout_ms BIGINT NOT NULL CHECK (connect_timeout_ms >= 1),"
    "  first_byte_timeout_ms BIGINT NOT NULL CHECK (first_byte_timeout_ms >= 1),"
    "  idle_timeout_ms BIGINT NOT NULL CHECK (idle_timeout_ms >= 1),"
    "  request_timeout_ms BIGINT NOT NULL CHECK (request_timeout_ms >= 1),"
    "  price_input BIGINT NOT NULL CHECK (price_input >= 0),"
    "  price_output BIGINT NOT NULL CHECK (price_output >= 0),"
    "  price_cached_input BIGINT NOT NULL CHECK (price_cached_input >= 0),"
    "  price_per_request BIGINT NOT NULL CHECK (price_per_request >= 0),"
    "  enabled SMALLINT NOT NULL CHECK (enabled IN (0, 1)),"
    "  created_at BIGINT NOT NULL,"
    "  updated_at BIGINT NOT NULL"
    ");",
    /* 4: the inbound API each request came in by */
    "ALTER TABLE usage ADD COLUMN api TEXT NOT NULL DEFAULT 'chat';",
    /* 5: rows answered from the response cache: cost 0 */
    "ALTER TABLE usage ADD COLUMN cached SMALLINT NOT NULL DEFAULT 0 CHECK (cached IN (0, 1));",
    /* 6: the request log (docs/observability.md, store_pg_reqlog.c); key_id
     * without a reference, as in SQLite: a row outlives its key */
    "CREATE TABLE request_log ("
    "  id BIGSERIAL PRIMARY KEY,"
    "  request_id TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  key_id BIGINT,"
    "  key_name TEXT NOT NULL DEFAULT '',"
    "  model_asked TEXT NOT NULL DEFAULT '',"
    "  model_served TEXT NOT NULL DEFAULT '',"
    "  channel TEXT NOT NULL DEFAULT '',"
    "  api TEXT NOT NULL DEFAULT 'chat',"
    "  finish_reason TEXT NOT NULL DEFAULT '',"
    "  error_code TEXT NOT NULL DEFAULT '',"
    "  attempts TEXT NOT NULL DEFAULT '[]',"
    "  status BIGINT NOT NULL DEFAULT 0,"
    "  latency_ms BIGINT NOT NULL DEFAULT 0,"
    "  ttft_ms BIGINT NOT NULL DEFAULT 0,"
    "  prompt_tokens BIGINT NOT NULL DEFAULT 0,"
    "  completion_tokens BIGINT NOT NULL DEFAULT 0,"
    "  cost BIGINT NOT NULL DEFAULT 0,"
    "  stream SMALLINT NOT NULL DEFAULT 0 CHECK (stream IN (0, 1)),"
    "  request_body TEXT,"
    "  response_body TEXT"
    ");"
    "CREATE INDEX request_log_created ON request_log (created_at);",
};
#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ------------------------------------------------------------------------ */
/* parameters                                                                */

void lm_pg_text(lm_pg_params_t *p, const char *t)
{
    p->v[p->n] = t ? t : "";
    p->len[p->n] = 0;
    p->fmt[p->n++] = 0;
}

void lm_pg_null(lm_pg_params_t *p)
{
    p->v[p->n] = NULL;
    p->len[p->n] = 0;
    p->fmt[p->n++] = 0;
}

void lm_pg_i64(lm_pg_params_t *p, int64_t v)
{
    snprintf(p->num[p->n], sizeof(p->num[0]), "%" PRId64, v);
    lm_pg_text(p, p->num[p->n]);
}

void lm_pg_bytes(lm_pg_params_t *p, const unsigned char *b, int len)
{
    p->v[p->n] = (const char *)b;
    p->len[p->n] = len;
    p->fmt[p->n++] = 1;
}

PGresult *lm_pg_exec(lm_pgconn_t *c, const char *what, const char *sql, const lm_pg_params_t *p)
{
    return lm_pgconn_exec(c, what, sql, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
                          p ? p->fmt : NULL);
}

/* ------------------------------------------------------------------------ */
/* writer connection: transactions                                           */

static int64_t now_s(void)
{
    return lm_store_now_ms() / 1000;
}

/* A statement of the writer; its status as a LM_STORE_* code. */
static int w_status(lm_store_db_t *db)
{
    return lm_pgconn_constraint(&db->w) ? LM_STORE_ECONFLICT : LM_STORE_EDB;
}

static int pg_begin(lm_store_db_t *db)
{
    db->w.lost = 0;
    db->w.sqlstate[0] = '\0';
    db->w.in_tx = 0;
    if (lm_pgconn_run(&db->w, "BEGIN", "BEGIN") != 0)
        return -1;
    db->in_tx = db->w.in_tx = 1;
    return 0;
}

static int pg_savepoint(lm_store_db_t *db)
{
    db->w.sqlstate[0] = '\0';
    return lm_pgconn_run(&db->w, "SAVEPOINT", "SAVEPOINT op");
}

static int pg_rollback_to(lm_store_db_t *db)
{
    return lm_pgconn_run(&db->w, "ROLLBACK TO", "ROLLBACK TO SAVEPOINT op");
}

static int pg_release(lm_store_db_t *db)
{
    return lm_pgconn_run(&db->w, "RELEASE", "RELEASE SAVEPOINT op");
}

static int pg_commit(lm_store_db_t *db)
{
    db->w.sqlstate[0] = '\0';
    int rc = lm_pgconn_run(&db->w, "COMMIT", "COMMIT");
    db->in_tx = db->w.in_tx = 0;
    return rc;
}

static void pg_rollback(lm_store_db_t *db)
{
    if (db->in_tx && db->w.c && PQstatus(db->w.c) == CONNECTION_OK &&
        PQtransactionStatus(db->w.c) != PQTRANS_IDLE)
        lm_pgconn_run(&db->w, "ROLLBACK", "ROLLBACK");
    db->in_tx = db->w.in_tx = 0;
}

/* The connection went away, or the server refused for a while (shutdown,
 * too many connections, serialization, resources): retry the batch. A
 * commit whose answer was lost may have landed; the retry then finds its
 * usage rows (request_id, attempt) and counts them as duplicates. */
static int pg_transient(lm_store_db_t *db)
{
    const char *s = db->w.sqlstate;
    return db->w.lost || !strncmp(s, "08", 2) || !strncmp(s, "57P", 3) || !strncmp(s, "53", 2) ||
           !strcmp(s, "40001") || !strcmp(s, "40P01");
}

/* ------------------------------------------------------------------------ */
/* writer connection: operations                                             */

/* Every admin write tells the other instances (the watcher polls this);
 * a channel write also bumps chan_changes (the others rebuild routes). */
static int bump_what(lm_store_db_t *db, int chan)
{
    PGresult *r = lm_pg_exec(&db->w, "change counter",
                             chan ? "UPDATE lm_meta SET changes = changes + 1, "
                                    "chan_changes = chan_changes + 1 WHERE id = 1"
                                  : "UPDATE lm_meta SET changes = changes + 1 WHERE id = 1",
                             NULL);
    if (r == NULL)
        return w_status(db);
    PQclear(r);
    return LM_STORE_OK;
}

static int bump(lm_store_db_t *db)
{
    return bump_what(db, 0);
}

/* Rows a command changed (UPDATE/DELETE/INSERT). */
static int changed(PGresult *r)
{
    const char *t = PQcmdTuples(r);
    return t && *t ? atoi(t) : 0;
}

static int pg_usage_insert(lm_store_db_t *db, const lm_usage_row_t *u, int64_t *id)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_text(&p, u->request_id);
    lm_pg_i64(&p, u->attempt);
    if (u->key_id > 0)
        lm_pg_i64(&p, u->key_id);
    else
        lm_pg_null(&p);
    lm_pg_text(&p, u->channel);
    lm_pg_text(&p, u->model_asked);
    lm_pg_text(&p, u->model_served);
    lm_pg_i64(&p, u->prompt_tokens);
    lm_pg_i64(&p, u->completion_tokens);
    lm_pg_i64(&p, u->cached_tokens);
    lm_pg_i64(&p, u->reasoning_tokens);
    lm_pg_i64(&p, u->cost);
    lm_pg_i64(&p, u->latency_ms);
    lm_pg_i64(&p, u->ttft_ms);
    lm_pg_i64(&p, u->status);
    lm_pg_i64(&p, u->client_aborted ? 1 : 0);
    if (u->usage_json)
        lm_pg_text(&p, u->usage_json);
    else
        lm_pg_null(&p);
    lm_pg_i64(&p, u->created_ms);
    lm_pg_text(&p, u->api ? u->api : "chat");
    lm_pg_i64(&p, u->cached ? 1 : 0);
    PGresult *r = lm_pg_exec(&db->w, "usage insert",
                             "INSERT INTO usage (" PG_USAGE_COLS ") VALUES ($1, $2, $3, $4, $5, "
                             "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) "
                             "ON CONFLICT (request_id, attempt) DO NOTHING RETURNING id",
                             &p);
    if (r == NULL)
        return w_status(db);
    int n = PQntuples(r);
    if (n == 1)
        *id = lm_pg_int(r, 0, 0);
    PQclear(r);
    if (n == 0)
        return LM_STORE_DUP;
    if (u->cost > 0 && u->key_id > 0) {
        lm_pg_params_t q = {.n = 0};
        lm_pg_i64(&q, u->cost);
        lm_pg_i64(&q, u->key_id);
        r = lm_pg_exec(&db->w, "usage: add to used",
                       "UPDATE keys SET used = used + $1 WHERE id = $2", &q);
        if (r == NULL)
            return w_status(db);
        n = changed(r);
        PQclear(r);
        if (n != 1)
            return LM_STORE_ENOTFOUND;
    }
    return LM_STORE_OK;
}

/* name .. enabled, then now (the INSERT and UPDATE list them so). */
static void key_params(lm_pg_params_t *p, const lm_store_key_cols_t *c)
{
    lm_pg_text(p, c->name);
    lm_pg_text(p, c->owner);
    lm_pg_text(p, c->group);
    if (c->unlimited)
        lm_pg_null(p);
    else
        lm_pg_i64(p, c->quota);
    lm_pg_i64(p, c->expires_at);
    lm_pg_text(p, c->models_json);
    lm_pg_text(p, c->cidrs_json);
    lm_pg_i64(p, c->rpm);
    lm_pg_i64(p, c->tpm);
    lm_pg_i64(p, c->max_concurrent);
    lm_pg_i64(p, c->enabled ? 1 : 0);
    lm_pg_i64(p, now_s());
}

static int pg_key_insert(lm_store_db_t *db, const unsigned char hash[32], const char *prefix,
                         const lm_store_key_cols_t *c, int64_t *id)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_bytes(&p, hash, 32);
    lm_pg_text(&p, prefix);
    key_params(&p, c);
    PGresult *r = lm_pg_exec(&db->w, "key insert",
                             "INSERT INTO keys (hash, prefix, name, owner, grp, quota, used, "
                             "expires_at, models, cidrs, rpm, tpm, max_concurrent, enabled, "
                             "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, "
                             "$9, $10, $11, $12, $13, $14, $14) RETURNING id",
                             &p);
    if (r == NULL)
        return w_status(db);
    *id = lm_pg_int(r, 0, 0);
    PQclear(r);
    return bump(db);
}

static lm_key_t *pg_key_read(lm_store_db_t *db, int64_t id)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_i64(&p, id);
    PGresult *r =
        lm_pg_exec(&db->w, "key read",
                   "SELECT " PG_KEY_COLS " FROM keys WHERE id = $1 AND deleted_at IS NULL", &p);
    lm_key_t *k = NULL;
    if (r && PQntuples(r) == 1)
        k = lm_pg_key_from_row(r, 0);
    if (r)
        PQclear(r);
    return k;
}

/* An UPDATE/DELETE of one row that bumps the counter when it hit. */
static int write_one(lm_store_db_t *db, int chan, const char *what, const char *sql,
                     const lm_pg_params_t *p)
{
    PGresult *r = lm_pg_exec(&db->w, what, sql, p);
    if (r == NULL)
        return w_status(db);
    int n = changed(r);
    PQclear(r);
    return n == 1 ? bump_what(db, chan) : LM_STORE_ENOTFOUND;
}

static int pg_key_update(lm_store_db_t *db, int64_t id, const lm_store_key_cols_t *c)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_i64(&p, id);
    key_params(&p, c);
    int rc = write_one(db, 0, "key update",
                       "UPDATE keys SET name = $2, owner = $3, grp = $4, quota = $5, "
                       "expires_at = $6, models = $7, cidrs = $8, rpm = $9, tpm = $10, "
                       "max_concurrent = $11, enabled = $12, updated_at = $13 "
                       "WHERE id = $1 AND deleted_at IS NULL AND "
                       "($5::bigint IS NULL OR used <= $5::bigint)",
                       &p);
    if (rc != LM_STORE_ENOTFOUND)
        return rc;
    lm_key_t *k = pg_key_read(db, id); /* there, so the quota was below used */
    rc = k ? LM_STORE_ECONFLICT : LM_STORE_ENOTFOUND;
    lm_store_key_free(k);
    return rc;
}

static int pg_key_delete(lm_store_db_t *db, int64_t id)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_i64(&p, id);
    lm_pg_i64(&p, now_s());
    return write_one(db, 0, "key delete",
                     "UPDATE keys SET deleted_at = $2, enabled = 0, updated_at = $2 "
                     "WHERE id = $1 AND deleted_at IS NULL",
                     &p);
}

static int pg_admin_token_set(lm_store_db_t *db, int role, const unsigned char *hash)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_text(&p, lm_pg_role_name(role));
    PGresult *r;
    if (hash) {
        lm_pg_bytes(&p, hash, 32);
        lm_pg_i64(&p, now_s());
        r = lm_pg_exec(&db->w, "admin token",
                       "INSERT INTO admin_tokens (role, hash, created_at) VALUES ($1, $2, $3) "
                       "ON CONFLICT (role) DO UPDATE SET hash = excluded.hash, "
                       "created_at = excluded.created_at",
                       &p);
    } else {
        r = lm_pg_exec(&db->w, "admin token", "DELETE FROM admin_tokens WHERE role = $1", &p);
    }
    if (r == NULL)
        return w_status(db);
    PQclear(r);
    return bump(db);
}

static int64_t w_int(lm_store_db_t *db, const char *sql, const char *name)
{
    lm_pg_params_t p = {.n = 0};
    if (name)
        lm_pg_text(&p, name);
    PGresult *r = lm_pg_exec(&db->w, "channel lookup", sql, &p);
    int64_t v = -1;
    if (r && PQntuples(r) == 1)
        v = lm_pg_int(r, 0, 0);
    if (r)
        PQclear(r);
    return v;
}

static int64_t pg_chan_id(lm_store_db_t *db, const char *name)
{
    return w_int(db, "SELECT id FROM channels WHERE name = $1", name);
}

static int64_t pg_chan_count(lm_store_db_t *db)
{
    return w_int(db, "SELECT COUNT(*) FROM channels", NULL);
}

/* $1 name, $2 plugin, $3 models, $4 settings, $5..$15 numbers, $16
 * enabled, $17 now. */
static void chan_params(lm_pg_params_t *p, const lm_chan_rec_t *c, const char *models_json,
                        const char *settings_json)
{
    lm_pg_text(p, c->name);
    lm_pg_text(p, c->plugin);
    lm_pg_text(p, models_json);
    lm_pg_text(p, settings_json);
    for (size_t i = 0; i < LM_ROWDEC_CHAN_NNUMS; i++)
        lm_pg_i64(p, *(const int64_t *)(const void *)((const char *)c + lm_rowdec_chan_num_off[i]));
    lm_pg_i64(p, c->enabled ? 1 : 0);
    lm_pg_i64(p, now_s());
}

static int pg_chan_insert(lm_store_db_t *db, const lm_chan_rec_t *c, const char *models_json,
                          const char *settings_json, int64_t *id)
{
    lm_pg_params_t p = {.n = 0};
    chan_params(&p, c, models_json, settings_json);
    PGresult *r = lm_pg_exec(&db->w, "channel insert",
                             "INSERT INTO channels (name, plugin, models, settings, priority, "
                             "weight, max_inflight, connect_timeout_ms, first_byte_timeout_ms, "
                             "idle_timeout_ms, request_timeout_ms, price_input, price_output, "
                             "price_cached_input, price_per_request, enabled, created_at, "
                             "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
                             "$12, $13, $14, $15, $16, $17, $17) RETURNING id",
                             &p);
    if (r == NULL)
        return w_status(db);
    *id = lm_pg_int(r, 0, 0);
    PQclear(r);
    return bump_what(db, 1);
}

static int pg_chan_update(lm_store_db_t *db, const lm_chan_rec_t *c, const char *models_json,
                          const char *settings_json)
{
    lm_pg_params_t p = {.n = 0};
    chan_params(&p, c, models_json, settings_json);
    return write_one(db, 1, "channel update",
                     "UPDATE channels SET plugin = $2, models = $3, settings = $4, "
                     "priority = $5, weight = $6, max_inflight = $7, connect_timeout_ms = $8, "
                     "first_byte_timeout_ms = $9, idle_timeout_ms = $10, "
                     "request_timeout_ms = $11, price_input = $12, price_output = $13, "
                     "price_cached_input = $14, price_per_request = $15, enabled = $16, "
                     "updated_at = $17 WHERE name = $1",
                     &p);
}

static int pg_chan_delete(lm_store_db_t *db, const char *name)
{
    lm_pg_params_t p = {.n = 0};
    lm_pg_text(&p, name);
    return write_one(db, 1, "channel delete", "DELETE FROM channels WHERE name = $1", &p);
}

/* ------------------------------------------------------------------------ */
/* watcher, keys at open                                                     */

static int pg_changes(lm_store_db_t *db, int64_t version[2])
{
    PGresult *r = lm_pg_exec(&db->watch, "change poll",
                             "SELECT changes, chan_changes FROM lm_meta WHERE id = 1", NULL);
    if (r == NULL)
        return -1;
    int ok = PQntuples(r) == 1;
    if (ok) {
        version[0] = lm_pg_int(r, 0, 0);
        version[1] = lm_pg_int(r, 0, 1);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static int pg_spend(lm_store_db_t *db, void (*each)(void *arg, int64_t id, int64_t used), void *arg)
{
    PGresult *r = lm_pg_exec(&db->watch, "spend poll",
                             "SELECT id, used FROM keys WHERE deleted_at IS NULL AND used > 0 "
                             "AND quota IS NOT NULL",
                             NULL);
    if (r == NULL)
        return -1;
    for (int i = 0; i < PQntuples(r); i++)
        each(arg, lm_pg_int(r, i, 0), lm_pg_int(r, i, 1));
    PQclear(r);
    return 0;
}

static int pg_load_keys(lm_store_db_t *db, int (*each)(void *arg, lm_key_t *k), void *arg,
                        char *err, size_t errlen)
{
    PGresult *r =
        lm_pg_exec(&db->w, "load keys",
                   "SELECT " PG_KEY_COLS " FROM keys WHERE deleted_at IS NULL ORDER BY id", NULL);
    if (r == NULL) {
        lm_store_seterr(err, errlen, "store: cannot load keys from postgres");
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < PQntuples(r) && rc == 0; i++) {
        lm_key_t *k = lm_pg_key_from_row(r, i);
        int e = k ? each(arg, k) : -1;
        if (e == -1)
            lm_store_seterr(err, errlen, "store: cannot load key %lld",
                            (long long)lm_pg_int(r, i, 0));
        rc = e != 0 ? -1 : 0;
    }
    PQclear(r);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* open / close                                                              */

static int migrate(lm_store_db_t *db, char *err, size_t errlen)
{
    lm_pgconn_t *c = &db->w;
    if (lm_pgconn_run(c, "migration", "BEGIN") != 0 ||
        lm_pgconn_run(c, "migration lock", MIGRATE_LOCK) != 0 ||
        lm_pgconn_run(c, "migration meta", META_SQL) != 0)
        goto fail;
    PGresult *r = lm_pg_exec(c, "schema version",
                             "SELECT schema_version FROM lm_meta WHERE id = 1 FOR UPDATE", NULL);
    if (r == NULL || PQntuples(r) != 1) {
        if (r)
            PQclear(r);
        goto fail;
    }
    int v = (int)lm_pg_int(r, 0, 0);
    PQclear(r);
    if (v > NMIGRATIONS) {
        lm_store_seterr(err, errlen,
                        "store: database schema version %d is newer than this build (%d)", v,
                        NMIGRATIONS);
        lm_pgconn_run(c, "ROLLBACK", "ROLLBACK");
        return -1;
    }
    for (int i = v; i < NMIGRATIONS; i++) {
        char sql[96];
        snprintf(sql, sizeof(sql), "UPDATE lm_meta SET schema_version = %d WHERE id = 1", i + 1);
        if (lm_pgconn_run(c, "migration", migrations[i]) != 0 ||
            lm_pgconn_run(c, "migration", sql) != 0) {
            lm_store_seterr(err, errlen, "store: postgres migration %d failed (see the log)",
                            i + 1);
            lm_pgconn_run(c, "ROLLBACK", "ROLLBACK");
            return -1;
        }
    }
    if (lm_pgconn_run(c, "migration commit", "COMMIT") != 0)
        goto fail;
    if (v < NMIGRATIONS)
        lm_store_log(db->st, 2, "postgres schema migrated from version %d to %d", v, NMIGRATIONS);
    return 0;
fail:
    lm_store_seterr(err, errlen, "store: cannot migrate the postgres schema (see the log)");
    if (c->c && PQstatus(c->c) == CONNECTION_OK)
        lm_pgconn_run(c, "ROLLBACK", "ROLLBACK");
    return -1;
}

static void pg_close(lm_store_db_t *db)
{
    if (db == NULL)
        return;
    lm_pgconn_free(&db->w);
    lm_pgconn_free(&db->r);
    lm_pgconn_free(&db->watch);
    pthread_mutex_destroy(&db->rd_mu);
    free(db);
}

static lm_store_db_t *pg_open(lm_store_t *st, const lm_store_opts_t *o, char *err, size_t errlen)
{
    if (o->pg == NULL || o->pg[0] == '\0') {
        lm_store_seterr(err, errlen, "store postgres: no connection string");
        return NULL;
    }
    lm_store_db_t *db = calloc(1, sizeof(*db));
    if (db == NULL) {
        lm_store_seterr(err, errlen, "store: out of memory");
        return NULL;
    }
    db->st = st;
    pthread_mutex_init(&db->rd_mu, NULL);
    if (lm_pgconn_init(&db->w, st, "write", o->pg, err, errlen) != 0 ||
        lm_pgconn_init(&db->r, st, "read", o->pg, err, errlen) != 0 ||
        lm_pgconn_init(&db->watch, st, "watch", o->pg, err, errlen) != 0 ||
        lm_pgconn_ensure(&db->w, err, errlen) != 0 || migrate(db, err, errlen) != 0) {
        pg_close(db);
        return NULL;
    }
    return db;
}

/* Fixed answers in SQLite's terms (admin health): PostgreSQL commits are
 * durable (synchronous_commit is the server's), foreign keys always on. */
static int pg_settings(lm_store_db_t *db, lm_store_settings_t *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->journal_mode, sizeof(out->journal_mode), "postgres");
    out->busy_timeout_ms = 5000;
    out->foreign_keys = 1;
    out->synchronous = 2;
    pthread_mutex_lock(&db->rd_mu);
    PGresult *r =
        lm_pg_exec(&db->r, "settings", "SELECT schema_version FROM lm_meta WHERE id = 1", NULL);
    pthread_mutex_unlock(&db->rd_mu);
    if (r == NULL)
        return LM_STORE_EDB;
    out->schema_version = PQntuples(r) == 1 ? (int)lm_pg_int(r, 0, 0) : 0;
    PQclear(r);
    return LM_STORE_OK;
}

const lm_store_backend_t lm_store_pg = {
    .open = pg_open,
    .close = pg_close,
    .load_keys = pg_load_keys,
    .settings = pg_settings,
    .begin = pg_begin,
    .savepoint = pg_savepoint,
    .rollback_to = pg_rollback_to,
    .release = pg_release,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .transient = pg_transient,
    .usage_insert = pg_usage_insert,
    .key_insert = pg_key_insert,
    .key_read = pg_key_read,
    .key_update = pg_key_update,
    .key_delete = pg_key_delete,
    .admin_token_set = pg_admin_token_set,
    .chan_id = pg_chan_id,
    .chan_count = pg_chan_count,
    .chan_insert = pg_chan_insert,
    .chan_update = pg_chan_update,
    .chan_delete = pg_chan_delete,
    .admin_token_get = lm_pg_admin_token_get,
    .key_get = lm_pg_key_get,
    .key_list = lm_pg_key_list,
    .chan_get = lm_pg_chan_get,
    .chan_list = lm_pg_chan_list,
    .usage_totals = lm_pg_usage_totals,
    .usage_list = lm_pg_usage_list,
    .reqlog_insert = lm_pg_reqlog_insert,
    .reqlog_prune = lm_pg_reqlog_prune,
    .reqlog_list = lm_pg_reqlog_list,
    .changes = pg_changes,
    .spend = pg_spend,
};
