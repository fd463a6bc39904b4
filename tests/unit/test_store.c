/* The SQLite store and billing: migrations, settings read back (DB-2), keys
 * never at rest in plaintext (AU-1), hostile text (AU-3), the QB-1 race,
 * reserve/settle/cancel/expiry exactness (QB-2), write contention (DB-3),
 * idempotent replays, queue bounds, the admin queries, and the channels
 * stored through the admin API (CRUD, hostile values, rendering into the
 * configuration parser, secrets masked, file modes). */
#include "conf/chanconf.h"
#include "conf/priceunit.h"
#include "core/clock.h"
#include "gov/billing.h"
#include "store/pgconn.h"
#include "store/sqlite_ckpt.h"
#include "store/store.h"
#include "t.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char g_dir[64];
static atomic_int g_errlogs;

static void quiet_log(int level, const char *msg)
{
    if (level == 0) {
        atomic_fetch_add(&g_errlogs, 1);
        fprintf(stderr, "store error: %s\n", msg);
    }
}

static void rm_dir(const char *dir)
{
    static const char *const files[] = {"longmen.db", "longmen.db-wal", "longmen.db-shm",
                                        "longmen.db-journal", "usage.spool"};
    char p[256];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void new_dir(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/lm-store-XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
}

static lm_store_t *open_store(size_t queue_max)
{
    char err[256] = "";
    lm_store_opts_t o = {0};
    o.dir = g_dir;
    o.queue_max = queue_max;
    o.log = quiet_log;
    lm_store_t *st = lm_store_open(&o, err, sizeof(err));
    if (st == NULL)
        printf("     open failed: %s\n", err);
    return st;
}

static lm_key_spec_t spec_quota(const char *name, int64_t quota)
{
    lm_key_spec_t sp = {0};
    sp.name = name;
    sp.quota = quota;
    sp.enabled = 1;
    return sp;
}

static int64_t ledger_sum(lm_store_t *st, int64_t key_id, int64_t *rows)
{
    lm_usage_total_t *t = NULL;
    size_t n = 0;
    int64_t s = -1;
    if (lm_store_usage_totals(st, LM_USAGE_BY_NONE, 0, 0, key_id, &t, &n) == LM_STORE_OK &&
        n == 1) {
        s = t[0].cost;
        if (rows)
            *rows = t[0].requests;
    }
    lm_store_usage_totals_free(t, n);
    return s;
}

static int64_t db_used(lm_store_t *st, int64_t id)
{
    lm_key_t *k = NULL;
    int64_t u = -1;
    if (lm_store_key_get(st, id, &k) == LM_STORE_OK)
        u = k->used;
    lm_key_release(k);
    return u;
}

/* ------------------------------------------------------------------------ */

static void test_migrations(void)
{
    T_BEGIN("store_migrations_fresh_and_reopen");
    new_dir();
    lm_store_t *st = open_store(0);
    T_CHECK(st != NULL, "fresh open");
    char secret[LM_KEY_SECRET_SIZE];
    int64_t id = 0;
    if (st) {
        lm_key_spec_t sp = spec_quota("persist", 1000);
        T_CHECK(lm_store_key_create(st, &sp, secret, &id, NULL, 0) == LM_STORE_OK, "create");
        lm_store_close(st);
    }
    for (int i = 0; i < 3; i++) { /* re-open: migrations are idempotent */
        st = open_store(0);
        T_CHECK(st != NULL, "re-open %d", i);
        if (st == NULL)
            break;
        lm_store_settings_t s;
        T_CHECK(lm_store_settings(st, &s) == LM_STORE_OK && s.schema_version == 6,
                "schema version %d", s.schema_version);
        lm_key_t *k = lm_store_key_find(st, secret, strlen(secret));
        T_CHECK(k && k->id == id && k->quota == 1000, "key survives re-open");
        lm_key_release(k);
        lm_store_close(st);
    }
    /* a database from a newer build is refused */
    char path[128];
    snprintf(path, sizeof(path), "%s/longmen.db", g_dir);
    sqlite3 *db = NULL;
    sqlite3_open(path, &db);
    sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
    sqlite3_close(db);
    char err[256] = "";
    lm_store_opts_t o = {.dir = g_dir, .log = quiet_log};
    st = lm_store_open(&o, err, sizeof(err));
    T_CHECK(st == NULL && strstr(err, "newer") != NULL, "newer schema refused: %s", err);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* Admin token digests: absent, set, replaced, per role, removed, persisted. */
static void test_admin_tokens(void)
{
    T_BEGIN("store_admin_tokens");
    new_dir();
    lm_store_t *st = open_store(0);
    unsigned char a[32], b[32], got[32];
    memset(a, 0xa1, sizeof(a));
    memset(b, 0xb2, sizeof(b));
    T_CHECK(st != NULL, "open");
    if (st) {
        T_CHECK(lm_store_admin_token_get(st, LM_ADMIN_ROLE_FULL, got) == LM_STORE_ENOTFOUND,
                "none at first");
        T_CHECK(lm_store_admin_token_set(st, LM_ADMIN_ROLE_FULL, a) == LM_STORE_OK, "set");
        T_CHECK(lm_store_admin_token_set(st, LM_ADMIN_ROLE_FULL, b) == LM_STORE_OK, "replace");
        T_CHECK(lm_store_admin_token_set(st, LM_ADMIN_ROLE_READ, a) == LM_STORE_OK, "read role");
        T_CHECK(lm_store_admin_token_set(st, 7, a) == LM_STORE_EINVAL, "bad role");
        lm_store_close(st);
    }
    st = open_store(0);
    T_CHECK(st != NULL, "re-open");
    if (st) {
        T_CHECK(lm_store_admin_token_get(st, LM_ADMIN_ROLE_FULL, got) == LM_STORE_OK &&
                    memcmp(got, b, 32) == 0,
                "replaced digest persisted");
        T_CHECK(lm_store_admin_token_get(st, LM_ADMIN_ROLE_READ, got) == LM_STORE_OK &&
                    memcmp(got, a, 32) == 0,
                "read digest persisted");
        T_CHECK(lm_store_admin_token_set(st, LM_ADMIN_ROLE_READ, NULL) == LM_STORE_OK, "remove");
        T_CHECK(lm_store_admin_token_get(st, LM_ADMIN_ROLE_READ, got) == LM_STORE_ENOTFOUND,
                "removed");
        lm_store_close(st);
    }
    rm_dir(g_dir);
    T_END();
}

static void test_settings(void)
{
    T_BEGIN("store_settings_read_back_db2");
    new_dir();
    lm_store_t *st = open_store(0);
    T_CHECK(st != NULL, "open");
    if (st) {
        lm_store_settings_t s;
        T_CHECK(lm_store_settings(st, &s) == LM_STORE_OK, "settings");
        T_STREQ(s.journal_mode, "wal");
        T_CHECK(s.busy_timeout_ms >= 5000, "busy_timeout %d", s.busy_timeout_ms);
        T_CHECK(s.foreign_keys == 1, "foreign_keys %d", s.foreign_keys);
        T_CHECK(s.synchronous >= 1, "synchronous %d", s.synchronous);
        lm_store_close(st);
    }
    /* a value that is not applied fails the open with a clear message */
    char err[256] = "";
    lm_store_opts_t o = {.dir = g_dir, .busy_timeout_ms = 100, .log = quiet_log};
    st = lm_store_open(&o, err, sizeof(err));
    T_CHECK(st == NULL && strstr(err, "busy_timeout is 100 ms") != NULL, "refused: %s", err);
    lm_store_close(st);
    struct stat sb;
    char path[128];
    snprintf(path, sizeof(path), "%s/longmen.db", g_dir);
    T_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 077) == 0, "db file mode %o",
            (unsigned)(sb.st_mode & 0777));
    rm_dir(g_dir);
    T_END();
}

/* ------------------------------------------------------------------------ */

static int file_has(const char *path, const void *needle, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    int hit = buf && memmem(buf, len, needle, n) != NULL;
    free(buf);
    return hit;
}

static void test_keys_at_rest(void)
{
    T_BEGIN("store_au1_no_plaintext_at_rest");
    new_dir();
    lm_store_t *st = open_store(0);
    T_CHECK(st != NULL, "open");
    if (st == NULL) {
        T_END();
        return;
    }
    static char secrets[100][LM_KEY_SECRET_SIZE];
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof(name), "key-%d", i);
        lm_key_spec_t sp = spec_quota(name, 1000);
        int64_t id;
        T_CHECK(lm_store_key_create(st, &sp, secrets[i], &id, NULL, 0) == LM_STORE_OK, "create");
        T_CHECK(strlen(secrets[i]) == 35 && strncmp(secrets[i], "sk-", 3) == 0, "format %zu",
                strlen(secrets[i]));
    }
    /* distinct */
    int dup = 0;
    for (int i = 0; i < 100; i++)
        for (int j = i + 1; j < 100; j++)
            dup += strcmp(secrets[i], secrets[j]) == 0;
    T_CHECK(dup == 0, "duplicate secrets");
    lm_store_flush(st);
    static const char *const files[] = {"longmen.db", "longmen.db-wal", "longmen.db-shm"};
    int hits = 0, present = 0;
    for (size_t f = 0; f < 3; f++) {
        char path[128];
        snprintf(path, sizeof(path), "%s/%s", g_dir, files[f]);
        present += access(path, F_OK) == 0;
        for (int i = 0; i < 100; i++) {
            hits += file_has(path, secrets[i], strlen(secrets[i]));
            /* the secret part after the stored display prefix */
            hits += file_has(path, secrets[i] + LM_KEY_PREFIX_LEN, 16);
        }
    }
    T_CHECK(present == 3, "db, -wal and -shm present while open (%d)", present);
    T_CHECK(hits == 0, "%d plaintext hits while open", hits);
    /* list never carries the hash, only the prefix */
    lm_key_t **list = NULL;
    size_t n = 0;
    T_CHECK(lm_store_key_list(st, 0, 1000, &list, &n) == LM_STORE_OK && n == 100, "list %zu", n);
    unsigned char zero[32] = {0};
    for (size_t i = 0; i < n; i++) {
        T_CHECK(memcmp(list[i]->hash, zero, 32) == 0, "hash leaked by list");
        T_CHECK(strlen(list[i]->prefix) <= 8 &&
                    strncmp(list[i]->prefix, secrets[i], LM_KEY_PREFIX_LEN) == 0,
                "prefix %s", list[i]->prefix);
    }
    lm_store_key_list_free(list, n);
    lm_store_close(st);
    hits = 0;
    char path[128];
    snprintf(path, sizeof(path), "%s/longmen.db", g_dir);
    for (int i = 0; i < 100; i++)
        hits += file_has(path, secrets[i], strlen(secrets[i]));
    T_CHECK(hits == 0, "%d plaintext hits after close", hits);
    rm_dir(g_dir);
    T_END();
}

static void test_key_crud(void)
{
    T_BEGIN("store_key_crud_and_checks");
    new_dir();
    lm_store_t *st = open_store(0);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    const char *models[] = {"gpt-4o", "qwen-*"};
    const char *cidrs[] = {"10.0.0.0/8", "2001:db8::/32", "192.168.1.7"};
    lm_key_spec_t sp = spec_quota("team-a", 5000000);
    sp.owner = "alice";
    sp.group = "research";
    sp.models = models;
    sp.nmodels = 2;
    sp.cidrs = cidrs;
    sp.ncidrs = 3;
    sp.rpm = 60;
    sp.tpm = 100000;
    sp.max_concurrent = 4;
    sp.expires_at = 4102444800; /* 2100-01-01 */
    char secret[LM_KEY_SECRET_SIZE];
    char err[256] = "";
    int64_t id = 0;
    T_CHECK(lm_store_key_create(st, &sp, secret, &id, err, sizeof(err)) == LM_STORE_OK, "%s", err);
    lm_key_t *k = lm_store_key_find(st, secret, strlen(secret));
    T_CHECK(k != NULL, "find");
    if (k) {
        T_CHECK(k->id == id && strcmp(k->owner, "alice") == 0 && strcmp(k->group, "research") == 0,
                "fields");
        T_CHECK(k->rpm == 60 && k->tpm == 100000 && k->max_concurrent == 4, "limits");
        T_CHECK(lm_key_usable(k, 1700000000) == LM_KEY_OK, "usable");
        T_CHECK(lm_key_usable(k, 4102444800) == LM_KEY_EXPIRED, "expired");
        T_CHECK(lm_key_model_allowed(k, "gpt-4o") && lm_key_model_allowed(k, "qwen-max") &&
                    !lm_key_model_allowed(k, "gpt-4o-mini") && !lm_key_model_allowed(k, NULL),
                "models");
        struct sockaddr_in a4 = {.sin_family = AF_INET};
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
        inet_pton(AF_INET, "10.1.2.3", &a4.sin_addr);
        T_CHECK(lm_key_addr_allowed(k, (struct sockaddr *)&a4), "10.1.2.3");
        inet_pton(AF_INET, "11.1.2.3", &a4.sin_addr);
        T_CHECK(!lm_key_addr_allowed(k, (struct sockaddr *)&a4), "11.1.2.3");
        inet_pton(AF_INET, "192.168.1.7", &a4.sin_addr);
        T_CHECK(lm_key_addr_allowed(k, (struct sockaddr *)&a4), "host /32");
        inet_pton(AF_INET6, "2001:db8:1::5", &a6.sin6_addr);
        T_CHECK(lm_key_addr_allowed(k, (struct sockaddr *)&a6), "v6 in range");
        inet_pton(AF_INET6, "2001:db9::5", &a6.sin6_addr);
        T_CHECK(!lm_key_addr_allowed(k, (struct sockaddr *)&a6), "v6 out of range");
        inet_pton(AF_INET6, "::ffff:10.9.9.9", &a6.sin6_addr);
        T_CHECK(lm_key_addr_allowed(k, (struct sockaddr *)&a6), "v4-mapped");
    }
    /* wrong secrets: one char changed, truncated, empty */
    char wrong[LM_KEY_SECRET_SIZE];
    strcpy(wrong, secret);
    wrong[20] = wrong[20] == 'A' ? 'B' : 'A';
    T_CHECK(lm_store_key_find(st, wrong, strlen(wrong)) == NULL, "one char off");
    T_CHECK(lm_store_key_find(st, secret, strlen(secret) - 1) == NULL, "truncated");
    T_CHECK(lm_store_key_find(st, "", 0) == NULL, "empty");

    /* update: limits and enabled; the snapshot follows */
    lm_key_spec_t up = {0};
    up.set = LM_KF_LIMITS | LM_KF_ENABLED | LM_KF_MODELS;
    up.rpm = 5;
    up.enabled = 0;
    T_CHECK(lm_store_key_update(st, id, &up, err, sizeof(err)) == LM_STORE_OK, "update %s", err);
    lm_key_t *k2 = lm_store_key_find(st, secret, strlen(secret));
    T_CHECK(k2 && k2 != k && k2->rpm == 5 && k2->tpm == 0 && !k2->enabled && k2->nmodels == 0 &&
                k2->ncidrs == 3 && k2->quota == 5000000 && strcmp(k2->name, "team-a") == 0,
            "updated record");
    T_CHECK(k2 && lm_key_usable(k2, 1700000000) == LM_KEY_DISABLED, "disabled");
    T_CHECK(k && k->rpm == 60, "old record unchanged while referenced");
    T_CHECK(k && k2 && k->acct == k2->acct, "same account across versions");
    lm_key_release(k);
    lm_key_release(k2);

    /* invalid updates */
    lm_key_spec_t bad = {0};
    bad.set = LM_KF_QUOTA;
    bad.quota = -1;
    T_CHECK(lm_store_key_update(st, id, &bad, err, sizeof(err)) == LM_STORE_EINVAL, "neg quota");
    bad.set = LM_KF_LIMITS;
    bad.rpm = -5;
    T_CHECK(lm_store_key_update(st, id, &bad, err, sizeof(err)) == LM_STORE_EINVAL, "neg rpm");
    const char *badc[] = {"10.0.0.0/33"};
    bad.set = LM_KF_CIDRS;
    bad.cidrs = badc;
    bad.ncidrs = 1;
    T_CHECK(lm_store_key_update(st, id, &bad, err, sizeof(err)) == LM_STORE_EINVAL, "bad cidr");
    const char *badc2[] = {"10.0.0.1; DROP TABLE keys"};
    bad.cidrs = badc2;
    T_CHECK(lm_store_key_update(st, id, &bad, err, sizeof(err)) == LM_STORE_EINVAL, "bad cidr 2");
    T_CHECK(lm_store_key_update(st, 999999, &up, err, sizeof(err)) == LM_STORE_ENOTFOUND,
            "update missing");

    /* delete is soft: gone from lookups, lists and get; its ledger stays */
    lm_usage_row_t row = {.request_id = "req-del", .key_id = id, .channel = "c"};
    T_CHECK(lm_store_usage_submit(st, &row, NULL) == LM_STORE_OK, "row");
    lm_store_flush(st);
    T_CHECK(lm_store_key_delete(st, id) == LM_STORE_OK, "delete");
    T_CHECK(lm_store_key_delete(st, id) == LM_STORE_ENOTFOUND, "delete twice");
    T_CHECK(lm_store_key_find(st, secret, strlen(secret)) == NULL, "deleted not found");
    lm_key_t *g = NULL;
    T_CHECK(lm_store_key_get(st, id, &g) == LM_STORE_ENOTFOUND, "get deleted");
    int64_t nrows = 0;
    T_CHECK(ledger_sum(st, id, &nrows) == 0 && nrows == 1, "ledger kept");
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

static void test_hostile_text(void)
{
    T_BEGIN("store_au3_hostile_text_round_trip");
    new_dir();
    lm_store_t *st = open_store(0);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    static char big[10241];
    for (size_t i = 0; i < sizeof(big) - 1; i++)
        big[i] = "'\";--%s\\ab"[i % 10];
    big[sizeof(big) - 1] = '\0';
    const char *names[] = {
        "'; DROP TABLE keys; --",
        "\" OR 1=1 --",
        "%s%n%x\\0\\",
        "Robert'); DELETE FROM usage WHERE ('1'='1",
        "龙门 🐉 Ünïcödé 𝄞",
        "<img src=x onerror=alert(1)>",
        big,
    };
    int64_t ids[7];
    char secret[LM_KEY_SECRET_SIZE];
    for (int i = 0; i < 7; i++) {
        lm_key_spec_t sp = spec_quota(names[i], 10);
        sp.owner = names[(i + 1) % 7];
        sp.group = names[(i + 2) % 7];
        const char *m[] = {names[i % 6]};
        sp.models = m;
        sp.nmodels = 1;
        char err[256] = "";
        T_CHECK(lm_store_key_create(st, &sp, secret, &ids[i], err, sizeof(err)) == LM_STORE_OK,
                "create %d: %s", i, err);
    }
    for (int i = 0; i < 7; i++) {
        lm_key_t *k = NULL;
        T_CHECK(lm_store_key_get(st, ids[i], &k) == LM_STORE_OK, "get %d", i);
        if (k) {
            T_CHECK(strcmp(k->name, names[i]) == 0, "name %d round trip", i);
            T_CHECK(strcmp(k->owner, names[(i + 1) % 7]) == 0, "owner %d", i);
            T_CHECK(strcmp(k->group, names[(i + 2) % 7]) == 0, "group %d", i);
            T_CHECK(k->nmodels == 1 && strcmp(k->models[0], names[i % 6]) == 0, "model %d", i);
        }
        lm_key_release(k);
    }
    /* NUL inside a value, bad UTF-8, too long: refused by validation */
    const char with_nul[] = "abc\0def";
    T_CHECK(!lm_store_text_ok(with_nul, sizeof(with_nul) - 1, 100), "embedded NUL");
    T_CHECK(lm_store_text_ok("abc", 3, 100), "plain");
    T_CHECK(!lm_store_text_ok("\xc0\xaf", 2, 100), "overlong");
    T_CHECK(!lm_store_text_ok("\xed\xa0\x80", 3, 100), "surrogate");
    T_CHECK(!lm_store_text_ok("\xff", 1, 100), "0xff");
    T_CHECK(!lm_store_text_ok("\xe4\xb8", 2, 100), "truncated");
    T_CHECK(lm_store_text_ok("龙门", strlen("龙门"), 100), "cjk");
    T_CHECK(!lm_store_text_ok(big, strlen(big), 100), "too long");
    static char huge[LM_STORE_TEXT_MAX + 2];
    memset(huge, 'x', sizeof(huge) - 1);
    lm_key_spec_t sp = spec_quota(huge, 1);
    char err[256];
    int64_t id;
    T_CHECK(lm_store_key_create(st, &sp, secret, &id, err, sizeof(err)) == LM_STORE_EINVAL,
            "over %d bytes refused", LM_STORE_TEXT_MAX);
    sp = spec_quota("\xc3\x28", 1);
    T_CHECK(lm_store_key_create(st, &sp, secret, &id, err, sizeof(err)) == LM_STORE_EINVAL,
            "bad utf-8 refused");

    /* hostile usage fields round-trip too */
    lm_usage_row_t row = {.request_id = "r'; DROP TABLE usage;--",
                          .key_id = ids[0],
                          .channel = names[4],
                          .model_asked = names[1],
                          .model_served = big,
                          .usage_json = "{\"prompt_tokens\":\"'\\u0000\"}",
                          .status = 200};
    T_CHECK(lm_store_usage_submit(st, &row, NULL) == LM_STORE_OK, "submit");
    lm_store_flush(st);
    lm_usage_rec_t *recs = NULL;
    size_t n = 0;
    T_CHECK(lm_store_usage_list(st, ids[0], 0, 10, &recs, &n) == LM_STORE_OK && n == 1, "list");
    if (n == 1) {
        T_STREQ(recs[0].row.request_id, row.request_id);
        T_STREQ(recs[0].row.channel, names[4]);
        T_STREQ(recs[0].row.model_served, big);
        T_STREQ(recs[0].row.usage_json, row.usage_json);
    }
    lm_store_usage_list_free(recs, n);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* ------------------------------------------------------------------------ */
/* QB-1: 200 barrier-synchronised reservations against a balance of 10.      */

#define QB1_THREADS 200
#define QB1_COST    1234567

typedef struct {
    lm_store_t *st;
    const char *secret;
    pthread_barrier_t *bar;
    atomic_int *admitted, *done_ok, *done_bad;
    int rep, idx;
} qb1_t;

static void count_done(void *arg, int status, int64_t id)
{
    (void)id;
    qb1_t *q = arg;
    if (status == LM_STORE_OK)
        atomic_fetch_add(q->done_ok, 1);
    else
        atomic_fetch_add(q->done_bad, 1);
}

static void *qb1_thread(void *arg)
{
    qb1_t *q = arg;
    pthread_barrier_wait(q->bar);
    lm_key_t *k = lm_store_key_find(q->st, q->secret, strlen(q->secret));
    if (k == NULL)
        return NULL;
    lm_reservation_t *r = NULL;
    if (lm_billing_reserve(k, QB1_COST, lm_clock_ms() + 60000, &r) == LM_BILLING_OK) {
        atomic_fetch_add(q->admitted, 1);
        char rid[64];
        snprintf(rid, sizeof(rid), "qb1-%d-%d", q->rep, q->idx);
        lm_usage_row_t row = {.request_id = rid,
                              .channel = "mock",
                              .model_asked = "mock-1",
                              .model_served = "mock-1",
                              .prompt_tokens = 10,
                              .completion_tokens = 20,
                              .status = 200};
        lm_store_cb_t cb = {.done = count_done, .arg = q};
        if (lm_billing_settle(q->st, r, QB1_COST, &row, &cb) != LM_STORE_OK)
            atomic_fetch_add(q->done_bad, 1);
    }
    lm_key_release(k);
    return NULL;
}

static void test_qb1(void)
{
    T_BEGIN("billing_qb1_race_200_vs_balance_of_10");
    new_dir();
    lm_store_t *st = open_store(0);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    static qb1_t args[QB1_THREADS];
    static pthread_t th[QB1_THREADS];
    pthread_barrier_t bar;
    int worst = 0;
    for (int rep = 0; rep < 20; rep++) {
        char secret[LM_KEY_SECRET_SIZE];
        int64_t id;
        lm_key_spec_t sp = spec_quota("qb1", 10 * (int64_t)QB1_COST);
        if (lm_store_key_create(st, &sp, secret, &id, NULL, 0) != LM_STORE_OK) {
            T_CHECK(0, "create");
            break;
        }
        atomic_int admitted = 0, ok = 0, bad = 0;
        pthread_barrier_init(&bar, NULL, QB1_THREADS);
        for (int i = 0; i < QB1_THREADS; i++) {
            args[i] = (qb1_t){st, secret, &bar, &admitted, &ok, &bad, rep, i};
            pthread_create(&th[i], NULL, qb1_thread, &args[i]);
        }
        for (int i = 0; i < QB1_THREADS; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&bar);
        lm_store_flush(st);
        int a = atomic_load(&admitted);
        if (a > worst)
            worst = a;
        T_CHECK(a <= 10, "rep %d: %d admitted", rep, a);
        T_CHECK(atomic_load(&ok) == a && atomic_load(&bad) == 0, "rep %d: %d ok %d bad", rep,
                atomic_load(&ok), atomic_load(&bad));
        int64_t rows = 0, sum = ledger_sum(st, id, &rows), used = db_used(st, id);
        T_CHECK(used >= 0 && used <= 10 * (int64_t)QB1_COST, "rep %d: balance negative", rep);
        T_CHECK(sum == used && rows == a, "rep %d: ledger %lld (%lld rows) != used %lld", rep,
                (long long)sum, (long long)rows, (long long)used);
        lm_key_t *k = lm_store_key_find(st, secret, strlen(secret));
        lm_balance_t b = {0};
        if (k)
            lm_billing_balance(k->acct, &b);
        T_CHECK(k && b.used == used && b.reserved == 0 && b.pending == 0 && b.nopen == 0,
                "rep %d: memory used %lld reserved %lld pending %lld open %lld", rep,
                (long long)b.used, (long long)b.reserved, (long long)b.pending, (long long)b.nopen);
        lm_key_release(k);
    }
    T_CHECK(worst == 10, "the balance admits exactly 10 (max seen %d)", worst);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* ------------------------------------------------------------------------ */
/* QB-2 + DB-3: 8 threads x 500 mixed operations; exact agreement after.     */

#define MIX_THREADS 8
#define MIX_OPS     500

typedef struct {
    lm_store_t *st;
    const char *secret_limited, *secret_unlimited;
    int idx;
    atomic_int *ok, *dup, *bad, *refused, *submit_bad;
} mix_t;

static void mix_done(void *arg, int status, int64_t id)
{
    (void)id;
    mix_t *m = arg;
    if (status == LM_STORE_OK)
        atomic_fetch_add(m->ok, 1);
    else if (status == LM_STORE_DUP)
        atomic_fetch_add(m->dup, 1);
    else
        atomic_fetch_add(m->bad, 1);
}

static void *mix_thread(void *arg)
{
    mix_t *m = arg;
    unsigned seed = 1234u + (unsigned)m->idx;
    lm_store_cb_t cb = {.done = mix_done, .arg = m};
    for (int i = 0; i < MIX_OPS; i++) {
        const char *sec = (i % 3 == 0) ? m->secret_unlimited : m->secret_limited;
        lm_key_t *k = lm_store_key_find(m->st, sec, strlen(sec));
        if (k == NULL) {
            atomic_fetch_add(m->submit_bad, 1);
            continue;
        }
        int64_t worst = 1000 + rand_r(&seed) % 50000;
        lm_reservation_t *r = NULL;
        int64_t now = lm_clock_ms();
        int kind = rand_r(&seed) % 6;
        /* kind 5: a reservation that expires before it settles */
        int64_t deadline = kind == 5 ? now - 1 : now + 60000;
        if (lm_billing_reserve(k, worst, deadline, &r) != LM_BILLING_OK) {
            atomic_fetch_add(m->refused, 1);
            lm_key_release(k);
            continue;
        }
        char rid[64];
        snprintf(rid, sizeof(rid), "mix-%d-%d", m->idx, i);
        lm_usage_row_t row = {.request_id = rid,
                              .channel = "ch",
                              .model_asked = "m",
                              .model_served = "m",
                              .status = 200};
        int rc = LM_STORE_OK;
        switch (kind) {
        case 0: /* error before any attempt: cancel */ lm_billing_cancel(r); break;
        case 1: /* normal: settle below the worst case */
            rc = lm_billing_settle(m->st, r, rand_r(&seed) % (worst + 1), &row, &cb);
            break;
        case 2: /* provider under-estimated: actual above the worst case */
            rc = lm_billing_settle(m->st, r, worst + rand_r(&seed) % 100000, &row, &cb);
            break;
        case 3: /* retry: attempt 0 billed (charge), attempt 1 settles; then a
                   replay */
            rc = lm_billing_charge(m->st, r, worst / 3, &row, &cb);
            if (rc == LM_STORE_OK) {
                row.attempt = 1;
                rc = lm_billing_settle(m->st, r, worst / 2, &row, &cb);
            } else {
                lm_billing_cancel(r);
            }
            if (rc == LM_STORE_OK) { /* replay of attempt 1: must be a no-op */
                lm_reservation_t *r2 = NULL;
                if (lm_billing_reserve(k, 0, now + 60000, &r2) == LM_BILLING_OK)
                    rc = lm_billing_settle(m->st, r2, worst / 2, &row, &cb);
            }
            break;
        case 4: /* client aborted: billed what was received, or upstream refused: 0
                 */
            row.client_aborted = 1;
            rc = lm_billing_settle(m->st, r, (i & 1) ? worst / 4 : 0, &row, &cb);
            break;
        case 5: /* expired, reclaimed, then settles late */
            lm_billing_reclaim(m->st, now);
            rc = lm_billing_settle(m->st, r, worst / 2, &row, &cb);
            break;
        }
        if (rc != LM_STORE_OK)
            atomic_fetch_add(m->submit_bad, 1);
        lm_key_release(k);
    }
    return NULL;
}

typedef struct {
    lm_store_t *st;
    int64_t id;
    atomic_int *stop;
    int updates, reads, bad;
} admin_t;

static void *admin_thread(void *arg)
{
    admin_t *a = arg;
    while (!atomic_load(a->stop)) {
        lm_key_spec_t up = {0};
        up.set = LM_KF_LIMITS | LM_KF_NAME;
        up.name = (a->updates & 1) ? "odd" : "even";
        up.rpm = a->updates;
        if (lm_store_key_update(a->st, a->id, &up, NULL, 0) != LM_STORE_OK)
            a->bad++;
        a->updates++;
        lm_usage_total_t *t = NULL;
        size_t n = 0;
        if (lm_store_usage_totals(a->st, LM_USAGE_BY_DAY, 0, 0, 0, &t, &n) != LM_STORE_OK)
            a->bad++;
        lm_store_usage_totals_free(t, n);
        a->reads++;
        usleep(1000);
    }
    return NULL;
}

static void test_mix(void)
{
    T_BEGIN("billing_qb2_db3_mixed_8x500");
    new_dir();
    lm_store_t *st = open_store(0);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    atomic_store(&g_errlogs, 0);
    char s_lim[LM_KEY_SECRET_SIZE], s_unl[LM_KEY_SECRET_SIZE];
    int64_t id_lim, id_unl;
    const int64_t quota = 20000000; /* runs out part way: refusals and capped bills */
    lm_key_spec_t sp = spec_quota("limited", quota);
    T_CHECK(lm_store_key_create(st, &sp, s_lim, &id_lim, NULL, 0) == LM_STORE_OK, "create");
    sp = spec_quota("unlimited", 0);
    sp.unlimited = 1;
    T_CHECK(lm_store_key_create(st, &sp, s_unl, &id_unl, NULL, 0) == LM_STORE_OK, "create");

    atomic_int ok = 0, dup = 0, bad = 0, refused = 0, submit_bad = 0, stop = 0;
    mix_t args[MIX_THREADS];
    pthread_t th[MIX_THREADS], adm;
    admin_t a = {st, id_lim, &stop, 0, 0, 0};
    pthread_create(&adm, NULL, admin_thread, &a);
    for (int i = 0; i < MIX_THREADS; i++) {
        args[i] = (mix_t){st, s_lim, s_unl, i, &ok, &dup, &bad, &refused, &submit_bad};
        pthread_create(&th[i], NULL, mix_thread, &args[i]);
    }
    for (int i = 0; i < MIX_THREADS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&stop, 1);
    pthread_join(adm, NULL);
    size_t reclaimed = lm_billing_reclaim(st, lm_clock_ms() + 3600000);
    lm_store_flush(st);

    T_CHECK(atomic_load(&bad) == 0 && atomic_load(&submit_bad) == 0 && a.bad == 0,
            "errors: %d completions, %d submits, %d admin", atomic_load(&bad),
            atomic_load(&submit_bad), a.bad);
    T_CHECK(atomic_load(&g_errlogs) == 0, "%d store errors logged (SQLITE_BUSY?)",
            atomic_load(&g_errlogs));
    T_CHECK(atomic_load(&dup) > 0 && atomic_load(&ok) > 1000, "ok %d dup %d", atomic_load(&ok),
            atomic_load(&dup));
    T_CHECK(atomic_load(&refused) > 0, "the limited key ran out (refused %d)",
            atomic_load(&refused));
    T_CHECK(reclaimed == 0, "%zu reservations left open", reclaimed);
    T_CHECK(a.updates > 0 && a.reads > 0, "admin ran");

    const char *secrets[2] = {s_lim, s_unl};
    const int64_t ids[2] = {id_lim, id_unl};
    for (int i = 0; i < 2; i++) {
        lm_key_t *k = lm_store_key_find(st, secrets[i], strlen(secrets[i]));
        lm_balance_t b = {0};
        if (k)
            lm_billing_balance(k->acct, &b);
        int64_t sum = ledger_sum(st, ids[i], NULL), used = db_used(st, ids[i]);
        T_CHECK(k && b.nopen == 0 && b.reserved == 0 && b.pending == 0,
                "key %d: open %lld reserved %lld pending %lld", i, (long long)b.nopen,
                (long long)b.reserved, (long long)b.pending);
        T_CHECK(b.used == used && used == sum, "key %d: memory %lld db %lld ledger %lld", i,
                (long long)b.used, (long long)used, (long long)sum);
        if (i == 0)
            T_CHECK(used <= quota && b.available >= 0, "limited key overspent: %lld of %lld",
                    (long long)used, (long long)quota);
        lm_key_release(k);
    }
    lm_store_close(st);

    /* after a restart the DB is the truth and agrees with the ledger */
    st = open_store(0);
    if (st) {
        lm_key_t *k = lm_store_key_find(st, s_lim, strlen(s_lim));
        lm_balance_t b = {0};
        if (k)
            lm_billing_balance(k->acct, &b);
        T_CHECK(k && b.used == ledger_sum(st, id_lim, NULL) && b.reserved == 0,
                "after re-open used %lld", (long long)b.used);
        lm_key_release(k);
        lm_store_close(st);
    }
    rm_dir(g_dir);
    T_END();
}

/* ------------------------------------------------------------------------ */

static void test_reserve_rules(void)
{
    T_BEGIN("billing_reserve_settle_expiry_rules");
    new_dir();
    lm_store_t *st = open_store(0);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    char secret[LM_KEY_SECRET_SIZE];
    int64_t id;
    lm_key_spec_t sp = spec_quota("rules", 1000);
    lm_store_key_create(st, &sp, secret, &id, NULL, 0);
    lm_key_t *k = lm_store_key_find(st, secret, strlen(secret));
    lm_reservation_t *r1 = NULL, *r2 = NULL, *r3 = NULL;
    lm_balance_t b;
    if (k == NULL) {
        T_CHECK(0, "find");
        T_END();
        return;
    }
    T_CHECK(lm_billing_reserve(k, -1, 0, &r1) == LM_BILLING_EINVAL, "negative amount");
    T_CHECK(lm_billing_reserve(k, 600, 100, &r1) == LM_BILLING_OK, "r1 600");
    T_CHECK(lm_billing_reserve(k, 401, 200, &r2) == LM_BILLING_EQUOTA, "401 over");
    T_CHECK(lm_billing_reserve(k, 400, 200, &r2) == LM_BILLING_OK, "r2 400 (exactly the rest)");
    T_CHECK(lm_billing_reserve(k, 1, 200, &r3) == LM_BILLING_EQUOTA, "nothing left");
    T_CHECK(lm_billing_reserve(k, 0, 200, &r3) == LM_BILLING_OK, "0 always fits");
    lm_billing_cancel(r3);
    T_CHECK(lm_billing_reclaim(st, 99) == 0, "nothing expired at 99");
    T_CHECK(lm_billing_reclaim(st, 100) == 1, "r1 expired at 100");
    lm_billing_balance(k->acct, &b);
    T_CHECK(b.reserved == 400 && b.nopen == 1 && b.available == 600, "after reclaim %lld %lld",
            (long long)b.reserved, (long long)b.available);
    /* r1 settles late, billed from the balance */
    lm_usage_row_t row = {.request_id = "late", .channel = "c"};
    T_CHECK(lm_billing_settle(st, r1, 550, &row, NULL) == LM_STORE_OK, "late settle");
    /* r2 wants more than it holds and the balance has only 50 more: capped */
    row.request_id = "capped";
    T_CHECK(lm_billing_settle(st, r2, 5000, &row, NULL) == LM_STORE_OK, "capped settle");
    lm_store_flush(st);
    lm_billing_balance(k->acct, &b);
    T_CHECK(b.used == 1000 && b.available == 0 && b.reserved == 0 && b.pending == 0,
            "used %lld avail %lld", (long long)b.used, (long long)b.available);
    T_CHECK(db_used(st, id) == 1000 && ledger_sum(st, id, NULL) == 1000, "db agrees");
    lm_usage_rec_t *recs = NULL;
    size_t n = 0;
    lm_store_usage_list(st, id, 0, 10, &recs, &n);
    T_CHECK(n == 2 && recs[0].row.cost == 450 && recs[1].row.cost == 550,
            "rows record the billed amounts");
    lm_store_usage_list_free(recs, n);

    /* quota: lowering below used is refused; to exactly used is fine; raising
     * frees */
    char err[128] = "";
    lm_key_spec_t up = {0};
    up.set = LM_KF_QUOTA;
    up.quota = 999;
    T_CHECK(lm_store_key_update(st, id, &up, err, sizeof(err)) == LM_STORE_ECONFLICT, "below");
    up.quota = 1000;
    T_CHECK(lm_store_key_update(st, id, &up, err, sizeof(err)) == LM_STORE_OK, "equal");
    up.quota = 3000;
    T_CHECK(lm_store_key_update(st, id, &up, err, sizeof(err)) == LM_STORE_OK, "raise");
    T_CHECK(lm_billing_reserve(k, 2000, 1000, &r1) == LM_BILLING_OK, "room after raise");
    lm_billing_cancel(r1);
    up.unlimited = 1;
    T_CHECK(lm_store_key_update(st, id, &up, err, sizeof(err)) == LM_STORE_OK, "unlimited");
    /* unlimited: anything up to INT64_MAX - used; beyond that the counters would
     * overflow */
    T_CHECK(lm_billing_reserve(k, INT64_MAX - 1000, 1000, &r1) == LM_BILLING_OK, "unlimited");
    T_CHECK(lm_billing_reserve(k, 1, 1000, &r2) == LM_BILLING_EQUOTA, "overflow refused");
    lm_billing_cancel(r1);
    lm_billing_balance(k->acct, &b);
    T_CHECK(b.reserved == 0 && b.nopen == 0, "counters exact after extremes");
    up.unlimited = 0;
    up.quota = 1000;
    T_CHECK(lm_store_key_update(st, id, &up, err, sizeof(err)) == LM_STORE_OK, "limited again");
    T_CHECK(lm_billing_reserve(k, 1, 1000, &r1) == LM_BILLING_EQUOTA, "limited again: full");

    /* idempotent replay through the plain submit path */
    lm_usage_row_t z = {.request_id = "replay", .attempt = 2, .key_id = id, .channel = "c"};
    T_CHECK(lm_store_usage_submit(st, &z, NULL) == LM_STORE_OK, "first");
    T_CHECK(lm_store_usage_submit(st, &z, NULL) == LM_STORE_OK, "replay queued");
    lm_store_flush(st);
    int64_t rows = 0;
    ledger_sum(st, id, &rows);
    T_CHECK(rows == 3, "replay stored once (%lld rows)", (long long)rows);
    /* settle without a reservation (config bootstrap key): recorded, no balance */
    lm_usage_row_t cfg = {.request_id = "cfg-key", .channel = "c", .cost = 0};
    T_CHECK(lm_billing_settle(st, NULL, 0, &cfg, NULL) == LM_STORE_OK, "settle NULL");
    T_CHECK(lm_billing_settle(st, NULL, 0, NULL, NULL) == LM_STORE_OK, "settle NULL NULL");
    lm_store_flush(st);
    T_CHECK(ledger_sum(st, 0, &rows) == 1000 && rows == 4, "all rows %lld", (long long)rows);
    /* a row for a key that does not exist is refused by the foreign key */
    z.key_id = 424242;
    z.request_id = "nokey";
    T_CHECK(lm_store_usage_submit(st, &z, NULL) == LM_STORE_OK, "queued");
    lm_store_flush(st);
    T_CHECK(ledger_sum(st, 424242, &rows) == 0 && rows == 0, "no row for a missing key");
    lm_key_release(k);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* ------------------------------------------------------------------------ */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, release;
    atomic_int count;
} gate_t;

static void gate_done(void *arg, int status, int64_t id)
{
    (void)status;
    (void)id;
    gate_t *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->release)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void count_cb(void *arg, int status, int64_t id)
{
    (void)id;
    gate_t *g = arg;
    if (status == LM_STORE_OK)
        atomic_fetch_add(&g->count, 1);
}

typedef struct {
    lm_store_done_fn fn;
    void *arg;
    int status;
    int64_t id;
    int posted;
} mailbox_t;

static void post_to_mailbox(void *ctx, lm_store_done_fn fn, void *arg, int status, int64_t id)
{
    mailbox_t *m = ctx;
    m->fn = fn;
    m->arg = arg;
    m->status = status;
    m->id = id;
    m->posted = 1;
}

static void test_queue(void)
{
    T_BEGIN("store_queue_bounded_and_posting");
    new_dir();
    lm_store_t *st = open_store(4);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    gate_t g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    /* the first row's completion holds the writer so the queue fills */
    lm_usage_row_t row = {.request_id = "gate", .channel = "c"};
    lm_store_cb_t cb = {.done = gate_done, .arg = &g};
    T_CHECK(lm_store_usage_submit(st, &row, &cb) == LM_STORE_OK, "gate");
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    char rid[32];
    int queued = 0, full = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(rid, sizeof(rid), "q-%d", i);
        row.request_id = rid;
        lm_store_cb_t c2 = {.done = count_cb, .arg = &g};
        int rc = lm_store_usage_submit(st, &row, &c2);
        queued += rc == LM_STORE_OK;
        full += rc == LM_STORE_EFULL;
    }
    T_CHECK(queued == 4 && full == 6, "queued %d full %d", queued, full);
    T_CHECK(lm_store_queue_depth(st) == 4, "depth");
    pthread_mutex_lock(&g.mu);
    g.release = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    lm_store_flush(st);
    T_CHECK(atomic_load(&g.count) == 4, "completed %d", atomic_load(&g.count));

    /* post: the completion is handed to the caller's "thread", not run */
    mailbox_t mb = {0};
    lm_store_cb_t pc = {.done = count_cb, .arg = &g, .post = post_to_mailbox, .post_ctx = &mb};
    row.request_id = "posted";
    T_CHECK(lm_store_usage_submit(st, &row, &pc) == LM_STORE_OK, "submit");
    lm_store_flush(st);
    T_CHECK(mb.posted && mb.fn == count_cb && mb.status == LM_STORE_OK && mb.id > 0,
            "posted status %d id %lld", mb.status, (long long)mb.id);
    T_CHECK(atomic_load(&g.count) == 4, "not run by the writer");
    if (mb.posted)
        mb.fn(mb.arg, mb.status, mb.id);
    T_CHECK(atomic_load(&g.count) == 5, "run by the owner");

    /* invalid rows are refused at once */
    lm_usage_row_t badrow = {.request_id = "", .channel = "c"};
    T_CHECK(lm_store_usage_submit(st, &badrow, NULL) == LM_STORE_EINVAL, "empty request id");
    badrow.request_id = "x";
    badrow.cost = -1;
    T_CHECK(lm_store_usage_submit(st, &badrow, NULL) == LM_STORE_EINVAL, "negative cost");

    /* close commits what is queued */
    for (int i = 0; i < 4; i++) {
        snprintf(rid, sizeof(rid), "close-%d", i);
        row.request_id = rid;
        lm_store_usage_submit(st, &row, NULL);
    }
    lm_store_close(st);
    st = open_store(0);
    if (st) {
        int64_t rows = 0;
        ledger_sum(st, 0, &rows);
        T_CHECK(rows == 1 + 4 + 1 + 4, "rows after close/re-open: %lld", (long long)rows);
        lm_store_close(st);
    }
    rm_dir(g_dir);
    T_END();
}

/* One completion status per row (arg = its slot). */
static int g_batch_status[32];

static void batch_done(void *arg, int status, int64_t id)
{
    (void)id;
    g_batch_status[(intptr_t)arg] = status;
}

static int batch_submit(lm_store_t *st, const char *rid, int64_t key_id, int64_t cost, int slot)
{
    lm_usage_row_t row = {.request_id = rid, .channel = "c", .key_id = key_id, .cost = cost};
    lm_store_cb_t cb = {.done = batch_done, .arg = (void *)(intptr_t)slot};
    g_batch_status[slot] = 99;
    return lm_store_usage_submit(st, &row, &cb);
}

/* Group commit: rows queued while the writer is busy commit as one batch,
 * which runs without savepoints; a row that fails (no such key, over the
 * quota) sends the batch back for a run with one savepoint per row, so its
 * neighbours still commit, exactly once. A lone failing row writes nothing. */
static void test_batch_failures(void)
{
    T_BEGIN("store_group_commit_failures_isolated");
    new_dir();
    lm_store_t *st = open_store(64);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    char secret[LM_KEY_SECRET_SIZE], err[128];
    int64_t id = 0;
    lm_key_spec_t sp = spec_quota("batch", 100);
    T_CHECK(lm_store_key_create(st, &sp, secret, &id, err, sizeof(err)) == LM_STORE_OK, "key");
    gate_t g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    lm_usage_row_t row = {.request_id = "gate", .channel = "c"};
    lm_store_cb_t cb = {.done = gate_done, .arg = &g};
    T_CHECK(lm_store_usage_submit(st, &row, &cb) == LM_STORE_OK, "gate");
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    /* one batch: 10 good rows of 7, a missing key, a duplicate, one over quota */
    char rid[10][16];
    int ok = 1;
    for (int i = 0; i < 10; i++) {
        snprintf(rid[i], sizeof(rid[i]), "b-%d", i);
        ok &= batch_submit(st, rid[i], id, 7, i) == LM_STORE_OK;
        if (i == 3)
            ok &= batch_submit(st, "no-key", 999999, 5, 10) == LM_STORE_OK;
        if (i == 5)
            ok &= batch_submit(st, "b-2", id, 7, 11) == LM_STORE_OK;
        if (i == 7)
            ok &= batch_submit(st, "too-much", id, 50, 12) == LM_STORE_OK;
    }
    T_CHECK(ok && lm_store_queue_depth(st) == 13, "queued %zu", lm_store_queue_depth(st));
    pthread_mutex_lock(&g.mu);
    g.release = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    lm_store_flush(st);
    int good = 0;
    for (int i = 0; i < 10; i++)
        good += g_batch_status[i] == LM_STORE_OK;
    T_CHECK(good == 10, "good rows committed: %d", good);
    T_CHECK(g_batch_status[10] == LM_STORE_ECONFLICT, "missing key: %d", g_batch_status[10]);
    T_CHECK(g_batch_status[11] == LM_STORE_DUP, "duplicate: %d", g_batch_status[11]);
    T_CHECK(g_batch_status[12] == LM_STORE_ECONFLICT, "over quota: %d", g_batch_status[12]);
    int64_t rows = 0;
    T_CHECK(ledger_sum(st, id, &rows) == 70 && rows == 10, "ledger %lld rows", (long long)rows);
    T_CHECK(db_used(st, id) == 70, "used %lld", (long long)db_used(st, id));

    /* a lone failing row: its own transaction is rolled back */
    T_CHECK(batch_submit(st, "lone", id, 40, 13) == LM_STORE_OK, "lone");
    lm_store_flush(st);
    T_CHECK(g_batch_status[13] == LM_STORE_ECONFLICT, "lone over quota: %d", g_batch_status[13]);
    T_CHECK(batch_submit(st, "lone-ok", id, 30, 14) == LM_STORE_OK, "lone ok");
    lm_store_flush(st);
    T_CHECK(g_batch_status[14] == LM_STORE_OK, "lone ok: %d", g_batch_status[14]);
    T_CHECK(ledger_sum(st, id, &rows) == 100 && rows == 11 && db_used(st, id) == 100,
            "after lone rows: %lld rows", (long long)rows);
    lm_key_t *k = lm_store_key_find(st, secret, strlen(secret));
    T_CHECK(k && k->acct && k->acct->used == 100 && k->acct->pending == 0, "memory follows");
    lm_key_release(k);
    atomic_store(&g_errlogs, 0); /* the failures above were logged on purpose */
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

static void test_totals(void)
{
    T_BEGIN("store_usage_totals");
    new_dir();
    lm_store_t *st = open_store(0);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    char s1[LM_KEY_SECRET_SIZE], s2[LM_KEY_SECRET_SIZE];
    int64_t k1, k2;
    lm_key_spec_t sp = spec_quota("k1", 1000000);
    lm_store_key_create(st, &sp, s1, &k1, NULL, 0);
    sp = spec_quota("k2", 1000000);
    lm_store_key_create(st, &sp, s2, &k2, NULL, 0);
    int64_t day1 = 1704067200000; /* 2024-01-01T00:00:00Z */
    int64_t day2 = day1 + 86400000;
    struct {
        int64_t key, at, cost, prompt;
        const char *model, *served, *channel;
    } rows[] = {
        {k1, day1 + 1, 100, 10, "gpt", "gpt-2024", "openai"},
        {k1, day1 + 2, 200, 20, "qwen", "qwen-max", "dashscope"},
        {k2, day2 + 3, 300, 30, "gpt", "gpt-2024", "openai"},
        {k2, day2 + 4, 400, 40, "gpt", "gpt-2024", "azure"},
    };
    for (int i = 0; i < 4; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "t%d", i);
        lm_usage_row_t r = {.request_id = rid,
                            .key_id = rows[i].key,
                            .created_ms = rows[i].at,
                            .cost = rows[i].cost,
                            .prompt_tokens = rows[i].prompt,
                            .model_asked = rows[i].model,
                            .model_served = rows[i].served,
                            .channel = rows[i].channel};
        lm_store_usage_submit(st, &r, NULL);
    }
    lm_store_flush(st);
    lm_usage_total_t *t = NULL;
    size_t n = 0;
    T_CHECK(lm_store_usage_totals(st, LM_USAGE_BY_KEY, 0, 0, 0, &t, &n) == LM_STORE_OK && n == 2,
            "by key %zu", n);
    if (n == 2)
        T_CHECK(t[0].key_id == k1 && t[0].cost == 300 && t[0].requests == 2 && t[1].key_id == k2 &&
                    t[1].cost == 700 && t[1].prompt_tokens == 70,
                "by key values");
    lm_store_usage_totals_free(t, n);
    T_CHECK(lm_store_usage_totals(st, LM_USAGE_BY_MODEL, 0, 0, 0, &t, &n) == LM_STORE_OK &&
                n == 2 && strcmp(t[0].group, "gpt") == 0 && t[0].cost == 800,
            "by model");
    lm_store_usage_totals_free(t, n);
    T_CHECK(lm_store_usage_totals(st, LM_USAGE_BY_CHANNEL, 0, 0, 0, &t, &n) == LM_STORE_OK &&
                n == 3 && strcmp(t[0].group, "azure") == 0,
            "by channel");
    lm_store_usage_totals_free(t, n);
    T_CHECK(lm_store_usage_totals(st, LM_USAGE_BY_DAY, 0, 0, 0, &t, &n) == LM_STORE_OK && n == 2 &&
                strcmp(t[0].group, "2024-01-01") == 0 && t[0].cost == 300 &&
                strcmp(t[1].group, "2024-01-02") == 0 && t[1].cost == 700,
            "by day");
    lm_store_usage_totals_free(t, n);
    T_CHECK(lm_store_usage_totals(st, LM_USAGE_BY_DAY, day2, 0, k2, &t, &n) == LM_STORE_OK &&
                n == 1 && t[0].cost == 700,
            "from day2, key 2");
    lm_store_usage_totals_free(t, n);
    T_CHECK(lm_store_usage_totals(st, LM_USAGE_BY_MODEL_SERVED, day1, day2, 0, &t, &n) ==
                    LM_STORE_OK &&
                n == 2 && strcmp(t[1].group, "qwen-max") == 0,
            "served, day 1 only");
    lm_store_usage_totals_free(t, n);
    T_CHECK(lm_store_usage_totals(st, 99, 0, 0, 0, &t, &n) == LM_STORE_EINVAL, "bad grouping");
    lm_usage_rec_t *recs = NULL;
    T_CHECK(lm_store_usage_list(st, 0, 0, 3, &recs, &n) == LM_STORE_OK && n == 3 &&
                strcmp(recs[0].row.request_id, "t3") == 0,
            "newest first");
    int64_t before = n == 3 ? recs[2].id : 0;
    lm_store_usage_list_free(recs, n);
    T_CHECK(lm_store_usage_list(st, 0, before, 10, &recs, &n) == LM_STORE_OK && n == 1 &&
                strcmp(recs[0].row.request_id, "t0") == 0,
            "page 2");
    lm_store_usage_list_free(recs, n);
    /* the committed used follows the rows */
    T_CHECK(db_used(st, k1) == 300 && db_used(st, k2) == 700, "used");
    lm_key_t **keys = NULL;
    T_CHECK(lm_store_key_list(st, k1, 10, &keys, &n) == LM_STORE_OK && n == 1 &&
                keys[0]->id == k2 && keys[0]->used == 700,
            "list after k1");
    lm_store_key_list_free(keys, n);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* ------------------------------------------------------------------------ */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t ns_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void test_timing(void)
{
    T_BEGIN("store_au2_lookup_timing_smoke");
    new_dir();
    lm_store_t *st = open_store(0);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    char secret[LM_KEY_SECRET_SIZE];
    int64_t id;
    lm_key_spec_t sp = spec_quota("timing", 1);
    for (int i = 0; i < 50; i++) /* a populated table */
        lm_store_key_create(st, &sp, secret, &id, NULL, 0);
    char w0[LM_KEY_SECRET_SIZE], w30[LM_KEY_SECRET_SIZE];
    strcpy(w0, secret);
    strcpy(w30, secret);
    w0[0] = 'S';
    w30[30] = w30[30] == 'A' ? 'B' : 'A';
    enum { N = 50000 };
    static int64_t t0[N], t30[N];
    size_t len = strlen(secret);
    int found = 0;
    for (int i = 0; i < N; i++) {
        int64_t a = ns_now();
        found += lm_store_key_find(st, w0, len) != NULL;
        int64_t b = ns_now();
        found += lm_store_key_find(st, w30, len) != NULL;
        int64_t c = ns_now();
        t0[i] = b - a;
        t30[i] = c - b;
    }
    qsort(t0, N, sizeof(t0[0]), cmp_i64);
    qsort(t30, N, sizeof(t30[0]), cmp_i64);
    int64_t d = t0[N / 2] - t30[N / 2];
    T_CHECK(found == 0, "wrong keys found");
    T_CHECK(d < 1000 && d > -1000, "median %lld ns vs %lld ns", (long long)t0[N / 2],
            (long long)t30[N / 2]);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* The database locked by another process for longer than busy_timeout:
 * the batch is retried, nothing is dropped, callers never see SQLITE_BUSY. */
static atomic_int g_warns;

static void count_log(int level, const char *msg)
{
    (void)msg;
    if (level == 1)
        atomic_fetch_add(&g_warns, 1);
    else if (level == 0)
        atomic_fetch_add(&g_errlogs, 1);
}

/* Committed, or spooled for replay once the lock is gone (DB-4). */
static void kept_cb(void *arg, int status, int64_t id)
{
    (void)id;
    gate_t *g = arg;
    if (status == LM_STORE_OK || status == LM_STORE_SPOOLED)
        atomic_fetch_add(&g->count, 1);
}

static void test_locked(void)
{
    T_BEGIN("store_locked_db_retried_not_dropped");
    new_dir();
    char err[256] = "";
    lm_store_opts_t o = {.dir = g_dir, .log = count_log};
    lm_store_t *st = lm_store_open(&o, err, sizeof(err));
    if (st == NULL) {
        T_CHECK(0, "open %s", err);
        T_END();
        return;
    }
    atomic_store(&g_errlogs, 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/longmen.db", g_dir);
    sqlite3 *other = NULL;
    sqlite3_open(path, &other);
    T_CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK, "lock");
    gate_t g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    for (int i = 0; i < 3; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "locked-%d", i);
        lm_usage_row_t row = {.request_id = rid, .channel = "c"};
        lm_store_cb_t cb = {.done = kept_cb, .arg = &g};
        T_CHECK(lm_store_usage_submit(st, &row, &cb) == LM_STORE_OK, "submit");
    }
    usleep(5600 * 1000); /* > busy_timeout: the writer's BEGIN IMMEDIATE fails once */
    int64_t locked_rows = -1;
    ledger_sum(st, 0, &locked_rows);
    T_CHECK(locked_rows <= 0, "committed while locked? %lld", (long long)locked_rows);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    lm_store_flush(st); /* commits, so the spool is replayed (DB-4) */
    T_CHECK(atomic_load(&g.count) == 3, "kept %d of 3 after the lock", atomic_load(&g.count));
    T_CHECK(atomic_load(&g_warns) >= 1, "a retry was logged");
    T_CHECK(atomic_load(&g_errlogs) >= 1, "the BUSY was logged");
    int64_t rows = 0;
    ledger_sum(st, 0, &rows);
    T_CHECK(rows == 3, "rows %lld", (long long)rows);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* WAL checkpoints run on the checkpointer thread, and the WAL starts over
 * under steady one-row commits instead of growing: without checkpoints,
 * 3,000 commits of about 6 frames each would make it about 19 MB, more
 * than twice the cap. A new database has 1 KiB pages. */
static void test_checkpoints(void)
{
    T_BEGIN("store_wal_checkpointed_off_the_writer_and_bounded");
    new_dir();
    lm_store_t *st = open_store(0);
    if (st == NULL) {
        T_CHECK(0, "open");
        T_END();
        return;
    }
    enum { ROWS = 3000 };
    for (int i = 0; i < ROWS; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "ckpt-%d", i);
        lm_usage_row_t row = {.request_id = rid, .channel = "c", .model_asked = "m"};
        T_CHECK(lm_store_usage_submit(st, &row, NULL) == LM_STORE_OK, "submit %d", i);
        lm_store_flush(st); /* one commit per row, as at one connection */
    }
    lm_store_settings_t s;
    for (int i = 0; i < 1000; i++) { /* the thread runs once woken; 10 s bound */
        if (lm_store_settings(st, &s) == LM_STORE_OK && s.checkpoints_background > 0)
            break;
        usleep(10000);
    }
    T_CHECK(s.checkpoints_background > 0, "background checkpoints %lld (writer %lld)",
            (long long)s.checkpoints_background, (long long)s.checkpoints_inline);
    char path[128];
    snprintf(path, sizeof(path), "%s/longmen.db", g_dir);
    sqlite3 *look = NULL;
    sqlite3_stmt *q = NULL;
    int page = 0;
    if (sqlite3_open_v2(path, &look, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(look, "PRAGMA page_size", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        page = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(look);
    T_CHECK(page == 1024, "a new database has 1 KiB pages, not %d", page);
    snprintf(path, sizeof(path), "%s/longmen.db-wal", g_dir);
    struct stat sb;
    long long cap = (long long)(LM_CKPT_HARD_FRAMES + 64) * (page + 24) + 32;
    T_CHECK(stat(path, &sb) == 0 && sb.st_size <= cap, "WAL %lld bytes, cap %lld",
            (long long)sb.st_size, cap);
    int64_t rows = 0;
    ledger_sum(st, 0, &rows);
    T_CHECK(rows == ROWS, "rows %lld", (long long)rows);
    lm_store_close(st);
    T_CHECK(stat(path, &sb) != 0, "the WAL is removed at close");
    st = open_store(0);
    rows = 0;
    if (st)
        ledger_sum(st, 0, &rows);
    T_CHECK(rows == ROWS, "rows after reopening %lld", (long long)rows);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* ------------------------------------------------------------------------ */
/* channels                                                                  */

static char **strv(const char *const *v, size_t n)
{
    char **o = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        o[i] = strdup(v[i]);
    return o;
}

/* A channel for plugin `plugin` serving `models`, with settings given as
 * key, value pairs (one value each). */
static lm_chan_rec_t *chan_rec(const char *name, const char *plugin, const char *const *models,
                               size_t nmodels, const char *const *kv, size_t nkv)
{
    lm_chan_rec_t *c = lm_chan_rec_new();
    c->name = strdup(name);
    c->plugin = strdup(plugin);
    c->models = strv(models, nmodels);
    c->nmodels = nmodels;
    c->settings = calloc(nkv + 1, sizeof(*c->settings));
    for (size_t i = 0; i < nkv; i++) {
        c->settings[i].key = strdup(kv[2 * i]);
        c->settings[i].vals = strv(&kv[2 * i + 1], 1);
        c->settings[i].nvals = 1;
    }
    c->nsettings = nkv;
    return c;
}

static void test_chan_crud(void)
{
    T_BEGIN("store_channels_crud_and_checks");
    new_dir();
    lm_store_t *st = open_store(0);
    T_CHECK(st != NULL, "open");
    if (st == NULL)
        return;
    static const char *const models[] = {"m1", "alias=up-1"};
    static const char *const kv[] = {"base_url", "http://127.0.0.1:9/v1", "api_key",
                                     "sk-literal-0001"};
    lm_chan_rec_t *c = chan_rec("b-chan", "openai", models, 2, kv, 2);
    c->price_input = 2500000;
    c->priority = 3;
    char err[256] = "";
    int64_t id = 0;
    T_CHECK(lm_store_chan_create(st, c, &id, err, sizeof(err)) == LM_STORE_OK && id > 0,
            "create: %s", err);
    T_CHECK(lm_store_chan_create(st, c, NULL, err, sizeof(err)) == LM_STORE_ECONFLICT &&
                strstr(err, "already exists"),
            "duplicate name: %s", err);
    lm_chan_rec_t *a = chan_rec("a.chan-1_X", "mock", models, 1, NULL, 0);
    a->enabled = 0;
    T_CHECK(lm_store_chan_create(st, a, NULL, err, sizeof(err)) == LM_STORE_OK, "create 2");
    lm_chan_rec_t *g = NULL;
    T_CHECK(lm_store_chan_get(st, "b-chan", &g) == LM_STORE_OK && g, "get");
    if (g) {
        T_STREQ(g->plugin, "openai");
        T_CHECK(g->nmodels == 2 && !strcmp(g->models[1], "alias=up-1"), "models");
        T_CHECK(g->nsettings == 2 && !strcmp(g->settings[1].key, "api_key") &&
                    !strcmp(g->settings[1].vals[0], "sk-literal-0001"),
                "settings kept in order");
        T_CHECK(g->price_input == 2500000 && g->priority == 3 && g->weight == 1 &&
                    g->max_inflight == 1024 && g->connect_timeout_ms == 5000 && g->enabled,
                "numbers and defaults");
        T_CHECK(g->created_at > 0 && g->updated_at == g->created_at, "times");
    }
    lm_chan_rec_free(g);
    lm_chan_rec_t **v = NULL;
    size_t n = 0;
    T_CHECK(lm_store_chan_list(st, &v, &n) == LM_STORE_OK && n == 2 &&
                !strcmp(v[0]->name, "a.chan-1_X") && !v[0]->enabled,
            "list by name");
    lm_store_chan_list_free(v, n);
    /* update replaces every field */
    c->weight = 7;
    c->settings[0].vals[0][0] = 'H';
    T_CHECK(lm_store_chan_update(st, c, err, sizeof(err)) == LM_STORE_OK, "update");
    T_CHECK(lm_store_chan_get(st, "b-chan", &g) == LM_STORE_OK && g->weight == 7 &&
                g->settings[0].vals[0][0] == 'H',
            "update stored");
    lm_chan_rec_free(g);
    lm_chan_rec_t *ghost = chan_rec("ghost", "mock", models, 1, NULL, 0);
    T_CHECK(lm_store_chan_update(st, ghost, err, sizeof(err)) == LM_STORE_ENOTFOUND,
            "update unknown");
    T_CHECK(lm_store_chan_get(st, "ghost", &g) == LM_STORE_ENOTFOUND && g == NULL, "get unknown");
    /* shape checks */
    const char *param = NULL;
    static const char *const bad_names[] = {"",
                                            ".",
                                            "..",
                                            "a b",
                                            "a/b",
                                            "x'--",
                                            "龙",
                                            "0123456789012345678901234567890123456789012345678901"
                                            "2345678901234"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        free(ghost->name);
        ghost->name = strdup(bad_names[i]);
        T_CHECK(lm_store_chan_create(st, ghost, NULL, err, sizeof(err)) == LM_STORE_EINVAL,
                "name %s refused", bad_names[i]);
        T_CHECK(lm_store_chan_check(ghost, &param, err, sizeof(err)) == LM_STORE_EINVAL && param &&
                    !strcmp(param, "name"),
                "param name");
    }
    free(ghost->name);
    ghost->name = strdup("ghost");
    free(ghost->plugin);
    ghost->plugin = strdup("../evil");
    T_CHECK(lm_store_chan_check(ghost, &param, err, sizeof(err)) == LM_STORE_EINVAL &&
                !strcmp(param, "plugin"),
            "plugin path refused");
    free(ghost->plugin);
    ghost->plugin = strdup("mock");
    ghost->weight = 0;
    T_CHECK(lm_store_chan_check(ghost, &param, err, sizeof(err)) == LM_STORE_EINVAL &&
                !strcmp(param, "weight"),
            "weight 0 refused: %s", err);
    ghost->weight = 1;
    ghost->nmodels = 0;
    T_CHECK(lm_store_chan_check(ghost, &param, err, sizeof(err)) == LM_STORE_EINVAL &&
                !strcmp(param, "models"),
            "no models refused");
    ghost->nmodels = 1;
    /* delete */
    T_CHECK(lm_store_chan_delete(st, "a.chan-1_X") == LM_STORE_OK, "delete");
    T_CHECK(lm_store_chan_delete(st, "a.chan-1_X") == LM_STORE_ENOTFOUND, "delete twice");
    T_CHECK(lm_store_chan_delete(st, "x' OR 1=1 --") == LM_STORE_ENOTFOUND, "delete bad name");
    lm_store_close(st);
    /* survives a re-open; the literal secret is in the DB file, which is 0600 in a 0700 dir */
    st = open_store(0);
    T_CHECK(st && lm_store_chan_get(st, "b-chan", &g) == LM_STORE_OK && g->weight == 7,
            "persisted");
    lm_chan_rec_free(g);
    lm_store_close(st);
    struct stat sb;
    char path[128];
    snprintf(path, sizeof(path), "%s/longmen.db", g_dir);
    T_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "db mode %o",
            (unsigned)(sb.st_mode & 0777));
    /* a loosened directory and file are tightened at open */
    chmod(g_dir, 0755);
    chmod(path, 0644);
    st = open_store(0);
    T_CHECK(stat(g_dir, &sb) == 0 && (sb.st_mode & 0777) == 0700, "dir mode %o",
            (unsigned)(sb.st_mode & 0777));
    T_CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600, "db mode after %o",
            (unsigned)(sb.st_mode & 0777));
    lm_store_close(st);
    lm_chan_rec_free(c);
    lm_chan_rec_free(a);
    lm_chan_rec_free(ghost);
    rm_dir(g_dir);
    T_END();
}

/* AU-3: SQL metacharacters, quotes, backslashes, '#', braces and Unicode in
 * models and settings are stored exactly and parse back exactly. */
static void test_chan_hostile_render(void)
{
    T_BEGIN("store_channels_hostile_values_render_and_parse");
    new_dir();
    lm_store_t *st = open_store(0);
    static const char *const models[] = {"x'; DROP TABLE channels; --", "a\"b=c\\d",
                                         "龙门 # not a comment", "}", "{"};
    static const char *const kv[] = {"base_url", "\" OR 1=1 -- #x { }", "api_key", "sk-'\"\\;DROP"};
    lm_chan_rec_t *c = chan_rec("hostile", "mock", models, 5, kv, 2);
    /* price lines: stored in the settings column, rendered word by word */
    static const char *const prices[] = {"x\"}{'* 0.04 per_image", "  gpt-* 2\t8 "};
    c->prices = strv(prices, 2);
    c->nprices = 2;
    char err[512] = "", param[96] = "";
    T_CHECK(st && lm_store_chan_create(st, c, NULL, err, sizeof(err)) == LM_STORE_OK, "create: %s",
            err);
    lm_chan_rec_t *g = NULL;
    T_CHECK(st && lm_store_chan_get(st, "hostile", &g) == LM_STORE_OK, "get");
    for (size_t i = 0; g && i < 5; i++)
        T_STREQ(g->models[i], models[i]);
    T_CHECK(g && !strcmp(g->settings[0].vals[0], kv[1]) && !strcmp(g->settings[1].vals[0], kv[3]),
            "settings exact");
    T_CHECK(g && g->nsettings == 2 && g->nprices == 2 && !strcmp(g->prices[0], prices[0]) &&
                !strcmp(g->prices[1], prices[1]),
            "prices exact, apart from the settings");
    lm_conf_t *conf = NULL;
    T_CHECK(lm_conf_parse("t.conf", "listen 127.0.0.1:1\n", 19, &conf, err, sizeof(err)) == 0,
            "base conf");
    T_CHECK(conf && g && lm_chan_conf_add(conf, g, param, sizeof(param), err, sizeof(err)) == 0,
            "parses: %s (%s)", err, param);
    if (conf && conf->nchans == 1) {
        const lm_chan_conf_t *ch = &conf->chans[0];
        T_STREQ(ch->name, "hostile");
        T_STREQ(ch->plugin, "mock");
        T_CHECK(ch->nmodels == 5, "5 models");
        T_STREQ(ch->models[0].name, models[0]);
        T_STREQ(ch->models[1].name, "a\"b");
        T_STREQ(ch->models[1].upstream, "c\\d");
        T_STREQ(ch->models[2].name, models[2]);
        T_CHECK(ch->nkv == 2, "2 settings");
        T_STREQ(lm_conf_chan_kv(ch, "base_url")->val, kv[1]);
        T_STREQ(lm_conf_chan_kv(ch, "api_key")->val, kv[3]);
        T_CHECK(lm_conf_chan_kv(ch, "api_key")->secret, "api_key is a secret");
        T_CHECK(ch->weight == 1 && ch->max_inflight == 1024 && ch->connect_timeout_ms == 5000 &&
                    ch->request_timeout_ms == 600000,
                "defaults survive rendering");
        T_CHECK(ch->nprices == 2 && !strcmp(ch->prices[0].pattern, "x\"}{'*") &&
                    ch->prices[0].unit == LM_UNIT_IMAGE && ch->prices[0].per_unit == 40000 &&
                    !strcmp(ch->prices[1].pattern, "gpt-*") && ch->prices[1].unit == 0 &&
                    ch->prices[1].input == 2000000 && ch->prices[1].output == 8000000,
                "price lines parsed");
    }
    lm_conf_free(conf);
    lm_chan_rec_free(g);
    lm_chan_rec_free(c);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

static void test_chan_conf(void)
{
    T_BEGIN("chanconf_errors_apply_and_masking");
    new_dir();
    lm_store_t *st = open_store(0);
    char err[512] = "", param[96] = "";
    const char *p = NULL;
    static const char *const models[] = {"m1", "=bad"};
    static const char *const kv[] = {"api_key", "sk-secret-value-1", "region", "eu"};
    lm_chan_rec_t *c = chan_rec("c1", "mock", models, 2, kv, 2);
    lm_conf_t *conf = NULL;
    const char *file =
        "admin_env_allow LM_TEST_*\nchannel filechan {\n plugin mock\n models f1\n}\n";
    lm_conf_parse("f.conf", file, strlen(file), &conf, err, sizeof(err));
    T_CHECK(conf && conf->nchans == 1, "file conf");
    /* a parser error names the field, without the rendered text's location */
    T_CHECK(lm_chan_conf_add(conf, c, param, sizeof(param), err, sizeof(err)) < 0 &&
                !strcmp(param, "models") && strstr(err, "bad model mapping") &&
                strncmp(err, "(store)", 7) != 0,
            "bad mapping: %s / %s", param, err);
    T_CHECK(conf->nchans == 1, "conf unchanged on error");
    free(c->models[1]);
    c->models[1] = strdup("alias=m1");
    T_CHECK(lm_chan_conf_add(conf, c, param, sizeof(param), err, sizeof(err)) == 0, "ok: %s", err);
    T_CHECK(conf->nchans == 2 && !strcmp(conf->chans[1].name, "c1"), "appended");
    /* the file's name clashes */
    free(c->name);
    c->name = strdup("filechan");
    T_CHECK(lm_chan_conf_add(conf, c, param, sizeof(param), err, sizeof(err)) < 0 &&
                strstr(err, "already defined"),
            "clash: %s", err);
    /* env: references are read at parse time */
    free(c->name);
    c->name = strdup("c2");
    free(c->settings[0].vals[0]);
    c->settings[0].vals[0] = strdup("env:LM_TEST_UNSET_VAR_XYZ");
    T_CHECK(lm_chan_conf_add(conf, c, param, sizeof(param), err, sizeof(err)) < 0 &&
                strstr(err, "LM_TEST_UNSET_VAR_XYZ is not set") &&
                !strcmp(param, "settings.api_key"),
            "unset env: %s / %s", param, err);
    /* checks beyond the store's */
    free(c->settings[1].key);
    c->settings[1].key = strdup("priority");
    T_CHECK(lm_chan_check(c, &p, err, sizeof(err)) < 0 && !strcmp(p, "settings") &&
                strstr(err, "channel field"),
            "reserved: %s", err);
    free(c->settings[1].key);
    c->settings[1].key = strdup("region");
    free(c->settings[1].vals[0]);
    c->settings[1].vals[0] = strdup("a\nmodels evil");
    T_CHECK(lm_chan_check(c, &p, err, sizeof(err)) < 0 && strstr(err, "control"),
            "newline refused: %s", err);
    free(c->settings[1].vals[0]);
    c->settings[1].vals[0] = strdup("eu");
    /* masking: literal secrets are "***", env: references are shown */
    free(c->settings[0].vals[0]);
    c->settings[0].vals[0] = strdup("sk-secret-value-1");
    json_t *j = lm_chan_to_json(c);
    char *txt = json_dumps(j, 0);
    T_CHECK(txt && !strstr(txt, "sk-secret-value-1") && strstr(txt, "\"api_key\": \"***\"") &&
                strstr(txt, "\"region\": \"eu\""),
            "masked: %s", txt);
    free(txt);
    json_decref(j);
    free(c->settings[0].vals[0]);
    c->settings[0].vals[0] = strdup("env:SOME_VAR");
    j = lm_chan_to_json(c);
    txt = json_dumps(j, 0);
    T_CHECK(txt && strstr(txt, "\"env:SOME_VAR\""), "env shown: %s", txt);
    free(txt);
    json_decref(j);
    /* apply: enabled stored channels join; the file's name wins; disabled stay out */
    lm_chan_rec_t *s1 = chan_rec("filechan", "mock", models, 1, NULL, 0);
    lm_chan_rec_t *s2 = chan_rec("s2", "mock", models, 1, NULL, 0);
    lm_chan_rec_t *s3 = chan_rec("s3", "mock", models, 1, NULL, 0);
    s3->enabled = 0;
    lm_store_chan_create(st, s1, NULL, err, sizeof(err));
    lm_store_chan_create(st, s2, NULL, err, sizeof(err));
    lm_store_chan_create(st, s3, NULL, err, sizeof(err));
    lm_conf_free(conf);
    lm_conf_parse("f.conf", file, strlen(file), &conf, err, sizeof(err));
    T_CHECK(lm_chan_conf_apply(conf, st, NULL, 1, err, sizeof(err)) == 0 && conf->nchans == 2 &&
                !strcmp(conf->chans[1].name, "s2"),
            "apply: %s (%zu)", err, conf->nchans);
    lm_conf_free(conf);
    lm_conf_parse("f.conf", file, strlen(file), &conf, err, sizeof(err));
    T_CHECK(lm_chan_conf_apply(conf, st, "s2", 1, err, sizeof(err)) == 0 && conf->nchans == 1,
            "apply with skip");
    lm_conf_free(conf);
    lm_chan_rec_free(s1);
    lm_chan_rec_free(s2);
    lm_chan_rec_free(s3);
    lm_chan_rec_free(c);
    lm_store_close(st);
    rm_dir(g_dir);
    T_END();
}

/* The PostgreSQL connection settings: checked without connecting. */
static void test_pg_conninfo(void)
{
    T_BEGIN("pgconn_password_only_from_env");
    char err[256] = "";
    lm_pgconn_t pc;
    setenv("LM_UNIT_PGPW", "pw-value", 1);
    T_CHECK(lm_pgconn_init(&pc, NULL, "t", "host=127.0.0.1 dbname=d password=env:LM_UNIT_PGPW", err,
                           sizeof(err)) == 0,
            "env password: %s", err);
    int timeout = 0;
    for (size_t i = 0; pc.keys && pc.keys[i]; i++)
        timeout |= !strcmp(pc.keys[i], "connect_timeout") && !strcmp(pc.vals[i], "2");
    T_CHECK(timeout, "connect_timeout 2 by default");
    lm_pgconn_free(&pc);
    T_CHECK(lm_pgconn_init(&pc, NULL, "t", "host=h password=s3cret", err, sizeof(err)) < 0 &&
                strstr(err, "literal password") && !strstr(err, "s3cret"),
            "literal: %s", err);
    T_CHECK(lm_pgconn_init(&pc, NULL, "t", "host=h password=env:LM_UNIT_PG_UNSET", err,
                           sizeof(err)) < 0 &&
                strstr(err, "unset"),
            "unset variable: %s", err);
    T_CHECK(lm_pgconn_init(&pc, NULL, "t", "postgresql://u:s3cret@h/d", err, sizeof(err)) < 0 &&
                !strstr(err, "s3cret"),
            "URI: %s", err);
    T_CHECK(lm_pgconn_init(&pc, NULL, "t", "host='unterminated", err, sizeof(err)) < 0,
            "syntax: %s", err);
    T_END();
}

int main(void)
{
    test_pg_conninfo();
    test_migrations();
    test_admin_tokens();
    test_settings();
    test_keys_at_rest();
    test_key_crud();
    test_hostile_text();
    test_reserve_rules();
    test_queue();
    test_batch_failures();
    test_totals();
    test_qb1();
    test_mix();
    test_timing();
    test_locked();
    test_checkpoints();
    test_chan_crud();
    test_chan_hostile_render();
    test_chan_conf();
    T_EXIT();
}
