/*
 * store.c - the store object: open/close (control thread), the admin
 * queries' checks (any thread; the backend answers), status strings, the
 * clock and the log sink. Results are owned as store.h says per function.
 */
#include "store/store.h"
#include "store/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */

void lm_store_log(lm_store_t *st, int level, const char *fmt, ...)
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

void lm_store_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *lm_store_strerror(int status)
{
    switch (status) {
    case LM_STORE_OK: return "ok";
    case LM_STORE_DUP: return "already recorded";
    case LM_STORE_EINVAL: return "invalid argument";
    case LM_STORE_ENOTFOUND: return "not found";
    case LM_STORE_ECONFLICT: return "conflict";
    case LM_STORE_EFULL: return "write queue full";
    case LM_STORE_ECLOSED: return "store closed";
    case LM_STORE_EDB: return "database error";
    case LM_STORE_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

int64_t lm_store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* open / close                                                              */

void lm_store_close(lm_store_t *st)
{
    if (st == NULL)
        return;
    pthread_mutex_lock(&st->q_mu);
    st->stopping = 1; /* first: a watcher waiting on a queued reload is answered */
    pthread_cond_broadcast(&st->q_cv);
    pthread_mutex_unlock(&st->q_mu);
    lm_store_watch_stop(st);
    if (st->writer_started)
        pthread_join(st->writer, NULL);
    st->be->close(st->db);
    lm_store_snapshot_free(st);
    free(st->q);
    free(st->spool_path);
    pthread_mutex_destroy(&st->q_mu);
    pthread_cond_destroy(&st->q_cv);
    pthread_mutex_destroy(&st->sync_mu);
    pthread_cond_destroy(&st->sync_cv);
    pthread_cond_destroy(&st->watch_cv);
    pthread_mutex_destroy(&st->acct_mu);
    pthread_rwlock_destroy(&st->snap_lock);
    free(st);
}

/* The store object with its queue and locks, no backend yet. */
static lm_store_t *store_new(const lm_store_opts_t *o)
{
    lm_store_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->be = o->pg ? &lm_store_pg : &lm_store_sqlite;
    st->log = o->log;
    st->changed = o->changed;
    st->changed_arg = o->changed_arg;
    st->q_cap = o->queue_max ? o->queue_max : 100000;
    st->batch_max = o->batch_max ? o->batch_max : 512;
    st->stall_ms = o->stall_ms > 0 ? o->stall_ms : 2000;
    st->spool_max = o->spool_max > 0 ? o->spool_max : (int64_t)256 << 20;
    pthread_mutex_init(&st->q_mu, NULL);
    pthread_cond_init(&st->q_cv, NULL);
    pthread_mutex_init(&st->sync_mu, NULL);
    pthread_cond_init(&st->sync_cv, NULL);
    pthread_cond_init(&st->watch_cv, NULL);
    pthread_mutex_init(&st->acct_mu, NULL);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&st->snap_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    st->q = calloc(st->q_cap, sizeof(*st->q));
    if (st->q == NULL) {
        lm_store_close(st);
        return NULL;
    }
    return st;
}

/* The spool's path, and its rows (left by a stall before a stop or a
 * crash) replayed before the key snapshot reads each key's used (DB-4). */
static int spool_init(lm_store_t *st, const lm_store_opts_t *o, char *err, size_t errlen)
{
    if (o->spool && o->spool[0]) {
        st->spool_path = strdup(o->spool);
    } else if (o->dir == NULL || o->dir[0] == '\0') {
        return 0; /* a shared store without a local directory: rows wait in memory */
    } else {
        size_t n = strlen(o->dir) + sizeof("/usage.spool");
        if ((st->spool_path = malloc(n)) != NULL)
            snprintf(st->spool_path, n, "%s/usage.spool", o->dir);
    }
    if (st->spool_path == NULL) {
        lm_store_seterr(err, errlen, "store: out of memory");
        return -1;
    }
    /* 1 or -1: logged; the writer retries while it runs */
    st->spool_dirty = lm_store_spool_replay(st) != 0;
    return 0;
}

lm_store_t *lm_store_open(const lm_store_opts_t *o, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (o == NULL) {
        lm_store_seterr(err, errlen, "store: no data directory");
        return NULL;
    }
    if (o->pg == NULL && (o->dir == NULL || o->dir[0] == '\0')) {
        lm_store_seterr(err, errlen, "store: no data directory");
        return NULL;
    }
    lm_store_t *st = store_new(o);
    if (st == NULL) {
        lm_store_seterr(err, errlen, "store: out of memory");
        return NULL;
    }
    if ((st->db = st->be->open(st, o, err, errlen)) == NULL)
        goto fail;
    if (spool_init(st, o, err, errlen) != 0)
        goto fail;
    if (lm_store_watch_init(st, err, errlen) != 0)
        goto fail;
    if (lm_store_snapshot_load(st, err, errlen) != 0)
        goto fail;
    if (pthread_create(&st->writer, NULL, lm_store_writer_main, st) != 0) {
        lm_store_seterr(err, errlen, "store: cannot start the writer thread");
        goto fail;
    }
    st->writer_started = 1;
    pthread_setname_np(st->writer, "lm-store");
    if (lm_store_watch_start(st, err, errlen) != 0)
        goto fail;
    return st;
fail:
    lm_store_close(st);
    return NULL;
}

int lm_store_settings(lm_store_t *st, lm_store_settings_t *out)
{
    return st->be->settings(st->db, out);
}

/* ------------------------------------------------------------------------ */
/* admin reads                                                               */

int lm_store_admin_token_get(lm_store_t *st, int role, unsigned char hash[32])
{
    if (role != LM_ADMIN_ROLE_FULL && role != LM_ADMIN_ROLE_READ)
        return LM_STORE_EINVAL;
    return st->be->admin_token_get(st->db, role, hash);
}

int lm_store_key_get(lm_store_t *st, int64_t id, lm_key_t **out)
{
    *out = NULL;
    return st->be->key_get(st->db, id, out);
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
    int rc = st->be->key_list(st->db, after_id, limit, v, &cnt);
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
    return st->be->chan_get(st->db, name, out);
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
    size_t cnt = 0;
    int rc = st->be->chan_list(st->db, &v, &cnt);
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
    *out = NULL;
    *n = 0;
    if (by < 0 || by > LM_USAGE_BY_NONE)
        return LM_STORE_EINVAL;
    lm_usage_total_t *v = NULL;
    size_t cnt = 0;
    int rc = st->be->usage_totals(st->db, by, from_ms, to_ms > 0 ? to_ms : INT64_MAX,
                                  key_id > 0 ? key_id : 0, &v, &cnt);
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
    free((char *)r->row.api);
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
    int rc = st->be->usage_list(st->db, key_id > 0 ? key_id : 0,
                                before_id > 0 ? before_id : INT64_MAX, limit, v, &cnt);
    if (rc != LM_STORE_OK) {
        lm_store_usage_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LM_STORE_OK;
}
