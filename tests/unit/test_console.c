/* test_console.c - the console's pure parts (kernel/admin/session.c,
 * console.c): the Cookie header parser, the Accept-Language choice, and
 * the session table's lifetime, lookup, eviction and CSRF comparison. */
#include "admin/console.h"
#include "admin/session.h"
#include "t.h"

#include <stdlib.h>

static void test_cookie_value(void)
{
    size_t n = 0;
    const char *v;
    T_BEGIN("console_cookie_value");
    v = lm_admin_cookie_value("a=1; lm_console=abc; b=2", "lm_console", &n);
    T_CHECK(v && n == 3 && strncmp(v, "abc", 3) == 0, "middle");
    v = lm_admin_cookie_value("lm_console=xyz", "lm_console", &n);
    T_CHECK(v && n == 3 && strncmp(v, "xyz", 3) == 0, "alone");
    T_CHECK(!lm_admin_cookie_value("xlm_console=1; lm_consolex=2", "lm_console", &n), "prefix");
    T_CHECK(!lm_admin_cookie_value("", "lm_console", &n), "empty");
    T_CHECK(!lm_admin_cookie_value(NULL, "lm_console", &n), "NULL");
    v = lm_admin_cookie_value("lm_console=;x=1", "lm_console", &n);
    T_CHECK(v && n == 0, "empty value");
    T_END();
}

static void test_wants_zh(void)
{
    static const struct {
        const char *al;
        int zh;
    } c[] = {
        {"zh-CN,zh;q=0.9,en;q=0.8", 1},
        {"en-US,en;q=0.9,zh-CN;q=0.8", 0},
        {"zh", 1},
        {"zh-TW", 1},
        {"zhx", 0},
        {"en;q=0.5, zh;q=0.7", 1},
        {"en;q=0.7, zh;q=0.7", 0},
        {"zh;q=0, en;q=0.1", 0},
        {"fr, zh;q=0.9", 0},
        {"ZH-cn", 1},
        {"zh;q=bogus, en;q=0.2", 0},
        {"", 0},
        {NULL, 0},
        {"*", 0},
        {"zh;q=1.000", 1},
        {"zh;q=1.5, en", 0},
    };
    T_BEGIN("console_accept_language");
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        T_CHECK(lm_admin_console_wants_zh(c[i].al) == c[i].zh, "%s: want %d",
                c[i].al ? c[i].al : "(null)", c[i].zh);
    T_END();
}

static void test_sessions(void)
{
    lm_admin_sessions_t *t = calloc(1, sizeof(*t));
    char id[LM_ADMIN_SESSION_IDLEN + 1], hdr[128], first[LM_ADMIN_SESSION_IDLEN + 1];
    T_BEGIN("console_sessions");
    t->ttl_ms = 1000;
    lm_admin_session_t *s = lm_admin_session_new(t, 1, 5000, id);
    T_CHECK(s && strlen(id) == LM_ADMIN_SESSION_IDLEN && s->role == 1, "new");
    snprintf(hdr, sizeof(hdr), "x=y; lm_console=%s", id);
    T_CHECK(lm_admin_session_find(t, hdr, 5999) == s, "found before the end");
    T_CHECK(lm_admin_session_find(t, hdr, 6000) == NULL, "gone at the end");
    T_CHECK(s->expires_ms == 0, "expired slot freed");
    s = lm_admin_session_new(t, 0, 7000, id);
    T_CHECK(lm_admin_session_csrf_ok(s, s->csrf), "csrf ok");
    T_CHECK(!lm_admin_session_csrf_ok(s, NULL) && !lm_admin_session_csrf_ok(s, ""), "csrf missing");
    char bad[LM_ADMIN_SESSION_IDLEN + 1];
    memcpy(bad, s->csrf, sizeof(bad));
    bad[0] = bad[0] == 'A' ? 'B' : 'A';
    T_CHECK(!lm_admin_session_csrf_ok(s, bad), "csrf wrong");
    T_CHECK(strcmp(s->csrf, id) != 0, "csrf differs from the id");
    snprintf(hdr, sizeof(hdr), "lm_console=%s", id);
    lm_admin_session_drop(s);
    T_CHECK(lm_admin_session_find(t, hdr, 7001) == NULL, "dropped");
    /* a full table replaces the session closest to its end */
    for (int i = 0; i < LM_ADMIN_SESSIONS; i++) {
        lm_admin_session_new(t, 0, 10000 + i, id);
        if (i == 0)
            memcpy(first, id, sizeof(first));
    }
    lm_admin_session_new(t, 0, 20000 - 9000, id); /* all live: evicts the first */
    snprintf(hdr, sizeof(hdr), "lm_console=%s", first);
    T_CHECK(lm_admin_session_find(t, hdr, 10500) == NULL, "oldest evicted");
    snprintf(hdr, sizeof(hdr), "lm_console=%s", id);
    T_CHECK(lm_admin_session_find(t, hdr, 10500) != NULL, "newest kept");
    T_CHECK(lm_admin_session_find(t, "lm_console=short", 10500) == NULL, "short id");
    free(t);
    T_END();
}

int main(void)
{
    test_cookie_value();
    test_wants_zh();
    test_sessions();
    T_EXIT();
}
