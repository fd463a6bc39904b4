/*
 * internal.h - what the store core's files share and nothing else
 * includes: the store object and the functions the core files lend each
 * other. Record types appear by their struct tags so this header stays
 * below store.h (store.c includes both; see tests/layers/check_layers.py).
 */
#ifndef LM_STORE_INTERNAL_H
#define LM_STORE_INTERNAL_H
#include "store/backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct lm_acct_s;
typedef struct lm_store_op_s lm_store_op_t;         /* one queued write (writer.c) */
typedef struct lm_store_keyset_s lm_store_keyset_t; /* one snapshot (snapshot.c) */

struct lm_store_s {
    const lm_store_backend_t *be;
    lm_store_db_t *db;
    void (*log)(int, const char *);

    /* write queue (writer.c) */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    lm_store_op_t **q;
    size_t q_cap, q_head, q_len, batch_max;
    int stopping;
    pthread_t writer;
    int writer_started;

    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;

    /* stalls and the usage spool (DB-4; writer.c, replay.c). Times are
     * lm_clock_ms(); the atomics are read by any thread (lm_store_stall_ms). */
    char *spool_path;              /* NULL: rows wait in the queue (no spool) */
    int64_t stall_ms;              /* a write pending this long stalls the store */
    _Atomic int64_t busy_since;    /* when the running batch started; 0 = idle */
    _Atomic int64_t stalled_since; /* when usage rows began going to the spool; 0 = not */
    int64_t last_fail_ms;          /* writer: when the database last refused a batch */
    int spool_dirty;               /* writer: the spool may hold rows to replay */
    int64_t spool_max;             /* bytes the spool may grow to */
    _Atomic int spool_full;        /* a batch did not fit under spool_max */

    /* change watcher (watch.c; shared backends only) */
    pthread_t watcher;
    int watcher_started, watch_stop; /* watch_stop under q_mu, signalled on watch_cv */
    pthread_cond_t watch_cv;
    int64_t watch_seen[2];      /* change counters the snapshot/channels reflect */
    _Atomic int64_t down_since; /* first failed poll (lm_clock_ms); 0 = reachable */
    void (*changed)(void *arg);
    void *changed_arg;

    /* key snapshot (snapshot.c) */
    pthread_rwlock_t snap_lock;
    lm_store_keyset_t *keys;

    /* accounts, by id; never removed before close (snapshot.c) */
    pthread_mutex_t acct_mu;
    struct lm_acct_s **accts;
    size_t acct_cap, acct_n;
};

/* --- writer.c --------------------------------------------------------------- */
/* The writer thread's body (arg = the store); returns at close. */
void *lm_store_writer_main(void *arg);

/* --- replay.c --------------------------------------------------------------- */
/* Replay the spool into the ledger and empty it. 0 (done, or nothing to
 * do), 1 (the database is unavailable: the file stays), -1 (unreadable or
 * refused as a whole: logged, the file stays). Writer thread, or open. */
int lm_store_spool_replay(struct lm_store_s *st);

/* --- snapshot.c ------------------------------------------------------------- */
/* At open: the live keys from the backend into the first snapshot. 0, or
 * -1 with a message in err. Control thread, before the writer starts. */
int lm_store_snapshot_load(struct lm_store_s *st, char *err, size_t errlen);
/* At close: the snapshot and every account. */
void lm_store_snapshot_free(struct lm_store_s *st);
/* Writer thread: publish a snapshot without key drop_id and with add
 * (either may be 0/NULL; add gets the snapshot's own reference). 0 or -1. */
int lm_store_snapshot_replace(struct lm_store_s *st, int64_t drop_id, struct lm_key_s *add);
/* The account of key id, or NULL (borrowed; lives until close). */
struct lm_acct_s *lm_store_acct_find(struct lm_store_s *st, int64_t id);
/* Give a record read from the backend its account (made if new) and make
 * the account's quota follow it. k itself, or NULL (k freed) on ENOMEM. */
struct lm_key_s *lm_store_key_attach(struct lm_store_s *st, struct lm_key_s *k);

/* Writer thread: reload every live key from the backend into a new
 * snapshot (accounts kept; an account's used follows the database when the
 * database holds more, i.e. other instances spent). 0 or -1. */
int lm_store_snapshot_reload(struct lm_store_s *st);

/* --- watch.c ---------------------------------------------------------------- */
/* If the backend has change counters: read them (before the snapshot
 * loads, so no change between the two is missed). 0, or -1 with a message
 * in err. Control thread, in open. */
int lm_store_watch_init(struct lm_store_s *st, char *err, size_t errlen);
/* Start the watcher thread (after the writer: it queues reloads). 0 or -1. */
int lm_store_watch_start(struct lm_store_s *st, char *err, size_t errlen);
/* Stop and join it (no-op if not started); st->stopping is already set. */
void lm_store_watch_stop(struct lm_store_s *st);

/* --- keys.c ----------------------------------------------------------------- */
/* s (NULL = "") is UTF-8 without NUL of at most max bytes. */
int lm_store_cstr_ok(const char *s, size_t max);
/* JSON text array of items: new text (caller frees), NULL on ENOMEM. */
char *lm_store_list_encode(const char *const *items, size_t n);

/* --- chans.c ---------------------------------------------------------------- */
/* Overwrite s (a secret may be in it), then free it. NULL is fine. */
void lm_store_wipe_free(char *s);
/* A channel's settings as {"key": "value" | ["v1", ...]}: new text the
 * caller wipes (lm_store_wipe_free); NULL on ENOMEM. */
char *lm_store_chan_settings_encode(const struct lm_chan_rec_s *c);
/* A channel name ([A-Za-z0-9_.-]+, not "." or "..") or, if plugin, a
 * plugin or setting name ([a-z0-9_-]+); at most LM_CHAN_NAME_MAX bytes. */
int lm_store_name_ok(const char *s, int plugin);
#endif
