/* Money arithmetic at the INT64 extremes, cost and rounding, money parsing,
 * and the sliding-window rate limiter with an injected clock. */
#include "core/ratelimit.h"
#include "gov/billing.h"
#include "t.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

static void test_saturation(void)
{
    T_BEGIN("billing_saturating_arithmetic");
    T_CHECK(lm_sat_add(INT64_MAX, 1) == INT64_MAX, "max+1");
    T_CHECK(lm_sat_add(INT64_MAX, INT64_MAX) == INT64_MAX, "max+max");
    T_CHECK(lm_sat_add(INT64_MIN, -1) == INT64_MIN, "min-1");
    T_CHECK(lm_sat_add(INT64_MIN, INT64_MIN) == INT64_MIN, "min+min");
    T_CHECK(lm_sat_add(INT64_MAX, INT64_MIN) == -1, "max+min");
    T_CHECK(lm_sat_add(5, 7) == 12, "5+7");
    T_CHECK(lm_sat_sub(INT64_MIN, 1) == INT64_MIN, "min-1");
    T_CHECK(lm_sat_sub(INT64_MAX, -1) == INT64_MAX, "max-(-1)");
    T_CHECK(lm_sat_sub(0, INT64_MIN) == INT64_MAX, "0-min");
    T_CHECK(lm_sat_sub(-1, INT64_MAX) == INT64_MIN, "-1-max");
    T_CHECK(lm_sat_sub(-2, INT64_MAX) == INT64_MIN, "-2-max");
    T_CHECK(lm_sat_sub(10, 3) == 7, "10-3");
    T_CHECK(lm_sat_mul(INT64_MAX, 2) == INT64_MAX, "max*2");
    T_CHECK(lm_sat_mul(INT64_MIN, -1) == INT64_MAX, "min*-1");
    T_CHECK(lm_sat_mul(INT64_MIN, 2) == INT64_MIN, "min*2");
    T_CHECK(lm_sat_mul(INT64_MAX, -2) == INT64_MIN, "max*-2");
    T_CHECK(lm_sat_mul(-3, 4) == -12, "-3*4");
    T_CHECK(lm_sat_mul(0, INT64_MIN) == 0, "0*min");
    T_END();
}

static void test_cost(void)
{
    T_BEGIN("billing_cost_rounding");
    /* $2.50 / 1M input, $10 / 1M output, $1.25 / 1M cached, no fee */
    lm_price_t p = {2500000, 10000000, 1250000, 0};
    lm_tokens_t t = {1000, 500, 0, 0};
    /* 1000*2.5e6 + 500*1e7 = 2.5e9 + 5e9 = 7.5e9 / 1e6 = 7500 */
    T_CHECK(lm_billing_cost(&p, &t) == 7500, "plain %lld", (long long)lm_billing_cost(&p, &t));
    t = (lm_tokens_t){1000, 500, 400, 123}; /* reasoning is inside completion */
    /* 600*2.5e6 + 400*1.25e6 + 500*1e7 = 1.5e9 + 0.5e9 + 5e9 = 7e9 -> 7000 */
    T_CHECK(lm_billing_cost(&p, &t) == 7000, "cached %lld", (long long)lm_billing_cost(&p, &t));
    /* rounding up to the micro-unit: 1 token at 1 micro / 1M tokens costs 1 */
    lm_price_t tiny = {1, 1, 1, 0};
    t = (lm_tokens_t){1, 0, 0, 0};
    T_CHECK(lm_billing_cost(&tiny, &t) == 1, "ceil tiny");
    t = (lm_tokens_t){1000000, 0, 0, 0};
    T_CHECK(lm_billing_cost(&tiny, &t) == 1, "exact 1M");
    t = (lm_tokens_t){1000001, 0, 0, 0};
    T_CHECK(lm_billing_cost(&tiny, &t) == 2, "1M+1 rounds up");
    /* rounded once over the sum, not per component: 0.5 + 0.5 = 1 */
    lm_price_t half = {500000, 500000, 0, 0};
    t = (lm_tokens_t){1, 1, 0, 0};
    T_CHECK(lm_billing_cost(&half, &t) == 1, "sum then round");
    /* zero usage: only the per-request fee */
    lm_price_t fee = {2500000, 10000000, 1250000, 777};
    t = (lm_tokens_t){0, 0, 0, 0};
    T_CHECK(lm_billing_cost(&fee, &t) == 777, "fee only");
    T_CHECK(lm_billing_cost(&p, &t) == 0, "zero");
    /* negative counts are 0; cached > prompt is capped at prompt */
    t = (lm_tokens_t){-5, -5, -5, -5};
    T_CHECK(lm_billing_cost(&p, &t) == 0, "negative tokens");
    t = (lm_tokens_t){100, 0, 1000, 0};
    T_CHECK(lm_billing_cost(&p, &t) == 125, "cached capped %lld",
            (long long)lm_billing_cost(&p, &t));
    /* negative prices count as 0 and are refused by lm_price_check */
    lm_price_t neg = {-1, -1, -1, -1};
    t = (lm_tokens_t){1000, 1000, 0, 0};
    T_CHECK(lm_billing_cost(&neg, &t) == 0, "negative price");
    T_CHECK(lm_price_check(&neg) == -1 && lm_price_check(&p) == 0, "price check");
    T_END();

    T_BEGIN("billing_cost_int64_extremes");
    lm_price_t big = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX};
    lm_tokens_t bt = {INT64_MAX, INT64_MAX, INT64_MAX / 2, INT64_MAX};
    T_CHECK(lm_billing_cost(&big, &bt) == INT64_MAX, "saturates");
    lm_price_t fee_only = {0, 0, 0, INT64_MAX};
    T_CHECK(lm_billing_cost(&fee_only, &bt) == INT64_MAX, "fee max");
    /* just below the edge: INT64_MAX tokens at 1e6 (1 unit / 1M) = INT64_MAX
     * exactly */
    lm_price_t unit = {LM_MICRO, 0, 0, 0};
    lm_tokens_t mt = {INT64_MAX, 0, 0, 0};
    T_CHECK(lm_billing_cost(&unit, &mt) == INT64_MAX, "exact max");
    lm_price_t unit_fee = {LM_MICRO, 0, 0, 1};
    T_CHECK(lm_billing_cost(&unit_fee, &mt) == INT64_MAX, "max + fee saturates");
    mt = (lm_tokens_t){INT64_MAX - 1, 0, 0, 0};
    T_CHECK(lm_billing_cost(&unit, &mt) == INT64_MAX - 1, "max-1");
    T_CHECK(lm_billing_worst_case(&big, INT64_MAX, INT64_MAX) == INT64_MAX, "worst saturates");
    lm_price_t wp = {2500000, 10000000, 3000000, 5};
    /* worst case uses the dearer of input/cached input: 1000*3e6 + 100*1e7 = 4e9
     * -> 4000 + 5 */
    T_CHECK(lm_billing_worst_case(&wp, 1000, 100) == 4005, "worst %lld",
            (long long)lm_billing_worst_case(&wp, 1000, 100));
    T_CHECK(lm_billing_worst_case(&wp, -1, -1) == 5, "worst negative");
    T_END();
}

/* Unit prices (conf/priceunit.h): exact, rounded up once, saturated. */
static void test_unit_cost(void)
{
    T_BEGIN("billing_unit_cost");
    T_CHECK(lm_billing_unit_cost(2000000, 1000, 2) == 4000, "2 searches at 2 per 1k");
    T_CHECK(lm_billing_unit_cost(40000, 1, 3) == 120000, "3 images at 0.04");
    T_CHECK(lm_billing_unit_cost(1000000, 1000000, 5) == 5, "5 chars at 1 per 1M");
    T_CHECK(lm_billing_unit_cost(1, 1000000, 1) == 1, "rounded up");
    T_CHECK(lm_billing_unit_cost(5, 1, -3) == 0 && lm_billing_unit_cost(-5, 1, 3) == 0,
            "negatives");
    T_CHECK(lm_billing_unit_cost(INT64_MAX, 1, INT64_MAX) == INT64_MAX, "saturates");
    T_END();
}

static void test_money(void)
{
    T_BEGIN("billing_money_parse_format");
    int64_t v = -1;
    T_CHECK(lm_money_parse("0.5", &v) == 0 && v == 500000, "0.5 -> %lld", (long long)v);
    T_CHECK(lm_money_parse("12", &v) == 0 && v == 12000000, "12");
    T_CHECK(lm_money_parse("0.000001", &v) == 0 && v == 1, "1 micro");
    T_CHECK(lm_money_parse("9223372036854.775807", &v) == 0 && v == INT64_MAX, "max");
    T_CHECK(lm_money_parse("9223372036854.775808", &v) == -1, "max+1");
    T_CHECK(lm_money_parse("99999999999999999999", &v) == -1, "huge");
    T_CHECK(lm_money_parse("-1", &v) == -1, "negative");
    T_CHECK(lm_money_parse("1.0000001", &v) == -1, "7 fraction digits");
    T_CHECK(lm_money_parse("1.", &v) == -1 && lm_money_parse(".5", &v) == -1, "partial");
    T_CHECK(lm_money_parse("", &v) == -1 && lm_money_parse("1e3", &v) == -1, "junk");
    T_CHECK(lm_money_parse("1 ", &v) == -1 && lm_money_parse("'1", &v) == -1, "junk2");
    char buf[40];
    T_STREQ(lm_money_format(1500000, buf, sizeof(buf)), "1.500000");
    T_STREQ(lm_money_format(INT64_MAX, buf, sizeof(buf)), "9223372036854.775807");
    T_STREQ(lm_money_format(INT64_MIN, buf, sizeof(buf)), "-9223372036854.775808");
    T_STREQ(lm_money_format(-1, buf, sizeof(buf)), "-0.000001");
    T_END();
}

static void test_rl_burst(void)
{
    lm_rl_t rl;
    lm_rl_limits_t lim = {10, 0, 0};
    lm_rl_ticket_t tk;
    int why, admitted = 0;
    int64_t t0 = 1700000000500; /* half way through a second */

    T_BEGIN("ratelimit_rpm_burst_exact");
    lm_rl_init(&rl);
    int64_t retry = 0;
    for (int i = 0; i < 20; i++) {
        int64_t r = lm_rl_admit(&rl, &lim, t0 + i, 0, &tk, &why);
        if (r == 0) {
            admitted++;
            lm_rl_finish(&rl, &tk, 0);
        } else {
            retry = r;
            T_CHECK(why == LM_RL_RPM, "why %d", why);
        }
    }
    T_CHECK(admitted == 10, "admitted %d of 20, want exactly 10", admitted);
    /* the first bucket leaves at t0 - 500 + 60 s: 59.5 s -> 60 s */
    T_CHECK(retry == 60, "retry-after %lld", (long long)retry);
    T_CHECK(lm_rl_admit(&rl, &lim, t0 - 500 + 59999, 0, &tk, &why) > 0, "still full 1 ms before");
    T_CHECK(lm_rl_admit(&rl, &lim, t0 - 500 + 60000, 0, &tk, &why) == 0, "free after the window");
    lm_rl_finish(&rl, &tk, 0);
    lm_rl_destroy(&rl);
    T_END();

    T_BEGIN("ratelimit_sliding_window");
    lm_rl_init(&rl);
    int64_t base = 1000000; /* ms, second 1000 */
    for (int i = 0; i < 5; i++)
        T_CHECK(lm_rl_admit(&rl, &lim, base, 0, NULL, NULL) == 0, "first 5");
    for (int i = 0; i < 5; i++)
        T_CHECK(lm_rl_admit(&rl, &lim, base + 30000, 0, NULL, NULL) == 0, "next 5 at +30s");
    retry = lm_rl_admit(&rl, &lim, base + 59900, 0, NULL, &why);
    T_CHECK(retry == 1 && why == LM_RL_RPM, "full at +59.9s, retry %lld", (long long)retry);
    /* at +60 s the first five left the window, the other five stay until +90 s */
    admitted = 0;
    for (int i = 0; i < 10; i++)
        admitted += lm_rl_admit(&rl, &lim, base + 60000, 0, NULL, NULL) == 0;
    T_CHECK(admitted == 5, "at +60s admitted %d, want 5 (sliding, not fixed)", admitted);
    retry = lm_rl_admit(&rl, &lim, base + 60000, 0, NULL, &why);
    T_CHECK(retry == 30, "retry-after %lld, want 30", (long long)retry);
    int64_t reqs, toks, infl;
    lm_rl_usage(&rl, base + 60000, &reqs, &toks, &infl);
    T_CHECK(reqs == 10 && infl == 15, "usage %lld %lld", (long long)reqs, (long long)infl);
    lm_rl_destroy(&rl);
    T_END();
}

static void test_rl_tokens_conc(void)
{
    lm_rl_t rl;
    lm_rl_ticket_t a, b, c;
    int why;
    int64_t now = 5000000;

    T_BEGIN("ratelimit_tpm");
    lm_rl_init(&rl);
    lm_rl_limits_t lim = {0, 1000, 0};
    T_CHECK(lm_rl_admit(&rl, &lim, now, 400, &a, &why) == 0, "a");
    T_CHECK(lm_rl_admit(&rl, &lim, now, 400, &b, &why) == 0, "b");
    T_CHECK(lm_rl_admit(&rl, &lim, now, 400, &c, &why) > 0 && why == LM_RL_TPM, "c refused");
    lm_rl_finish(&rl, &a, 100); /* a used less than estimated: 100 + 400 booked */
    T_CHECK(lm_rl_admit(&rl, &lim, now + 10, 400, &c, &why) == 0, "c after correction");
    T_CHECK(lm_rl_admit(&rl, &lim, now + 10, 2000, NULL, &why) == 60 && why == LM_RL_TOO_LARGE,
            "too large");
    lm_rl_finish(&rl, &b, 400);
    lm_rl_finish(&rl, &c, 400);
    lm_rl_finish(&rl, &c, 400); /* second finish of a ticket is ignored */
    int64_t reqs, toks, infl;
    lm_rl_usage(&rl, now + 10, &reqs, &toks, &infl);
    T_CHECK(toks == 900 && infl == 0, "toks %lld inflight %lld", (long long)toks, (long long)infl);
    T_CHECK(lm_rl_admit(&rl, &lim, now + 60000, 1000, NULL, &why) == 0, "window slid");
    lm_rl_destroy(&rl);
    T_END();

    T_BEGIN("ratelimit_concurrency");
    lm_rl_init(&rl);
    lm_rl_limits_t cl = {0, 0, 2};
    T_CHECK(lm_rl_admit(&rl, &cl, now, 0, &a, &why) == 0, "a");
    T_CHECK(lm_rl_admit(&rl, &cl, now, 0, &b, &why) == 0, "b");
    T_CHECK(lm_rl_admit(&rl, &cl, now, 0, &c, &why) == 1 && why == LM_RL_CONC, "c capped");
    lm_rl_finish(&rl, &a, 0);
    T_CHECK(lm_rl_admit(&rl, &cl, now, 0, &c, &why) == 0, "c after a finished");
    lm_rl_finish(&rl, &b, 0);
    lm_rl_finish(&rl, &c, 0);
    lm_rl_destroy(&rl);
    T_END();
}

typedef struct {
    lm_rl_t *rl;
    pthread_barrier_t *bar;
    atomic_int *ok;
} rl_thr_t;

static void *rl_thread(void *arg)
{
    rl_thr_t *t = arg;
    lm_rl_limits_t lim = {100, 0, 0};
    pthread_barrier_wait(t->bar);
    for (int i = 0; i < 50; i++)
        if (lm_rl_admit(t->rl, &lim, 42000, 0, NULL, NULL) == 0)
            atomic_fetch_add(t->ok, 1);
    return NULL;
}

static void test_rl_threads(void)
{
    T_BEGIN("ratelimit_threads_exact");
    lm_rl_t rl;
    pthread_barrier_t bar;
    atomic_int ok = 0;
    pthread_t th[16];
    rl_thr_t arg;
    lm_rl_init(&rl);
    pthread_barrier_init(&bar, NULL, 16);
    arg = (rl_thr_t){&rl, &bar, &ok};
    for (int i = 0; i < 16; i++)
        pthread_create(&th[i], NULL, rl_thread, &arg);
    for (int i = 0; i < 16; i++)
        pthread_join(th[i], NULL);
    T_CHECK(atomic_load(&ok) == 100, "admitted %d of 800, want 100", atomic_load(&ok));
    pthread_barrier_destroy(&bar);
    lm_rl_destroy(&rl);
    T_END();
}

int main(void)
{
    test_saturation();
    test_cost();
    test_money();
    test_unit_cost();
    test_rl_burst();
    test_rl_tokens_conc();
    test_rl_threads();
    T_EXIT();
}
