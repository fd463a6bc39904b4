/*
 * store_sqlite.c - the store (store.h) on SQLite in WAL mode.
 *
 * Two connections: `w`, used only by the writer thread (and by open before
 * the thread starts), and `r`, a query_only connection for admin reads,
 * serialised by rd_mu. WAL lets `r` read while `w` writes.
 *
 * The first half of this file (queue, writer loop, key snapshot, accounts)
 * is backend-independent; the SQL lives in the statement tables, the
 * migrations and the apply_* functions. Key and channel records and their
 * checks are in keys.c and chans.c.
 */
#include "core/b64.h"
#include "store/internal.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
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
    "client_aborted, usage_json, created_at"
#define CHAN_COLS                                                                                  \
    "id, name, plugin, models, settings, priority, weight, max_inflight, "                         \
    "connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, request_timeout_ms, "             \
    "price_input, price_output, price_cached_input, price_per_request, enabled, "                  \
    "created_at, updated_at"

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
    W_COUNT
};
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
                    "?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) "
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
};

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
    R_COUNT
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
};
#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ------------------------------------------------------------------------ */
/* types                                                                     */

enum {
    OP_USAGE,
    OP_KEY_CREATE,
    OP_KEY_UPDATE,
    OP_KEY_DELETE,
    OP_ADMIN_TOKEN,
    OP_CHAN_CREATE,
    OP_CHAN_UPDATE,
    OP_CHAN_DELETE,
    OP_BARRIER
};

typedef struct op_s {
    int kind;
    int status;
    int64_t id;
    lm_store_cb_t cb;
    int sync; /* waiter on st->sync_cv; the op lives on its stack */
    int done;
    /* OP_USAGE */
    lm_usage_row_t row; /* strings point into the op's allocation */
    lm_acct_t *acct;
    int64_t pending;
    /* key ops */
    const lm_key_spec_t *spec;
    int64_t key_id;
    unsigned char hash[32];
    char prefix[LM_KEY_PREFIX_LEN + 1];
    char *models_json, *cidrs_json; /* create */
    int quota_lowered, old_unlimited;
    int admin_role, admin_clear; /* OP_ADMIN_TOKEN: role; 1 = delete (hash unused) */
    int64_t old_quota;
    /* channel ops: the record (borrowed) and its JSON columns */
    const lm_chan_rec_t *chan;
    const char *chan_name; /* OP_CHAN_DELETE */
    char *chan_models, *chan_settings;
    char *err;
    size_t errlen;
} op_t;

typedef struct keyset_s {
    size_t cap, n; /* cap: power of two, >= 2n */
    lm_key_t **slot;
} keyset_t;

struct lm_store_s {
    sqlite3 *w, *r;
    sqlite3_stmt *ws[W_COUNT], *rs[R_COUNT];
    void (*log)(int, const char *);
    int sync_full, busy_ms;
    int last_ext;             /* writer thread: extended code of the last failed statement */
    lm_store_settings_t wset; /* read back on `w` at open */

    /* queue */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    op_t **q;
    size_t q_cap, q_head, q_len, batch_max;
    int stopping;
    pthread_t writer;
    int writer_started;

    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;

    pthread_mutex_t rd_mu;

    /* key snapshot */
    pthread_rwlock_t snap_lock;
    keyset_t *keys;

    /* accounts, by id; never removed before close */
    pthread_mutex_t acct_mu;
    lm_acct_t **accts;
    size_t acct_cap, acct_n;
};

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */

static void slog(lm_store_t *st, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void slog(lm_store_t *st, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (st && st->log) {
        st->log(level, msg);
    } else {
        char line[560];
        int n = snprintf(line, sizeof(line), "longmen: store: %s\n", msg);
        if (n > 0) {
            ssize_t wr = write(2, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
            (void)wr;
        }
    }
}

static int64_t now_s(void)
{
    return lm_store_now_ms() / 1000;
}

static char *col_text(sqlite3_stmt *s, int i)
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

/* A record from a row of KEY_COLS / KEY_COLS_NOHASH. */
static lm_key_t *key_from_row(sqlite3_stmt *s)
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
    k->name = col_text(s, 3);
    k->owner = col_text(s, 4);
    k->group = col_text(s, 5);
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

/* The numeric fields in CHAN_COLS order (columns 5.., binds ?5..). */
static const size_t chan_num_off[] = {
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
#define CHAN_NNUMS (sizeof(chan_num_off) / sizeof(chan_num_off[0]))

/* A record from a row of CHAN_COLS, or NULL. */
static lm_chan_rec_t *chan_from_row(sqlite3_stmt *s)
{
    lm_chan_rec_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->id = sqlite3_column_int64(s, 0);
    c->name = col_text(s, 1);
    c->plugin = col_text(s, 2);
    int bad = c->name == NULL || c->plugin == NULL;
    bad |= lm_store_list_decode((const char *)sqlite3_column_text(s, 3), &c->models, &c->nmodels);
    bad |= lm_store_chan_settings_decode((const char *)sqlite3_column_text(s, 4), c);
    for (size_t i = 0; i < CHAN_NNUMS; i++)
        *(int64_t *)(void *)((char *)c + chan_num_off[i]) = sqlite3_column_int64(s, 5 + (int)i);
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
/* key snapshot: copy-on-write open-addressing table keyed by the digest      */

static size_t ks_index(const unsigned char *h, size_t cap)
{
    uint64_t v;
    memcpy(&v, h, sizeof(v));
    return (size_t)(v & (cap - 1));
}

/* A new set of `keys` (each gets a reference). NULL on ENOMEM. */
static keyset_t *ks_build(lm_key_t **keys, size_t n)
{
    keyset_t *ks = calloc(1, sizeof(*ks));
    if (ks == NULL)
        return NULL;
    ks->cap = 16;
    while (ks->cap < 2 * n + 1)
        ks->cap *= 2;
    ks->slot = calloc(ks->cap, sizeof(*ks->slot));
    if (ks->slot == NULL) {
        free(ks);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        size_t j = ks_index(keys[i]->hash, ks->cap);
        while (ks->slot[j])
            j = (j + 1) & (ks->cap - 1);
        lm_key_ref(keys[i]);
        ks->slot[j] = keys[i];
        ks->n++;
    }
    return ks;
}

static void ks_free(keyset_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->cap; i++)
        if (ks->slot[i])
            lm_key_release(ks->slot[i]);
    free(ks->slot);
    free(ks);
}

/* Writer thread: publish a set without key `drop_id` and with `add` (either
 * may be 0/NULL). */
static int ks_replace(lm_store_t *st, int64_t drop_id, lm_key_t *add)
{
    keyset_t *old = st->keys; /* only the writer swaps: reading it here is safe */
    size_t cap = (old ? old->n : 0) + 1;
    lm_key_t **list = calloc(cap, sizeof(*list));
    size_t n = 0;
    if (list == NULL)
        return -1;
    for (size_t i = 0; old && i < old->cap; i++) {
        lm_key_t *k = old->slot[i];
        if (k && k->id != drop_id && !(add && k->id == add->id))
            list[n++] = k;
    }
    if (add)
        list[n++] = add;
    keyset_t *ks = ks_build(list, n);
    free(list);
    if (ks == NULL)
        return -1;
    pthread_rwlock_wrlock(&st->snap_lock);
    st->keys = ks;
    pthread_rwlock_unlock(&st->snap_lock);
    ks_free(old);
    return 0;
}

lm_key_t *lm_store_key_find_hash(lm_store_t *st, const unsigned char digest[32])
{
    lm_key_t *found = NULL;
    pthread_rwlock_rdlock(&st->snap_lock);
    keyset_t *ks = st->keys;
    if (ks) {
        size_t j = ks_index(digest, ks->cap);
        for (; ks->slot[j]; j = (j + 1) & (ks->cap - 1)) {
            if (CRYPTO_memcmp(ks->slot[j]->hash, digest, 32) == 0) {
                found = ks->slot[j];
                lm_key_ref(found);
                break;
            }
        }
    }
    pthread_rwlock_unlock(&st->snap_lock);
    return found;
}

lm_key_t *lm_store_key_find(lm_store_t *st, const char *secret, size_t len)
{
    unsigned char digest[32];
    if (secret == NULL || len == 0 || len > 512)
        return NULL;
    SHA256((const unsigned char *)secret, len, digest);
    lm_key_t *k = lm_store_key_find_hash(st, digest);
    OPENSSL_cleanse(digest, sizeof(digest));
    return k;
}

/* ------------------------------------------------------------------------ */
/* accounts                                                                  */

static lm_acct_t *acct_find(lm_store_t *st, int64_t id)
{
    lm_acct_t *a = NULL;
    pthread_mutex_lock(&st->acct_mu);
    if (st->acct_cap) {
        size_t j = (size_t)((uint64_t)id * 0x9e3779b97f4a7c15ull) & (st->acct_cap - 1);
        for (; st->accts[j]; j = (j + 1) & (st->acct_cap - 1))
            if (st->accts[j]->id == id) {
                a = st->accts[j];
                break;
            }
    }
    pthread_mutex_unlock(&st->acct_mu);
    return a;
}

static void acct_put(lm_acct_t **tab, size_t cap, lm_acct_t *a)
{
    size_t j = (size_t)((uint64_t)a->id * 0x9e3779b97f4a7c15ull) & (cap - 1);
    while (tab[j])
        j = (j + 1) & (cap - 1);
    tab[j] = a;
}

/* The account of key k (created from k's quota and used if new). */
static lm_acct_t *acct_get(lm_store_t *st, const lm_key_t *k)
{
    lm_acct_t *a = acct_find(st, k->id);
    if (a)
        return a;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    lm_rl_init(&a->rl);
    a->id = k->id;
    a->unlimited = k->unlimited;
    a->quota = k->quota;
    a->used = k->used;
    pthread_mutex_lock(&st->acct_mu);
    if (2 * (st->acct_n + 1) > st->acct_cap) {
        size_t cap = st->acct_cap ? st->acct_cap * 2 : 64;
        lm_acct_t **tab = calloc(cap, sizeof(*tab));
        if (tab == NULL) {
            pthread_mutex_unlock(&st->acct_mu);
            lm_rl_destroy(&a->rl);
            pthread_mutex_destroy(&a->mu);
            free(a);
            return NULL;
        }
        for (size_t i = 0; i < st->acct_cap; i++)
            if (st->accts[i])
                acct_put(tab, cap, st->accts[i]);
        free(st->accts);
        st->accts = tab;
        st->acct_cap = cap;
    }
    acct_put(st->accts, st->acct_cap, a);
    st->acct_n++;
    pthread_mutex_unlock(&st->acct_mu);
    return a;
}

void lm_store_acct_foreach(lm_store_t *st, void (*fn)(lm_acct_t *a, void *arg), void *arg)
{
    pthread_mutex_lock(&st->acct_mu);
    for (size_t i = 0; i < st->acct_cap; i++)
        if (st->accts[i])
            fn(st->accts[i], arg);
    pthread_mutex_unlock(&st->acct_mu);
}

/* A snapshot record for the row just written/loaded: attach its account
 * and make the account's quota follow the DB. */
static lm_key_t *key_attach(lm_store_t *st, lm_key_t *k)
{
    lm_acct_t *a = acct_get(st, k);
    if (a == NULL) {
        lm_store_key_free(k);
        return NULL;
    }
    pthread_mutex_lock(&a->mu);
    a->unlimited = k->unlimited;
    a->quota = k->quota;
    pthread_mutex_unlock(&a->mu);
    k->acct = a;
    return k;
}

/* ------------------------------------------------------------------------ */
/* queue                                                                     */

static int enqueue(lm_store_t *st, op_t *op)
{
    pthread_mutex_lock(&st->q_mu);
    if (st->stopping) {
        pthread_mutex_unlock(&st->q_mu);
        return LM_STORE_ECLOSED;
    }
    if (st->q_len == st->q_cap) {
        pthread_mutex_unlock(&st->q_mu);
        return LM_STORE_EFULL;
    }
    st->q[(st->q_head + st->q_len) % st->q_cap] = op;
    st->q_len++;
    pthread_cond_signal(&st->q_cv);
    pthread_mutex_unlock(&st->q_mu);
    return LM_STORE_OK;
}

size_t lm_store_queue_depth(lm_store_t *st)
{
    pthread_mutex_lock(&st->q_mu);
    size_t n = st->q_len;
    pthread_mutex_unlock(&st->q_mu);
    return n;
}

/* Submit a stack op and wait for the writer to finish it. */
static int run_sync(lm_store_t *st, op_t *op)
{
    op->sync = 1;
    op->done = 0;
    int rc = enqueue(st, op);
    if (rc != LM_STORE_OK)
        return rc;
    pthread_mutex_lock(&st->sync_mu);
    while (!op->done)
        pthread_cond_wait(&st->sync_cv, &st->sync_mu);
    pthread_mutex_unlock(&st->sync_mu);
    return op->status;
}

int lm_store_flush(lm_store_t *st)
{
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_BARRIER;
    int rc;
    while ((rc = run_sync(st, &op)) == LM_STORE_EFULL)
        usleep(1000); /* the queue drains; a flush must not be lost */
    return rc;
}

/* ------------------------------------------------------------------------ */
/* writer: SQL side                                                          */

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

static int db_status(lm_store_t *st, const char *what)
{
    int ext = sqlite3_extended_errcode(st->w);
    st->last_ext = ext;
    slog(st, 0, "%s: %s (%d)", what, sqlite3_errmsg(st->w), ext);
    return (ext & 0xff) == SQLITE_CONSTRAINT ? LM_STORE_ECONFLICT : LM_STORE_EDB;
}

static int apply_usage(lm_store_t *st, op_t *op)
{
    sqlite3_stmt *s = st->ws[W_INS_USAGE];
    const lm_usage_row_t *r = &op->row;
    bind_text(s, 1, r->request_id);
    sqlite3_bind_int64(s, 2, r->attempt);
    if (r->key_id > 0)
        sqlite3_bind_int64(s, 3, r->key_id);
    else
        sqlite3_bind_null(s, 3);
    bind_text(s, 4, r->channel);
    bind_text(s, 5, r->model_asked);
    bind_text(s, 6, r->model_served);
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
        bind_text(s, 16, r->usage_json);
    else
        sqlite3_bind_null(s, 16);
    sqlite3_bind_int64(s, 17, r->created_ms);
    if (step_once(s) != SQLITE_DONE)
        return db_status(st, "usage insert");
    if (sqlite3_changes(st->w) == 0)
        return LM_STORE_DUP;
    op->id = sqlite3_last_insert_rowid(st->w);
    if (r->cost > 0 && r->key_id > 0) {
        s = st->ws[W_ADD_USED];
        sqlite3_bind_int64(s, 1, r->cost);
        sqlite3_bind_int64(s, 2, r->key_id);
        if (step_once(s) != SQLITE_DONE)
            return db_status(st, "usage: add to used");
        if (sqlite3_changes(st->w) != 1)
            return LM_STORE_ENOTFOUND;
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

static int apply_key_create(lm_store_t *st, op_t *op)
{
    const lm_key_spec_t *sp = op->spec;
    sqlite3_stmt *s = st->ws[W_INS_KEY];
    sqlite3_bind_blob(s, 1, op->hash, 32, SQLITE_TRANSIENT);
    bind_text(s, 2, op->prefix);
    bind_text(s, 3, sp->name);
    bind_text(s, 4, sp->owner);
    bind_text(s, 5, sp->group);
    bind_quota(s, 6, sp->unlimited, sp->quota);
    sqlite3_bind_int64(s, 7, sp->expires_at);
    bind_text(s, 8, op->models_json);
    bind_text(s, 9, op->cidrs_json);
    sqlite3_bind_int64(s, 10, sp->rpm);
    sqlite3_bind_int64(s, 11, sp->tpm);
    sqlite3_bind_int64(s, 12, sp->max_concurrent);
    sqlite3_bind_int(s, 13, sp->enabled ? 1 : 0);
    sqlite3_bind_int64(s, 14, now_s());
    if (step_once(s) != SQLITE_DONE) {
        int rc = db_status(st, "key insert");
        lm_store_seterr(op->err, op->errlen, "could not store the key");
        return rc;
    }
    op->id = sqlite3_last_insert_rowid(st->w);
    return LM_STORE_OK;
}

/* Read one live key on the writer connection. */
static lm_key_t *w_get_key(lm_store_t *st, int64_t id)
{
    sqlite3_stmt *s = st->ws[W_GET_KEY];
    lm_key_t *k = NULL;
    sqlite3_bind_int64(s, 1, id);
    if (sqlite3_step(s) == SQLITE_ROW)
        k = key_from_row(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return k;
}

static int apply_key_update(lm_store_t *st, op_t *op)
{
    const lm_key_spec_t *sp = op->spec;
    unsigned f = sp->set;
    lm_key_t *k = w_get_key(st, op->key_id);
    if (k == NULL) {
        lm_store_seterr(op->err, op->errlen, "no such key");
        return LM_STORE_ENOTFOUND;
    }
    int unlimited = (f & LM_KF_QUOTA) ? sp->unlimited : k->unlimited;
    int64_t quota = (f & LM_KF_QUOTA) ? (sp->unlimited ? 0 : sp->quota) : k->quota;
    char *models = (f & LM_KF_MODELS)
                       ? lm_store_list_encode(sp->models, sp->nmodels)
                       : lm_store_list_encode((const char *const *)k->models, k->nmodels);
    char *cidrs = (f & LM_KF_CIDRS)
                      ? lm_store_list_encode(sp->cidrs, sp->ncidrs)
                      : lm_store_list_encode((const char *const *)k->cidrs, k->ncidrs);
    int rc = LM_STORE_OK;
    if (models == NULL || cidrs == NULL) {
        rc = LM_STORE_ENOMEM;
        goto out;
    }

    /* Lowering a quota takes effect in memory before the write, so no settle
     * racing with it can bill past the new quota; raising takes effect after
     * the commit (post_commit reloads the record). */
    lm_acct_t *a = acct_find(st, op->key_id);
    if (a && !unlimited) {
        pthread_mutex_lock(&a->mu);
        if (a->unlimited || quota < a->quota) {
            int64_t spent;
            if (__builtin_add_overflow(a->used, a->pending, &spent))
                spent = INT64_MAX;
            if (quota < spent) {
                pthread_mutex_unlock(&a->mu);
                lm_store_seterr(op->err, op->errlen,
                                "quota is below what the key has already used");
                rc = LM_STORE_ECONFLICT;
                goto out;
            }
            op->quota_lowered = 1;
            op->old_unlimited = a->unlimited;
            op->old_quota = a->quota;
            a->unlimited = 0;
            a->quota = quota;
        }
        pthread_mutex_unlock(&a->mu);
    }

    sqlite3_stmt *s = st->ws[W_UPD_KEY];
    sqlite3_bind_int64(s, 1, op->key_id);
    bind_text(s, 2, (f & LM_KF_NAME) ? sp->name : k->name);
    bind_text(s, 3, (f & LM_KF_OWNER) ? sp->owner : k->owner);
    bind_text(s, 4, (f & LM_KF_GROUP) ? sp->group : k->group);
    bind_quota(s, 5, unlimited, quota);
    sqlite3_bind_int64(s, 6, (f & LM_KF_EXPIRES) ? sp->expires_at : k->expires_at);
    bind_text(s, 7, models);
    bind_text(s, 8, cidrs);
    sqlite3_bind_int64(s, 9, (f & LM_KF_LIMITS) ? sp->rpm : k->rpm);
    sqlite3_bind_int64(s, 10, (f & LM_KF_LIMITS) ? sp->tpm : k->tpm);
    sqlite3_bind_int64(s, 11, (f & LM_KF_LIMITS) ? sp->max_concurrent : k->max_concurrent);
    sqlite3_bind_int(s, 12, ((f & LM_KF_ENABLED) ? sp->enabled : k->enabled) ? 1 : 0);
    sqlite3_bind_int64(s, 13, now_s());
    if (step_once(s) != SQLITE_DONE) {
        rc = db_status(st, "key update");
        lm_store_seterr(op->err, op->errlen,
                        rc == LM_STORE_ECONFLICT ? "quota is below what the key has already used"
                                                 : "could not update the key");
    } else if (sqlite3_changes(st->w) != 1) {
        rc = LM_STORE_ENOTFOUND;
    }
out:
    free(models);
    free(cidrs);
    lm_store_key_free(k);
    op->id = op->key_id;
    return rc;
}

static int apply_key_delete(lm_store_t *st, op_t *op)
{
    sqlite3_stmt *s = st->ws[W_DEL_KEY];
    sqlite3_bind_int64(s, 1, op->key_id);
    sqlite3_bind_int64(s, 2, now_s());
    if (step_once(s) != SQLITE_DONE)
        return db_status(st, "key delete");
    op->id = op->key_id;
    return sqlite3_changes(st->w) == 1 ? LM_STORE_OK : LM_STORE_ENOTFOUND;
}

static const char *admin_role_name(int role)
{
    return role == LM_ADMIN_ROLE_READ ? "read" : "admin";
}

static int apply_admin_token(lm_store_t *st, op_t *op)
{
    sqlite3_stmt *s = st->ws[op->admin_clear ? W_DEL_ADMIN : W_SET_ADMIN];
    sqlite3_bind_text(s, 1, admin_role_name(op->admin_role), -1, SQLITE_STATIC);
    if (!op->admin_clear) {
        sqlite3_bind_blob(s, 2, op->hash, 32, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, now_s());
    }
    if (step_once(s) != SQLITE_DONE)
        return db_status(st, "admin token");
    return LM_STORE_OK;
}

static void bind_chan(sqlite3_stmt *s, const op_t *op)
{
    const lm_chan_rec_t *c = op->chan;
    bind_text(s, 1, c->name);
    bind_text(s, 2, c->plugin);
    bind_text(s, 3, op->chan_models);
    bind_text(s, 4, op->chan_settings);
    for (size_t i = 0; i < CHAN_NNUMS; i++)
        sqlite3_bind_int64(s, 5 + (int)i,
                           *(const int64_t *)(const void *)((const char *)c + chan_num_off[i]));
    sqlite3_bind_int(s, 16, c->enabled ? 1 : 0);
    sqlite3_bind_int64(s, 17, now_s());
}

/* One integer from a statement with at most one bound name; -1 if no row. */
static int64_t w_int(lm_store_t *st, int which, const char *name)
{
    sqlite3_stmt *s = st->ws[which];
    int64_t v = -1;
    if (name)
        bind_text(s, 1, name);
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return v;
}

static int apply_chan_create(lm_store_t *st, op_t *op)
{
    if (w_int(st, W_CHAN_ID, op->chan->name) >= 0) {
        lm_store_seterr(op->err, op->errlen, "a channel named %s already exists", op->chan->name);
        return LM_STORE_ECONFLICT;
    }
    if (w_int(st, W_CHAN_COUNT, NULL) >= LM_CHAN_MAX) {
        lm_store_seterr(op->err, op->errlen, "at most %d channels can be stored", LM_CHAN_MAX);
        return LM_STORE_ECONFLICT;
    }
    sqlite3_stmt *s = st->ws[W_INS_CHAN];
    bind_chan(s, op);
    if (step_once(s) != SQLITE_DONE) {
        int rc = db_status(st, "channel insert");
        lm_store_seterr(op->err, op->errlen, "could not store the channel");
        return rc;
    }
    op->id = sqlite3_last_insert_rowid(st->w);
    return LM_STORE_OK;
}

static int apply_chan_update(lm_store_t *st, op_t *op)
{
    sqlite3_stmt *s = st->ws[W_UPD_CHAN];
    bind_chan(s, op);
    if (step_once(s) != SQLITE_DONE) {
        int rc = db_status(st, "channel update");
        lm_store_seterr(op->err, op->errlen, "could not update the channel");
        return rc;
    }
    return sqlite3_changes(st->w) == 1 ? LM_STORE_OK : LM_STORE_ENOTFOUND;
}

static int apply_chan_delete(lm_store_t *st, op_t *op)
{
    sqlite3_stmt *s = st->ws[W_DEL_CHAN];
    bind_text(s, 1, op->chan_name);
    if (step_once(s) != SQLITE_DONE)
        return db_status(st, "channel delete");
    return sqlite3_changes(st->w) == 1 ? LM_STORE_OK : LM_STORE_ENOTFOUND;
}

static int apply(lm_store_t *st, op_t *op)
{
    switch (op->kind) {
    case OP_CHAN_CREATE: return apply_chan_create(st, op);
    case OP_CHAN_UPDATE: return apply_chan_update(st, op);
    case OP_CHAN_DELETE: return apply_chan_delete(st, op);
    case OP_USAGE: return apply_usage(st, op);
    case OP_KEY_CREATE: return apply_key_create(st, op);
    case OP_KEY_UPDATE: return apply_key_update(st, op);
    case OP_KEY_DELETE: return apply_key_delete(st, op);
    case OP_ADMIN_TOKEN: return apply_admin_token(st, op);
    default: return LM_STORE_OK;
    }
}

/* Undo in-memory changes made before the write when it did not commit. */
static void undo(lm_store_t *st, op_t *op)
{
    if (op->kind == OP_KEY_UPDATE && op->quota_lowered) {
        lm_acct_t *a = acct_find(st, op->key_id);
        if (a) {
            pthread_mutex_lock(&a->mu);
            a->unlimited = op->old_unlimited;
            a->quota = op->old_quota;
            pthread_mutex_unlock(&a->mu);
        }
        op->quota_lowered = 0;
    }
}

/* After the transaction: mirror the result in memory. */
static void post_commit(lm_store_t *st, op_t *op)
{
    switch (op->kind) {
    case OP_USAGE: {
        lm_acct_t *a = op->acct;
        if (a == NULL && op->row.key_id > 0 && op->status == LM_STORE_OK && op->row.cost > 0)
            a = acct_find(st, op->row.key_id);
        if (a) {
            pthread_mutex_lock(&a->mu);
            a->pending -= op->pending;
            if (op->status == LM_STORE_OK) {
                if (a->used > INT64_MAX - op->row.cost)
                    a->used = INT64_MAX;
                else
                    a->used += op->row.cost;
            }
            pthread_mutex_unlock(&a->mu);
        }
        if (op->status < 0)
            slog(st, 0, "usage row %s/%lld not recorded: %s", op->row.request_id,
                 (long long)op->row.attempt, lm_store_strerror(op->status));
        break;
    }
    case OP_KEY_CREATE:
    case OP_KEY_UPDATE:
        if (op->status == LM_STORE_OK) {
            lm_key_t *k = w_get_key(st, op->id);
            if (k)
                k = key_attach(st, k);
            if (k == NULL || ks_replace(st, 0, k) != 0)
                slog(st, 0, "key %lld: snapshot not updated", (long long)op->id);
            if (k)
                lm_key_release(k); /* the snapshot holds its own reference */
        }
        break;
    case OP_KEY_DELETE:
        if (op->status == LM_STORE_OK && ks_replace(st, op->key_id, NULL) != 0)
            slog(st, 0, "key %lld: snapshot not updated", (long long)op->key_id);
        break;
    default: break;
    }
}

static void complete(lm_store_t *st, op_t *op)
{
    if (op->sync) {
        pthread_mutex_lock(&st->sync_mu);
        op->done = 1;
        pthread_cond_broadcast(&st->sync_cv);
        pthread_mutex_unlock(&st->sync_mu);
        return; /* the waiter owns op */
    }
    if (op->cb.done) {
        if (op->cb.post)
            op->cb.post(op->cb.post_ctx, op->cb.done, op->cb.arg, op->status, op->id);
        else
            op->cb.done(op->cb.arg, op->status, op->id);
    }
    free(op);
}

/* Errors that concern the database as a whole (locked by another process,
 * disk full, I/O): the batch is rolled back and retried, never dropped. */
static int transient(int ext)
{
    switch (ext & 0xff) {
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

static void abort_batch(lm_store_t *st, op_t **ops, size_t n)
{
    if (!sqlite3_get_autocommit(st->w))
        step_once(st->ws[W_ROLLBACK]);
    for (size_t i = 0; i < n; i++)
        undo(st, ops[i]);
}

/* One transaction over the batch. 0: done (each op has its status);
 * 1: transient failure, everything rolled back and undone, try again. */
static int try_batch(lm_store_t *st, op_t **ops, size_t n)
{
    st->last_ext = 0;
    if (step_once(st->ws[W_BEGIN]) != SQLITE_DONE) {
        db_status(st, "BEGIN IMMEDIATE");
        if (transient(st->last_ext))
            return 1;
        for (size_t i = 0; i < n; i++)
            ops[i]->status = LM_STORE_EDB;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        op_t *op = ops[i];
        if (op->kind == OP_BARRIER) {
            op->status = LM_STORE_OK;
            continue;
        }
        st->last_ext = 0;
        if (step_once(st->ws[W_SAVE]) != SQLITE_DONE) {
            db_status(st, "SAVEPOINT");
            abort_batch(st, ops, n);
            return 1;
        }
        op->status = apply(st, op);
        if (op->status < 0) {
            if (transient(st->last_ext)) {
                abort_batch(st, ops, n);
                return 1;
            }
            if (step_once(st->ws[W_ROLLBACK_TO]) != SQLITE_DONE)
                db_status(st, "ROLLBACK TO");
            undo(st, op);
        }
        if (step_once(st->ws[W_RELEASE]) != SQLITE_DONE)
            db_status(st, "RELEASE");
    }
    st->last_ext = 0;
    if (step_once(st->ws[W_COMMIT]) != SQLITE_DONE) {
        db_status(st, "COMMIT");
        abort_batch(st, ops, n);
        if (transient(st->last_ext))
            return 1;
        for (size_t i = 0; i < n; i++)
            if (ops[i]->status >= 0 && ops[i]->kind != OP_BARRIER)
                ops[i]->status = LM_STORE_EDB;
    }
    return 0;
}

static int is_stopping(lm_store_t *st)
{
    pthread_mutex_lock(&st->q_mu);
    int s = st->stopping;
    pthread_mutex_unlock(&st->q_mu);
    return s;
}

static void run_batch(lm_store_t *st, op_t **ops, size_t n)
{
    unsigned delay_ms = 50;
    for (int attempt = 1; try_batch(st, ops, n) != 0; attempt++) {
        /* while we wait the queue fills and submitters get LM_STORE_EFULL */
        if (is_stopping(st) && attempt >= 10) {
            slog(st, 0, "giving up on %zu queued operations at shutdown", n);
            for (size_t i = 0; i < n; i++)
                ops[i]->status = ops[i]->kind == OP_BARRIER ? LM_STORE_OK : LM_STORE_EDB;
            break;
        }
        slog(st, 1, "database unavailable, retrying %zu operations in %u ms", n, delay_ms);
        usleep(delay_ms * 1000);
        if (delay_ms < 1000)
            delay_ms *= 2;
    }
    for (size_t i = 0; i < n; i++) {
        post_commit(st, ops[i]);
        complete(st, ops[i]);
    }
}

static void *writer_main(void *arg)
{
    lm_store_t *st = arg;
    op_t **batch = calloc(st->batch_max, sizeof(*batch));
    for (;;) {
        pthread_mutex_lock(&st->q_mu);
        while (st->q_len == 0 && !st->stopping)
            pthread_cond_wait(&st->q_cv, &st->q_mu);
        if (st->q_len == 0 && st->stopping) {
            pthread_mutex_unlock(&st->q_mu);
            break;
        }
        size_t max = batch ? st->batch_max : 1;
        op_t *one[1];
        op_t **b = batch ? batch : one;
        size_t n = 0;
        while (st->q_len && n < max) {
            b[n++] = st->q[st->q_head];
            st->q_head = (st->q_head + 1) % st->q_cap;
            st->q_len--;
        }
        pthread_mutex_unlock(&st->q_mu);
        run_batch(st, b, n);
    }
    free(batch);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* submit                                                                    */

static size_t slen(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static const char *scopy(char **p, const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*p, s, n);
    const char *r = *p;
    *p += n;
    return r;
}

static int64_t clamp0(int64_t v)
{
    return v < 0 ? 0 : v;
}

int lm_store_usage_submit_acct(lm_store_t *st, const lm_usage_row_t *row, lm_acct_t *acct,
                               int64_t pending, const lm_store_cb_t *cb)
{
    if (row == NULL || row->request_id == NULL || row->request_id[0] == '\0' ||
        strnlen(row->request_id, 257) > 256 || row->cost < 0 || row->attempt < 0)
        return LM_STORE_EINVAL;
    size_t extra = slen(row->request_id) + slen(row->channel) + slen(row->model_asked) +
                   slen(row->model_served) + slen(row->usage_json);
    op_t *op = calloc(1, sizeof(*op) + extra);
    if (op == NULL)
        return LM_STORE_ENOMEM;
    char *p = (char *)(op + 1);
    op->kind = OP_USAGE;
    op->row = *row;
    op->row.request_id = scopy(&p, row->request_id);
    op->row.channel = scopy(&p, row->channel);
    op->row.model_asked = scopy(&p, row->model_asked);
    op->row.model_served = scopy(&p, row->model_served);
    op->row.usage_json = scopy(&p, row->usage_json);
    op->row.prompt_tokens = clamp0(row->prompt_tokens);
    op->row.completion_tokens = clamp0(row->completion_tokens);
    op->row.cached_tokens = clamp0(row->cached_tokens);
    op->row.reasoning_tokens = clamp0(row->reasoning_tokens);
    op->row.latency_ms = clamp0(row->latency_ms);
    op->row.ttft_ms = clamp0(row->ttft_ms);
    if (op->row.created_ms <= 0)
        op->row.created_ms = lm_store_now_ms();
    op->acct = acct;
    op->pending = acct ? pending : 0;
    if (cb)
        op->cb = *cb;
    int rc = enqueue(st, op);
    if (rc != LM_STORE_OK)
        free(op);
    return rc;
}

int lm_store_usage_submit(lm_store_t *st, const lm_usage_row_t *row, const lm_store_cb_t *cb)
{
    return lm_store_usage_submit_acct(st, row, NULL, 0, cb);
}

/* ------------------------------------------------------------------------ */
/* admin writes                                                              */

int lm_store_key_create(lm_store_t *st, const lm_key_spec_t *spec, char *secret, int64_t *id,
                        char *err, size_t errlen)
{
    lm_key_spec_t sp = *spec;
    sp.set = LM_KF_ALL;
    int rc = lm_store_key_spec_check(&sp, err, errlen);
    if (rc != LM_STORE_OK)
        return rc;

    unsigned char rnd[24]; /* 192 bits */
    size_t got = 0;
    while (got < sizeof(rnd)) {
        ssize_t r = getrandom(rnd + got, sizeof(rnd) - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            lm_store_seterr(err, errlen, "getrandom failed");
            return LM_STORE_EDB;
        }
        got += (size_t)r;
    }
    char plain[LM_KEY_SECRET_SIZE];
    memcpy(plain, "sk-", 3);
    lm_b64_encode(rnd, sizeof(rnd), plain + 3, 1); /* 32 chars */
    OPENSSL_cleanse(rnd, sizeof(rnd));

    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_KEY_CREATE;
    op.spec = &sp;
    SHA256((const unsigned char *)plain, strlen(plain), op.hash);
    memcpy(op.prefix, plain, LM_KEY_PREFIX_LEN);
    op.prefix[LM_KEY_PREFIX_LEN] = '\0';
    op.models_json = lm_store_list_encode(sp.models, sp.nmodels);
    op.cidrs_json = lm_store_list_encode(sp.cidrs, sp.ncidrs);
    op.err = err;
    op.errlen = errlen;
    if (op.models_json == NULL || op.cidrs_json == NULL)
        rc = LM_STORE_ENOMEM;
    else
        rc = run_sync(st, &op);
    free(op.models_json);
    free(op.cidrs_json);
    if (rc == LM_STORE_OK) {
        memcpy(secret, plain, strlen(plain) + 1);
        if (id)
            *id = op.id;
    } else if (err && errlen && err[0] == '\0') {
        lm_store_seterr(err, errlen, "%s", lm_store_strerror(rc));
    }
    OPENSSL_cleanse(plain, sizeof(plain));
    return rc;
}

int lm_store_key_update(lm_store_t *st, int64_t id, const lm_key_spec_t *spec, char *err,
                        size_t errlen)
{
    int rc = lm_store_key_spec_check(spec, err, errlen);
    if (rc != LM_STORE_OK)
        return rc;
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_KEY_UPDATE;
    op.spec = spec;
    op.key_id = id;
    op.err = err;
    op.errlen = errlen;
    rc = run_sync(st, &op);
    if (rc != LM_STORE_OK && err && errlen && err[0] == '\0')
        lm_store_seterr(err, errlen, "%s", lm_store_strerror(rc));
    return rc;
}

int lm_store_key_delete(lm_store_t *st, int64_t id)
{
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_KEY_DELETE;
    op.key_id = id;
    return run_sync(st, &op);
}

int lm_store_admin_token_set(lm_store_t *st, int role, const unsigned char hash[32])
{
    if (role != LM_ADMIN_ROLE_FULL && role != LM_ADMIN_ROLE_READ)
        return LM_STORE_EINVAL;
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_ADMIN_TOKEN;
    op.admin_role = role;
    op.admin_clear = hash == NULL;
    if (hash)
        memcpy(op.hash, hash, 32);
    int rc = run_sync(st, &op);
    OPENSSL_cleanse(op.hash, sizeof(op.hash));
    return rc;
}

/* Create or update: check, encode the JSON columns, run on the writer. */
static int chan_write(lm_store_t *st, int kind, const lm_chan_rec_t *c, int64_t *id, char *err,
                      size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    int rc = lm_store_chan_check(c, NULL, err, errlen);
    if (rc != LM_STORE_OK)
        return rc;
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = kind;
    op.chan = c;
    op.chan_models = lm_store_list_encode((const char *const *)c->models, c->nmodels);
    op.chan_settings = lm_store_chan_settings_encode(c);
    op.err = err;
    op.errlen = errlen;
    if (op.chan_models == NULL || op.chan_settings == NULL)
        rc = LM_STORE_ENOMEM;
    else
        rc = run_sync(st, &op);
    free(op.chan_models);
    lm_store_wipe_free(op.chan_settings);
    if (rc == LM_STORE_OK && id)
        *id = op.id;
    if (rc != LM_STORE_OK && err && errlen && err[0] == '\0')
        lm_store_seterr(err, errlen, "%s", lm_store_strerror(rc));
    return rc;
}

int lm_store_chan_create(lm_store_t *st, const lm_chan_rec_t *c, int64_t *id, char *err,
                         size_t errlen)
{
    return chan_write(st, OP_CHAN_CREATE, c, id, err, errlen);
}

int lm_store_chan_update(lm_store_t *st, const lm_chan_rec_t *c, char *err, size_t errlen)
{
    return chan_write(st, OP_CHAN_UPDATE, c, NULL, err, errlen);
}

int lm_store_chan_delete(lm_store_t *st, const char *name)
{
    if (!lm_store_name_ok(name, 0))
        return LM_STORE_ENOTFOUND; /* no such name can be stored */
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_CHAN_DELETE;
    op.chan_name = name;
    return run_sync(st, &op);
}

/* ------------------------------------------------------------------------ */
/* admin reads (read connection)                                             */

int lm_store_admin_token_get(lm_store_t *st, int role, unsigned char hash[32])
{
    if (role != LM_ADMIN_ROLE_FULL && role != LM_ADMIN_ROLE_READ)
        return LM_STORE_EINVAL;
    pthread_mutex_lock(&st->rd_mu);
    sqlite3_stmt *s = st->rs[R_GET_ADMIN];
    sqlite3_bind_text(s, 1, admin_role_name(role), -1, SQLITE_STATIC);
    int rc = LM_STORE_ENOTFOUND;
    int sr = sqlite3_step(s);
    if (sr == SQLITE_ROW && sqlite3_column_bytes(s, 0) == 32) {
        memcpy(hash, sqlite3_column_blob(s, 0), 32);
        rc = LM_STORE_OK;
    } else if (sr != SQLITE_DONE) {
        rc = LM_STORE_EDB;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&st->rd_mu);
    return rc;
}

int lm_store_key_get(lm_store_t *st, int64_t id, lm_key_t **out)
{
    *out = NULL;
    pthread_mutex_lock(&st->rd_mu);
    sqlite3_stmt *s = st->rs[R_GET_KEY];
    int rc = LM_STORE_ENOTFOUND;
    sqlite3_bind_int64(s, 1, id);
    int sr = sqlite3_step(s);
    if (sr == SQLITE_ROW) {
        *out = key_from_row(s);
        rc = *out ? LM_STORE_OK : LM_STORE_ENOMEM;
    } else if (sr != SQLITE_DONE) {
        rc = LM_STORE_EDB;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&st->rd_mu);
    return rc;
}

void lm_store_key_list_free(lm_key_t **keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++)
        lm_key_release(keys[i]);
    free(keys);
}

int lm_store_key_list(lm_store_t *st, int64_t after_id, size_t limit, lm_key_t ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (limit == 0 || limit > 1000)
        limit = 1000;
    lm_key_t **v = calloc(limit, sizeof(*v));
    if (v == NULL)
        return LM_STORE_ENOMEM;
    size_t cnt = 0;
    int rc = LM_STORE_OK;
    pthread_mutex_lock(&st->rd_mu);
    sqlite3_stmt *s = st->rs[R_LIST_KEYS];
    sqlite3_bind_int64(s, 1, after_id);
    sqlite3_bind_int64(s, 2, (int64_t)limit);
    int sr;
    while ((sr = sqlite3_step(s)) == SQLITE_ROW && cnt < limit) {
        if ((v[cnt] = key_from_row(s)) == NULL) {
            rc = LM_STORE_ENOMEM;
            break;
        }
        cnt++;
    }
    if (rc == LM_STORE_OK && sr != SQLITE_DONE && sr != SQLITE_ROW)
        rc = LM_STORE_EDB;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&st->rd_mu);
    if (rc != LM_STORE_OK) {
        lm_store_key_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LM_STORE_OK;
}

int lm_store_chan_get(lm_store_t *st, const char *name, lm_chan_rec_t **out)
{
    *out = NULL;
    if (!lm_store_name_ok(name, 0))
        return LM_STORE_ENOTFOUND;
    pthread_mutex_lock(&st->rd_mu);
    sqlite3_stmt *s = st->rs[R_GET_CHAN];
    int rc = LM_STORE_ENOTFOUND;
    bind_text(s, 1, name);
    int sr = sqlite3_step(s);
    if (sr == SQLITE_ROW) {
        *out = chan_from_row(s);
        rc = *out ? LM_STORE_OK : LM_STORE_ENOMEM;
    } else if (sr != SQLITE_DONE) {
        rc = LM_STORE_EDB;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&st->rd_mu);
    return rc;
}

void lm_store_chan_list_free(lm_chan_rec_t **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        lm_chan_rec_free(v[i]);
    free(v);
}

int lm_store_chan_list(lm_store_t *st, lm_chan_rec_t ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    lm_chan_rec_t **v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = LM_STORE_OK, sr;
    pthread_mutex_lock(&st->rd_mu);
    sqlite3_stmt *s = st->rs[R_LIST_CHAN];
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
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&st->rd_mu);
    if (rc != LM_STORE_OK) {
        lm_store_chan_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LM_STORE_OK;
}

void lm_store_usage_totals_free(lm_usage_total_t *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++)
        free(t[i].group);
    free(t);
}

int lm_store_usage_totals(lm_store_t *st, int by, int64_t from_ms, int64_t to_ms, int64_t key_id,
                          lm_usage_total_t **out, size_t *n)
{
    static const int which[] = {R_TOT_KEY,     R_TOT_MODEL, R_TOT_SERVED,
                                R_TOT_CHANNEL, R_TOT_DAY,   R_TOT_NONE};
    *out = NULL;
    *n = 0;
    if (by < 0 || by > LM_USAGE_BY_NONE)
        return LM_STORE_EINVAL;
    lm_usage_total_t *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = LM_STORE_OK, sr;
    pthread_mutex_lock(&st->rd_mu);
    sqlite3_stmt *s = st->rs[which[by]];
    sqlite3_bind_int64(s, 1, from_ms);
    sqlite3_bind_int64(s, 2, to_ms > 0 ? to_ms : INT64_MAX);
    sqlite3_bind_int64(s, 3, key_id > 0 ? key_id : 0);
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
        lm_usage_total_t *t = &v[cnt];
        memset(t, 0, sizeof(*t));
        t->group = col_text(s, 0);
        if (t->group == NULL) {
            rc = LM_STORE_ENOMEM;
            break;
        }
        cnt++;
        t->key_id = sqlite3_column_int64(s, 1);
        t->requests = sqlite3_column_int64(s, 2);
        t->prompt_tokens = sqlite3_column_int64(s, 3);
        t->completion_tokens = sqlite3_column_int64(s, 4);
        t->cached_tokens = sqlite3_column_int64(s, 5);
        t->reasoning_tokens = sqlite3_column_int64(s, 6);
        t->cost = sqlite3_column_int64(s, 7);
        t->aborted = sqlite3_column_int64(s, 8);
    }
    if (rc == LM_STORE_OK && sr != SQLITE_DONE) {
        slog(st, 0, "usage totals: %s", sqlite3_errmsg(st->r));
        rc = LM_STORE_EDB;
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&st->rd_mu);
    if (rc != LM_STORE_OK) {
        lm_store_usage_totals_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LM_STORE_OK;
}

static void rec_free(lm_usage_rec_t *r)
{
    free((char *)r->row.request_id);
    free((char *)r->row.channel);
    free((char *)r->row.model_asked);
    free((char *)r->row.model_served);
    free((char *)r->row.usage_json);
}

void lm_store_usage_list_free(lm_usage_rec_t *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        rec_free(&r[i]);
    free(r);
}

int lm_store_usage_list(lm_store_t *st, int64_t key_id, int64_t before_id, size_t limit,
                        lm_usage_rec_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (limit == 0 || limit > 1000)
        limit = 1000;
    lm_usage_rec_t *v = calloc(limit, sizeof(*v));
    if (v == NULL)
        return LM_STORE_ENOMEM;
    size_t cnt = 0;
    int rc = LM_STORE_OK, sr;
    pthread_mutex_lock(&st->rd_mu);
    sqlite3_stmt *s = st->rs[R_USAGE_LIST];
    sqlite3_bind_int64(s, 1, key_id > 0 ? key_id : 0);
    sqlite3_bind_int64(s, 2, before_id > 0 ? before_id : INT64_MAX);
    sqlite3_bind_int64(s, 3, (int64_t)limit);
    while ((sr = sqlite3_step(s)) == SQLITE_ROW && cnt < limit) {
        lm_usage_rec_t *r = &v[cnt++];
        lm_usage_row_t *u = &r->row;
        r->id = sqlite3_column_int64(s, 0);
        u->request_id = col_text(s, 1);
        u->attempt = sqlite3_column_int64(s, 2);
        u->key_id = sqlite3_column_int64(s, 3);
        u->channel = col_text(s, 4);
        u->model_asked = col_text(s, 5);
        u->model_served = col_text(s, 6);
        u->prompt_tokens = sqlite3_column_int64(s, 7);
        u->completion_tokens = sqlite3_column_int64(s, 8);
        u->cached_tokens = sqlite3_column_int64(s, 9);
        u->reasoning_tokens = sqlite3_column_int64(s, 10);
        u->cost = sqlite3_column_int64(s, 11);
        u->latency_ms = sqlite3_column_int64(s, 12);
        u->ttft_ms = sqlite3_column_int64(s, 13);
        u->status = sqlite3_column_int64(s, 14);
        u->client_aborted = sqlite3_column_int(s, 15);
        u->usage_json = sqlite3_column_type(s, 16) == SQLITE_NULL ? NULL : col_text(s, 16);
        u->created_ms = sqlite3_column_int64(s, 17);
        if (!u->request_id || !u->channel || !u->model_asked || !u->model_served ||
            (sqlite3_column_type(s, 16) != SQLITE_NULL && !u->usage_json)) {
            rc = LM_STORE_ENOMEM;
            break;
        }
    }
    if (rc == LM_STORE_OK && sr != SQLITE_DONE && sr != SQLITE_ROW)
        rc = LM_STORE_EDB;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    pthread_mutex_unlock(&st->rd_mu);
    if (rc != LM_STORE_OK) {
        lm_store_usage_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LM_STORE_OK;
}

/* ------------------------------------------------------------------------ */
/* open / close                                                              */

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        return -1;
    int rc = -1;
    if (sqlite3_step(s) == SQLITE_ROW) {
        *out = sqlite3_column_int(s, 0);
        rc = 0;
    }
    sqlite3_finalize(s);
    return rc;
}

static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t len)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
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

static int read_settings(sqlite3 *db, lm_store_settings_t *o)
{
    memset(o, 0, sizeof(*o));
    if (pragma_text(db, "PRAGMA journal_mode", o->journal_mode, sizeof(o->journal_mode)) ||
        pragma_int(db, "PRAGMA busy_timeout", &o->busy_timeout_ms) ||
        pragma_int(db, "PRAGMA foreign_keys", &o->foreign_keys) ||
        pragma_int(db, "PRAGMA synchronous", &o->synchronous) ||
        pragma_int(db, "PRAGMA user_version", &o->schema_version))
        return -1;
    return 0;
}

/* DB-2: apply and verify on one connection. */
static int configure(lm_store_t *st, sqlite3 *db, const char *which, char *err, size_t errlen,
                     lm_store_settings_t *out)
{
    char jm[16];
    lm_store_settings_t s;
    sqlite3_busy_timeout(db, st->busy_ms);
    sqlite3_extended_result_codes(db, 1);
    /* secure_delete: a deleted channel's literal provider key or a key
     * record is overwritten, not left in free pages. */
    if (sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA secure_delete = ON", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db,
                     st->sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
                     NULL, NULL, NULL) != SQLITE_OK ||
        pragma_text(db, "PRAGMA journal_mode = WAL", jm, sizeof(jm)) != 0) {
        lm_store_seterr(err, errlen, "store: %s connection: cannot apply settings: %s", which,
                        sqlite3_errmsg(db));
        return -1;
    }
    if (read_settings(db, &s) != 0) {
        lm_store_seterr(err, errlen, "store: %s connection: cannot read settings back: %s", which,
                        sqlite3_errmsg(db));
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

static int migrate(lm_store_t *st, char *err, size_t errlen)
{
    int v = 0;
    if (sqlite3_exec(st->w, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot start the migration: %s",
                        sqlite3_errmsg(st->w));
        return -1;
    }
    if (pragma_int(st->w, "PRAGMA user_version", &v) != 0) {
        lm_store_seterr(err, errlen, "store: cannot read the schema version: %s",
                        sqlite3_errmsg(st->w));
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
        if (sqlite3_exec(st->w, migrations[i], NULL, NULL, &msg) != SQLITE_OK) {
            lm_store_seterr(err, errlen, "store: migration %d failed: %s", i + 1, msg ? msg : "?");
            sqlite3_free(msg);
            goto fail;
        }
    }
    if (sqlite3_exec(st->w, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot commit the migration: %s",
                        sqlite3_errmsg(st->w));
        goto fail;
    }
    if (v < NMIGRATIONS)
        slog(st, 2, "schema migrated from version %d to %d", v, NMIGRATIONS);
    return 0;
fail:
    sqlite3_exec(st->w, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static int load_keys(lm_store_t *st, char *err, size_t errlen)
{
    size_t cap = 64, n = 0;
    lm_key_t **v = calloc(cap, sizeof(*v));
    int rc = -1, sr;
    if (v == NULL)
        goto out;
    sqlite3_stmt *s = st->ws[W_LOAD_KEYS];
    while ((sr = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            lm_key_t **nv = realloc(v, cap * 2 * sizeof(*nv));
            if (nv == NULL)
                goto out;
            v = nv;
            cap *= 2;
        }
        lm_key_t *k = key_from_row(s);
        if (k == NULL || (k = key_attach(st, k)) == NULL) {
            lm_store_seterr(err, errlen, "store: cannot load key %lld",
                            (long long)sqlite3_column_int64(s, 0));
            goto out;
        }
        v[n++] = k;
    }
    if (sr != SQLITE_DONE) {
        lm_store_seterr(err, errlen, "store: cannot load keys: %s", sqlite3_errmsg(st->w));
        goto out;
    }
    st->keys = ks_build(v, n);
    rc = st->keys ? 0 : -1;
out:
    if (st->ws[W_LOAD_KEYS])
        sqlite3_reset(st->ws[W_LOAD_KEYS]);
    for (size_t i = 0; v && i < n; i++)
        lm_key_release(v[i]);
    free(v);
    if (rc != 0 && err && errlen && err[0] == '\0')
        lm_store_seterr(err, errlen, "store: out of memory loading keys");
    return rc;
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
static void tighten_perms(lm_store_t *st, const char *dir, const char *db)
{
    struct stat sb;
    if (stat(dir, &sb) == 0 && (sb.st_mode & 077)) {
        if (sb.st_uid == geteuid() && !(sb.st_mode & S_ISVTX) && chmod(dir, 0700) == 0)
            slog(st, 1, "data directory %s was accessible to other users (mode %03o); now 0700",
                 dir, (unsigned)(sb.st_mode & 0777));
        else
            slog(st, 1,
                 "data directory %s is accessible to other users (mode %03o); it holds "
                 "secrets: make it 0700",
                 dir, (unsigned)(sb.st_mode & 0777));
    }
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        char p[4224];
        snprintf(p, sizeof(p), "%s%s", db, sfx[i]);
        if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 077)) {
            if (chmod(p, 0600) == 0)
                slog(st, 1, "%s was accessible to other users (mode %03o); now 0600", p,
                     (unsigned)(sb.st_mode & 0777));
            else
                slog(st, 0, "cannot make %s 0600: %s", p, strerror(errno));
        }
    }
}

void lm_store_close(lm_store_t *st)
{
    if (st == NULL)
        return;
    if (st->writer_started) {
        pthread_mutex_lock(&st->q_mu);
        st->stopping = 1;
        pthread_cond_broadcast(&st->q_cv);
        pthread_mutex_unlock(&st->q_mu);
        pthread_join(st->writer, NULL);
    }
    for (int i = 0; i < W_COUNT; i++)
        sqlite3_finalize(st->ws[i]);
    for (int i = 0; i < R_COUNT; i++)
        sqlite3_finalize(st->rs[i]);
    if (st->r)
        sqlite3_close(st->r);
    if (st->w)
        sqlite3_close(st->w); /* the last connection checkpoints and removes -wal/-shm */
    ks_free(st->keys);
    for (size_t i = 0; i < st->acct_cap; i++) {
        lm_acct_t *a = st->accts[i];
        if (a == NULL)
            continue;
        lm_rl_destroy(&a->rl);
        pthread_mutex_destroy(&a->mu);
        free(a);
    }
    free(st->accts);
    free(st->q);
    pthread_mutex_destroy(&st->q_mu);
    pthread_cond_destroy(&st->q_cv);
    pthread_mutex_destroy(&st->sync_mu);
    pthread_cond_destroy(&st->sync_cv);
    pthread_mutex_destroy(&st->rd_mu);
    pthread_mutex_destroy(&st->acct_mu);
    pthread_rwlock_destroy(&st->snap_lock);
    free(st);
}

lm_store_t *lm_store_open(const lm_store_opts_t *o, char *err, size_t errlen)
{
    char path[4200];
    if (err && errlen)
        err[0] = '\0';
    if (o == NULL || o->dir == NULL || o->dir[0] == '\0') {
        lm_store_seterr(err, errlen, "store: no data directory");
        return NULL;
    }
    if (!sqlite3_threadsafe()) {
        lm_store_seterr(err, errlen, "store: SQLite was built without thread support");
        return NULL;
    }
    if (mkdirs(o->dir) != 0) {
        lm_store_seterr(err, errlen, "store: cannot create data directory %s: %s", o->dir,
                        strerror(errno));
        return NULL;
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/longmen.db", o->dir) >= sizeof(path)) {
        lm_store_seterr(err, errlen, "store: data directory path too long");
        return NULL;
    }
    /* create the file 0600 first: SQLite gives -wal and -shm the same mode */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        lm_store_seterr(err, errlen, "store: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    close(fd);

    lm_store_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        lm_store_seterr(err, errlen, "store: out of memory");
        return NULL;
    }
    st->log = o->log;
    tighten_perms(st, o->dir, path);
    st->sync_full = o->sync_full;
    st->busy_ms = o->busy_timeout_ms ? o->busy_timeout_ms : 5000;
    st->q_cap = o->queue_max ? o->queue_max : 100000;
    st->batch_max = o->batch_max ? o->batch_max : 512;
    pthread_mutex_init(&st->q_mu, NULL);
    pthread_cond_init(&st->q_cv, NULL);
    pthread_mutex_init(&st->sync_mu, NULL);
    pthread_cond_init(&st->sync_cv, NULL);
    pthread_mutex_init(&st->rd_mu, NULL);
    pthread_mutex_init(&st->acct_mu, NULL);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&st->snap_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    st->q = calloc(st->q_cap, sizeof(*st->q));
    if (st->q == NULL) {
        lm_store_seterr(err, errlen, "store: out of memory");
        goto fail;
    }

    int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE;
    if (sqlite3_open_v2(path, &st->w, flags, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot open %s: %s", path,
                        st->w ? sqlite3_errmsg(st->w) : "out of memory");
        goto fail;
    }
    if (configure(st, st->w, "write", err, errlen, &st->wset) != 0)
        goto fail;
    if (migrate(st, err, errlen) != 0)
        goto fail;
    st->wset.schema_version = NMIGRATIONS;
    if (sqlite3_open_v2(path, &st->r,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE,
                        NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: cannot open %s for reading: %s", path,
                        st->r ? sqlite3_errmsg(st->r) : "out of memory");
        goto fail;
    }
    if (configure(st, st->r, "read", err, errlen, NULL) != 0)
        goto fail;
    if (sqlite3_exec(st->r, "PRAGMA query_only = ON", NULL, NULL, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: %s", sqlite3_errmsg(st->r));
        goto fail;
    }
    for (int i = 0; i < W_COUNT; i++)
        if (sqlite3_prepare_v3(st->w, w_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->ws[i], NULL) !=
            SQLITE_OK) {
            lm_store_seterr(err, errlen, "store: prepare: %s", sqlite3_errmsg(st->w));
            goto fail;
        }
    for (int i = 0; i < R_COUNT; i++)
        if (sqlite3_prepare_v3(st->r, r_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->rs[i], NULL) !=
            SQLITE_OK) {
            lm_store_seterr(err, errlen, "store: prepare: %s", sqlite3_errmsg(st->r));
            goto fail;
        }
    if (load_keys(st, err, errlen) != 0)
        goto fail;
    if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
        lm_store_seterr(err, errlen, "store: cannot start the writer thread");
        goto fail;
    }
    st->writer_started = 1;
    pthread_setname_np(st->writer, "lm-store");
    return st;
fail:
    lm_store_close(st);
    return NULL;
}

int lm_store_settings(lm_store_t *st, lm_store_settings_t *out)
{
    pthread_mutex_lock(&st->rd_mu);
    int rc = read_settings(st->r, out);
    pthread_mutex_unlock(&st->rd_mu);
    if (rc != 0)
        return LM_STORE_EDB;
    /* the write connection must agree (checked at open, owned by the writer now)
     */
    if (strcmp(st->wset.journal_mode, out->journal_mode) != 0 || st->wset.busy_timeout_ms < 5000 ||
        st->wset.foreign_keys != 1 || st->wset.synchronous < 1)
        return LM_STORE_EDB;
    return LM_STORE_OK;
}
