/*
 * billing.h - money arithmetic, prices and cost, and the admission /
 * settlement of a key's balance (QB-1, QB-2).
 *
 * Money is int64 micro-units. Every operation here saturates at INT64_MIN /
 * INT64_MAX instead of overflowing.
 *
 * Cost (lm_billing_cost): prices are micro-units per 1,000,000 tokens.
 *   cached tokens are a subset of prompt tokens (OpenAI convention): the
 *   uncached prompt tokens (prompt - cached, >= 0) pay `input`, the cached
 *   ones pay `cached_input`; completion tokens pay `output`; reasoning
 *   tokens are already inside completion tokens and are not billed again.
 *   cost = ceil(sum of token x price / 1,000,000) + per_request, computed
 *   exactly in 128 bits and rounded UP once to the micro-unit (a non-zero
 *   usage never costs 0 when its price is non-zero), then saturated.
 *   Negative token counts count as 0; negative prices are refused at config
 *   time (lm_price_check) and count as 0 here.
 *
 * Balance of a limited key = quota - used - reserved - pending >= 0 always:
 *   reserve   holds the worst case while the request runs (refused if the
 *             balance does not cover it);
 *   settle    releases the hold and bills the actual cost, capped at what
 *             the balance can pay (the ledger row records the billed
 *             amount, so Σ rows == Δ used exactly); the amount stays
 *             `pending` until the writer commits the row, then moves to
 *             `used` (or back to the balance if the row was a replay);
 *   cancel    releases the hold (refused before any upstream attempt);
 *   reclaim   releases holds past their deadline (the request can still
 *             settle later; it is then billed from the balance).
 * Reservations live in memory only: after a crash there are none to
 * reclaim, and used (in the DB) is the committed truth.
 */
#ifndef LM_BILLING_H
#define LM_BILLING_H
#include "core/money.h"
#include "store/store.h"

#include <stdint.h>

typedef struct lm_price_s {
    int64_t input;        /* micro-units per 1M uncached prompt tokens */
    int64_t output;       /* micro-units per 1M completion tokens */
    int64_t cached_input; /* micro-units per 1M cached prompt tokens (set = input
                             if the provider has no cache discount) */
    int64_t per_request;  /* micro-units per billed attempt */
} lm_price_t;

typedef struct lm_tokens_s {
    int64_t prompt, completion, cached, reasoning;
} lm_tokens_t;

/* The cost of `units` at per_unit micro-units per `divisor` units (a unit
 * price line, conf/priceunit.h: 1000 searches, 1 image, ...), rounded up to
 * the micro-unit; units are capped at 2^40, the result saturates. */
int64_t lm_billing_unit_cost(int64_t per_unit, int64_t divisor, int64_t units);
/* 0 if every price is >= 0, else -1. */
int lm_price_check(const lm_price_t *p);
int64_t lm_billing_cost(const lm_price_t *p, const lm_tokens_t *t);
/* Worst case of one attempt: prompt_estimate uncached (or cached, if that is
 * dearer) + max_output completion tokens + per_request. */
int64_t lm_billing_worst_case(const lm_price_t *p, int64_t prompt_estimate, int64_t max_output);

/* ------------------------------------------------------------------------ */
enum { LM_RES_OPEN = 0, LM_RES_EXPIRED, LM_RES_DONE };
typedef struct lm_reservation_s {
    lm_acct_t *acct;
    int64_t key_id;
    int64_t amount;      /* still held */
    int64_t deadline_ms; /* same clock as lm_billing_reclaim's now_ms */
    int state;           /* LM_RES_* (under acct->mu) */
    struct lm_reservation_s *prev, *next;
} lm_reservation_t;

enum {
    LM_BILLING_OK = 0,
    LM_BILLING_EQUOTA = -20, /* balance does not cover the amount: 429 insufficient_quota */
    LM_BILLING_EINVAL = -21,
};

/* Hold `amount` (>= 0) against key's balance until settle/cancel or
 * deadline_ms. Atomic under the account mutex. *out is owned by the caller
 * until lm_billing_settle or lm_billing_cancel frees it. Any thread. */
int lm_billing_reserve(lm_key_t *key, int64_t amount, int64_t deadline_ms, lm_reservation_t **out);
/* Move the deadline (long streams). */
void lm_billing_extend(lm_reservation_t *r, int64_t deadline_ms);
/* Bill one attempt that is not the last (retry/fallback follows): cost is
 * taken from the hold first, then from the balance; the reservation stays
 * open. row->key_id and row->cost are set here (row is not modified: a copy
 * is queued). Returns an LM_STORE_* code from the queue; on failure nothing
 * is billed. cb as for lm_store_usage_submit. */
int lm_billing_charge(lm_store_t *st, lm_reservation_t *r, int64_t cost, const lm_usage_row_t *row,
                      const lm_store_cb_t *cb);
/* Bill the last attempt and end the reservation (frees r, whatever the
 * result). row may be NULL (nothing to record: same as cancel). r may be
 * NULL (a key that is not in the store, row->key_id 0): the row is queued
 * as given, with no balance change. */
int lm_billing_settle(lm_store_t *st, lm_reservation_t *r, int64_t cost, const lm_usage_row_t *row,
                      const lm_store_cb_t *cb);
/* Release without billing; frees r. */
void lm_billing_cancel(lm_reservation_t *r);
/* Release every open reservation whose deadline <= now_ms; returns how many.
 * Call periodically (e.g. every 10 s from a timer). Any thread. */
size_t lm_billing_reclaim(lm_store_t *st, int64_t now_ms);

typedef struct lm_balance_s {
    int unlimited;
    int64_t quota, used, reserved, pending, nopen;
    int64_t available; /* quota - used - reserved - pending (INT64_MAX if
                          unlimited) */
} lm_balance_t;
void lm_billing_balance(lm_acct_t *a, lm_balance_t *out);
#endif
