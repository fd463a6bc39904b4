/* The side-value cache (kernel/plugin/side.c): one fetch per name, waiters see
 * the outcome, failures are held briefly, refused values are dropped only
 * while current, values are refreshed at 90% of their life. */
#include "plugin/side.h"
#include "t.h"

#include <stdlib.h>

static int get(lm_side_t *s, const char *name, int64_t now, char **v, lm_side_need_t *need)
{
    size_t len;
    *v = NULL;
    return lm_side_get(s, name, now, v, &len, need);
}

static void test_first_get_fetches_once(void)
{
    lm_side_t *s = lm_side_new();
    lm_side_need_t a, b;
    char *v;
    lm_err e;
    T_BEGIN("side_one_fetch_for_concurrent_waiters");
    T_CHECK(get(s, "token", 1000, &v, &a) == LM_AGAIN && a.fetch && a.wait, "first: fetch");
    T_CHECK(get(s, "token", 1001, &v, &b) == LM_AGAIN && !b.fetch && b.wait, "second: wait only");
    T_CHECK(lm_side_check(s, "token", a.seq, &e) == 0, "still pending");
    lm_side_complete(s, "token", 1, strdup("abc"), 100, NULL, 1002);
    T_CHECK(lm_side_check(s, "token", b.seq, &e) == 1, "ready");
    T_CHECK(get(s, "token", 1003, &v, &a) == LM_OK && v && !strcmp(v, "abc") && !a.fetch, "cached");
    free(v);
    T_END();
    lm_side_free(s);
}

static void test_refresh_and_expiry(void)
{
    lm_side_t *s = lm_side_new();
    lm_side_need_t n;
    char *v;
    T_BEGIN("side_background_refresh_then_expiry");
    get(s, "token", 0, &v, &n);
    lm_side_complete(s, "token", 1, strdup("one"), 10, NULL, 0); /* 10 s */
    T_CHECK(get(s, "token", 8999, &v, &n) == LM_OK && !n.fetch, "early: no refresh");
    free(v);
    T_CHECK(get(s, "token", 9000, &v, &n) == LM_OK && n.fetch, "90%%: refresh in background");
    free(v);
    T_CHECK(get(s, "token", 9001, &v, &n) == LM_OK && !n.fetch, "one background fetch");
    free(v);
    T_CHECK(get(s, "token", 10000, &v, &n) == LM_AGAIN && n.wait && !n.fetch,
            "expired while fetching: wait");
    lm_side_complete(s, "token", 1, strdup("two"), 10, NULL, 10001);
    T_CHECK(get(s, "token", 10002, &v, &n) == LM_OK && !strcmp(v, "two"), "fresh");
    free(v);
    T_END();
    lm_side_free(s);
}

static void test_failure_held(void)
{
    lm_side_t *s = lm_side_new();
    lm_side_need_t n;
    char *v;
    lm_err e, got;
    T_BEGIN("side_failure_reaches_waiters_and_is_held");
    get(s, "token", 0, &v, &n);
    lm_err_set(&e, LM_EUPSTREAM, 401, "authentication_error", "bad_client", "no");
    lm_side_complete(s, "token", 0, NULL, 0, &e, 5000);
    T_CHECK(lm_side_check(s, "token", n.seq, &got) == -1 && got.http_status == 401 &&
                !strcmp(got.code, "bad_client"),
            "waiter gets the error");
    T_CHECK(get(s, "token", 5500, &v, &n) == LM_EUPSTREAM && n.err.http_status == 401 && !n.fetch,
            "held for a second");
    T_CHECK(get(s, "token", 6001, &v, &n) == LM_AGAIN && n.fetch, "then fetched again");
    T_END();
    lm_side_free(s);
}

static void test_invalidate_only_current(void)
{
    lm_side_t *s = lm_side_new();
    lm_side_need_t n;
    char *v;
    T_BEGIN("side_invalidate_drops_only_the_current_value");
    get(s, "token", 0, &v, &n);
    lm_side_complete(s, "token", 1, strdup("new"), 0, NULL, 0);
    lm_side_invalidate(s, "token", LM_STR("old"));
    T_CHECK(get(s, "token", 1, &v, &n) == LM_OK && !strcmp(v, "new"), "older refusal ignored");
    free(v);
    lm_side_invalidate(s, "token", LM_STR("new"));
    T_CHECK(get(s, "token", 2, &v, &n) == LM_AGAIN && n.fetch, "current refusal drops it");
    T_END();
    lm_side_free(s);
}

static void test_names(void)
{
    lm_side_t *s = lm_side_new();
    lm_side_need_t n;
    char *v;
    T_BEGIN("side_names_checked_and_bounded");
    T_CHECK(get(s, "Bad-Name", 0, &v, &n) == LM_EINVAL, "charset");
    T_CHECK(get(s, "", 0, &v, &n) == LM_EINVAL, "empty");
    T_CHECK(get(s, "a_very_long_name_that_is_over_31_bytes", 0, &v, &n) == LM_EINVAL, "length");
    const char *names[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++)
        T_CHECK(get(s, names[i], 0, &v, &n) == LM_AGAIN, "slot %d", i);
    T_CHECK(get(s, "e", 0, &v, &n) == LM_EINVAL, "a fifth name is refused");
    T_END();
    lm_side_free(s);
}

int main(void)
{
    test_first_get_fetches_once();
    test_refresh_and_expiry();
    test_failure_held();
    test_invalidate_only_current();
    test_names();
    T_EXIT();
}
