/*
 * backend.h - the table of functions a store backend implements, and the
 * helpers the store core lends it. The core (store.c, writer.c,
 * snapshot.c, keys.c, chans.c) owns the write queue, the writer thread and
 * its group commit, the key snapshot and the accounts; a backend owns its
 * connections, schema and statements. store_sqlite.c is the first backend;
 * a PostgreSQL one fills in the same table (see "Backends" in store.h).
 * Record types appear by their struct tags so this header stays below
 * store.h (store.c includes both; see tests/layers/check_layers.py).
 */
#ifndef LM_STORE_BACKEND_H
#define LM_STORE_BACKEND_H
#include <stddef.h>
#include <stdint.h>

struct lm_store_s;
struct lm_store_opts_s;
struct lm_store_settings_s;
struct lm_key_s;
struct lm_cidr_s;
struct lm_usage_row_s;
struct lm_usage_total_s;
struct lm_usage_rec_s;
struct lm_chan_rec_s;
struct lm_reqlog_row_s;
struct lm_reqlog_rec_s;
struct lm_reqlog_query_s;

/* A backend's state (connections, statements); opaque to the core. */
typedef struct lm_store_db_s lm_store_db_t;

/* A key's columns as the core resolved them: every field is meant. */
typedef struct lm_store_key_cols_s {
    const char *name, *owner, *group; /* NULL = "" */
    int unlimited;                    /* quota is not stored when set */
    int64_t quota, expires_at;
    const char *models_json, *cidrs_json; /* JSON text arrays (lm_store_list_encode) */
    int64_t rpm, tpm, max_concurrent;
    int enabled;
} lm_store_key_cols_t;

/* Every function gets the state open returned. Statuses are LM_STORE_*; a
 * failed statement is logged (lm_store_log) and reported as
 * LM_STORE_ECONFLICT (a constraint) or LM_STORE_EDB. */
typedef struct lm_store_backend_s {
    /* --- control thread --------------------------------------------------- */
    /* Connect, apply and verify the settings, migrate, prepare. NULL with a
     * message in err on failure. st is only for lm_store_log. */
    lm_store_db_t *(*open)(struct lm_store_s *st, const struct lm_store_opts_s *o, char *err,
                           size_t errlen);
    /* Free what open made (NULL is fine). The writer has stopped. */
    void (*close)(lm_store_db_t *db);
    /* Before the writer starts: each(arg, k) for every live key, k a new
     * record with its hash (owned by each from then on). each returns 0, -1
     * (k unusable: the backend names the key in err) or -2 (out of memory:
     * stop). Returns 0 or -1. */
    int (*load_keys)(lm_store_db_t *db, int (*each)(void *arg, struct lm_key_s *k), void *arg,
                     char *err, size_t errlen);
    /* lm_store_settings (any thread). */
    int (*settings)(lm_store_db_t *db, struct lm_store_settings_s *out);

    /* --- writer thread: one transaction per batch, a savepoint per op ------
     * 0, or -1 with the failure logged and remembered for transient();
     * begin, savepoint and commit forget the previous failure first. */
    int (*begin)(lm_store_db_t *db);
    int (*savepoint)(lm_store_db_t *db);
    int (*rollback_to)(lm_store_db_t *db); /* undo the op since savepoint */
    int (*release)(lm_store_db_t *db);
    int (*commit)(lm_store_db_t *db);
    void (*rollback)(lm_store_db_t *db); /* the open transaction, if any */
    /* 1 if the remembered failure concerns the database as a whole (locked
     * by another process, disk full, I/O): the core retries the batch. */
    int (*transient)(lm_store_db_t *db);

    /* --- writer thread: the operations, inside a savepoint ---------------- */
    /* Insert r (strings borrowed) unless (request_id, attempt) exists
     * (LM_STORE_DUP); with cost > 0 and key_id > 0 also add cost to the
     * key's used (LM_STORE_ENOTFOUND without a key row). *id = new row. */
    int (*usage_insert)(lm_store_db_t *db, const struct lm_usage_row_s *r, int64_t *id);
    /* New key, used 0, created = updated = now. *id = its id. */
    int (*key_insert)(lm_store_db_t *db, const unsigned char hash[32], const char *prefix,
                      const lm_store_key_cols_t *c, int64_t *id);
    /* One live key as a new record (hash set, acct NULL), or NULL. */
    struct lm_key_s *(*key_read)(lm_store_db_t *db, int64_t id);
    /* Replace a live key's columns (updated = now); LM_STORE_ENOTFOUND. */
    int (*key_update)(lm_store_db_t *db, int64_t id, const lm_store_key_cols_t *c);
    /* Soft delete (deleted = now, disabled); LM_STORE_ENOTFOUND. */
    int (*key_delete)(lm_store_db_t *db, int64_t id);
    /* Replace role's token digest (created = now), or remove it (NULL). */
    int (*admin_token_set)(lm_store_db_t *db, int role, const unsigned char *hash);
    /* The id of the channel `name` (-1: none); the number of channels. */
    int64_t (*chan_id)(lm_store_db_t *db, const char *name);
    int64_t (*chan_count)(lm_store_db_t *db);
    /* Insert c (borrowed) with its JSON columns; created = updated = now. */
    int (*chan_insert)(lm_store_db_t *db, const struct lm_chan_rec_s *c, const char *models_json,
                       const char *settings_json, int64_t *id);
    /* Replace the channel named c->name (updated = now); LM_STORE_ENOTFOUND. */
    int (*chan_update)(lm_store_db_t *db, const struct lm_chan_rec_s *c, const char *models_json,
                       const char *settings_json);
    int (*chan_delete)(lm_store_db_t *db, const char *name); /* LM_STORE_ENOTFOUND */

    /* --- admin reads: admin/control threads, concurrent with the writer ----
     * Arguments were checked by the core (see store.h for each query). On
     * failure the n results already made are still returned: the core frees
     * them. */
    int (*admin_token_get)(lm_store_db_t *db, int role, unsigned char hash[32]);
    int (*key_get)(lm_store_db_t *db, int64_t id, struct lm_key_s **out);
    /* Into v (limit slots). */
    int (*key_list)(lm_store_db_t *db, int64_t after_id, size_t limit, struct lm_key_s **v,
                    size_t *n);
    int (*chan_get)(lm_store_db_t *db, const char *name, struct lm_chan_rec_s **out);
    /* A new vector in *out. */
    int (*chan_list)(lm_store_db_t *db, struct lm_chan_rec_s ***out, size_t *n);
    /* A new vector in *out; to_ms > 0, key_id 0 = every key. */
    int (*usage_totals)(lm_store_db_t *db, int by, int64_t from_ms, int64_t to_ms, int64_t key_id,
                        struct lm_usage_total_s **out, size_t *n);
    /* Into v (limit slots); before_id > 0, key_id 0 = every key. */
    int (*usage_list)(lm_store_db_t *db, int64_t key_id, int64_t before_id, size_t limit,
                      struct lm_usage_rec_s *v, size_t *n);

    /* --- the request log (reqlog.h); optional: NULL in a backend without it.
     * Insert and prune run on the writer thread inside a savepoint; list on
     * admin threads, into v (q->limit slots), bodies only if q->bodies. */
    int (*reqlog_insert)(lm_store_db_t *db, const struct lm_reqlog_row_s *r);
    int (*reqlog_prune)(lm_store_db_t *db, int64_t older_than_ms, int64_t keep_rows);
    int (*reqlog_list)(lm_store_db_t *db, const struct lm_reqlog_query_s *q,
                       struct lm_reqlog_rec_s *v, size_t *n);
    /* --- shared backends only (NULL for SQLite): the watcher thread -------
     * The change counters every admin write bumps in its transaction, read
     * on the watcher's own connection: version[0] any write, version[1]
     * channel writes. 0, or -1 (the database is unreachable). */
    int (*changes)(lm_store_db_t *db, int64_t version[2]);
    /* each(arg, id, used) for every live limited key with used > 0, on the
     * watcher's connection: other instances' committed spend. 0 or -1. */
    int (*spend)(lm_store_db_t *db, void (*each)(void *arg, int64_t id, int64_t used), void *arg);
} lm_store_backend_t;

/* The SQLite backend (store_sqlite.c). */
extern const lm_store_backend_t lm_store_sqlite;
/* The PostgreSQL backend (store_pg.c): opts.pg is its conninfo. */
extern const lm_store_backend_t lm_store_pg;

/* --- lent by the core (any thread) ----------------------------------------- */
/* One line to the store's log sink (opts.log, else stderr); level 0 error,
 * 1 warn, 2 info. st may be NULL. Never put a secret in it. */
void lm_store_log(struct lm_store_s *st, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Format into err (if err and errlen): the admin-facing failure text. */
void lm_store_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "a.b.c.d[/n]" or "x:y::z[/n]" into *out (host bits cleared); 0 or -1. */
int lm_store_cidr_parse(const char *s, struct lm_cidr_s *out);
/* Free a record regardless of its reference count (it was never shared). */
void lm_store_key_free(struct lm_key_s *k);
/* JSON text array of strings -> new vector of new strings (caller frees
 * each and the vector). NULL text = "[]". 0, or -1 on bad data/ENOMEM. */
int lm_store_list_decode(const char *text, char ***out, size_t *n);
/* A channel's settings column into c->settings/c->nsettings (freed with
 * the record); 0, or -1 on bad data or ENOMEM. */
int lm_store_chan_settings_decode(const char *text, struct lm_chan_rec_s *c);
#endif
