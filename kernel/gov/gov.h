/*
 * gov.h - governance for one request: who is calling (config key or a
 * virtual key from the store), whether it may (model list, source address,
 * rpm/tpm/concurrency, quota reservation), and what it costs afterwards
 * (settlement into the ledger). Thread: the request's worker; the store
 * and billing calls it makes never block.
 */
#ifndef LM_GOV_H
#define LM_GOV_H
#include "conf/conf.h"
#include "gov/billing.h"
#include "gov/shared.h"
#include "longmen.h"
#include "store/store.h"

#include <stdbool.h>

struct sockaddr;

typedef struct lm_gov_s {
    lm_store_t *store;         /* borrowed; NULL without data_dir */
    const lm_key_conf_t *ckey; /* a config key (borrowed from the generation) */
    lm_key_t *key;             /* a virtual key (one reference), or NULL */
    const char *key_name;      /* for logs and scripts */
    lm_rl_ticket_t ticket;     /* rate-limit booking, finished at the end */
    int admitted;
    lm_reservation_t *res; /* open quota hold, or NULL */
    lm_price_t price;      /* of the channel that served */
    int store_wait_ms;     /* the generation's store_wait (DB-4) */
    bool store_fail_open;  /* on_store_failure open: a stalled store does not refuse */
    int64_t worst;         /* the admitted worst case (the quota hold) */
    lm_shared_t *shared;   /* borrowed: shared counters (Redis), or NULL */
    lm_shared_ticket_t sticket;
    int sh_ok;          /* Redis answered (written on the Redis thread, read after the */
    int64_t sh_ints[2]; /* worker's event fires) */
} lm_gov_t;

/* Who is calling: 0, or -1 with e filled (401 unknown/disabled/expired
 * key, 403 source address not allowed). */
int lm_gov_auth(lm_gov_t *g, const lm_conf_t *conf, lm_store_t *st, const char *authz,
                const struct sockaddr *peer, lm_err *e);
/* The prices of upstream_model on channel ch (lm_conf_price's order). */
void lm_gov_price(const lm_conf_t *c, const lm_chan_conf_t *ch, const char *upstream_model,
                  lm_price_t *p);
/* The unit-priced part of a request's cost (a `price GLOB AMOUNT UNIT`
 * line of ch matching upstream_model, conf/priceunit.h): the units request
 * canon of op counts (proto/endpoint.h) at that price; 0 without such a
 * line. The units come from the request alone, so the admission hold and
 * the settled charge agree. */
int64_t lm_gov_unit_cost(const lm_conf_t *c, const lm_chan_conf_t *ch, const char *upstream_model,
                         int op, const json_t *canon);
/* Admission for `model` at `price` (the first candidate's) plus unit_cost
 * (lm_gov_unit_cost, held on top of the token worst case): model allowed
 * (403), the store able to record a charge (503 store_unavailable with
 * *retry_after 1 when a virtual key's request would cost something and the
 * store has not committed for store_wait: DB-4), rate limits (429 with
 * *retry_after seconds), worst-case quota hold (429 insufficient_quota).
 * 0, or -1 with e filled. */
int lm_gov_admit(lm_gov_t *g, const char *model, const lm_price_t *price, int64_t unit_cost,
                 int64_t prompt_est, int64_t max_tokens, int64_t *retry_after, lm_err *e);
/* After lm_gov_admit: ask the shared counters (docs/redis.md). Returns 1
 * when queued (done runs on the Redis thread: call lm_gov_shared_answer
 * there, then lm_gov_shared_result on the worker), 0 when there is nothing
 * to ask (no Redis, a config key), -1 when it could not be queued (then
 * call lm_gov_shared_result as if Redis were down). */
int lm_gov_shared_admit(lm_gov_t *g, lm_shared_t *sh, const char *req_id, lm_redis_done_fn done,
                        void *arg);
/* Redis thread: keep the answer. */
void lm_gov_shared_answer(lm_gov_t *g, const lm_redis_ans_t *a);
/* Worker: the answer as admission. 0 admitted (or Redis down with
 * on_store_failure open: local counters only), else -1 with e: 429
 * rate_limit_exceeded (*retry_after) or insufficient_quota, or 503
 * counters_unavailable (Redis down, closed). */
int lm_gov_shared_result(lm_gov_t *g, int64_t *retry_after, lm_err *e);
/* The charge for usage at price p (micro-units, saturating). */
int64_t lm_gov_cost(const lm_price_t *p, const lm_usage *u);
/* Settle: record the row (cost from lm_gov_cost, maybe replaced by a
 * script) and release the hold. A billed row (a virtual key, cost > 0)
 * reports to cb once it is committed or spooled (DB-1, DB-4): returns 0
 * and cb will fire. A row that bills nothing (a config key, or cost 0) is
 * queued without cb, so its reply never waits on the store: returns 1.
 * -1 when nothing was queued (no store, or the queue is full: the hold is
 * released, the row is logged). */
int lm_gov_settle(lm_gov_t *g, int64_t cost, const lm_usage_row_t *row, const lm_store_cb_t *cb);
/* A charge under g's key with no shared admission of its own (a script's
 * side call) added to the key's shared spend in sh (docs/redis.md), once
 * per req_id. Call before the charge is settled locally, as lm_gov_settle
 * does, so the seed of an empty Redis does not count it twice. No-op
 * without sh, a key or a cost. */
void lm_gov_shared_charge(lm_gov_t *g, lm_shared_t *sh, const char *req_id, int64_t cost);
/* The request ended: release what is still held. */
void lm_gov_end(lm_gov_t *g, int64_t actual_tokens);
/* A ledger row for an attempt that failed before any output (cost 0, the
 * quota hold stays open for the next attempt). No-op without a store. */
void lm_gov_record_attempt(lm_gov_t *g, const lm_usage_row_t *row);
#endif
