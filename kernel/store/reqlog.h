/*
 * reqlog.h - the request log (docs/observability.md): one row per client
 * request, written through the store's writer thread and queried by the
 * admin API, pruned by age and row count. Backend-neutral: the SQL lives
 * in the backend (store_sqlite.c, migration 6); a backend without the
 * request-log functions (backend.h) answers LM_STORE_EINVAL and nothing is
 * logged. Strings in a row are borrowed by submit (copied before it
 * returns); records from a list are new and the caller frees them.
 */
#ifndef LM_STORE_REQLOG_H
#define LM_STORE_REQLOG_H
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

#define LM_REQLOG_BODY_MAX (256 * 1024) /* bytes of each stored body */

typedef struct lm_reqlog_row_s {
    int64_t created_ms;     /* unix ms; 0 = now */
    const char *request_id; /* required */
    int64_t key_id;         /* the store key, 0: none (a config key, or none at all) */
    const char *key_name, *model_asked, *model_served, *channel, *api;
    const char *finish_reason, *error_code; /* NULL or "": none */
    const char *attempts_json; /* [{"channel":"a","status":500,"ms":12}, ...] or NULL */
    int64_t status;            /* what the client was answered */
    int64_t latency_ms, ttft_ms, prompt_tokens, completion_tokens, cost;
    int stream;
    const char *request_body, *response_body; /* NULL unless request_log_bodies kept them */
} lm_reqlog_row_t;

typedef struct lm_reqlog_rec_s {
    int64_t id; /* increasing: the paging cursor */
    lm_reqlog_row_t row;
} lm_reqlog_rec_t;

typedef struct lm_reqlog_query_s {
    const char *key_name, *model, *channel; /* NULL: any; model matches asked or served */
    int64_t status;                         /* 0: any */
    int64_t since_ms, until_ms;             /* created_at in [since, until); until 0: no end */
    int64_t before_id;                      /* rows with smaller ids (a cursor); 0: newest */
    size_t limit;                           /* 1..1000 */
    int bodies;                             /* return the stored bodies too */
} lm_reqlog_query_t;

/* Queue one row (any thread, never waits). Dropped (LM_STORE_EFULL) when
 * the write queue is half full, so ledger rows always find room. */
int lm_store_reqlog_submit(lm_store_t *st, const lm_reqlog_row_t *row);
/* Queue a prune: rows created before older_than_ms (0: none by age), and
 * all but the newest keep_rows (0: none by count). Any thread. */
int lm_store_reqlog_prune(lm_store_t *st, int64_t older_than_ms, int64_t keep_rows);
/* Rows matching q, newest first, into a new vector (admin threads). */
int lm_store_reqlog_list(lm_store_t *st, const lm_reqlog_query_t *q, lm_reqlog_rec_t **out,
                         size_t *n);
void lm_store_reqlog_list_free(lm_reqlog_rec_t *r, size_t n);
#endif
