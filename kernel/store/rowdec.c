/*
 * rowdec.c - column values into key, channel, usage and request-log records,
 * the same for every backend (rowdec.h); every record is the caller's.
 */
#include "store/rowdec.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Column col as a new string, "" when NULL; NULL on ENOMEM. */
static char *col_text(const lm_rowdec_t *d, int col)
{
    const char *t = d->text(d, col);
    return strdup(t ? t : "");
}

/* A nullable text column as a new string (NULL stays NULL); 0, or -1 on ENOMEM. */
static int opt_text(const lm_rowdec_t *d, int col, const char **out)
{
    const char *t = d->is_null(d, col) ? NULL : d->text(d, col);
    *out = NULL;
    if (t == NULL)
        return 0;
    return (*out = strdup(t)) ? 0 : -1;
}

/* Columns col0.. into the n fields v points at. */
static void nums_into(const lm_rowdec_t *d, int64_t *const *v, size_t n, int col0)
{
    for (size_t i = 0; i < n; i++)
        *v[i] = d->num(d, col0 + (int)i);
}

lm_key_t *lm_rowdec_key(const lm_rowdec_t *d)
{
    lm_key_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    atomic_init(&k->refs, 1);
    k->id = d->num(d, 0);
    int bad = d->hash(d, 1, k->hash) < 0;
    const char *pfx = d->text(d, 2);
    snprintf(k->prefix, sizeof(k->prefix), "%s", pfx ? pfx : "");
    k->name = col_text(d, 3);
    k->owner = col_text(d, 4);
    k->group = col_text(d, 5);
    k->unlimited = d->is_null(d, 6);
    k->quota = k->unlimited ? 0 : d->num(d, 6);
    k->used = d->num(d, 7);
    k->expires_at = d->num(d, 8);
    bad |= k->name == NULL || k->owner == NULL || k->group == NULL;
    bad |= lm_store_list_decode(d->text(d, 9), &k->models, &k->nmodels);
    bad |= lm_store_list_decode(d->text(d, 10), &k->cidrs, &k->ncidrs);
    k->rpm = d->num(d, 11);
    k->tpm = d->num(d, 12);
    k->max_concurrent = d->num(d, 13);
    k->enabled = d->num(d, 14) != 0;
    k->created_at = d->num(d, 15);
    k->updated_at = d->num(d, 16);
    if (!bad && k->ncidrs) {
        k->nets = calloc(k->ncidrs, sizeof(*k->nets));
        bad = k->nets == NULL;
        for (size_t i = 0; !bad && i < k->ncidrs; i++)
            bad = lm_store_cidr_parse(k->cidrs[i], &k->nets[i]) != 0;
    }
    if (bad) {
        lm_store_key_free(k);
        return NULL;
    }
    return k;
}

const size_t lm_rowdec_chan_num_off[LM_ROWDEC_CHAN_NNUMS] = {
    offsetof(lm_chan_rec_t, priority),
    offsetof(lm_chan_rec_t, weight),
    offsetof(lm_chan_rec_t, max_inflight),
    offsetof(lm_chan_rec_t, connect_timeout_ms),
    offsetof(lm_chan_rec_t, first_byte_timeout_ms),
    offsetof(lm_chan_rec_t, idle_timeout_ms),
    offsetof(lm_chan_rec_t, request_timeout_ms),
    offsetof(lm_chan_rec_t, price_input),
    offsetof(lm_chan_rec_t, price_output),
    offsetof(lm_chan_rec_t, price_cached_input),
    offsetof(lm_chan_rec_t, price_per_request),
};

lm_chan_rec_t *lm_rowdec_chan(const lm_rowdec_t *d)
{
    lm_chan_rec_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->id = d->num(d, 0);
    c->name = col_text(d, 1);
    c->plugin = col_text(d, 2);
    int bad = c->name == NULL || c->plugin == NULL;
    bad |= lm_store_list_decode(d->text(d, 3), &c->models, &c->nmodels);
    bad |= lm_store_chan_settings_decode(d->text(d, 4), c);
    for (size_t i = 0; i < LM_ROWDEC_CHAN_NNUMS; i++)
        *(int64_t *)(void *)((char *)c + lm_rowdec_chan_num_off[i]) = d->num(d, 5 + (int)i);
    c->enabled = d->num(d, 16) != 0;
    c->created_at = d->num(d, 17);
    c->updated_at = d->num(d, 18);
    if (bad) {
        lm_chan_rec_free(c);
        return NULL;
    }
    return c;
}

int lm_rowdec_total(const lm_rowdec_t *d, lm_usage_total_t *t)
{
    memset(t, 0, sizeof(*t));
    if ((t->group = col_text(d, 0)) == NULL)
        return -1;
    int64_t *const nums[] = {
        &t->key_id,        &t->requests,         &t->prompt_tokens, &t->completion_tokens,
        &t->cached_tokens, &t->reasoning_tokens, &t->cost,          &t->aborted};
    nums_into(d, nums, sizeof(nums) / sizeof(nums[0]), 1);
    return 0;
}

int lm_rowdec_usage(const lm_rowdec_t *d, lm_usage_rec_t *r)
{
    lm_usage_row_t *u = &r->row;
    int64_t *const nums[] = {
        &u->prompt_tokens, &u->completion_tokens, &u->cached_tokens, &u->reasoning_tokens,
        &u->cost,          &u->latency_ms,        &u->ttft_ms,       &u->status};
    r->id = d->num(d, 0);
    u->request_id = col_text(d, 1);
    u->attempt = d->num(d, 2);
    u->key_id = d->num(d, 3);
    u->channel = col_text(d, 4);
    u->model_asked = col_text(d, 5);
    u->model_served = col_text(d, 6);
    nums_into(d, nums, sizeof(nums) / sizeof(nums[0]), 7);
    u->client_aborted = (int)d->num(d, 15);
    int bad = opt_text(d, 16, &u->usage_json);
    u->created_ms = d->num(d, 17);
    u->api = col_text(d, 18);
    u->cached = (int)d->num(d, 19);
    if (bad || !u->api || !u->request_id || !u->channel || !u->model_asked || !u->model_served)
        return -1;
    return 0;
}

int lm_rowdec_reqlog(const lm_rowdec_t *d, lm_reqlog_rec_t *r)
{
    lm_reqlog_row_t *w = &r->row;
    const char **texts[] = {
        &w->request_id,   NULL,        NULL,    &w->key_name,      &w->model_asked,
        &w->model_served, &w->channel, &w->api, &w->finish_reason, &w->error_code,
        &w->attempts_json};
    int64_t *const nums[] = {&w->status,        &w->latency_ms,        &w->ttft_ms,
                             &w->prompt_tokens, &w->completion_tokens, &w->cost};
    r->id = d->num(d, 0);
    w->created_ms = d->num(d, 2);
    w->key_id = d->num(d, 3);
    int bad = 0;
    for (int i = 0; i < 11; i++)
        if (texts[i] && opt_text(d, 1 + i, texts[i]) != 0)
            bad = 1;
    nums_into(d, nums, sizeof(nums) / sizeof(nums[0]), 12);
    w->stream = (int)d->num(d, 18);
    if (opt_text(d, 19, &w->request_body) || opt_text(d, 20, &w->response_body))
        bad = 1;
    return bad ? -1 : 0;
}
