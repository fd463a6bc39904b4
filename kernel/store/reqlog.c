/* reqlog.c - the request log's core side (reqlog.h): rows and prunes go
 * through the writer's queue as operations; lists go to the backend's read
 * side. Submit and prune on any thread; list on admin threads. */
#include "store/reqlog.h"
#include "store/writer.h"

#include <stdlib.h>
#include <string.h>

static size_t slen(const char *s, size_t max)
{
    return s ? strnlen(s, max) + 1 : 0;
}

/* s cut to max bytes into *p (NULL stays NULL). */
static const char *scopy(char **p, const char *s, size_t max)
{
    if (s == NULL)
        return NULL;
    size_t n = strnlen(s, max);
    memcpy(*p, s, n);
    (*p)[n] = '\0';
    const char *r = *p;
    *p += n + 1;
    return r;
}

/* Room for ledger rows first: a log row waits only in a half-empty queue. */
static int queue_half_full(lm_store_t *st)
{
    pthread_mutex_lock(&st->q_mu);
    int full = st->q_len >= st->q_cap / 2;
    pthread_mutex_unlock(&st->q_mu);
    return full;
}

int lm_store_reqlog_submit(lm_store_t *st, const lm_reqlog_row_t *row)
{
    if (st == NULL || st->be->reqlog_insert == NULL || row == NULL || row->request_id == NULL)
        return LM_STORE_EINVAL;
    if (queue_half_full(st))
        return LM_STORE_EFULL;
    enum { S = 256, B = LM_REQLOG_BODY_MAX, A = 4096 };
    size_t extra = slen(row->request_id, S) + slen(row->key_name, S) + slen(row->model_asked, S) +
                   slen(row->model_served, S) + slen(row->channel, S) + slen(row->api, S) +
                   slen(row->finish_reason, S) + slen(row->error_code, S) +
                   slen(row->attempts_json, A) + slen(row->request_body, B) +
                   slen(row->response_body, B);
    /* one allocation: the op, its row, the row's strings */
    op_t *op = calloc(1, sizeof(*op) + sizeof(lm_reqlog_row_t) + extra);
    if (op == NULL)
        return LM_STORE_ENOMEM;
    lm_reqlog_row_t *r = (lm_reqlog_row_t *)(void *)(op + 1);
    char *p = (char *)(r + 1);
    op->kind = OP_REQLOG;
    *r = *row;
    op->rlog = r;
    r->request_id = scopy(&p, row->request_id, S);
    r->key_name = scopy(&p, row->key_name, S);
    r->model_asked = scopy(&p, row->model_asked, S);
    r->model_served = scopy(&p, row->model_served, S);
    r->channel = scopy(&p, row->channel, S);
    r->api = scopy(&p, row->api, S);
    r->finish_reason = scopy(&p, row->finish_reason, S);
    r->error_code = scopy(&p, row->error_code, S);
    r->attempts_json = scopy(&p, row->attempts_json, A);
    r->request_body = scopy(&p, row->request_body, B);
    r->response_body = scopy(&p, row->response_body, B);
    if (r->created_ms <= 0)
        r->created_ms = lm_store_now_ms();
    int rc = lm_store_enqueue(st, op);
    if (rc != LM_STORE_OK)
        free(op);
    return rc;
}

int lm_store_reqlog_prune(lm_store_t *st, int64_t older_than_ms, int64_t keep_rows)
{
    if (st == NULL || st->be->reqlog_prune == NULL)
        return LM_STORE_EINVAL;
    op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return LM_STORE_ENOMEM;
    op->kind = OP_REQLOG_PRUNE;
    op->prune_before_ms = older_than_ms > 0 ? older_than_ms : 0;
    op->prune_keep = keep_rows > 0 ? keep_rows : 0;
    int rc = lm_store_enqueue(st, op);
    if (rc != LM_STORE_OK)
        free(op);
    return rc;
}

static void rec_free(lm_reqlog_rec_t *r)
{
    const char *s[] = {r->row.request_id,    r->row.key_name,     r->row.model_asked,
                       r->row.model_served,  r->row.channel,      r->row.api,
                       r->row.finish_reason, r->row.error_code,   r->row.attempts_json,
                       r->row.request_body,  r->row.response_body};
    for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
        free((char *)s[i]);
}

void lm_store_reqlog_list_free(lm_reqlog_rec_t *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        rec_free(&r[i]);
    free(r);
}

int lm_store_reqlog_list(lm_store_t *st, const lm_reqlog_query_t *q, lm_reqlog_rec_t **out,
                         size_t *n)
{
    *out = NULL;
    *n = 0;
    if (st == NULL || st->be->reqlog_list == NULL)
        return LM_STORE_EINVAL;
    lm_reqlog_query_t qq = *q;
    if (qq.limit == 0 || qq.limit > 1000)
        qq.limit = 1000;
    if (qq.before_id <= 0)
        qq.before_id = INT64_MAX;
    if (qq.until_ms <= 0)
        qq.until_ms = INT64_MAX;
    lm_reqlog_rec_t *v = calloc(qq.limit, sizeof(*v));
    if (v == NULL)
        return LM_STORE_ENOMEM;
    size_t cnt = 0;
    int rc = st->be->reqlog_list(st->db, &qq, v, &cnt);
    if (rc != LM_STORE_OK) {
        lm_store_reqlog_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LM_STORE_OK;
}
