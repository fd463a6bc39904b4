/* Unit tests for the usage spool (DB-4): the record format, a torn last
 * record, a damaged one, replay at open exactly once (also after a crash
 * between the commit and emptying the file), and a stall through the
 * store: rows spooled while another connection holds the write lock, then
 * replayed once it lets go. */
#include "store/spool.h"
#include "t.h"

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];
static char g_spool[128];

static void quiet_log(int level, const char *msg)
{
    (void)level, (void)msg;
}

static void new_dir(void)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/lm-spool-XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    snprintf(g_spool, sizeof(g_spool), "%s/usage.spool", g_dir);
}

static void rm_dir(void)
{
    const char *files[] = {"usage.spool", "longmen.db", "longmen.db-wal", "longmen.db-shm"};
    char p[256];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", g_dir, files[i]);
        unlink(p);
    }
    rmdir(g_dir);
}

static lm_usage_row_t row_n(int i, char *id, size_t idlen)
{
    snprintf(id, idlen, "req-%d", i);
    return (lm_usage_row_t){.request_id = id,
                            .attempt = i % 2,
                            .channel = "ch",
                            .model_asked = "m",
                            .model_served = i == 1 ? NULL : "up",
                            .prompt_tokens = 10 + i,
                            .completion_tokens = 20 + i,
                            .cost = 0,
                            .status = 200,
                            .client_aborted = i == 2,
                            .usage_json = i == 0 ? "{\"prompt_tokens\":10}" : NULL,
                            .created_ms = 1700000000000 + i};
}

/* Three records in one buffer; *ends gets each record's end offset. */
static unsigned char *three(size_t *len, size_t ends[3])
{
    unsigned char *buf = malloc(4096);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        char id[32];
        lm_usage_row_t r = row_n(i, id, sizeof(id));
        size_t n = lm_spool_size(&r);
        lm_spool_put(&r, buf + off);
        off += n;
        ends[i] = off;
    }
    *len = off;
    return buf;
}

typedef struct {
    int n;
    char ids[8][32];
    int64_t tokens[8];
    int nulls[8];
} seen_t;

static int copy_flags(void *arg, const lm_usage_row_t *r)
{
    lm_usage_row_t *out = arg;
    out->client_aborted = r->client_aborted;
    out->cached = r->cached;
    return 0;
}

static int collect(void *arg, const lm_usage_row_t *r)
{
    seen_t *s = arg;
    if (s->n < 8) {
        snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", r->request_id);
        s->tokens[s->n] = r->prompt_tokens;
        s->nulls[s->n] = r->model_served == NULL;
    }
    s->n++;
    return 0;
}

static void test_format(void)
{
    T_BEGIN("spool_format_round_trip");
    size_t len, ends[3];
    unsigned char *buf = three(&len, ends);
    seen_t s = {0};
    lm_spool_stats_t st;
    T_CHECK(lm_spool_scan(buf, len, collect, &s, &st) == 0, "scan");
    T_CHECK(s.n == 3 && st.records == 3 && st.skipped == 0 && st.torn == 0, "3 records: %d", s.n);
    T_STREQ(s.ids[0], "req-0");
    T_STREQ(s.ids[2], "req-2");
    T_CHECK(s.tokens[1] == 11 && s.nulls[1] && !s.nulls[0], "fields kept");
    lm_usage_row_t bad = {.request_id = ""};
    T_CHECK(lm_spool_size(&bad) == 0, "no request id: not spooled");
    T_END();

    T_BEGIN("spool_flags_cached_and_aborted");
    for (int f = 0; f < 4; f++) {
        lm_usage_row_t row = {.request_id = "req-f", .client_aborted = f & 1, .cached = f >> 1};
        unsigned char rec[512];
        size_t n = lm_spool_size(&row);
        T_CHECK(n > 0 && n <= sizeof(rec), "size %zu", n);
        if (n == 0 || n > sizeof(rec))
            break;
        lm_spool_put(&row, rec);
        lm_usage_row_t back = {0};
        T_CHECK(lm_spool_scan(rec, n, copy_flags, &back, NULL) == 0, "scan");
        T_CHECK(back.client_aborted == (f & 1) && back.cached == (f >> 1), "flags %d: %d %d", f,
                back.client_aborted, back.cached);
    }
    T_END();

    T_BEGIN("spool_torn_trailing_record_ignored");
    for (size_t cut = ends[1] + 1; cut < len; cut++) {
        seen_t t = {0};
        lm_spool_scan(buf, cut, collect, &t, &st);
        T_CHECK(t.n == 2 && st.torn == cut - ends[1] && st.skipped == 0,
                "cut at %zu: %d records, torn %zu", cut, t.n, st.torn);
    }
    T_END();

    T_BEGIN("spool_damaged_record_skipped");
    buf[ends[0] + 20] ^= 0x40; /* inside the second record's payload */
    seen_t d = {0};
    lm_spool_scan(buf, len, collect, &d, &st);
    T_CHECK(d.n == 2 && st.skipped > 0, "records around the damage: %d", d.n);
    T_STREQ(d.ids[0], "req-0");
    T_STREQ(d.ids[1], "req-2");
    T_END();
    free(buf);
}

static void test_file(void)
{
    T_BEGIN("spool_file_append_read_clear");
    new_dir();
    size_t len, ends[3];
    unsigned char *buf = three(&len, ends);
    T_CHECK(lm_spool_append(g_spool, buf, ends[0]) == 0, "append 1");
    T_CHECK(lm_spool_append(g_spool, buf + ends[0], len - ends[0]) == 0, "append 2");
    struct stat sb;
    T_CHECK(stat(g_spool, &sb) == 0 && (sb.st_mode & 0777) == 0600, "0600");
    unsigned char *rd;
    size_t n;
    T_CHECK(lm_spool_read(g_spool, &rd, &n) == 0 && n == len && !memcmp(rd, buf, len), "read");
    free(rd);
    T_CHECK(lm_spool_clear(g_spool) == 0 && stat(g_spool, &sb) == 0 && sb.st_size == 0, "clear");
    unlink(g_spool);
    T_CHECK(lm_spool_read(g_spool, &rd, &n) == 0 && rd == NULL && n == 0, "missing = empty");
    free(buf);
    rm_dir();
    T_END();
}

static lm_store_t *open_store_max(int stall_ms, int64_t spool_max)
{
    char err[256] = "";
    lm_store_opts_t o = {
        .dir = g_dir, .log = quiet_log, .stall_ms = stall_ms, .spool_max = spool_max};
    lm_store_t *st = lm_store_open(&o, err, sizeof(err));
    if (st == NULL)
        printf("     open failed: %s\n", err);
    return st;
}

static lm_store_t *open_store(int stall_ms)
{
    return open_store_max(stall_ms, 0);
}

static size_t ledger_rows(lm_store_t *st)
{
    lm_usage_rec_t *v;
    size_t n = 0;
    if (lm_store_usage_list(st, 0, 0, 1000, &v, &n) != LM_STORE_OK)
        return (size_t)-1;
    lm_store_usage_list_free(v, n);
    return n;
}

static off_t spool_size(void)
{
    struct stat sb;
    return stat(g_spool, &sb) == 0 ? sb.st_size : -1;
}

static void test_replay_at_open(void)
{
    T_BEGIN("spool_replay_at_open_exactly_once");
    new_dir();
    size_t len, ends[3];
    unsigned char *buf = three(&len, ends);
    /* a spool left by a crash, its last append torn */
    T_CHECK(lm_spool_append(g_spool, buf, len - 5) == 0, "spool");
    lm_store_t *st = open_store(0);
    T_CHECK(st && ledger_rows(st) == 2, "the two whole rows replayed");
    T_CHECK(spool_size() == 0, "spool emptied after the commit");
    lm_store_close(st);
    /* a crash between the commit and emptying the file: replayed again */
    T_CHECK(lm_spool_append(g_spool, buf, len) == 0, "spool again");
    st = open_store(0);
    T_CHECK(st && ledger_rows(st) == 3, "duplicates ignored, the third row added");
    T_CHECK(spool_size() == 0, "spool emptied");
    lm_store_close(st);
    st = open_store(0);
    T_CHECK(st && ledger_rows(st) == 3, "a second restart adds nothing");
    lm_store_close(st);
    free(buf);
    rm_dir();
    T_END();
}

typedef struct {
    pthread_mutex_t mu;
    int status, done;
} done_t;

static void on_done(void *arg, int status, int64_t id)
{
    done_t *d = arg;
    (void)id;
    pthread_mutex_lock(&d->mu);
    d->status = status;
    d->done = 1;
    pthread_mutex_unlock(&d->mu);
}

static int wait_done(done_t *d, int secs)
{
    for (int i = 0; i < secs * 100; i++) {
        pthread_mutex_lock(&d->mu);
        int done = d->done;
        pthread_mutex_unlock(&d->mu);
        if (done)
            return 1;
        usleep(10000);
    }
    return 0;
}

static void test_stall(void)
{
    T_BEGIN("spool_stall_spools_then_replays");
    new_dir();
    lm_store_t *st = open_store(100);
    char path[128];
    snprintf(path, sizeof(path), "%s/longmen.db", g_dir);
    sqlite3 *other = NULL;
    T_CHECK(sqlite3_open(path, &other) == SQLITE_OK, "second connection");
    T_CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK, "lock");
    done_t d = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
    char id[32];
    lm_usage_row_t r = row_n(7, id, sizeof(id));
    lm_store_cb_t cb = {on_done, &d, NULL, NULL};
    T_CHECK(st && lm_store_usage_submit(st, &r, &cb) == LM_STORE_OK, "submit");
    /* the writer learns of the lock after busy_timeout (5 s), then spools */
    T_CHECK(wait_done(&d, 30) && d.status == LM_STORE_SPOOLED, "spooled: %d", d.status);
    T_CHECK(lm_store_stall_ms(st) > 0, "stalled");
    T_CHECK(spool_size() > 0, "in the spool");
    sqlite3_exec(other, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(other);
    int ok = 0;
    for (int i = 0; i < 3000 && !ok; i++) { /* the writer asks again every second */
        ok = ledger_rows(st) == 1 && spool_size() == 0 && lm_store_stall_ms(st) == 0;
        if (!ok)
            usleep(10000);
    }
    T_CHECK(ok, "replayed once, spool emptied, stall over: rows %zu", ledger_rows(st));
    lm_store_close(st);
    rm_dir();
    T_END();
}

/* The spool's bound: a batch that does not fit waits in memory, the store
 * says it is full (on_store_failure open then refuses), and once the
 * database commits the row lands and the flag clears. */
static void test_spool_full(void)
{
    T_BEGIN("spool_full_rows_wait_then_commit");
    new_dir();
    lm_store_t *st = open_store_max(100, 16);
    char path[128];
    snprintf(path, sizeof(path), "%s/longmen.db", g_dir);
    sqlite3 *other = NULL;
    T_CHECK(sqlite3_open(path, &other) == SQLITE_OK, "second connection");
    T_CHECK(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK, "lock");
    done_t d = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
    char id[32];
    lm_usage_row_t r = row_n(8, id, sizeof(id));
    lm_store_cb_t cb = {on_done, &d, NULL, NULL};
    T_CHECK(st && lm_store_usage_submit(st, &r, &cb) == LM_STORE_OK, "submit");
    int full = 0;
    for (int i = 0; i < 3000 && !full; i++) { /* after busy_timeout (5 s) */
        full = lm_store_spool_full(st);
        if (!full)
            usleep(10000);
    }
    T_CHECK(full, "the spool is full");
    T_CHECK(spool_size() <= 0 && !d.done, "the row was not spooled: it waits");
    sqlite3_exec(other, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(other);
    T_CHECK(wait_done(&d, 30) && d.status == LM_STORE_OK, "committed: %d", d.status);
    T_CHECK(ledger_rows(st) == 1 && !lm_store_spool_full(st), "recorded, no longer full");
    lm_store_close(st);
    rm_dir();
    T_END();
}

int main(void)
{
    test_format();
    test_file();
    test_replay_at_open();
    test_stall();
    test_spool_full();
    T_EXIT();
}
