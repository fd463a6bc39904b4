/* test_reqlog.c - the request log in the store (store/reqlog.h) on the
 * SQLite backend: rows through the writer, every filter, cursor paging,
 * bodies only when asked, pruning by age and by row count. */
#include "store/reqlog.h"
#include "t.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(int level, const char *msg)
{
    (void)level, (void)msg;
}

static lm_store_t *open_store(char *dir)
{
    char err[256] = "";
    lm_store_opts_t o = {0};
    o.dir = dir;
    o.log = quiet_log;
    lm_store_t *st = lm_store_open(&o, err, sizeof(err));
    if (st == NULL)
        printf("     open failed: %s\n", err);
    return st;
}

static void put(lm_store_t *st, int i, int64_t created_ms)
{
    char rid[32];
    snprintf(rid, sizeof(rid), "req-%d", i);
    lm_reqlog_row_t r = {.created_ms = created_ms,
                         .request_id = rid,
                         .key_name = i % 2 ? "odd" : "even",
                         .model_asked = i % 3 ? "m-a" : "m-b",
                         .model_served = "up-model",
                         .channel = i < 5 ? "c1" : "c2",
                         .api = "chat",
                         .finish_reason = "stop",
                         .attempts_json = "[{\"channel\":\"c1\",\"status\":200,\"ms\":3}]",
                         .status = i == 7 ? 502 : 200,
                         .latency_ms = 10,
                         .prompt_tokens = 5,
                         .completion_tokens = 2,
                         .cost = 7,
                         .request_body = "{\"messages\":[]}",
                         .response_body = "{\"choices\":[]}"};
    T_CHECK(lm_store_reqlog_submit(st, &r) == LM_STORE_OK, "submit %d", i);
}

static size_t count(lm_store_t *st, lm_reqlog_query_t q)
{
    lm_reqlog_rec_t *v = NULL;
    size_t n = 0;
    if (q.limit == 0)
        q.limit = 100;
    T_CHECK(lm_store_reqlog_list(st, &q, &v, &n) == LM_STORE_OK, "list");
    lm_store_reqlog_list_free(v, n);
    return n;
}

int main(void)
{
    char dir[] = "/tmp/lm-reqlog-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 2;
    lm_store_t *st = open_store(dir);
    if (st == NULL)
        return 1;
    int64_t now = lm_store_now_ms();

    T_BEGIN("reqlog_filters");
    for (int i = 0; i < 10; i++)
        put(st, i, i == 0 ? now - 3600 * 1000 : now - 10 + i);
    lm_store_flush(st);
    T_CHECK(count(st, (lm_reqlog_query_t){0}) == 10, "all rows");
    T_CHECK(count(st, (lm_reqlog_query_t){.key_name = "odd"}) == 5, "by key");
    T_CHECK(count(st, (lm_reqlog_query_t){.model = "m-b"}) == 4, "by model asked");
    T_CHECK(count(st, (lm_reqlog_query_t){.model = "up-model"}) == 10, "by model served");
    T_CHECK(count(st, (lm_reqlog_query_t){.channel = "c2"}) == 5, "by channel");
    T_CHECK(count(st, (lm_reqlog_query_t){.status = 502}) == 1, "by status");
    T_CHECK(count(st, (lm_reqlog_query_t){.since_ms = now - 60000}) == 9, "since");
    T_CHECK(count(st, (lm_reqlog_query_t){.until_ms = now - 60000}) == 1, "until");
    T_END();

    T_BEGIN("reqlog_paging_and_bodies");
    lm_reqlog_rec_t *v = NULL;
    size_t n = 0;
    lm_reqlog_query_t q = {.limit = 4};
    T_CHECK(lm_store_reqlog_list(st, &q, &v, &n) == LM_STORE_OK && n == 4, "page 1");
    T_CHECK(n == 4 && strcmp(v[0].row.request_id, "req-9") == 0, "newest first");
    T_CHECK(n == 4 && v[0].row.request_body == NULL && v[0].row.response_body == NULL,
            "bodies only when asked");
    T_CHECK(n == 4 && v[0].row.cost == 7 && v[0].row.prompt_tokens == 5 &&
                strcmp(v[0].row.finish_reason, "stop") == 0 &&
                strstr(v[0].row.attempts_json, "\"status\":200") != NULL,
            "fields");
    q.before_id = n ? v[n - 1].id : 0;
    lm_store_reqlog_list_free(v, n);
    q.bodies = 1;
    T_CHECK(lm_store_reqlog_list(st, &q, &v, &n) == LM_STORE_OK && n == 4, "page 2");
    T_CHECK(n == 4 && strcmp(v[0].row.request_id, "req-5") == 0, "the cursor continues");
    T_CHECK(n == 4 && v[0].row.request_body &&
                strcmp(v[0].row.request_body, "{\"messages\":[]}") == 0,
            "bodies when asked");
    lm_store_reqlog_list_free(v, n);
    T_END();

    T_BEGIN("reqlog_prune");
    T_CHECK(lm_store_reqlog_prune(st, now - 60000, 0) == LM_STORE_OK, "prune by age");
    lm_store_flush(st);
    T_CHECK(count(st, (lm_reqlog_query_t){0}) == 9, "the old row went");
    T_CHECK(lm_store_reqlog_prune(st, 0, 3) == LM_STORE_OK, "prune by count");
    lm_store_flush(st);
    T_CHECK(count(st, (lm_reqlog_query_t){0}) == 3, "3 rows kept");
    T_CHECK(count(st, (lm_reqlog_query_t){.channel = "c2"}) == 3, "the newest kept");
    T_END();

    lm_store_close(st);
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    T_EXIT();
}
