/* test_redis_url.c - the `redis` directive's URL (core/redis_url.h):
 * defaults, credentials, IPv6, and the malformed ones refused. */
#include "core/redis_url.h"
#include "t.h"

static void test_good(void)
{
    lm_redis_url_t u;
    char err[128];
    T_BEGIN("redis_url_good");
    T_CHECK(lm_redis_url_parse("redis://127.0.0.1:6379/0", &u, err, sizeof(err)) == 0, "%s", err);
    T_STREQ(u.host, "127.0.0.1");
    T_CHECK(u.port == 6379 && u.db == 0 && !u.user[0] && !u.password[0], "fields");
    T_CHECK(lm_redis_url_parse("redis://cache.example", &u, err, sizeof(err)) == 0, "%s", err);
    T_STREQ(u.host, "cache.example");
    T_CHECK(u.port == 6379 && u.db == 0, "defaults");
    T_CHECK(lm_redis_url_parse("redis://h:1/", &u, err, sizeof(err)) == 0, "%s", err);
    T_CHECK(u.port == 1 && u.db == 0, "empty db");
    T_CHECK(lm_redis_url_parse("redis://bob:p@ss@h:7000/3", &u, err, sizeof(err)) == 0, "%s", err);
    T_STREQ(u.user, "bob");
    T_STREQ(u.password, "p@ss");
    T_STREQ(u.host, "h");
    T_CHECK(u.port == 7000 && u.db == 3, "port db");
    T_CHECK(lm_redis_url_parse("redis://:secret@h", &u, err, sizeof(err)) == 0, "%s", err);
    T_CHECK(!u.user[0], "no user");
    T_STREQ(u.password, "secret");
    T_CHECK(lm_redis_url_parse("redis://[::1]:6380/2", &u, err, sizeof(err)) == 0, "%s", err);
    T_STREQ(u.host, "::1");
    T_CHECK(u.port == 6380 && u.db == 2, "v6");
    T_CHECK(lm_redis_url_parse("redis://[::1]", &u, err, sizeof(err)) == 0, "%s", err);
    T_CHECK(u.port == 6379, "v6 default port");
    T_END();
}

static void test_bad(void)
{
    static const char *bad[] = {
        NULL,
        "",
        "http://h",
        "redis://",
        "redis://:6379",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:x",
        "redis://h/x",
        "redis://h/-1",
        "redis://[::1",
        "redis://[]:1",
        "redis://[::1]x",
        "redis://h h",
        "redis://h/99999999",
        "redis://:only-password@/0",
    };
    lm_redis_url_t u;
    char err[128];
    T_BEGIN("redis_url_bad");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        T_CHECK(lm_redis_url_parse(bad[i], &u, err, sizeof(err)) < 0, "accepted %s",
                bad[i] ? bad[i] : "(null)");
        T_CHECK(err[0] != '\0', "no message for %s", bad[i] ? bad[i] : "(null)");
    }
    /* the message never quotes the password */
    lm_redis_url_parse("redis://u:topsecret@h:99999", &u, err, sizeof(err));
    T_CHECK(strstr(err, "topsecret") == NULL, "password in message: %s", err);
    T_END();
}

int main(void)
{
    test_good();
    test_bad();
    T_EXIT();
}
