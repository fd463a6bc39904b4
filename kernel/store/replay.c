/*
 * replay.c - the usage spool replayed into the ledger (DB-4): every row of
 * the file in one transaction, inserted unless (request_id, attempt) is
 * already there, and the file emptied only after the COMMIT returned. A
 * crash between the two replays the file again and every row is then a
 * duplicate that changes nothing: each row lands exactly once. Runs on the
 * writer thread, or in open before the writer starts.
 */
#include "store/internal.h"
#include "store/spool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    lm_store_t *st;
    size_t inserted, dups, dropped;
    int transient; /* the database failed as a whole: abort, keep the file */
} replay_t;

static int replay_row(void *arg, const lm_usage_row_t *row)
{
    replay_t *rp = arg;
    const lm_store_backend_t *be = rp->st->be;
    lm_store_db_t *db = rp->st->db;
    int64_t id = 0;
    if (be->savepoint(db) != 0) {
        rp->transient = 1;
        return 1;
    }
    int rc = be->usage_insert(db, row, &id);
    if (rc < 0 && be->transient(db)) {
        rp->transient = 1;
        return 1;
    }
    if (rc < 0) {
        be->rollback_to(db); /* a row the ledger refuses never blocks the others */
        lm_store_log(rp->st, 0, "spooled usage row %s/%lld dropped: %s", row->request_id,
                     (long long)row->attempt, lm_store_strerror(rc));
        rp->dropped++;
    } else if (rc == LM_STORE_DUP) {
        rp->dups++;
    } else {
        rp->inserted++;
    }
    be->release(db);
    return 0;
}

int lm_store_spool_replay(lm_store_t *st)
{
    if (st->spool_path == NULL)
        return 0;
    unsigned char *buf;
    size_t len;
    if (lm_spool_read(st->spool_path, &buf, &len) != 0) {
        lm_store_log(st, 0, "cannot read the usage spool %s: %s", st->spool_path, strerror(errno));
        return -1;
    }
    if (len == 0) {
        free(buf);
        return 0;
    }
    const lm_store_backend_t *be = st->be;
    replay_t rp = {.st = st};
    lm_spool_stats_t stats;
    int rc = 1;
    if (be->begin(st->db) != 0) {
        rc = be->transient(st->db) ? 1 : -1;
        goto out;
    }
    lm_spool_scan(buf, len, replay_row, &rp, &stats);
    if (rp.transient || be->commit(st->db) != 0) {
        rc = rp.transient || be->transient(st->db) ? 1 : -1;
        be->rollback(st->db);
        goto out;
    }
    if (lm_spool_clear(st->spool_path) != 0) {
        /* committed: a later replay of the same rows only finds duplicates */
        lm_store_log(st, 0, "cannot empty the usage spool %s: %s", st->spool_path, strerror(errno));
    }
    lm_store_log(st, 2,
                 "usage spool replayed: %zu rows recorded, %zu already recorded, %zu refused",
                 rp.inserted, rp.dups, rp.dropped);
    if (stats.skipped || stats.torn)
        lm_store_log(st, 1, "usage spool %s: %zu damaged and %zu torn bytes ignored",
                     st->spool_path, stats.skipped, stats.torn);
    rc = 0;
out:
    free(buf);
    return rc;
}
