/* billing.c - prices and cost, and the reservation / settlement of a key's
 * balance (billing.h). Any thread: each account has its own mutex. */
#include "gov/billing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t nonneg(int64_t v)
{
    return v < 0 ? 0 : v;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

int lm_price_check(const lm_price_t *p)
{
    return (p->input < 0 || p->output < 0 || p->cached_input < 0 || p->per_request < 0) ? -1 : 0;
}

typedef unsigned __int128 u128;

/* ceil(sum / 1e6) saturated to int64, plus per_request saturated. */
static int64_t finish_cost(u128 sum, int64_t per_request)
{
    u128 q = sum / LM_MICRO + (sum % LM_MICRO != 0);
    int64_t c = q > (u128)INT64_MAX ? INT64_MAX : (int64_t)q;
    return lm_sat_add(c, nonneg(per_request));
}

int64_t lm_billing_cost(const lm_price_t *p, const lm_tokens_t *t)
{
    int64_t prompt = nonneg(t->prompt), cached = nonneg(t->cached);
    if (cached > prompt)
        cached = prompt; /* a provider reporting more cached than prompt: bill as
                            cached */
    int64_t uncached = prompt - cached;
    /* each product < 2^126, the sum of three < 2^128: exact */
    u128 sum = (u128)uncached * (u128)nonneg(p->input) +
               (u128)cached * (u128)nonneg(p->cached_input) +
               (u128)nonneg(t->completion) * (u128)nonneg(p->output);
    return finish_cost(sum, p->per_request);
}

int64_t lm_billing_unit_cost(int64_t per_unit, int64_t divisor, int64_t units)
{
    int64_t n = units > ((int64_t)1 << 40) ? (int64_t)1 << 40 : nonneg(units);
    if (divisor <= 0)
        divisor = 1;
    u128 sum = (u128)n * (u128)nonneg(per_unit); /* < 2^103: exact */
    u128 q = sum / (u128)divisor + (sum % (u128)divisor != 0);
    return q > (u128)INT64_MAX ? INT64_MAX : (int64_t)q;
}

int64_t lm_billing_worst_case(const lm_price_t *p, int64_t prompt_estimate, int64_t max_output)
{
    int64_t in =
        nonneg(p->input) > nonneg(p->cached_input) ? nonneg(p->input) : nonneg(p->cached_input);
    u128 sum = (u128)nonneg(prompt_estimate) * (u128)in +
               (u128)nonneg(max_output) * (u128)nonneg(p->output);
    return finish_cost(sum, p->per_request);
}

/* ------------------------------------------------------------------------ */

/* What the account can still pay; caller holds a->mu. */
static int64_t available(const lm_acct_t *a)
{
    int64_t base = a->unlimited ? INT64_MAX : a->quota;
    int64_t v = lm_sat_sub(base, a->used);
    v = lm_sat_sub(v, a->reserved);
    v = lm_sat_sub(v, a->pending);
    return v;
}

static void unlink_res(lm_acct_t *a, lm_reservation_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        a->open = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    a->nopen--;
}

int lm_billing_reserve(lm_key_t *key, int64_t amount, int64_t deadline_ms, lm_reservation_t **out)
{
    *out = NULL;
    if (key == NULL || key->acct == NULL || amount < 0)
        return LM_BILLING_EINVAL;
    lm_reservation_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return LM_BILLING_EINVAL;
    lm_acct_t *a = key->acct;
    pthread_mutex_lock(&a->mu);
    /* unlimited keys too: their "quota" is INT64_MAX, so no counter can overflow
     */
    if (available(a) < amount) {
        pthread_mutex_unlock(&a->mu);
        free(r);
        return LM_BILLING_EQUOTA;
    }
    a->reserved = lm_sat_add(a->reserved, amount);
    r->acct = a;
    r->key_id = a->id;
    r->amount = amount;
    r->deadline_ms = deadline_ms;
    r->state = LM_RES_OPEN;
    r->next = a->open;
    if (a->open)
        a->open->prev = r;
    a->open = r;
    a->nopen++;
    pthread_mutex_unlock(&a->mu);
    *out = r;
    return LM_BILLING_OK;
}

void lm_billing_extend(lm_reservation_t *r, int64_t deadline_ms)
{
    pthread_mutex_lock(&r->acct->mu);
    r->deadline_ms = deadline_ms;
    pthread_mutex_unlock(&r->acct->mu);
}

/* Release the hold (all of it if final, else up to cost), cap the bill at
 * the balance, book it as pending. Returns the billed amount. */
static int64_t bill(lm_reservation_t *r, int64_t cost, int final)
{
    lm_acct_t *a = r->acct;
    int64_t billed;
    pthread_mutex_lock(&a->mu);
    if (r->state == LM_RES_OPEN) {
        int64_t part = final ? r->amount : min64(cost, r->amount);
        a->reserved = lm_sat_sub(a->reserved, part);
        r->amount -= part;
        if (final) {
            unlink_res(a, r);
            r->state = LM_RES_DONE;
        }
    } else if (final) {
        r->state = LM_RES_DONE;
    }
    billed = min64(cost, nonneg(available(a)));
    a->pending = lm_sat_add(a->pending, billed);
    pthread_mutex_unlock(&a->mu);
    return billed;
}

static void unbill(lm_acct_t *a, int64_t billed)
{
    pthread_mutex_lock(&a->mu);
    a->pending = lm_sat_sub(a->pending, billed);
    pthread_mutex_unlock(&a->mu);
}

static int record(lm_store_t *st, lm_reservation_t *r, int64_t cost, const lm_usage_row_t *row,
                  const lm_store_cb_t *cb, int final)
{
    if (cost < 0)
        cost = 0;
    int64_t billed = bill(r, cost, final);
    if (row == NULL) {
        unbill(r->acct, billed);
        return LM_STORE_OK;
    }
    lm_usage_row_t copy = *row;
    copy.key_id = r->key_id;
    copy.cost = billed;
    int rc = lm_store_usage_submit_acct(st, &copy, r->acct, billed, cb);
    if (rc != LM_STORE_OK)
        unbill(r->acct, billed);
    return rc;
}

int lm_billing_charge(lm_store_t *st, lm_reservation_t *r, int64_t cost, const lm_usage_row_t *row,
                      const lm_store_cb_t *cb)
{
    if (row == NULL)
        return LM_STORE_EINVAL;
    return record(st, r, cost, row, cb, 0);
}

int lm_billing_settle(lm_store_t *st, lm_reservation_t *r, int64_t cost, const lm_usage_row_t *row,
                      const lm_store_cb_t *cb)
{
    if (r == NULL) /* no store key (config bootstrap key): record only */
        return row ? lm_store_usage_submit(st, row, cb) : LM_STORE_OK;
    int rc = record(st, r, cost, row, cb, 1);
    free(r);
    return rc;
}

void lm_billing_cancel(lm_reservation_t *r)
{
    if (r == NULL)
        return;
    lm_acct_t *a = r->acct;
    pthread_mutex_lock(&a->mu);
    if (r->state == LM_RES_OPEN) {
        a->reserved = lm_sat_sub(a->reserved, r->amount);
        unlink_res(a, r);
    }
    r->state = LM_RES_DONE;
    pthread_mutex_unlock(&a->mu);
    free(r);
}

typedef struct {
    int64_t now_ms;
    size_t n;
} reclaim_t;

static void reclaim_acct(lm_acct_t *a, void *arg)
{
    reclaim_t *rc = arg;
    pthread_mutex_lock(&a->mu);
    lm_reservation_t *r = a->open;
    while (r) {
        lm_reservation_t *next = r->next;
        if (r->deadline_ms <= rc->now_ms) {
            a->reserved = lm_sat_sub(a->reserved, r->amount);
            r->amount = 0;
            unlink_res(a, r);
            r->state = LM_RES_EXPIRED;
            rc->n++;
        }
        r = next;
    }
    pthread_mutex_unlock(&a->mu);
}

size_t lm_billing_reclaim(lm_store_t *st, int64_t now_ms)
{
    reclaim_t rc = {now_ms, 0};
    lm_store_acct_foreach(st, reclaim_acct, &rc);
    return rc.n;
}

void lm_billing_balance(lm_acct_t *a, lm_balance_t *out)
{
    pthread_mutex_lock(&a->mu);
    out->unlimited = a->unlimited;
    out->quota = a->quota;
    out->used = a->used;
    out->reserved = a->reserved;
    out->pending = a->pending;
    out->nopen = a->nopen;
    out->available = a->unlimited ? INT64_MAX : available(a);
    pthread_mutex_unlock(&a->mu);
}
