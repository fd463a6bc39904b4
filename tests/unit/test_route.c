/*
 * test_route.c - channel selection and passive health (kernel/route/route.c):
 * weights, round robin, least in-flight, lowest latency and cost, ejection,
 * cool-down growth, half-open probes, recovery, caps, thread safety.
 */
#include "route/route.h"
#include "t.h"

#include <pthread.h>
#include <stdlib.h>

static uint64_t rng_state = 42;

static uint64_t rnd(void *arg)
{
    return lm_route_rand_xorshift(arg);
}

/* Fail a pair k times at time now. */
static lm_route_event_t fail_n(lm_route_stats_t *s, int64_t now, int k)
{
    lm_route_event_t ev = LM_ROUTE_EV_NONE;
    for (int i = 0; i < k; i++) {
        if (lm_route_begin(s, now) == 0)
            ev = lm_route_end(s, now, LM_ROUTE_FAIL, 10, -1);
    }
    return ev;
}

static void test_weights(void)
{
    T_BEGIN("route_weights_within_5pct");
    lm_route_cand_t c[3] = {{"a", 0, 1, 0, NULL}, {"b", 0, 3, 0, NULL}, {"c", 0, 6, 0, NULL}};
    int first[3] = {0}, second_after_c[3] = {0}, nc = 0;
    size_t order[3];
    const int N = 10000;
    for (int i = 0; i < N; i++) {
        T_CHECK(lm_route_select(c, 3, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 0, order) == 3,
                "count");
        first[order[0]]++;
        if (order[0] == 2) {
            second_after_c[order[1]]++;
            nc++;
        }
    }
    const double want[3] = {0.1, 0.3, 0.6};
    for (int i = 0; i < 3; i++) {
        double got = (double)first[i] / N;
        T_CHECK(got > want[i] * 0.95 && got < want[i] * 1.05, "channel %d: %.4f vs %.2f", i, got,
                want[i]);
    }
    /* Without replacement: after c, a:b is 1:3. */
    double b_share = (double)second_after_c[1] / nc;
    T_CHECK(b_share > 0.70 && b_share < 0.80, "second draw b share %.3f", b_share);
    T_END();
}

static void test_tiers(void)
{
    T_BEGIN("route_priority_tiers");
    lm_route_cand_t c[3] = {
        {"backup", 1, 100, 0, NULL}, {"a", 0, 1, 0, NULL}, {"b", 0, 1, 0, NULL}};
    size_t order[3];
    for (int i = 0; i < 200; i++) {
        lm_route_select(c, 3, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 0, order);
        T_CHECK(order[2] == 0, "backup tier must come last, got %zu", order[2]);
    }
    T_END();
}

static void test_round_robin(void)
{
    T_BEGIN("route_round_robin_exact");
    lm_route_group_t g;
    lm_route_group_init(&g);
    lm_route_cand_t c[3] = {{"a", 0, 1, 0, NULL}, {"b", 0, 5, 0, NULL}, {"c", 0, 1, 0, NULL}};
    size_t order[3];
    for (int i = 0; i < 300; i++) {
        lm_route_select(c, 3, LM_ROUTE_ROUND_ROBIN, &g, rnd, &rng_state, 0, order);
        T_CHECK(order[0] == (size_t)(i % 3), "pick %d: %zu", i, order[0]);
        T_CHECK(order[1] == (size_t)((i + 1) % 3), "fallback %d: %zu", i, order[1]);
    }
    T_END();
}

static void test_least_inflight(void)
{
    T_BEGIN("route_least_inflight");
    lm_route_stats_t s[3];
    for (int i = 0; i < 3; i++)
        lm_route_stats_init(&s[i], NULL, NULL);
    lm_route_cand_t c[3] = {{"a", 0, 1, 0, &s[0]}, {"b", 0, 1, 0, &s[1]}, {"c", 0, 1, 0, &s[2]}};
    lm_route_begin(&s[0], 0);
    lm_route_begin(&s[0], 0);
    lm_route_begin(&s[1], 0);
    size_t order[3];
    lm_route_select(c, 3, LM_ROUTE_LEAST_INFLIGHT, NULL, rnd, &rng_state, 0, order);
    T_CHECK(order[0] == 2 && order[1] == 1 && order[2] == 0, "order %zu %zu %zu", order[0],
            order[1], order[2]);
    lm_route_begin(&s[2], 0);
    lm_route_begin(&s[2], 0);
    lm_route_begin(&s[2], 0);
    lm_route_select(c, 3, LM_ROUTE_LEAST_INFLIGHT, NULL, rnd, &rng_state, 0, order);
    T_CHECK(order[0] == 1, "first %zu", order[0]);
    for (int i = 0; i < 3; i++)
        lm_route_stats_free(&s[i]);
    T_END();
}

static void test_lowest_latency_cost(void)
{
    T_BEGIN("route_lowest_latency_and_cost");
    lm_route_stats_t s[3];
    for (int i = 0; i < 3; i++)
        lm_route_stats_init(&s[i], NULL, NULL);
    lm_route_cand_t c[3] = {
        {"a", 0, 1, 300, &s[0]}, {"b", 0, 1, 100, &s[1]}, {"c", 0, 1, 200, &s[2]}};
    const int64_t ttft[3] = {500, 900, 120};
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < 10; k++) {
            lm_route_begin(&s[i], 0);
            lm_route_end(&s[i], 0, LM_ROUTE_OK, 2000, ttft[i]);
        }
    }
    size_t order[3];
    lm_route_select(c, 3, LM_ROUTE_LOWEST_LATENCY, NULL, rnd, &rng_state, 0, order);
    T_CHECK(order[0] == 2 && order[1] == 0 && order[2] == 1, "latency order %zu %zu %zu", order[0],
            order[1], order[2]);
    /* EWMA, alpha 0.2: one slow sample of 1120 on c moves it to 320 */
    lm_route_begin(&s[2], 0);
    lm_route_end(&s[2], 0, LM_ROUTE_OK, 2000, 1120);
    lm_route_snap_t snap;
    lm_route_snapshot(&s[2], 0, &snap);
    T_CHECK(snap.ewma_ttft_ms > 319.9 && snap.ewma_ttft_ms < 320.1, "ewma %f", snap.ewma_ttft_ms);
    lm_route_select(c, 3, LM_ROUTE_LOWEST_LATENCY, NULL, rnd, &rng_state, 0, order);
    T_CHECK(order[0] == 2, "still fastest %zu", order[0]);
    lm_route_select(c, 3, LM_ROUTE_LOWEST_COST, NULL, rnd, &rng_state, 0, order);
    T_CHECK(order[0] == 1 && order[1] == 2 && order[2] == 0, "cost order %zu %zu %zu", order[0],
            order[1], order[2]);
    for (int i = 0; i < 3; i++)
        lm_route_stats_free(&s[i]);
    T_END();
}

static void test_ejection_and_growth(void)
{
    T_BEGIN("route_eject_after_5_and_cooldown_growth");
    lm_route_stats_t s;
    lm_route_stats_init(&s, NULL, NULL);
    T_CHECK(fail_n(&s, 1000, 4) == LM_ROUTE_EV_NONE, "4 failures must not eject");
    T_CHECK(lm_route_healthy(&s, 1000), "healthy after 4");
    T_CHECK(fail_n(&s, 1000, 1) == LM_ROUTE_EV_EJECT_CONSECUTIVE, "5th failure ejects");
    T_CHECK(!lm_route_healthy(&s, 1000), "ejected");
    lm_route_snap_t snap;
    lm_route_snapshot(&s, 1000, &snap);
    T_CHECK(snap.state == LM_ROUTE_EJECTED && snap.ejected_until == 31000 && snap.ejections == 1,
            "first cool-down 30 s: until %lld", (long long)snap.ejected_until);
    T_CHECK(!lm_route_healthy(&s, 30999), "still ejected at 29.999 s");
    T_CHECK(lm_route_healthy(&s, 31000), "half-open at 30 s");
    /* The probe fails: ejected again for 2 x 30 s. */
    T_CHECK(fail_n(&s, 31000, 1) == LM_ROUTE_EV_PROBE_FAILED, "probe failure re-ejects");
    lm_route_snapshot(&s, 31000, &snap);
    T_CHECK(snap.ejected_until == 31000 + 60000 && snap.ejections == 2, "second cool-down 60 s");
    fail_n(&s, 91000, 1);
    lm_route_snapshot(&s, 91000, &snap);
    T_CHECK(snap.ejected_until == 91000 + 90000 && snap.ejections == 3, "third cool-down 90 s");
    /* Cap: 300 s (the 10th ejection would be 300 s, the 13th 390 s). */
    int64_t now = snap.ejected_until, cool = 0;
    for (int i = 0; i < 10; i++) {
        fail_n(&s, now, 1);
        lm_route_snapshot(&s, now, &snap);
        cool = snap.ejected_until - now;
        now = snap.ejected_until;
    }
    T_CHECK(cool == 300000 && snap.ejections == 13, "capped at 300 s: %lld after %d",
            (long long)cool, snap.ejections);
    /* Healthy for 5 minutes: the count restarts, the next cool-down is 30 s. */
    lm_route_begin(&s, now);
    T_CHECK(lm_route_end(&s, now, LM_ROUTE_OK, 1, 1) == LM_ROUTE_EV_RECOVERED, "probe ok");
    now += 300000;
    fail_n(&s, now, 5);
    lm_route_snapshot(&s, now, &snap);
    T_CHECK(snap.ejections == 1 && snap.ejected_until == now + 30000, "count reset: %d",
            snap.ejections);
    lm_route_stats_free(&s);
    T_END();
}

static void test_error_rate(void)
{
    T_BEGIN("route_eject_on_error_rate");
    lm_route_stats_t s;
    lm_route_stats_init(&s, NULL, NULL);
    lm_route_event_t ev = LM_ROUTE_EV_NONE;
    /* Alternating ok/fail never makes 5 in a row, but is a 50% error rate. */
    for (int i = 0; i < 40 && ev == LM_ROUTE_EV_NONE; i++) {
        lm_route_begin(&s, 100 * i);
        ev = lm_route_end(&s, 100 * i, i % 2 ? LM_ROUTE_FAIL : LM_ROUTE_OK, 5, 5);
    }
    T_CHECK(ev == LM_ROUTE_EV_EJECT_RATE, "event %d", ev);
    lm_route_stats_free(&s);
    T_END();
}

static void test_half_open(void)
{
    T_BEGIN("route_half_open_one_probe_and_recovery");
    lm_route_stats_t s[2];
    lm_route_stats_init(&s[0], NULL, NULL);
    lm_route_stats_init(&s[1], NULL, NULL);
    lm_route_cand_t c[2] = {{"sick", 0, 1, 0, &s[0]}, {"good", 0, 1, 0, &s[1]}};
    fail_n(&s[0], 0, 5);
    size_t order[2];
    for (int i = 0; i < 100; i++) {
        lm_route_select(c, 2, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 1000 + i, order);
        T_CHECK(order[0] == 1 && order[1] == 0, "ejected goes last (kept)");
    }
    /* Cool-down over: exactly one selection gets the probe. */
    int probes = 0;
    for (int i = 0; i < 50; i++) {
        lm_route_select(c, 2, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 30000, order);
        probes += order[0] == 0;
    }
    T_CHECK(probes == 1, "%d probes admitted", probes);
    /* The probe starts and is still running: nobody else gets it. */
    T_CHECK(lm_route_begin(&s[0], 30000) == 0, "probe begins");
    lm_route_select(c, 2, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 90000, order);
    T_CHECK(order[0] == 1, "probe in flight: no second probe even much later");
    T_CHECK(lm_route_end(&s[0], 90500, LM_ROUTE_OK, 500, 100) == LM_ROUTE_EV_RECOVERED,
            "success closes");
    int sick_first = 0;
    for (int i = 0; i < 1000; i++) {
        lm_route_select(c, 2, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 91000, order);
        sick_first += order[0] == 0;
    }
    T_CHECK(sick_first > 400 && sick_first < 600, "recovered channel shares again: %d", sick_first);
    /* A claimed probe that never starts lapses after probe_ttl (10 s). */
    fail_n(&s[0], 100000, 5);
    lm_route_snap_t snap;
    lm_route_snapshot(&s[0], 100000, &snap);
    int64_t t = snap.ejected_until;
    lm_route_select(c, 2, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, t, order);
    T_CHECK(order[0] == 0, "probe claimed");
    lm_route_select(c, 2, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, t + 9999, order);
    T_CHECK(order[0] == 1, "claim still held");
    lm_route_select(c, 2, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, t + 10000, order);
    T_CHECK(order[0] == 0, "unstarted claim lapsed, probe handed out again");
    /* A cancelled probe frees the slot too. */
    lm_route_begin(&s[0], t + 10001);
    T_CHECK(lm_route_end(&s[0], t + 10002, LM_ROUTE_CANCEL, -1, -1) == LM_ROUTE_EV_NONE,
            "cancel: no verdict");
    T_CHECK(lm_route_healthy(&s[0], t + 10003), "probe slot free after cancel");
    lm_route_stats_free(&s[0]);
    lm_route_stats_free(&s[1]);
    T_END();
}

static void test_all_ejected(void)
{
    T_BEGIN("route_all_ejected_still_returns_all");
    lm_route_stats_t s[3];
    lm_route_cand_t c[3];
    for (int i = 0; i < 3; i++) {
        lm_route_stats_init(&s[i], NULL, NULL);
        c[i] = (lm_route_cand_t){"x", 0, 1, 0, &s[i]};
    }
    fail_n(&s[1], 0, 5);
    fail_n(&s[0], 1000, 5);
    fail_n(&s[2], 2000, 5);
    size_t order[3];
    size_t n = lm_route_select(c, 3, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 5000, order);
    T_CHECK(n == 3, "n %zu", n);
    T_CHECK(order[0] == 1 && order[1] == 0 && order[2] == 2, "soonest recovery first: %zu %zu %zu",
            order[0], order[1], order[2]);
    /* A last-resort success on an ejected channel closes it. */
    lm_route_begin(&s[1], 5000);
    T_CHECK(lm_route_end(&s[1], 5100, LM_ROUTE_OK, 100, 50) == LM_ROUTE_EV_RECOVERED, "recovered");
    T_CHECK(lm_route_select(c, 1, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 5000, order) == 1,
            "single candidate");
    for (int i = 0; i < 3; i++)
        lm_route_stats_free(&s[i]);
    T_END();
}

static void test_cap(void)
{
    T_BEGIN("route_concurrency_cap");
    lm_route_table_t *t = lm_route_table_new();
    lm_route_limit_t *l = lm_route_table_limit(t, "ch", 2);
    lm_route_stats_t *a = lm_route_table_stats(t, "ch", "m1", NULL);
    lm_route_stats_t *b = lm_route_table_stats(t, "ch", "m2", NULL);
    lm_route_stats_t *o = lm_route_table_stats(t, "other", "m1", NULL);
    T_CHECK(l && a && b && o && a->limit == l && b->limit == l && o->limit != l, "table");
    T_CHECK(lm_route_table_stats(t, "ch", "m1", NULL) == a, "same object on reload");
    T_CHECK(lm_route_begin(a, 0) == 0 && lm_route_begin(b, 0) == 0, "two fit");
    T_CHECK(lm_route_begin(a, 0) == -1 && lm_route_begin(b, 0) == -1, "third refused");
    T_CHECK(lm_route_limit_inflight(l) == 2, "inflight %d", lm_route_limit_inflight(l));
    lm_route_cand_t c[2] = {{"ch", 0, 1000, 0, a}, {"other", 0, 1, 0, o}};
    size_t order[2];
    lm_route_select(c, 2, LM_ROUTE_WEIGHTED, NULL, rnd, &rng_state, 0, order);
    T_CHECK(order[0] == 1, "full channel goes after one with room");
    lm_route_end(a, 1, LM_ROUTE_OK, 1, 1);
    T_CHECK(lm_route_begin(b, 0) == 0, "room again");
    T_CHECK(lm_route_table_limit(t, "ch", 3) == l, "cap update keeps object");
    T_CHECK(lm_route_begin(a, 0) == 0, "raised cap");
    lm_route_limit_t g;
    lm_route_limit_init(&g, 1);
    T_CHECK(lm_route_limit_acquire(&g) == 0 && lm_route_limit_acquire(&g) == -1, "global cap");
    lm_route_limit_release(&g);
    T_CHECK(lm_route_limit_inflight(&g) == 0, "global released");
    lm_route_table_free(t);
    T_END();
}

static void test_strategy_parse(void)
{
    T_BEGIN("route_strategy_parse");
    lm_route_strategy_t st;
    T_CHECK(lm_route_strategy_parse("round_robin", &st) == 0 && st == LM_ROUTE_ROUND_ROBIN, "rr");
    T_CHECK(lm_route_strategy_parse("lowest_cost", &st) == 0 && st == LM_ROUTE_LOWEST_COST, "cost");
    T_CHECK(lm_route_strategy_parse("fastest", &st) == -1, "unknown");
    T_END();
}

typedef struct {
    lm_route_stats_t *s;
    lm_route_cand_t *c;
    lm_route_group_t *g;
    int refused;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    uint64_t seed = (uint64_t)(uintptr_t)p | 1;
    size_t order[3];
    for (int i = 0; i < 10000; i++) {
        lm_route_stats_t *s = &a->s[i % 3];
        lm_route_select(a->c, 3, i % 2 ? LM_ROUTE_ROUND_ROBIN : LM_ROUTE_LEAST_INFLIGHT, a->g, rnd,
                        &seed, i, order);
        if (lm_route_begin(s, i) < 0) {
            a->refused++;
            continue;
        }
        lm_route_end(s, i, i % 7 ? LM_ROUTE_OK : LM_ROUTE_FAIL, 3, 1);
    }
    return NULL;
}

static void test_threads(void)
{
    T_BEGIN("route_threads_inflight_back_to_zero");
    lm_route_table_t *t = lm_route_table_new();
    lm_route_limit_t *l = lm_route_table_limit(t, "ch", 3);
    lm_route_stats_t s[3];
    lm_route_cand_t c[3];
    for (int i = 0; i < 3; i++) {
        lm_route_stats_init(&s[i], NULL, l); /* three models share one channel cap */
        c[i] = (lm_route_cand_t){"x", 0, 1, 0, &s[i]};
    }
    lm_route_group_t g;
    lm_route_group_init(&g);
    pthread_t th[4];
    worker_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg_t){s, c, &g, 0};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    int refused = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        refused += args[i].refused;
    }
    for (int i = 0; i < 3; i++)
        T_CHECK(atomic_load(&s[i].inflight) == 0, "stats %d inflight %d", i,
                atomic_load(&s[i].inflight));
    T_CHECK(lm_route_limit_inflight(l) == 0, "limit inflight %d", lm_route_limit_inflight(l));
    T_CHECK(atomic_load(&g.rr) == 20000, "rr counter %llu", (unsigned long long)atomic_load(&g.rr));
    T_CHECK(refused >= 0 && refused < 40000, "refused %d", refused);
    for (int i = 0; i < 3; i++)
        lm_route_stats_free(&s[i]);
    lm_route_table_free(t);
    T_END();
}

int main(void)
{
    test_weights();
    test_tiers();
    test_round_robin();
    test_least_inflight();
    test_lowest_latency_cost();
    test_ejection_and_growth();
    test_error_rate();
    test_half_open();
    test_all_ejected();
    test_cap();
    test_strategy_parse();
    test_threads();
    T_EXIT();
}
