/*
 * rowdec.h - the backend-neutral half of the row decoders: filling key,
 * channel, usage and request-log records from column values. Each backend
 * (store_sqlite_read.c, store_pg_read.c) implements the four column getters
 * over its own result type; the column orders are the backends' *_COLS.
 */
#ifndef LM_STORE_ROWDEC_H
#define LM_STORE_ROWDEC_H
#include "store/backend.h"
#include "store/reqlog.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lm_rowdec_s lm_rowdec_t;
struct lm_rowdec_s {
    void *res; /* the backend's result (sqlite3_stmt *, const PGresult *) */
    int row;   /* its row, where the backend needs one */
    int (*is_null)(const lm_rowdec_t *d, int col);
    int64_t (*num)(const lm_rowdec_t *d, int col);      /* 0 when NULL */
    const char *(*text)(const lm_rowdec_t *d, int col); /* borrowed; NULL when NULL */
    /* The key hash in column col into out: 0 set, 1 none (out left as is), -1 bad. */
    int (*hash)(const lm_rowdec_t *d, int col, unsigned char out[32]);
};

/* The numeric fields of a channel in the backends' channel column order
 * (columns 5..15, and the same order of their write parameters). */
#define LM_ROWDEC_CHAN_NNUMS 11
extern const size_t lm_rowdec_chan_num_off[LM_ROWDEC_CHAN_NNUMS];

/* A new key record (refs 1, acct NULL; caller frees with lm_store_key_free)
 * from a row of the key columns; NULL on bad data or ENOMEM. */
lm_key_t *lm_rowdec_key(const lm_rowdec_t *d);
/* A new channel record (caller frees with lm_chan_rec_free); NULL on bad
 * data or ENOMEM. */
lm_chan_rec_t *lm_rowdec_chan(const lm_rowdec_t *d);
/* One row of a totals query into t (group new, the caller's); 0, or -1 on ENOMEM. */
int lm_rowdec_total(const lm_rowdec_t *d, lm_usage_total_t *t);
/* One ledger row ("id, " + usage columns) into r (strings new, the
 * caller's even on failure); 0, or -1 on ENOMEM. */
int lm_rowdec_usage(const lm_rowdec_t *d, lm_usage_rec_t *r);
/* One row of the request-log list query into r (strings new, the caller's
 * even on failure); 0, or -1 on ENOMEM. */
int lm_rowdec_reqlog(const lm_rowdec_t *d, lm_reqlog_rec_t *r);
#endif
