/* gov.c - governance of one request: authentication (config or virtual
 * key), admission (models, CIDRs, limits, quota hold) and settlement into
 * the ledger (gov.h). Thread: the request's worker; never blocks. */
#include "gov/gov.h"
#include "core/bearer.h"
#include "core/clock.h"

#include "conf/priceunit.h"
#include "core/errors.h"
#include "core/log.h"
#include "gov/auth.h"
#include "proto/endpoint.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define LM_GOV_SECRET_MAX 512              /* longer tokens are no store key (lm_store_key_find) */
#define LM_HOLD_MS        (15 * 60 * 1000) /* quota holds expire after 15 min (reclaimed) */

int lm_gov_auth(lm_gov_t *g, const lm_conf_t *conf, lm_store_t *st, const char *authz,
                const struct sockaddr *peer, lm_err *e)
{
    size_t n;
    memset(g, 0, sizeof(*g));
    g->store = st;
    g->store_wait_ms = conf->store_wait_ms;
    g->store_fail_open = conf->store_fail_open;
    /* one SHA-256 of the token for both key sets (about 6k instructions) */
    const char *secret = lm_bearer_token(authz, &n);
    unsigned char digest[32];
    if (secret) {
        SHA256((const unsigned char *)secret, n, digest);
        g->ckey = lm_auth_check_digest(conf, digest);
        if (g->ckey == NULL && st && n <= LM_GOV_SECRET_MAX)
            g->key = lm_store_key_find_hash(st, digest);
        OPENSSL_cleanse(digest, sizeof(digest));
    }
    if (g->ckey) {
        g->key_name = g->ckey->name;
        return 0;
    }
    if (g->key == NULL || lm_key_usable(g->key, (int64_t)time(NULL)) != LM_KEY_OK)
        return lm_err_set(e, -1, 401, "invalid_request_error", "invalid_api_key",
                          "missing, invalid, disabled or expired API key "
                          "(send Authorization: Bearer <key>)");
    g->key_name = g->key->name;
    if (peer && !lm_key_addr_allowed(g->key, peer))
        return lm_err_set(e, -1, 403, "permission_error", "ip_not_allowed",
                          "this key may not be used from this address");
    return 0;
}

void lm_gov_price(const lm_conf_t *c, const lm_chan_conf_t *ch, const char *upstream_model,
                  lm_price_t *p)
{
    lm_conf_price(c, ch, upstream_model, &p->input, &p->output, &p->cached_input, &p->per_request);
}

int64_t lm_gov_unit_cost(const lm_conf_t *c, const lm_chan_conf_t *ch, const char *upstream_model,
                         int op, const json_t *canon)
{
    int unit;
    int64_t per_unit;
    lm_conf_price_unit(c, ch, upstream_model, &unit, &per_unit);
    if (unit == LM_UNIT_TOKENS || per_unit == 0)
        return 0;
    return lm_billing_unit_cost(per_unit, lm_price_unit_divisor(unit),
                                lm_endpoint_units(op, canon, unit));
}

int lm_gov_admit(lm_gov_t *g, const char *model, const lm_price_t *price, int64_t unit_cost,
                 int64_t prompt_est, int64_t max_tokens, int64_t *retry_after, lm_err *e)
{
    *retry_after = 0;
    g->price = *price;
    if (g->key == NULL)
        return 0; /* config keys are trusted bootstrap keys: no limits */
    if (!lm_key_model_allowed(g->key, model))
        return lm_err_set(e, -1, 403, "permission_error", "model_not_allowed",
                          "this key may not use model '%.128s'", model);
    /* unit prices (images, searches, characters) are known before the
     * call: held in full, so a small balance cannot start what it cannot pay */
    int64_t worst = lm_sat_add(lm_billing_worst_case(&g->price, prompt_est, max_tokens),
                               unit_cost > 0 ? unit_cost : 0);
    /* DB-4: a charge the store could not commit within store_wait is not
     * taken on (on_store_failure closed, the default); requests that bill
     * nothing go on regardless, and with on_store_failure open billed ones
     * too while the spool has room: their rows go to it and are replayed */
    if (worst > 0 && g->store && (!g->store_fail_open || lm_store_spool_full(g->store)) &&
        lm_store_stall_ms(g->store) >= g->store_wait_ms) {
        *retry_after = 1;
        return lm_err_set(e, -1, 503, "api_error", "store_unavailable",
                          "the usage store cannot record charges right now; retry later");
    }
    lm_rl_limits_t lim = {g->key->rpm, g->key->tpm, g->key->max_concurrent};
    int why = 0;
    int64_t now = (int64_t)lm_clock_ms();
    int64_t wait =
        lm_rl_admit(&g->key->acct->rl, &lim, now, prompt_est + max_tokens, &g->ticket, &why);
    if (wait > 0) {
        *retry_after = wait;
        return lm_err_set(e, -1, 429, "rate_limit_error", "rate_limit_exceeded",
                          "rate limit reached for this key; retry after %lld s", (long long)wait);
    }
    g->admitted = 1;
    g->worst = worst;
    if (lm_billing_reserve(g->key, worst, now + LM_HOLD_MS, &g->res) != LM_BILLING_OK) {
        g->res = NULL;
        return lm_err_set(e, -1, 429, "insufficient_quota", "insufficient_quota",
                          "this key's quota does not cover the request");
    }
    return 0;
}

/* What the store knows this key spent (committed + queued): the seed of
 * the shared spend when Redis has none (first use, or Redis restarted). */
static int64_t seed_used(const lm_key_t *k)
{
    pthread_mutex_lock(&k->acct->mu);
    int64_t v = lm_sat_add(k->acct->used, k->acct->pending);
    pthread_mutex_unlock(&k->acct->mu);
    return v;
}

int lm_gov_shared_admit(lm_gov_t *g, lm_shared_t *sh, const char *req_id, lm_redis_done_fn done,
                        void *arg)
{
    if (sh == NULL || g->key == NULL)
        return 0;
    g->shared = sh;
    g->sh_ok = 0;
    int64_t est = g->ticket.active ? g->ticket.est_tokens : 0;
    return lm_shared_admit(sh, g->key, req_id, est, g->worst, seed_used(g->key), &g->sticket, done,
                           arg) == 0
               ? 1
               : -1;
}

void lm_gov_shared_answer(lm_gov_t *g, const lm_redis_ans_t *a)
{
    g->sh_ok = a->ok && a->nints >= 1;
    g->sh_ints[0] = a->nints >= 1 ? a->ints[0] : -1;
    g->sh_ints[1] = a->nints >= 2 ? a->ints[1] : 0;
}

int lm_gov_shared_result(lm_gov_t *g, int64_t *retry_after, lm_err *e)
{
    *retry_after = 0;
    if (!g->sh_ok) {
        if (lm_shared_fail_open(g->shared)) {
            lm_log(LM_LOG_WARN, "%s: shared counters unreachable; admitted on local counters",
                   g->sticket.req_id);
            /* its spend still goes to Redis (settle is kept and replayed) */
            g->sticket.active = 1;
            g->sticket.held = !g->key->unlimited;
            return 0;
        }
        *retry_after = 1;
        return lm_err_set(e, -1, 503, "api_error", "counters_unavailable",
                          "the shared usage counters cannot be reached; retry later");
    }
    if (g->sh_ints[0] == 0) {
        g->sticket.active = 1;
        g->sticket.held = !g->key->unlimited;
        return 0;
    }
    if (g->sh_ints[0] == 1) {
        *retry_after = g->sh_ints[1] > 0 ? g->sh_ints[1] : 1;
        return lm_err_set(e, -1, 429, "rate_limit_error", "rate_limit_exceeded",
                          "rate limit reached for this key; retry after %lld s",
                          (long long)*retry_after);
    }
    return lm_err_set(e, -1, 429, "insufficient_quota", "insufficient_quota",
                      "this key's quota does not cover the request");
}

int64_t lm_gov_cost(const lm_price_t *p, const lm_usage *u)
{
    lm_tokens_t t = {u->prompt > 0 ? u->prompt : 0, u->completion > 0 ? u->completion : 0,
                     u->cached > 0 ? u->cached : 0, u->reasoning > 0 ? u->reasoning : 0};
    return lm_billing_cost(p, &t);
}

int lm_gov_settle(lm_gov_t *g, int64_t cost, const lm_usage_row_t *row, const lm_store_cb_t *cb)
{
    if (g->store == NULL) {
        if (g->res)
            lm_billing_cancel(g->res);
        g->res = NULL;
        return -1;
    }
    lm_reservation_t *res = g->res;
    g->res = NULL; /* settle frees it whatever the outcome */
    if (g->key && g->sticket.held)
        lm_shared_settle(g->shared, &g->sticket, cost, seed_used(g->key));
    /* DB-4: only a charge against a stored balance is worth holding a reply
     * for; any other row is queued and the reply goes at once */
    int billed = res != NULL && cost > 0;
    int rc = lm_billing_settle(g->store, res, cost, row, billed ? cb : NULL);
    if (rc != LM_STORE_OK) {
        lm_log(LM_LOG_ERROR, "%s: usage row not queued (%s): cost %lld micro-units unrecorded",
               row->request_id, lm_store_strerror(rc), (long long)cost);
        return -1;
    }
    return billed ? 0 : 1;
}

void lm_gov_shared_charge(lm_gov_t *g, lm_shared_t *sh, const char *req_id, int64_t cost)
{
    if (sh != NULL && g->key != NULL && cost > 0)
        lm_shared_charge(sh, g->key->id, req_id, cost, seed_used(g->key));
}

void lm_gov_record_attempt(lm_gov_t *g, const lm_usage_row_t *row)
{
    if (g->store == NULL)
        return;
    lm_usage_row_t copy = *row;
    copy.cost = 0;
    copy.key_id = g->key ? g->key->id : 0;
    int rc = lm_store_usage_submit(g->store, &copy, NULL);
    if (rc != LM_STORE_OK)
        lm_log(LM_LOG_WARN, "%s: attempt %lld row not queued (%s)", row->request_id,
               (long long)row->attempt, lm_store_strerror(rc));
}

void lm_gov_end(lm_gov_t *g, int64_t actual_tokens)
{
    if (g->res)
        lm_billing_cancel(g->res);
    g->res = NULL;
    if (g->key && g->admitted)
        lm_rl_finish(&g->key->acct->rl, &g->ticket, actual_tokens);
    lm_shared_finish(g->shared, &g->sticket, actual_tokens);
    g->admitted = 0;
    if (g->key)
        lm_key_release(g->key);
    g->key = NULL;
}
