/*
 * sqlite_ckpt.c - the SQLite ledger's checkpointer thread (sqlite_ckpt.h).
 * The commit hook runs on the writer thread; everything else on the
 * checkpointer's own thread and connection.
 */
#include "store/sqlite_ckpt.h"
#include "store/backend.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct lm_sqlite_ckpt_s {
    lm_store_t *st;
    sqlite3 *w;    /* the writer's connection: only its commit hook is ours */
    sqlite3 *conn; /* the checkpointer's own, used by its thread only */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;        /* under mu */
    atomic_int want; /* the hook asked for a run and it has not started yet */
    /* WAL frames already copied to the database by the last background
     * run; commits add frames past it. A restarted WAL counts from 0 again,
     * which the hook sees as fewer frames than this. */
    atomic_llong backfilled;
    /* A background run finished since the writer last copied a tail: at
     * most one tail per run, so a WAL held by a reader (it cannot start
     * over) does not make every commit checkpoint. */
    atomic_int tail_ok;
    atomic_llong n_background, n_inline;
};

/* Writer thread, after each commit; frames: the WAL's length now. */
static int on_commit(void *arg, sqlite3 *w, const char *dbname, int frames)
{
    lm_sqlite_ckpt_t *c = arg;
    (void)dbname;
    long long done = atomic_load(&c->backfilled);
    if (frames < done) { /* the WAL restarted */
        atomic_store(&c->backfilled, 0);
        done = 0;
    }
    if (frames >= LM_CKPT_HARD_FRAMES ||
        (frames >= LM_CKPT_RESTART_FRAMES && frames - done <= LM_CKPT_TAIL_FRAMES &&
         atomic_exchange(&c->tail_ok, 0))) {
        /* the next write starts the WAL over (sqlite_ckpt.h) */
        int log = 0, copied = 0;
        if (sqlite3_wal_checkpoint_v2(w, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied) ==
            SQLITE_OK)
            atomic_fetch_add(&c->n_inline, 1);
        return SQLITE_OK;
    }
    if (frames - done < LM_CKPT_FRAMES || atomic_exchange(&c->want, 1))
        return SQLITE_OK;
    pthread_mutex_lock(&c->mu);
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
    lm_sqlite_ckpt_t *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && !atomic_load(&c->want))
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop)
            break;
        atomic_store(&c->want, 0);
        pthread_mutex_unlock(&c->mu);
        /* PASSIVE never waits for the writer and never blocks it; BUSY means
         * the writer's own checkpoint holds the lock, which is as good. */
        int log = 0, done = 0;
        int rc = sqlite3_wal_checkpoint_v2(c->conn, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        if (rc == SQLITE_OK) {
            atomic_store(&c->backfilled, done);
            atomic_store(&c->tail_ok, 1);
            atomic_fetch_add(&c->n_background, 1);
        } else if (rc != SQLITE_BUSY) {
            lm_store_log(c->st, 1, "WAL checkpoint failed: %s", sqlite3_errmsg(c->conn));
        }
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int open_conn(lm_sqlite_ckpt_t *c, const char *path, int sync_full, char *err, size_t errlen)
{
    /* the checkpoint's fsyncs follow this connection's synchronous setting */
    const char *sync = sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL";
    if (sqlite3_open_v2(path, &c->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(c->conn, sync, NULL, NULL, NULL) != SQLITE_OK) {
        lm_store_seterr(err, errlen, "store: checkpoint connection to %s: %s", path,
                        c->conn ? sqlite3_errmsg(c->conn) : "out of memory");
        return -1;
    }
    return 0;
}

lm_sqlite_ckpt_t *lm_sqlite_ckpt_start(lm_store_t *st, sqlite3 *w, const char *path, int sync_full,
                                       char *err, size_t errlen)
{
    lm_sqlite_ckpt_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        lm_store_seterr(err, errlen, "store: out of memory");
        return NULL;
    }
    c->st = st;
    c->w = w;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (open_conn(c, path, sync_full, err, errlen) != 0)
        goto fail;
    if (pthread_create(&c->thread, NULL, ckpt_main, c) != 0) {
        lm_store_seterr(err, errlen, "store: cannot start the checkpoint thread");
        goto fail;
    }
    pthread_setname_np(c->thread, "lm-checkpoint");
    sqlite3_wal_hook(w, on_commit, c);
    return c;
fail:
    sqlite3_close(c->conn);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return NULL;
}

void lm_sqlite_ckpt_stop(lm_sqlite_ckpt_t *c)
{
    if (c == NULL)
        return;
    sqlite3_wal_autocheckpoint(c->w, LM_CKPT_FRAMES); /* removes our hook */
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    sqlite3_close(c->conn);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void lm_sqlite_ckpt_counts(const lm_sqlite_ckpt_t *c, int64_t *background, int64_t *inline_)
{
    lm_sqlite_ckpt_t *m = (lm_sqlite_ckpt_t *)c; /* atomics: loads only */
    *background = c ? atomic_load(&m->n_background) : 0;
    *inline_ = c ? atomic_load(&m->n_inline) : 0;
}
