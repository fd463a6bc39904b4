/*
 * writer.h - one queued write (an operation) and the queue between the
 * submitting threads (submit.c) and the writer thread (writer.c).
 * It includes store.h, so store.c must not include it (a module cycle).
 */
#ifndef LM_STORE_WRITER_H
#define LM_STORE_WRITER_H
#include "store/internal.h"
#include "store/store.h"

enum {
    OP_USAGE,
    OP_KEY_CREATE,
    OP_KEY_UPDATE,
    OP_KEY_DELETE,
    OP_ADMIN_TOKEN,
    OP_CHAN_CREATE,
    OP_CHAN_UPDATE,
    OP_CHAN_DELETE,
    OP_BARRIER,
    OP_REQLOG,       /* reqlog.c */
    OP_REQLOG_PRUNE, /* reqlog.c */
    OP_REFRESH       /* reload the key snapshot from the backend (watch.c) */
};

struct lm_store_op_s {
    int kind;
    int status;
    int64_t id;
    lm_store_cb_t cb;
    int sync; /* waiter on st->sync_cv; the op lives on its stack */
    int done;
    int failed; /* writer.c: failed in the batch's run without savepoints */
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
    /* OP_REQLOG: strings point into the op's allocation; OP_REQLOG_PRUNE */
    struct lm_reqlog_row_s *rlog; /* in the op's allocation (reqlog.h; not included: a cycle) */
    int64_t prune_before_ms, prune_keep;
};
typedef lm_store_op_t op_t;

/* Queue op (a heap op is freed by the writer after its completion ran).
 * LM_STORE_OK, LM_STORE_ECLOSED or LM_STORE_EFULL (op not queued). Any
 * thread, never blocks on the database. */
int lm_store_enqueue(lm_store_t *st, op_t *op);
/* Queue a stack op and wait until the writer finished it; its status.
 * Admin/control threads. */
int lm_store_run_sync(lm_store_t *st, op_t *op);
#endif
