/*
 * writer.c - the writer thread: batches from the bounded queue, one backend
 * transaction per batch (group commit), memory mirrored after the commit,
 * then each op reported (DB-1); usage rows of a stalled batch go to the
 * spool instead of waiting (DB-4). Queue functions: any thread; frees heap
 * ops.
 */
#include "store/writer.h"
#include "core/clock.h"
#include "store/spool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* While stalled, the database is asked again at most this often; rows
 * arriving in between go straight to the spool (DB-4). */
#define PROBE_MS 1000

/* ------------------------------------------------------------------------ */
/* queue                                                                     */

int lm_store_enqueue(lm_store_t *st, op_t *op)
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

/* A non-zero lm_clock_ms() (0 marks "none" in the stall stamps). */
static int64_t stamp(void)
{
    int64_t t = lm_clock_ms();
    return t > 0 ? t : 1;
}

int64_t lm_store_stall_ms(lm_store_t *st)
{
    int64_t now = stamp(), age = 0;
    int64_t s = atomic_load(&st->stalled_since), b = atomic_load(&st->busy_since);
    int64_t d = atomic_load(&st->down_since); /* a shared database the watcher cannot reach */
    if (s && now - s > age)
        age = now - s;
    if (d && now - d > age)
        age = now - d;
    if (b && now - b > age)
        age = now - b;
    return age;
}

int lm_store_spool_full(lm_store_t *st)
{
    return atomic_load(&st->spool_full);
}

size_t lm_store_queue_depth(lm_store_t *st)
{
    pthread_mutex_lock(&st->q_mu);
    size_t n = st->q_len;
    pthread_mutex_unlock(&st->q_mu);
    return n;
}

int lm_store_run_sync(lm_store_t *st, op_t *op)
{
    op->sync = 1;
    op->done = 0;
    int rc = lm_store_enqueue(st, op);
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
    while ((rc = lm_store_run_sync(st, &op)) == LM_STORE_EFULL)
        usleep(1000); /* the queue drains; a flush must not be lost */
    return rc;
}

/* ------------------------------------------------------------------------ */
/* operations: the backend writes, the core keeps memory in step             */

static int apply_key_create(lm_store_t *st, op_t *op)
{
    const lm_key_spec_t *sp = op->spec;
    lm_store_key_cols_t c = {
        .name = sp->name,
        .owner = sp->owner,
        .group = sp->group,
        .unlimited = sp->unlimited,
        .quota = sp->quota,
        .expires_at = sp->expires_at,
        .models_json = op->models_json,
        .cidrs_json = op->cidrs_json,
        .rpm = sp->rpm,
        .tpm = sp->tpm,
        .max_concurrent = sp->max_concurrent,
        .enabled = sp->enabled,
    };
    int rc = st->be->key_insert(st->db, op->hash, op->prefix, &c, &op->id);
    if (rc < 0)
        lm_store_seterr(op->err, op->errlen, "could not store the key");
    return rc;
}

/* Lowering a quota takes effect in memory before the write, so no settle
 * racing with it can bill past the new quota; raising takes effect after
 * the commit (post_commit reloads the record). undo() restores it. */
static int lower_quota(lm_store_t *st, op_t *op, int unlimited, int64_t quota)
{
    lm_acct_t *a = lm_store_acct_find(st, op->key_id);
    if (a == NULL || unlimited)
        return LM_STORE_OK;
    int rc = LM_STORE_OK;
    pthread_mutex_lock(&a->mu);
    if (a->unlimited || quota < a->quota) {
        int64_t spent;
        if (__builtin_add_overflow(a->used, a->pending, &spent))
            spent = INT64_MAX;
        if (quota < spent) {
            lm_store_seterr(op->err, op->errlen, "quota is below what the key has already used");
            rc = LM_STORE_ECONFLICT;
        } else {
            op->quota_lowered = 1;
            op->old_unlimited = a->unlimited;
            op->old_quota = a->quota;
            a->unlimited = 0;
            a->quota = quota;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* The fields in spec->set over the stored key k. */
static int apply_key_update(lm_store_t *st, op_t *op)
{
    const lm_key_spec_t *sp = op->spec;
    unsigned f = sp->set;
    lm_key_t *k = st->be->key_read(st->db, op->key_id);
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
    if ((rc = lower_quota(st, op, unlimited, quota)) != LM_STORE_OK)
        goto out;
    int limits = (f & LM_KF_LIMITS) != 0;
    lm_store_key_cols_t c = {
        .name = (f & LM_KF_NAME) ? sp->name : k->name,
        .owner = (f & LM_KF_OWNER) ? sp->owner : k->owner,
        .group = (f & LM_KF_GROUP) ? sp->group : k->group,
        .unlimited = unlimited,
        .quota = quota,
        .expires_at = (f & LM_KF_EXPIRES) ? sp->expires_at : k->expires_at,
        .models_json = models,
        .cidrs_json = cidrs,
        .rpm = limits ? sp->rpm : k->rpm,
        .tpm = limits ? sp->tpm : k->tpm,
        .max_concurrent = limits ? sp->max_concurrent : k->max_concurrent,
        .enabled = (f & LM_KF_ENABLED) ? sp->enabled : k->enabled,
    };
    rc = st->be->key_update(st->db, op->key_id, &c);
    if (rc < 0 && rc != LM_STORE_ENOTFOUND)
        lm_store_seterr(op->err, op->errlen, "%s",
                        rc == LM_STORE_ECONFLICT ? "quota is below what the key has already used"
                                                 : "could not update the key");
out:
    free(models);
    free(cidrs);
    lm_store_key_free(k);
    op->id = op->key_id;
    return rc;
}

static int apply_key_delete(lm_store_t *st, op_t *op)
{
    int rc = st->be->key_delete(st->db, op->key_id);
    if (rc >= 0 || rc == LM_STORE_ENOTFOUND)
        op->id = op->key_id;
    return rc;
}

static int apply_chan_create(lm_store_t *st, op_t *op)
{
    if (st->be->chan_id(st->db, op->chan->name) >= 0) {
        lm_store_seterr(op->err, op->errlen, "a channel named %s already exists", op->chan->name);
        return LM_STORE_ECONFLICT;
    }
    if (st->be->chan_count(st->db) >= LM_CHAN_MAX) {
        lm_store_seterr(op->err, op->errlen, "at most %d channels can be stored", LM_CHAN_MAX);
        return LM_STORE_ECONFLICT;
    }
    int rc = st->be->chan_insert(st->db, op->chan, op->chan_models, op->chan_settings, &op->id);
    if (rc < 0)
        lm_store_seterr(op->err, op->errlen, "could not store the channel");
    return rc;
}

static int apply_chan_update(lm_store_t *st, op_t *op)
{
    int rc = st->be->chan_update(st->db, op->chan, op->chan_models, op->chan_settings);
    if (rc < 0 && rc != LM_STORE_ENOTFOUND)
        lm_store_seterr(op->err, op->errlen, "could not update the channel");
    return rc;
}

static int apply(lm_store_t *st, op_t *op)
{
    lm_store_db_t *db = st->db;
    switch (op->kind) {
    case OP_CHAN_CREATE: return apply_chan_create(st, op);
    case OP_CHAN_UPDATE: return apply_chan_update(st, op);
    case OP_CHAN_DELETE: return st->be->chan_delete(db, op->chan_name);
    case OP_USAGE: return st->be->usage_insert(db, &op->row, &op->id);
    case OP_KEY_CREATE: return apply_key_create(st, op);
    case OP_KEY_UPDATE: return apply_key_update(st, op);
    case OP_KEY_DELETE: return apply_key_delete(st, op);
    case OP_ADMIN_TOKEN:
        return st->be->admin_token_set(db, op->admin_role, op->admin_clear ? NULL : op->hash);
    case OP_REQLOG: return st->be->reqlog_insert(db, op->rlog);
    case OP_REQLOG_PRUNE: return st->be->reqlog_prune(db, op->prune_before_ms, op->prune_keep);
    default: return LM_STORE_OK;
    }
}

/* Undo in-memory changes made before the write when it did not commit. */
static void undo(lm_store_t *st, op_t *op)
{
    if (op->kind == OP_KEY_UPDATE && op->quota_lowered) {
        lm_acct_t *a = lm_store_acct_find(st, op->key_id);
        if (a) {
            pthread_mutex_lock(&a->mu);
            a->unlimited = op->old_unlimited;
            a->quota = op->old_quota;
            pthread_mutex_unlock(&a->mu);
        }
        op->quota_lowered = 0;
    }
}

static void post_usage(lm_store_t *st, op_t *op)
{
    lm_acct_t *a = op->acct;
    /* a spooled row is spent as surely as a committed one: it is replayed,
     * and the key's used in the database follows then */
    int spent = op->status == LM_STORE_OK || op->status == LM_STORE_SPOOLED;
    if (a == NULL && op->row.key_id > 0 && spent && op->row.cost > 0)
        a = lm_store_acct_find(st, op->row.key_id);
    if (a) {
        pthread_mutex_lock(&a->mu);
        a->pending -= op->pending;
        if (spent) {
            if (a->used > INT64_MAX - op->row.cost)
                a->used = INT64_MAX;
            else
                a->used += op->row.cost;
        }
        pthread_mutex_unlock(&a->mu);
    }
    if (op->status < 0)
        lm_store_log(st, 0, "usage row %s/%lld not recorded: %s", op->row.request_id,
                     (long long)op->row.attempt, lm_store_strerror(op->status));
}

/* After the transaction: mirror the result in memory. */
static void post_commit(lm_store_t *st, op_t *op)
{
    switch (op->kind) {
    case OP_USAGE: post_usage(st, op); break;
    case OP_KEY_CREATE:
    case OP_KEY_UPDATE:
        if (op->status == LM_STORE_OK) {
            lm_key_t *k = st->be->key_read(st->db, op->id);
            if (k)
                k = lm_store_key_attach(st, k);
            if (k == NULL || lm_store_snapshot_replace(st, 0, k) != 0)
                lm_store_log(st, 0, "key %lld: snapshot not updated", (long long)op->id);
            if (k)
                lm_key_release(k); /* the snapshot holds its own reference */
        }
        break;
    case OP_KEY_DELETE:
        if (op->status == LM_STORE_OK && lm_store_snapshot_replace(st, op->key_id, NULL) != 0)
            lm_store_log(st, 0, "key %lld: snapshot not updated", (long long)op->key_id);
        break;
    case OP_REFRESH: /* after the commit: outside the batch's transaction */
        if (op->status == LM_STORE_OK && lm_store_snapshot_reload(st) != 0)
            op->status = LM_STORE_EDB;
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

/* ------------------------------------------------------------------------ */
/* batches                                                                   */

static void abort_batch(lm_store_t *st, op_t **ops, size_t n)
{
    st->be->rollback(st->db);
    for (size_t i = 0; i < n; i++)
        undo(st, ops[i]);
}

/* One op of a batch; with sp, inside its own savepoint so one bad row
 * never fails its neighbours. 0: the op has its status; 1: transient
 * failure, the batch was aborted; 2 (only without sp): the op failed, the
 * batch was aborted, run it again with savepoints. */
static int run_op(lm_store_t *st, op_t **ops, size_t n, op_t *op, int sp)
{
    const lm_store_backend_t *be = st->be;
    if (op->kind == OP_BARRIER || op->kind == OP_REFRESH) {
        op->status = LM_STORE_OK;
        return 0;
    }
    if (op->failed)
        return 0; /* same state before it as in the first run: it fails again */
    if (sp && be->savepoint(st->db) != 0) {
        abort_batch(st, ops, n);
        return 1;
    }
    op->status = apply(st, op);
    if (op->status < 0) {
        if (be->transient(st->db)) {
            abort_batch(st, ops, n);
            return 1;
        }
        if (!sp) {
            abort_batch(st, ops, n);
            op->failed = 1; /* keeps its status; undone with the batch */
            return 2;
        }
        be->rollback_to(st->db);
        undo(st, op);
    }
    if (sp)
        be->release(st->db);
    return 0;
}

/* One transaction over the batch. 0: done (each op has its status);
 * 1: transient failure, everything rolled back and undone, try again;
 * 2 (only without sp): an op failed, everything rolled back and undone. */
static int try_batch_sp(lm_store_t *st, op_t **ops, size_t n, int sp)
{
    const lm_store_backend_t *be = st->be;
    if (be->begin(st->db) != 0) {
        if (be->transient(st->db))
            return 1;
        for (size_t i = 0; i < n; i++)
            ops[i]->status = LM_STORE_EDB;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = run_op(st, ops, n, ops[i], sp);
        if (rc != 0)
            return rc;
    }
    if (be->commit(st->db) != 0) {
        abort_batch(st, ops, n);
        if (be->transient(st->db))
            return 1;
        for (size_t i = 0; i < n; i++)
            if (ops[i]->status >= 0 && ops[i]->kind != OP_BARRIER && ops[i]->kind != OP_REFRESH)
                ops[i]->status = LM_STORE_EDB;
    }
    return 0;
}

/* Ops rarely fail on their own (a constraint, a missing key), so a batch
 * first runs without a savepoint per op (two statements each, two round
 * trips on PostgreSQL); only when one op fails is the batch rolled back and
 * run again with them, and a lone op keeps its failure: its rollback was
 * the transaction's. The op that failed is not run again (the ops before it
 * leave the same state, so it would fail the same way, logged twice).
 * Same results and atomicity as savepoints throughout. */
static int try_batch(lm_store_t *st, op_t **ops, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ops[i]->failed = 0;
    int rc = try_batch_sp(st, ops, n, 0);
    if (rc != 2)
        return rc;
    if (n == 1)
        return 0; /* its status stands; nothing was written */
    return try_batch_sp(st, ops, n, 1);
}

static int is_stopping(lm_store_t *st)
{
    pthread_mutex_lock(&st->q_mu);
    int s = st->stopping;
    pthread_mutex_unlock(&st->q_mu);
    return s;
}

/* DB-4: the usage rows among ops go to the spool in one fsync'd append and
 * are reported now (LM_STORE_SPOOLED); the other ops stay, compacted at
 * the front. Returns how many stay (n if the spool could not take them:
 * they keep waiting in memory, as without a spool). */
static size_t divert(lm_store_t *st, op_t **ops, size_t n)
{
    size_t total = 0, off = 0, left = 0;
    for (size_t i = 0; i < n; i++)
        if (ops[i]->kind == OP_USAGE)
            total += lm_spool_size(&ops[i]->row);
    if (st->spool_path == NULL || total == 0)
        return n;
    unsigned char *buf = malloc(total);
    if (buf == NULL)
        return n;
    for (size_t i = 0; i < n; i++) {
        size_t sz = ops[i]->kind == OP_USAGE ? lm_spool_size(&ops[i]->row) : 0;
        if (sz) {
            lm_spool_put(&ops[i]->row, buf + off);
            off += sz;
        }
    }
    struct stat sb;
    int64_t have = stat(st->spool_path, &sb) == 0 ? (int64_t)sb.st_size : 0;
    if (have + (int64_t)total > st->spool_max) {
        free(buf);
        if (!atomic_exchange(&st->spool_full, 1))
            lm_store_log(st, 0, "the usage spool %s is full (%lld bytes); rows wait in memory",
                         st->spool_path, (long long)have);
        return n;
    }
    int rc = lm_spool_append(st->spool_path, buf, total);
    free(buf);
    if (rc != 0) {
        lm_store_log(st, 0, "cannot write the usage spool %s: %s; rows wait in memory",
                     st->spool_path, strerror(errno));
        return n;
    }
    st->spool_dirty = 1;
    if (atomic_load(&st->stalled_since) == 0) {
        int64_t since = atomic_load(&st->busy_since);
        atomic_store(&st->stalled_since, since ? since : stamp());
        lm_store_log(st, 1, "database stalled: usage rows go to the spool %s until it commits",
                     st->spool_path);
    }
    size_t spooled = 0;
    for (size_t i = 0; i < n; i++) {
        op_t *op = ops[i];
        if (op->kind == OP_USAGE && lm_spool_size(&op->row)) {
            op->status = LM_STORE_SPOOLED;
            post_commit(st, op);
            complete(st, op);
            spooled++;
        } else {
            ops[left++] = op;
        }
    }
    lm_store_log(st, 2, "%zu usage rows written to the spool", spooled);
    return left;
}

/* The database answered a batch: replay what the spool holds; the stall
 * is over once it is empty. */
static void stall_over(lm_store_t *st)
{
    int rc = st->spool_dirty ? lm_store_spool_replay(st) : 0;
    if (rc == 1) {
        st->last_fail_ms = stamp(); /* refused again: still stalled */
        return;
    }
    if (rc == 0) {
        st->spool_dirty = 0;
        atomic_store(&st->spool_full, 0);
    }
    if (atomic_exchange(&st->stalled_since, 0) != 0)
        lm_store_log(st, 1, "database writable again");
}

static void run_batch(lm_store_t *st, op_t **ops, size_t n)
{
    unsigned delay_ms = 50;
    int64_t t0 = stamp();
    atomic_store(&st->busy_since, t0);
    /* Stalled, and the database refused a batch within PROBE_MS: spool at
     * once rather than wait busy_timeout for the same answer. */
    if (atomic_load(&st->stalled_since) && t0 - st->last_fail_ms < PROBE_MS)
        n = divert(st, ops, n);
    for (int attempt = 1; n && try_batch(st, ops, n) != 0; attempt++) {
        st->last_fail_ms = stamp();
        if (st->last_fail_ms - t0 >= st->stall_ms && (n = divert(st, ops, n)) == 0)
            break;
        /* while we wait the queue fills and submitters get LM_STORE_EFULL */
        if (is_stopping(st) && attempt >= 10) {
            lm_store_log(st, 0, "giving up on %zu queued operations at shutdown", n);
            for (size_t i = 0; i < n; i++)
                ops[i]->status = ops[i]->kind == OP_BARRIER ? LM_STORE_OK : LM_STORE_EDB;
            break;
        }
        lm_store_log(st, 1, "database unavailable, retrying %zu operations in %u ms", n, delay_ms);
        usleep(delay_ms * 1000);
        if (delay_ms < 1000)
            delay_ms *= 2;
    }
    /* ops[0..n) are the ones the database answered (diverted ones are done) */
    if (n && (st->spool_dirty || atomic_load(&st->stalled_since)))
        stall_over(st);
    if (n && !st->spool_dirty && atomic_load(&st->spool_full))
        atomic_store(&st->spool_full, 0); /* committed, nothing left to replay */
    atomic_store(&st->busy_since, 0);
    for (size_t i = 0; i < n; i++) {
        post_commit(st, ops[i]);
        complete(st, ops[i]);
    }
}

/* Idle with rows in the spool: ask the database again every PROBE_MS. */
static void idle_wait(lm_store_t *st)
{
    if (!st->spool_dirty) {
        pthread_cond_wait(&st->q_cv, &st->q_mu);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += PROBE_MS / 1000;
    ts.tv_nsec += (long)(PROBE_MS % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    if (pthread_cond_timedwait(&st->q_cv, &st->q_mu, &ts) == ETIMEDOUT && st->q_len == 0 &&
        !st->stopping) {
        pthread_mutex_unlock(&st->q_mu);
        atomic_store(&st->busy_since, stamp());
        stall_over(st);
        atomic_store(&st->busy_since, 0);
        pthread_mutex_lock(&st->q_mu);
    }
}

void *lm_store_writer_main(void *arg)
{
    lm_store_t *st = arg;
    op_t **batch = calloc(st->batch_max, sizeof(*batch));
    for (;;) {
        pthread_mutex_lock(&st->q_mu);
        while (st->q_len == 0 && !st->stopping)
            idle_wait(st);
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
