/*
 * watch.c - the change watcher of a shared store (PostgreSQL): a thread
 * that reads the database's change counters every WATCH_MS on its own
 * connection. Another instance's admin write (a key revoked, a channel
 * edited) shows as a new counter: the key snapshot is reloaded through the
 * writer (OP_REFRESH) and, for channels, the owner's changed() callback
 * rebuilds the routes. A failed poll marks the database down (down_since,
 * part of lm_store_stall_ms) so admission can refuse billed requests
 * within store_wait instead of waiting for a batch to fail. Every second it
 * also reads the limited keys' used, so a quota spent through several
 * instances is refused by each within about a second.
 *
 * Why polling and not LISTEN/NOTIFY: a notification sent while this
 * instance's connection is down is lost, while a counter is read again
 * after the reconnect; a 500 ms poll of one row keeps the 1 s bound with
 * one cheap query per instance.
 */
#include "core/clock.h"
#include "store/writer.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#define WATCH_MS    500
#define SPEND_EVERY 2 /* polls: other instances' spend is seen within a second */

static int64_t stamp(void)
{
    int64_t t = lm_clock_ms();
    return t > 0 ? t : 1;
}

int lm_store_watch_init(lm_store_t *st, char *err, size_t errlen)
{
    if (st->be->changes == NULL)
        return 0;
    if (st->be->changes(st->db, st->watch_seen) != 0) {
        lm_store_seterr(err, errlen, "store: cannot read the change counters");
        return -1;
    }
    return 0;
}

/* Reload the keys through the writer; 0 when done. */
static int refresh_keys(lm_store_t *st)
{
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_REFRESH;
    return lm_store_run_sync(st, &op) == LM_STORE_OK ? 0 : -1;
}

/* An account's used follows the database upwards: the rows other
 * instances committed (this one's are in used already, or pending). */
static void follow_spend(void *arg, int64_t id, int64_t used)
{
    lm_acct_t *a = lm_store_acct_find(arg, id);
    if (a == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    if (used > a->used)
        a->used = used;
    pthread_mutex_unlock(&a->mu);
}

/* One poll; every SPEND_EVERY-th also reads the keys' spend. */
static void poll_once(lm_store_t *st, unsigned tick)
{
    int64_t v[2];
    if (st->be->changes(st->db, v) != 0) {
        if (atomic_load(&st->down_since) == 0) {
            atomic_store(&st->down_since, stamp());
            lm_store_log(st, 0,
                         "shared database unreachable: billed requests wait or are "
                         "refused per on_store_failure");
        }
        return;
    }
    if (atomic_exchange(&st->down_since, 0) != 0)
        lm_store_log(st, 1, "shared database reachable again");
    if (st->be->spend && tick % SPEND_EVERY == 0)
        st->be->spend(st->db, follow_spend, st);
    if (v[0] != st->watch_seen[0]) {
        if (refresh_keys(st) != 0)
            return; /* the counters stay: the next poll retries */
        st->watch_seen[0] = v[0];
    }
    if (v[1] != st->watch_seen[1]) {
        st->watch_seen[1] = v[1];
        if (st->changed)
            st->changed(st->changed_arg);
    }
}

static void *watch_main(void *arg)
{
    lm_store_t *st = arg;
    unsigned tick = 0;
    pthread_mutex_lock(&st->q_mu);
    while (!st->watch_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)WATCH_MS * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_cond_timedwait(&st->watch_cv, &st->q_mu, &ts) != ETIMEDOUT || st->watch_stop)
            continue;
        pthread_mutex_unlock(&st->q_mu);
        poll_once(st, ++tick);
        pthread_mutex_lock(&st->q_mu);
    }
    pthread_mutex_unlock(&st->q_mu);
    return NULL;
}

int lm_store_watch_start(lm_store_t *st, char *err, size_t errlen)
{
    if (st->be->changes == NULL)
        return 0;
    if (pthread_create(&st->watcher, NULL, watch_main, st) != 0) {
        lm_store_seterr(err, errlen, "store: cannot start the change watcher");
        return -1;
    }
    st->watcher_started = 1;
    pthread_setname_np(st->watcher, "lm-watch");
    return 0;
}

void lm_store_watch_stop(lm_store_t *st)
{
    if (!st->watcher_started)
        return;
    pthread_mutex_lock(&st->q_mu);
    st->watch_stop = 1;
    pthread_cond_broadcast(&st->watch_cv);
    pthread_mutex_unlock(&st->q_mu);
    pthread_join(st->watcher, NULL);
    st->watcher_started = 0;
}
