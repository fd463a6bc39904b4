/*
 * test_metrics.c - the Prometheus registry (kernel/route/metrics.c): exact text
 * of each type, escaping, concurrent updates, the series cap.
 */
#include "route/metrics.h"
#include "t.h"

#include <pthread.h>
#include <stdlib.h>

static void test_counter_gauge(void)
{
    T_BEGIN("metrics_counter_and_gauge_text");
    lm_metrics_t *m = lm_metrics_new(0);
    static const char *const mc[] = {"model", "channel"};
    lm_metrics_family_t *c = lm_metrics_counter(m, "t_requests_total", "Requests.", mc, 2);
    lm_metrics_family_t *g = lm_metrics_gauge(m, "t_generation", "Generation.", NULL, 0);
    lm_metrics_family_t *e = lm_metrics_gauge(m, "t_empty", "No series yet.", mc, 2);
    T_CHECK(c && g && e, "registered");
    T_CHECK(lm_metrics_inc(c, (const char *[]){"m1", "a"}, 1) == 0, "inc");
    lm_metrics_inc(c, (const char *[]){"m1", "a"}, 2);
    lm_metrics_inc(c, (const char *[]){"m2", NULL}, 5);
    lm_metrics_set(lm_metrics_series(g, NULL), 7);
    lm_metrics_gauge_add(lm_metrics_series(g, NULL), -10);
    lm_metrics_add(lm_metrics_series(g, NULL), 100); /* wrong type: ignored */
    char *txt = lm_metrics_render(m, NULL);
    T_STREQ(txt, "# HELP t_requests_total Requests.\n"
                 "# TYPE t_requests_total counter\n"
                 "t_requests_total{model=\"m1\",channel=\"a\"} 3\n"
                 "t_requests_total{model=\"m2\",channel=\"\"} 5\n"
                 "# HELP t_generation Generation.\n"
                 "# TYPE t_generation gauge\n"
                 "t_generation -3\n"
                 "# HELP t_empty No series yet.\n"
                 "# TYPE t_empty gauge\n");
    free(txt);
    T_CHECK(lm_metrics_counter(m, "t_requests_total", "x", mc, 2) == c, "same registration");
    T_CHECK(lm_metrics_gauge(m, "t_requests_total", "x", mc, 2) == NULL, "type clash");
    T_CHECK(lm_metrics_counter(m, "t_requests_total", "x", mc, 1) == NULL, "label clash");
    T_CHECK(lm_metrics_counter(m, "9bad", "x", NULL, 0) == NULL, "bad name");
    T_CHECK(lm_metrics_counter(m, "ok", "x", (const char *[]){"a-b"}, 1) == NULL, "bad label");
    lm_metrics_free(m);
    T_END();
}

static void test_histogram(void)
{
    T_BEGIN("metrics_histogram_text");
    lm_metrics_t *m = lm_metrics_new(0);
    static const double b[] = {0.005, 0.5, 2.5, 60};
    lm_metrics_family_t *h =
        lm_metrics_histogram(m, "t_seconds", "Latency.", (const char *[]){"channel"}, 1, b, 4);
    T_CHECK(h != NULL, "registered");
    lm_metrics_series_t *s = lm_metrics_series(h, (const char *[]){"c1"});
    lm_metrics_observe(s, 0.005); /* le is inclusive */
    lm_metrics_observe(s, 0.25);
    lm_metrics_observe(s, 1.25);
    lm_metrics_observe(s, 100);
    lm_metrics_observe(s, 0.0);
    char *txt = lm_metrics_render(m, NULL);
    T_STREQ(txt, "# HELP t_seconds Latency.\n"
                 "# TYPE t_seconds histogram\n"
                 "t_seconds_bucket{channel=\"c1\",le=\"0.005\"} 2\n"
                 "t_seconds_bucket{channel=\"c1\",le=\"0.5\"} 3\n"
                 "t_seconds_bucket{channel=\"c1\",le=\"2.5\"} 4\n"
                 "t_seconds_bucket{channel=\"c1\",le=\"60\"} 4\n"
                 "t_seconds_bucket{channel=\"c1\",le=\"+Inf\"} 5\n"
                 "t_seconds_sum{channel=\"c1\"} 101.505\n"
                 "t_seconds_count{channel=\"c1\"} 5\n");
    free(txt);
    T_CHECK(lm_metrics_histogram(m, "t_bad", "x", (const char *[]){"le"}, 1, b, 4) == NULL,
            "le label refused");
    static const double nb[] = {1, 1};
    T_CHECK(lm_metrics_histogram(m, "t_bad", "x", NULL, 0, nb, 2) == NULL, "bounds increase");
    lm_metrics_family_t *h0 = lm_metrics_histogram(m, "t_plain", "P.", NULL, 0, b, 1);
    lm_metrics_obs(h0, NULL, 3);
    txt = lm_metrics_render(m, NULL);
    T_CHECK(txt && strstr(txt, "t_plain_bucket{le=\"0.005\"} 0\n"
                               "t_plain_bucket{le=\"+Inf\"} 1\n"
                               "t_plain_sum 3\n"
                               "t_plain_count 1\n"),
            "label-less histogram: %s", txt ? txt : "(null)");
    free(txt);
    lm_metrics_free(m);
    T_END();
}

static void test_escaping(void)
{
    T_BEGIN("metrics_escaping");
    lm_metrics_t *m = lm_metrics_new(0);
    lm_metrics_family_t *c =
        lm_metrics_counter(m, "t_x_total", "a \\ help\nline \"q\"", (const char *[]){"model"}, 1);
    lm_metrics_inc(c, (const char *[]){"a\"b\\c\nd"}, 1);
    size_t len = 0;
    char *txt = lm_metrics_render(m, &len);
    T_STREQ(txt, "# HELP t_x_total a \\\\ help\\nline \"q\"\n"
                 "# TYPE t_x_total counter\n"
                 "t_x_total{model=\"a\\\"b\\\\c\\nd\"} 1\n");
    T_CHECK(txt && len == strlen(txt), "len");
    free(txt);
    lm_metrics_free(m);
    T_END();
}

typedef struct {
    lm_metrics_family_t *c, *h, *g;
    int id;
} targ_t;

static void *hammer(void *p)
{
    targ_t *a = p;
    char mine[16];
    snprintf(mine, sizeof(mine), "t%d", a->id);
    for (int i = 0; i < 100000; i++) {
        lm_metrics_inc(a->c, (const char *[]){"shared"}, 1);
        if (i % 100 == 0)
            lm_metrics_inc(a->c, (const char *[]){mine}, 1); /* creation races lookups */
        lm_metrics_obs(a->h, NULL, 0.25);
        lm_metrics_gauge_add(lm_metrics_series(a->g, NULL), i % 2 ? -1 : 1);
    }
    return NULL;
}

static void test_threads(void)
{
    T_BEGIN("metrics_concurrent_updates_sum_exactly");
    lm_metrics_t *m = lm_metrics_new(0);
    static const double b[] = {0.1, 1};
    targ_t args[4];
    pthread_t th[4];
    lm_metrics_family_t *c = lm_metrics_counter(m, "t_c_total", "C.", (const char *[]){"k"}, 1);
    lm_metrics_family_t *h = lm_metrics_histogram(m, "t_h", "H.", NULL, 0, b, 2);
    lm_metrics_family_t *g = lm_metrics_gauge(m, "t_g", "G.", NULL, 0);
    for (int i = 0; i < 4; i++) {
        args[i] = (targ_t){c, h, g, i};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    /* Render while they run: must not crash or tear. */
    for (int i = 0; i < 20; i++)
        free(lm_metrics_render(m, NULL));
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    char *txt = lm_metrics_render(m, NULL);
    T_CHECK(txt && strstr(txt, "t_c_total{k=\"shared\"} 400000\n"), "counter: %s", txt);
    T_CHECK(txt && strstr(txt, "t_c_total{k=\"t3\"} 1000\n"), "per-thread counter");
    T_CHECK(txt && strstr(txt, "t_h_bucket{le=\"1\"} 400000\n"), "histogram buckets");
    T_CHECK(txt && strstr(txt, "t_h_sum 100000\n"), "histogram sum exact");
    T_CHECK(txt && strstr(txt, "t_g 0\n"), "gauge back to 0");
    free(txt);
    lm_metrics_free(m);
    T_END();
}

static void test_cap(void)
{
    T_BEGIN("metrics_series_cap");
    lm_metrics_t *m = lm_metrics_new(3);
    lm_metrics_family_t *c = lm_metrics_counter(m, "t_total", "T.", (const char *[]){"model"}, 1);
    char name[16];
    int ok = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "m%d", i);
        ok += lm_metrics_inc(c, (const char *[]){name}, 1) == 0;
    }
    T_CHECK(ok == 3, "%d series created", ok);
    T_CHECK(lm_metrics_inc(c, (const char *[]){"m0"}, 1) == 0, "existing still counts");
    T_CHECK(lm_metrics_dropped(m) == 7, "dropped %llu", (unsigned long long)lm_metrics_dropped(m));
    lm_metrics_add(NULL, 1); /* NULL series: no-op */
    char *txt = lm_metrics_render(m, NULL);
    T_CHECK(txt && strstr(txt, "t_total{model=\"m0\"} 2\n") && !strstr(txt, "m3"), "%s", txt);
    T_CHECK(txt && strstr(txt, "longmen_metrics_series_dropped_total 7\n"), "dropped rendered");
    free(txt);
    lm_metrics_free(m);
    T_END();
}

static void test_std(void)
{
    T_BEGIN("metrics_std_series");
    lm_metrics_t *m = lm_metrics_new(0);
    lm_metrics_std_t s;
    T_CHECK(lm_metrics_std_register(m, &s) == 0, "register");
    lm_metrics_std_t again;
    T_CHECK(lm_metrics_std_register(m, &again) == 0 && again.requests == s.requests, "idempotent");
    lm_metrics_inc(s.requests, (const char *[]){"mock-1", "mock", "200"}, 1);
    lm_metrics_inc(s.tokens, (const char *[]){"mock-1", "mock", "prompt"}, 12);
    lm_metrics_obs(s.ttft_secs, (const char *[]){"mock-1", "mock"}, 0.042);
    lm_metrics_put(s.healthy, (const char *[]){"mock"}, 1);
    lm_metrics_put(s.generation, NULL, 2);
    char *txt = lm_metrics_render(m, NULL);
    T_CHECK(txt && strstr(txt, "longmen_requests_total{model=\"mock-1\",channel=\"mock\","
                               "status=\"200\"} 1\n"),
            "requests");
    T_CHECK(txt && strstr(txt, "longmen_ttft_seconds_bucket{model=\"mock-1\",channel=\"mock\","
                               "le=\"0.05\"} 1\n"),
            "ttft bucket");
    T_CHECK(txt && strstr(txt, "longmen_ttft_seconds_sum{model=\"mock-1\",channel=\"mock\"} "
                               "0.042\n"),
            "ttft sum");
    T_CHECK(txt && strstr(txt, "longmen_generation 2\n"), "generation");
    T_CHECK(txt && strstr(txt, "# TYPE longmen_request_seconds histogram\n"), "histogram type");
    free(txt);
    lm_metrics_free(m);
    T_END();
}

int main(void)
{
    test_counter_gauge();
    test_histogram();
    test_escaping();
    test_threads();
    test_cap();
    test_std();
    T_EXIT();
}
