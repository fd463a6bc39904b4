/*
 * store.h - the one store interface: virtual keys, the usage ledger, the
 * channels managed through the admin API and the admin queries.
 * The store core (store.c, writer.c, submit.c, snapshot.c, keys.c,
 * chans.c) implements it over a backend (store/backend.h); the backend is
 * SQLite (WAL) in a data directory (store_sqlite.c, store_sqlite_read.c).
 * See "Backends" at the end.
 *
 * Threads
 *   - One writer thread, owned by the store, performs every write. Callers
 *     submit operations through a bounded queue; the writer groups them
 *     (whatever is queued, up to batch_max, per BEGIN IMMEDIATE ... COMMIT;
 *     an empty queue means a lone row commits at once) and reports each
 *     one after the COMMIT returned, i.e. once it is durable (DB-1). One
 *     bad row never fails its neighbours: a batch runs without savepoints
 *     and, if an operation fails, is rolled back and run again with one
 *     SAVEPOINT per operation (writer.c).
 *   - Data-plane workers never block on the database: key lookups read an
 *     in-memory snapshot (copy-on-write hash table swapped under a
 *     writer-preferring rwlock held only for a probe), and usage rows are
 *     submitted without waiting (lm_store_usage_submit returns at once;
 *     the completion is posted back to the caller's thread).
 *   - Admin functions (key CRUD, lists, totals) block the calling thread
 *     for one database round trip; call them from the admin listener or a
 *     CLI, never from a data-plane worker.
 *
 * Money is int64 micro-units everywhere (1 unit of currency = 1,000,000).
 * Every SQL statement is prepared; formatted SQL exists only in the
 * versioned migrations, which run inside lm_store_open().
 */
#ifndef LM_STORE_H
#define LM_STORE_H
#include "core/ratelimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/* Status codes. Negative = failure. */
enum {
    LM_STORE_OK = 0,
    LM_STORE_DUP = 1,        /* usage row (request_id, attempt) already recorded: no change */
    LM_STORE_SPOOLED = 2,    /* usage row not committed: the database is stalled, so it was
                                written to the spool (fsync'd) and is replayed later (DB-4) */
    LM_STORE_EINVAL = -1,    /* invalid argument (text, negative amount, bad CIDR, ...) */
    LM_STORE_ENOTFOUND = -2, /* no such (live) key */
    LM_STORE_ECONFLICT = -3, /* would break an invariant (quota below what is used) */
    LM_STORE_EFULL = -4,     /* write queue full (queue_max operations waiting) */
    LM_STORE_ECLOSED = -5,   /* store is closing */
    LM_STORE_EDB = -6,       /* database error (logged with the SQLite message) */
    LM_STORE_ENOMEM = -7,
};
const char *lm_store_strerror(int status);

#define LM_STORE_TEXT_MAX  16384 /* bytes of a name, owner or group */
#define LM_STORE_LIST_MAX  1024  /* entries in models or cidrs */
#define LM_STORE_ITEM_MAX  256   /* bytes of one model name or CIDR */
#define LM_KEY_SECRET_SIZE 64    /* buffer for a new secret ("sk-" + 32 base64url chars) */
#define LM_KEY_PREFIX_LEN  7     /* stored display prefix: "sk-" + 4 chars */

/* ---------------------------------------------------------------------------
 * Completions: the writer calls post(post_ctx, done, arg, status, id) on the
 * writer thread after the operation's transaction committed (or failed).
 * post must hand the call to the submitting thread and return quickly (wire
 * it to event_active() on a per-worker event or evthr_defer()); it must not
 * call back into the store. If post is NULL, done runs on the writer thread
 * itself (then it must be quick and must not call back into the store).
 * status is an LM_STORE_* code; id is the new row id (usage row or key).
 */
typedef void (*lm_store_done_fn)(void *arg, int status, int64_t id);
typedef void (*lm_store_post_fn)(void *post_ctx, lm_store_done_fn done, void *arg, int status,
                                 int64_t id);
typedef struct lm_store_cb_s {
    lm_store_done_fn done; /* may be NULL: fire and forget */
    void *arg;
    lm_store_post_fn post; /* may be NULL: run done on the writer thread */
    void *post_ctx;
} lm_store_cb_t;

/* ---------------------------------------------------------------------------
 * Accounts: the live, in-memory balance and rate state of one key, shared by
 * every snapshot version of that key and kept until lm_store_close().
 * Fields are read and written under mu only (billing.c, ratelimit.c and the
 * writer). Balance = quota - used - reserved - pending must stay >= 0 for
 * limited keys; the DB holds used (committed) and CHECKs used <= quota.
 */
struct lm_reservation_s;
typedef struct lm_acct_s {
    pthread_mutex_t mu;
    int64_t id;
    int unlimited;
    int64_t quota;                 /* mirrors keys.quota */
    int64_t used;                  /* mirrors keys.used: committed spend */
    int64_t reserved;              /* held by open reservations */
    int64_t pending;               /* settled, queued, not yet committed */
    int64_t nopen;                 /* open reservations */
    struct lm_reservation_s *open; /* list of open reservations (billing.c) */
    lm_rl_t rl;                    /* rpm/tpm/concurrency state */
} lm_acct_t;

/* ---------------------------------------------------------------------------
 * Virtual keys. A record is immutable and reference counted; an update
 * publishes a new record (same acct). The hash is never returned by list/get
 * (zeroed there); it is only used by the hot-path lookup.
 */
typedef struct lm_cidr_s {
    unsigned char family; /* 4 or 6 */
    unsigned char bits;
    unsigned char addr[16];
} lm_cidr_t;

typedef struct lm_key_s {
    int64_t id;
    unsigned char hash[32];             /* SHA-256 of the secret (snapshot only) */
    char prefix[LM_KEY_PREFIX_LEN + 1]; /* display prefix, e.g. "sk-Ab3x" */
    char *name, *owner, *group;
    int unlimited;
    int64_t quota;      /* micro-units (meaningless when unlimited) */
    int64_t used;       /* as read from the DB (list/get); live value: acct */
    int64_t expires_at; /* unix seconds, 0 = never */
    char **models;      /* allowed models; none = all; "prefix*" matches a prefix */
    size_t nmodels;
    char **cidrs;    /* allowed source ranges as given; none = any */
    lm_cidr_t *nets; /* the same, parsed */
    size_t ncidrs;
    int64_t rpm, tpm, max_concurrent; /* 0 = no limit */
    int enabled;
    int64_t created_at, updated_at; /* unix seconds */
    lm_acct_t *acct;                /* snapshot records only; NULL from list/get */
    atomic_int refs;
} lm_key_t;

/* Fields for create (all used) and update (only those in `set`). */
enum {
    LM_KF_NAME = 1 << 0,
    LM_KF_OWNER = 1 << 1,
    LM_KF_GROUP = 1 << 2,
    LM_KF_QUOTA = 1 << 3, /* quota and unlimited */
    LM_KF_EXPIRES = 1 << 4,
    LM_KF_MODELS = 1 << 5,
    LM_KF_CIDRS = 1 << 6,
    LM_KF_LIMITS = 1 << 7, /* rpm, tpm, max_concurrent */
    LM_KF_ENABLED = 1 << 8,
    LM_KF_ALL = (1 << 9) - 1,
};
typedef struct lm_key_spec_s {
    unsigned set;
    const char *name, *owner, *group; /* NULL = "" */
    int unlimited;
    int64_t quota;
    int64_t expires_at;
    const char *const *models;
    size_t nmodels;
    const char *const *cidrs;
    size_t ncidrs;
    int64_t rpm, tpm, max_concurrent;
    int enabled;
} lm_key_spec_t;

/* ---------------------------------------------------------------------------
 * Usage ledger: one row per upstream attempt. Strings are borrowed for the
 * call (copied on submit). (request_id, attempt) is unique: a replay is
 * acknowledged with LM_STORE_DUP and changes nothing.
 */
typedef struct lm_usage_row_s {
    const char *request_id; /* required, <= 256 bytes */
    int64_t attempt;        /* 0, 1, ... per upstream attempt */
    int64_t key_id;         /* 0 = no store key (config bootstrap key) */
    const char *channel, *model_asked, *model_served;
    int64_t prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens;
    int64_t cost; /* micro-units, >= 0; set by lm_billing_settle */
    int64_t latency_ms, ttft_ms;
    int64_t status; /* HTTP status sent or received for this attempt */
    int client_aborted;
    const char *usage_json; /* the provider's raw usage object, or NULL */
    int64_t created_ms;     /* unix ms; 0 = now */
    const char *api;        /* the client's inbound API ("chat", "messages"); NULL: "chat" */
    int cached;             /* answered from the response cache (docs/cache.md) */
} lm_usage_row_t;

typedef struct lm_store_opts_s {
    const char *dir;     /* data directory (created 0700); file longmen.db */
    size_t queue_max;    /* 0 = 100000 operations */
    size_t batch_max;    /* 0 = 512 operations per transaction */
    int busy_timeout_ms; /* 0 = 5000; open fails below 5000 (DB-2) */
    int sync_full;       /* synchronous=FULL (power-loss durable); default
                            NORMAL, which in WAL survives kill -9 */
    /* DB-4. A batch the database has refused for stall_ms (0 = 2000) stalls
     * the store: its usage rows, and those queued after it, are appended to
     * the spool (fsync'd) and reported LM_STORE_SPOOLED instead of waiting;
     * other writes keep waiting. The spool is replayed once a commit
     * succeeds again, and at open. spool = its path; NULL = DIR/usage.spool. */
    int stall_ms;
    const char *spool;
    /* The spool's bound in bytes (0 = 256 MiB): a batch that would grow it
     * past this is not spooled (its rows wait in memory, logged) and
     * lm_store_spool_full() says so until a replay empties the file. */
    int64_t spool_max;
    /* Log sink for errors met on the writer thread (level = the SDK's
     * LM_LOG_*: 0 error, 1 warn, 2 info); NULL = one line on stderr. Messages
     * never contain secrets. Wire it to lm_log(level, "%s", msg). */
    void (*log)(int level, const char *msg);
    /* Shared store (docs/scale-out.md). pg, a PostgreSQL conninfo
     * ("host=... dbname=... user=... password=env:VAR"; a literal password
     * is refused), selects that backend instead of SQLite; dir (or spool)
     * then only places the spool, and NULL for both leaves rows waiting in
     * memory. A watcher thread polls the database's change counters every
     * 500 ms: another instance's admin write reloads the key snapshot here,
     * and a channel write then calls changed(changed_arg) on the watcher
     * thread (wire it to a reload of the stored channels). An unreachable
     * database counts as a stall (lm_store_stall_ms) from the first failed
     * poll. */
    const char *pg;
    void (*changed)(void *arg);
    void *changed_arg;
} lm_store_opts_t;

typedef struct lm_store_settings_s {
    char journal_mode[16];
    int busy_timeout_ms, foreign_keys, synchronous; /* synchronous: 1 NORMAL, 2 FULL */
    int schema_version;
    /* SQLite: WAL checkpoints by the checkpointer thread, and by the writer
     * itself when the checkpointer fell behind (sqlite_ckpt.h); 0 on PG */
    int64_t checkpoints_background, checkpoints_inline;
} lm_store_settings_t;

typedef struct lm_store_s lm_store_t;

/* Open (creating the directory and file if needed), apply and read back the
 * settings on every connection (fails if journal_mode != wal, busy_timeout <
 * 5000, foreign_keys != 1 or synchronous < NORMAL), run migrations, load the
 * key snapshot, start the writer. Call before any listener opens (DB-6).
 * NULL on failure with a message in err. Control thread. */
lm_store_t *lm_store_open(const lm_store_opts_t *opts, char *err, size_t errlen);
/* Commit everything queued (completions are posted as usual), stop the
 * writer, free everything. Call after the workers stopped submitting. */
void lm_store_close(lm_store_t *st);
/* Settings read back now from the read connection (and as verified at open
 * on the write connection). Any thread. */
int lm_store_settings(lm_store_t *st, lm_store_settings_t *out);
/* Block until every operation queued before this call is committed.
 * Admin/control threads and tests only. */
int lm_store_flush(lm_store_t *st);
size_t lm_store_queue_depth(lm_store_t *st);
/* How long the store has been unable to commit (ms): the age of the batch
 * the writer is running, or of the stall while rows go to the spool; 0
 * when writes go through. Admission compares it with store_wait (DB-4).
 * Any thread, non-blocking. */
int64_t lm_store_stall_ms(lm_store_t *st);
/* 1 while the spool is at its bound (opts.spool_max): on_store_failure
 * open then refuses billed requests like closed. Any thread. */
int lm_store_spool_full(lm_store_t *st);

/* --- hot path (any thread, non-blocking) --------------------------------- */
/* The live key whose secret is `secret` (len bytes, 1..512): SHA-256,
 * table probe, CRYPTO_memcmp. Returns a reference (release it) or NULL.
 * Deleted keys are absent; disabled and expired keys are returned (check
 * lm_key_usable). */
lm_key_t *lm_store_key_find(lm_store_t *st, const char *secret, size_t len);
lm_key_t *lm_store_key_find_hash(lm_store_t *st, const unsigned char digest[32]);
void lm_key_ref(lm_key_t *k);
void lm_key_release(lm_key_t *k);
enum { LM_KEY_OK = 0, LM_KEY_DISABLED = 1, LM_KEY_EXPIRED = 2 };
int lm_key_usable(const lm_key_t *k, int64_t now_s);
int lm_key_model_allowed(const lm_key_t *k, const char *model);
int lm_key_addr_allowed(const lm_key_t *k, const struct sockaddr *sa);

/* Queue one ledger row (copied). Non-blocking: LM_STORE_OK means queued and
 * cb will be called exactly once; any other return means it was not queued
 * and cb will not be called. A row with cost > 0 also adds cost to the key's
 * used in the same transaction; use lm_billing_settle for billed rows (it
 * keeps the in-memory balance exact) and this directly only for cost-0 rows
 * or key_id 0. */
int lm_store_usage_submit(lm_store_t *st, const lm_usage_row_t *row, const lm_store_cb_t *cb);
/* For billing.c: as above, and when the row is done, acct->pending -=
 * pending (acct->used += cost if it was inserted). */
int lm_store_usage_submit_acct(lm_store_t *st, const lm_usage_row_t *row, lm_acct_t *acct,
                               int64_t pending, const lm_store_cb_t *cb);
/* Call fn on every account (billing reclaim). fn runs without acct->mu. */
void lm_store_acct_foreach(lm_store_t *st, void (*fn)(lm_acct_t *a, void *arg), void *arg);

/* --- admin (blocking; admin/control threads only) ------------------------ */
/* Text validation for every admin string: <= max bytes, valid UTF-8, no NUL
 * (pass json_string_length() as len so an embedded NUL is caught). */
int lm_store_text_ok(const char *s, size_t len, size_t max);
/* Check a spec before create/update; 0 or LM_STORE_EINVAL with a message. */
int lm_store_key_spec_check(const lm_key_spec_t *spec, char *err, size_t errlen);
/* Create: secret (LM_KEY_SECRET_SIZE bytes) receives the new plaintext
 * secret, the only time it exists; *id the new id. spec->set is ignored. */
int lm_store_key_create(lm_store_t *st, const lm_key_spec_t *spec, char *secret, int64_t *id,
                        char *err, size_t errlen);
/* Update the fields in spec->set. Lowering the quota below what is already
 * used (or being settled) fails with LM_STORE_ECONFLICT. */
int lm_store_key_update(lm_store_t *st, int64_t id, const lm_key_spec_t *spec, char *err,
                        size_t errlen);
/* Soft delete: disabled, hidden from lookups and lists; its ledger stays. */
int lm_store_key_delete(lm_store_t *st, int64_t id);
/* One live key from the DB (hash zeroed, used = committed). Release it. */
int lm_store_key_get(lm_store_t *st, int64_t id, lm_key_t **out);
/* Live keys with id > after_id, ascending, at most limit (<= 1000).
 * Free with lm_store_key_list_free. */
int lm_store_key_list(lm_store_t *st, int64_t after_id, size_t limit, lm_key_t ***out, size_t *n);
void lm_store_key_list_free(lm_key_t **keys, size_t n);

enum {
    LM_USAGE_BY_KEY = 0,
    LM_USAGE_BY_MODEL,        /* model_asked */
    LM_USAGE_BY_MODEL_SERVED, /* model_served */
    LM_USAGE_BY_CHANNEL,
    LM_USAGE_BY_DAY,  /* UTC, YYYY-MM-DD */
    LM_USAGE_BY_NONE, /* one grand total row, group "" */
};
typedef struct lm_usage_total_s {
    char *group;    /* key id in decimal, model, channel or day */
    int64_t key_id; /* LM_USAGE_BY_KEY only */
    int64_t requests, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens;
    int64_t cost, aborted;
} lm_usage_total_t;
/* Totals of rows with from_ms <= created_ms < to_ms (to_ms 0 = no end),
 * only key_id if key_id > 0. Free with lm_store_usage_totals_free. */
int lm_store_usage_totals(lm_store_t *st, int by, int64_t from_ms, int64_t to_ms, int64_t key_id,
                          lm_usage_total_t **out, size_t *n);
void lm_store_usage_totals_free(lm_usage_total_t *t, size_t n);

/* Ledger rows, newest first, id < before_id (0 = from the newest), only
 * key_id if > 0, at most limit (<= 1000). Strings in the returned rows are
 * owned by the array; free with lm_store_usage_list_free. */
typedef struct lm_usage_rec_s {
    int64_t id;
    lm_usage_row_t row;
} lm_usage_rec_t;
int lm_store_usage_list(lm_store_t *st, int64_t key_id, int64_t before_id, size_t limit,
                        lm_usage_rec_t **out, size_t *n);
void lm_store_usage_list_free(lm_usage_rec_t *r, size_t n);

/* Admin API tokens: only their SHA-256 is stored, one per role (migration
 * 2). The full role may call every admin route; the read role only GETs. */
enum { LM_ADMIN_ROLE_FULL = 0, LM_ADMIN_ROLE_READ = 1 };
/* The stored digest of role's token: LM_STORE_OK, LM_STORE_ENOTFOUND (none)
 * or LM_STORE_EDB. */
int lm_store_admin_token_get(lm_store_t *st, int role, unsigned char hash[32]);
/* Store (replace) role's digest; hash NULL removes it. Durable on return. */
int lm_store_admin_token_set(lm_store_t *st, int role, const unsigned char hash[32]);

/* ---------------------------------------------------------------------------
 * Channels managed through the admin API (migration 3): one row per
 * channel, unique by name. kernel/chanconf.c turns them into configuration
 * (a `channel NAME { ... }` block parsed with the file's parser), so a stored
 * channel means exactly what the same block in the file would mean.
 * Setting values are kept as given: "env:VAR" references or literal values
 * (literal secrets included; the data directory is 0700 and the database
 * files 0600, and no admin reply or log line carries them).
 */
#define LM_CHAN_MAX          1000 /* stored channels */
#define LM_CHAN_NAME_MAX     64   /* bytes of a channel or plugin name */
#define LM_CHAN_SETTINGS_MAX 64   /* plugin settings of one channel */
#define LM_CHAN_VALUE_MAX    2048 /* bytes of one setting value */
#define LM_CHAN_VALUES_MAX   16   /* values of one rotating secret */

typedef struct lm_chan_setting_s {
    char *key;
    char **vals; /* one value, or (a secret) the values requests rotate over */
    size_t nvals;
} lm_chan_setting_t;

/* A stored channel. Every string is heap-allocated and owned by the
 * record; free with lm_chan_rec_free (which wipes the setting values).
 * Durations are milliseconds, prices micro-units per 1M tokens (per
 * attempt for price_per_request); every field always holds its value (the
 * defaults of the configuration file are filled in on create). */
typedef struct lm_chan_rec_s {
    int64_t id;
    char *name;    /* [A-Za-z0-9_.-]+, at most LM_CHAN_NAME_MAX bytes */
    char *plugin;  /* [a-z0-9_-]+ */
    char **models; /* "name" or "alias=upstream", as in the file */
    size_t nmodels;
    lm_chan_setting_t *settings;
    size_t nsettings;
    int64_t priority, weight, max_inflight;
    int64_t connect_timeout_ms, first_byte_timeout_ms, idle_timeout_ms, request_timeout_ms;
    int64_t price_input, price_output, price_cached_input, price_per_request;
    /* The arguments of the channel's `price` lines, as in the file: "GLOB
     * AMOUNT UNIT" (conf/priceunit.h) or "GLOB INPUT OUTPUT [CACHED_INPUT
     * [PER_REQUEST]]". Stored inside the settings JSON column under the
     * key "@prices" (no setting can have that name), so both backends keep
     * them without a schema change. */
    char **prices;
    size_t nprices;
    int enabled;
    int64_t created_at, updated_at; /* unix seconds; set by the store */
} lm_chan_rec_t;

void lm_chan_rec_free(lm_chan_rec_t *c);
/* 1 if name is a valid channel name for the store ([A-Za-z0-9_.-]+, at
 * most LM_CHAN_NAME_MAX bytes, not "." or ".."). */
int lm_store_chan_name_ok(const char *name);
/* Shape checks the store enforces (name and plugin syntax, UTF-8 without
 * NUL, list sizes, numeric ranges); 0 or LM_STORE_EINVAL with a message
 * and, in *param (may be NULL), the offending field's name (static). */
int lm_store_chan_check(const lm_chan_rec_t *c, const char **param, char *err, size_t errlen);
/* Create c (borrowed). LM_STORE_ECONFLICT when the name is taken or
 * LM_CHAN_MAX channels exist. *id (may be NULL) gets the new row id. */
int lm_store_chan_create(lm_store_t *st, const lm_chan_rec_t *c, int64_t *id, char *err,
                         size_t errlen);
/* Replace every field of the channel named c->name (created_at stays).
 * LM_STORE_ENOTFOUND when there is none. */
int lm_store_chan_update(lm_store_t *st, const lm_chan_rec_t *c, char *err, size_t errlen);
/* Delete the channel `name`: LM_STORE_OK or LM_STORE_ENOTFOUND. */
int lm_store_chan_delete(lm_store_t *st, const char *name);
/* The channel `name` (new record, caller frees) or LM_STORE_ENOTFOUND. */
int lm_store_chan_get(lm_store_t *st, const char *name, lm_chan_rec_t **out);
/* Every stored channel by name (at most LM_CHAN_MAX). Free with
 * lm_store_chan_list_free. */
int lm_store_chan_list(lm_store_t *st, lm_chan_rec_t ***out, size_t *n);
void lm_store_chan_list_free(lm_chan_rec_t **v, size_t n);

/* Now, unix milliseconds (CLOCK_REALTIME). */
int64_t lm_store_now_ms(void);

/*
 * Backends. The core owns the writer thread + bounded queue + group
 * commit, the key snapshot and the account table; a backend fills in the
 * table of functions in store/backend.h (connections, schema versioning
 * and migrations, one function per statement). SQLite uses PRAGMA
 * user_version and migrations in code. A PostgreSQL backend replaces the
 * statements: ledger insert = INSERT ... ON CONFLICT (request_id, attempt)
 * DO NOTHING, used += cost in the same transaction, CHECK (used <= quota)
 * on keys. Channels are one table (UNIQUE name; models and settings as JSON
 * text or jsonb); the record and its checks (lm_store_chan_check) stay as
 * they are.
 */
#endif
