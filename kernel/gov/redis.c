/* redis.c - the Redis thread: a queue of script calls, one hiredis
 * connection, EVALSHA with a SCRIPT LOAD on NOSCRIPT (redis.h). */
#include "gov/redis.h"
#include "core/clock.h"
#include "core/log.h"
#include "longmen.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUEUE_MAX     65536
#define TIMEOUT_MS    500
#define RETRY_MS      500
#define TICK_MS       250
#define MAX_SYNC_STRS 512
#define RETRY_MAX     100000      /* settlements kept for a Redis that comes back */
#define BYTES_MAX     (64u << 20) /* plain commands' queued bytes (cached answers) */

typedef struct job_s {
    int id, nkeys, argc; /* id < 0: a plain command (lm_redis_cmd) */
    char **argv;
    size_t *lens; /* plain commands: each argument's length */
    size_t bytes; /* plain commands: their arguments' total */
    lm_redis_done_fn done;
    void *arg;
    struct job_s *next;
} job_t;

struct lm_redis_s {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    size_t n;
    size_t bytes; /* queued plain commands' bytes: a slow Redis must not pile up answers */
    int stop;
    int cmd_failing; /* the last plain command got an error reply (log once) */
    int joined;      /* the thread has ended (lm_redis_stop) */
    atomic_int up;
    lm_redis_url_t url;
    redisContext *c;
    int64_t next_connect_ms;
    char sha[LM_RS_N][41];
    void (*tick)(void *arg, lm_redis_t *rd);
    void *tick_arg;
    char run_id[48]; /* the Redis process last connected to ("" = none yet) */
    job_t *retry;    /* SETTLE calls that failed while Redis was unreachable */
    size_t nretry;
    char retry_run[48]; /* ... on this Redis process: replayed only if it is still the same */
};

static void job_free(job_t *j)
{
    for (int i = 0; i < j->argc; i++)
        free(j->argv[i]);
    free(j->argv);
    free(j->lens);
    free(j);
}

static void disconnect(lm_redis_t *rd)
{
    if (rd->c)
        redisFree(rd->c);
    rd->c = NULL;
    atomic_store(&rd->up, 0);
}

/* Load every script (their SHA1s are kept for EVALSHA). */
static int load_scripts(lm_redis_t *rd)
{
    for (int i = 0; i < LM_RS_N; i++) {
        redisReply *r = redisCommand(rd->c, "SCRIPT LOAD %s", lm_redis_script(i));
        int ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
        if (ok)
            memcpy(rd->sha[i], r->str, 41);
        else
            lm_log(LM_LOG_ERROR, "redis: script %d not loaded: %s", i,
                   r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
        if (r)
            freeReplyObject(r);
        if (!ok)
            return -1;
    }
    return 0;
}

static redisReply *command_ok(lm_redis_t *rd, const char *fmt, const char *a, const char *b)
{
    redisReply *r = b ? redisCommand(rd->c, fmt, a, b) : redisCommand(rd->c, fmt, a);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        if (r)
            freeReplyObject(r);
        return NULL;
    }
    return r;
}

static redisReply *evalsha(lm_redis_t *rd, int id, int nkeys, int argc, const char *const *argv);

/* The Redis process's run_id (it changes when Redis restarts). */
static void server_run_id(lm_redis_t *rd)
{
    redisReply *r = redisCommand(rd->c, "INFO server");
    rd->run_id[0] = '\0';
    if (r && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "run_id:");
        if (p)
            sscanf(p + 7, "%40[0-9a-f]", rd->run_id);
    }
    if (r)
        freeReplyObject(r);
}

/* Settlements that failed while Redis was unreachable: apply them if the
 * same Redis process is back (its spend lacks them); after a restart the
 * spend is seeded from the store, which already holds them. */
static void replay(lm_redis_t *rd)
{
    size_t n = 0, total = rd->nretry;
    int same = rd->run_id[0] && !strcmp(rd->run_id, rd->retry_run);
    while (rd->retry) {
        job_t *j = rd->retry;
        rd->retry = j->next;
        if (same && rd->c) {
            redisReply *r = evalsha(rd, j->id, j->nkeys, j->argc, (const char *const *)j->argv);
            n += r && r->type != REDIS_REPLY_ERROR;
            if (r)
                freeReplyObject(r);
        }
        job_free(j);
    }
    rd->nretry = 0;
    if (total)
        lm_log(LM_LOG_INFO, "redis: %zu of %zu settlements made while unreachable replayed (%s)", n,
               total, same ? "same Redis" : "Redis restarted: seeded from the store instead");
}

/* Connect (AUTH, SELECT, scripts) unless connected or waiting to retry. */
static int ensure(lm_redis_t *rd)
{
    if (rd->c)
        return 0;
    int64_t now = lm_clock_ms();
    if (now < rd->next_connect_ms)
        return -1;
    rd->next_connect_ms = now + RETRY_MS;
    struct timeval tv = {0, TIMEOUT_MS * 1000};
    rd->c = redisConnectWithTimeout(rd->url.host, rd->url.port, tv);
    if (rd->c == NULL || rd->c->err) {
        disconnect(rd);
        return -1;
    }
    redisSetTimeout(rd->c, tv);
    redisReply *r = NULL;
    char db[16];
    snprintf(db, sizeof(db), "%d", rd->url.db);
    if (rd->url.password[0] &&
        (r = rd->url.user[0] ? command_ok(rd, "AUTH %s %s", rd->url.user, rd->url.password)
                             : command_ok(rd, "AUTH %s", rd->url.password, NULL)) == NULL) {
        lm_log(LM_LOG_ERROR, "redis: AUTH refused"); /* never the password */
        disconnect(rd);
        return -1;
    }
    if (r)
        freeReplyObject(r);
    if ((r = command_ok(rd, "SELECT %s", db, NULL)) == NULL || load_scripts(rd) < 0) {
        disconnect(rd);
        return -1;
    }
    freeReplyObject(r);
    atomic_store(&rd->up, 1);
    server_run_id(rd);
    replay(rd);
    lm_log(LM_LOG_INFO, "redis: connected to %s:%d db %d", rd->url.host, rd->url.port, rd->url.db);
    return 0;
}

/* Flatten the reply array: integers into ints, strings into strs. */
static void flatten(redisReply *r, lm_redis_ans_t *a, const char **strs)
{
    a->ok = 1;
    if (r->type == REDIS_REPLY_STRING) {
        a->bulk = r->str;
        a->bulklen = r->len;
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER) {
        a->ints[a->nints++] = r->integer;
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type == REDIS_REPLY_INTEGER && a->nints < LM_REDIS_MAX_INTS)
            a->ints[a->nints++] = e->integer;
        else if (e->type == REDIS_REPLY_STRING && a->nstrs < MAX_SYNC_STRS)
            strs[a->nstrs++] = e->str;
    }
}

static redisReply *evalsha(lm_redis_t *rd, int id, int nkeys, int argc, const char *const *argv)
{
    size_t n = (size_t)argc + 3;
    const char **av = calloc(n, sizeof(*av));
    char nk[16];
    if (av == NULL)
        return NULL;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    av[1] = rd->sha[id];
    av[2] = nk;
    for (int i = 0; i < argc; i++)
        av[i + 3] = argv[i];
    redisReply *r = redisCommandArgv(rd->c, (int)n, av, NULL);
    free(av);
    return r;
}

/* 1 when Redis answered (even with a script error), 0 when unreachable. */
static int call(lm_redis_t *rd, int id, int nkeys, int argc, const char *const *argv,
                const size_t *lens, lm_redis_done_fn done, void *arg)
{
    lm_redis_ans_t a = {0};
    const char *strs[MAX_SYNC_STRS];
    redisReply *r = NULL;
    if (ensure(rd) == 0) {
        r = id < 0 ? redisCommandArgv(rd->c, argc, (const char **)argv, lens)
                   : evalsha(rd, id, nkeys, argc, argv);
        if (id >= 0 && r && r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8)) {
            freeReplyObject(r); /* Redis restarted under us: load again, once */
            r = load_scripts(rd) == 0 ? evalsha(rd, id, nkeys, argc, argv) : NULL;
        }
        if (r == NULL) {
            lm_log(LM_LOG_WARN, "redis: connection lost (%s)", rd->c ? rd->c->errstr : "");
            disconnect(rd);
        } else if (r->type == REDIS_REPLY_ERROR && id < 0) {
            if (!rd->cmd_failing) /* e.g. OOM under noeviction: once, not per answer */
                lm_log(LM_LOG_ERROR, "redis: command %s refused: %s", argv[0], r->str);
            rd->cmd_failing = 1;
        } else if (r->type == REDIS_REPLY_ERROR) {
            lm_log(LM_LOG_ERROR, "redis: script %d failed: %s", id, r->str);
        } else {
            rd->cmd_failing = id < 0 ? 0 : rd->cmd_failing;
            a.strs = strs;
            flatten(r, &a, strs);
        }
    }
    int reached = r != NULL;
    if (done)
        done(arg, &a);
    if (r)
        freeReplyObject(r);
    return reached;
}

void lm_redis_call_now(lm_redis_t *rd, int id, int nkeys, int argc, const char *const *argv,
                       lm_redis_done_fn done, void *arg)
{
    (void)call(rd, id, nkeys, argc, argv, NULL, done, arg);
}

static void *run(void *arg)
{
    lm_redis_t *rd = arg;
    int64_t next_tick = 0;
    pthread_mutex_lock(&rd->mu);
    for (;;) {
        while (rd->head == NULL && !rd->stop) {
            int64_t now = lm_clock_ms();
            if (now >= next_tick)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t ns = ts.tv_nsec + (next_tick - now) * 1000000;
            ts.tv_sec += ns / 1000000000;
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&rd->cv, &rd->mu, &ts);
        }
        if (rd->stop && rd->head == NULL)
            break; /* stopping: what was queued still runs (settlements) */
        job_t *j = rd->head;
        if (j) {
            rd->head = j->next;
            if (rd->head == NULL)
                rd->tail = NULL;
            rd->n--;
            rd->bytes -= j->bytes;
        }
        int stopping = rd->stop;
        pthread_mutex_unlock(&rd->mu);
        if (j) {
            int ok = call(rd, j->id, j->nkeys, j->argc, (const char *const *)j->argv, j->lens,
                          j->done, j->arg);
            if (!ok && j->id == LM_RS_SETTLE && rd->nretry < RETRY_MAX) { /* keep the spend */
                if (rd->nretry == 0)
                    memcpy(rd->retry_run, rd->run_id, sizeof(rd->run_id));
                j->next = rd->retry;
                rd->retry = j; /* replay order does not matter: additions */
                rd->nretry++;
            } else {
                job_free(j);
            }
        }
        int64_t now = lm_clock_ms();
        if (now >= next_tick) {
            next_tick = now + TICK_MS;
            if (rd->tick && !stopping && ensure(rd) == 0)
                rd->tick(rd->tick_arg, rd);
        }
        pthread_mutex_lock(&rd->mu);
    }
    pthread_mutex_unlock(&rd->mu);
    while (rd->retry) {
        job_t *j = rd->retry;
        rd->retry = j->next;
        job_free(j);
    }
    disconnect(rd);
    return NULL;
}

lm_redis_t *lm_redis_start(const lm_redis_url_t *u, void (*tick)(void *arg, lm_redis_t *rd),
                           void *tick_arg, char *err, size_t errlen)
{
    lm_redis_t *rd = calloc(1, sizeof(*rd));
    if (rd == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rd->url = *u;
    rd->tick = tick;
    rd->tick_arg = tick_arg;
    pthread_mutex_init(&rd->mu, NULL);
    pthread_cond_init(&rd->cv, NULL);
    if (pthread_create(&rd->th, NULL, run, rd) != 0) {
        snprintf(err, errlen, "cannot start the redis thread");
        pthread_mutex_destroy(&rd->mu);
        pthread_cond_destroy(&rd->cv);
        free(rd);
        return NULL;
    }
    return rd;
}

void lm_redis_stop(lm_redis_t *rd)
{
    if (rd == NULL || rd->joined)
        return;
    pthread_mutex_lock(&rd->mu);
    rd->stop = 1;
    pthread_cond_signal(&rd->cv);
    pthread_mutex_unlock(&rd->mu);
    pthread_join(rd->th, NULL);
    rd->joined = 1;
}

void lm_redis_free(lm_redis_t *rd)
{
    if (rd == NULL)
        return;
    if (!rd->joined)
        lm_redis_stop(rd);
    pthread_mutex_destroy(&rd->mu);
    pthread_cond_destroy(&rd->cv);
    memset(&rd->url, 0, sizeof(rd->url)); /* the password */
    free(rd);
}

static int enqueue(lm_redis_t *rd, job_t *j);

int lm_redis_call(lm_redis_t *rd, int id, int nkeys, int argc, const char *const *argv,
                  lm_redis_done_fn done, void *arg)
{
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->argv = calloc((size_t)argc + 1, sizeof(char *))) == NULL) {
        free(j);
        return -1;
    }
    j->id = id;
    j->nkeys = nkeys;
    j->done = done;
    j->arg = arg;
    for (; j->argc < argc; j->argc++)
        if ((j->argv[j->argc] = strdup(argv[j->argc])) == NULL) {
            job_free(j);
            return -1;
        }
    return enqueue(rd, j);
}

/* Append j to the queue (owned by it from here): 0, or -1 (freed). */
static int enqueue(lm_redis_t *rd, job_t *j)
{
    pthread_mutex_lock(&rd->mu);
    if (rd->n >= QUEUE_MAX || rd->stop || (j->bytes && rd->bytes + j->bytes > BYTES_MAX)) {
        pthread_mutex_unlock(&rd->mu);
        job_free(j);
        return -1;
    }
    if (rd->tail)
        rd->tail->next = j;
    else
        rd->head = j;
    rd->tail = j;
    rd->n++;
    rd->bytes += j->bytes;
    pthread_cond_signal(&rd->cv);
    pthread_mutex_unlock(&rd->mu);
    return 0;
}

int lm_redis_cmd(lm_redis_t *rd, int argc, const char *const *argv, const size_t *lens,
                 lm_redis_done_fn done, void *arg)
{
    job_t *j = calloc(1, sizeof(*j));
    if (j == NULL || (j->argv = calloc((size_t)argc + 1, sizeof(char *))) == NULL ||
        (j->lens = calloc((size_t)argc + 1, sizeof(size_t))) == NULL) {
        if (j)
            free(j->argv);
        free(j);
        return -1;
    }
    j->id = -1;
    j->done = done;
    j->arg = arg;
    for (; j->argc < argc; j->argc++) {
        if ((j->argv[j->argc] = malloc(lens[j->argc] + 1)) == NULL) {
            job_free(j);
            return -1;
        }
        memcpy(j->argv[j->argc], argv[j->argc], lens[j->argc]);
        j->argv[j->argc][lens[j->argc]] = '\0';
        j->lens[j->argc] = lens[j->argc];
        j->bytes += lens[j->argc];
    }
    return enqueue(rd, j);
}

int lm_redis_up(lm_redis_t *rd)
{
    return rd && atomic_load(&rd->up);
}
