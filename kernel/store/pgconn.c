/*
 * pgconn.c - one PostgreSQL connection with reconnect and backoff (see
 * pgconn.h). Blocking calls: only the store's own threads use it, never a
 * data-plane worker.
 */
#include "store/pgconn.h"
#include "core/clock.h"
#include "store/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

static void free_list(char **v)
{
    for (size_t i = 0; v && v[i]; i++) {
        memset(v[i], 0, strlen(v[i]));
        free(v[i]);
    }
    free(v);
}

void lm_pgconn_free(lm_pgconn_t *pc)
{
    if (pc->c)
        PQfinish(pc->c);
    pc->c = NULL;
    free_list(pc->keys);
    free_list(pc->vals);
    pc->keys = pc->vals = NULL;
}

/* The parsed options as two NULL-terminated lists; connect_timeout 2 s
 * unless given, so a connect never blocks its thread long. */
static int take_options(lm_pgconn_t *pc, PQconninfoOption *opts, char *err, size_t errlen)
{
    size_t n = 0, j = 0;
    int has_timeout = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        n++;
    pc->keys = calloc(n + 2, sizeof(char *));
    pc->vals = calloc(n + 2, sizeof(char *));
    if (pc->keys == NULL || pc->vals == NULL)
        goto nomem;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (!strcmp(o->keyword, "password") && strncmp(o->val, "env:", 4) != 0) {
            lm_store_seterr(err, errlen,
                            "store postgres: a literal password is refused; write "
                            "password=env:VAR and set VAR in the environment");
            return -1;
        }
        if (!strcmp(o->keyword, "password") && getenv(o->val + 4) == NULL) {
            lm_store_seterr(err, errlen, "store postgres: password=%.64s but the variable is unset",
                            o->val);
            return -1;
        }
        has_timeout |= !strcmp(o->keyword, "connect_timeout");
        if ((pc->keys[j] = strdup(o->keyword)) == NULL || (pc->vals[j] = strdup(o->val)) == NULL)
            goto nomem;
        j++;
    }
    if (!has_timeout &&
        ((pc->keys[j] = strdup("connect_timeout")) == NULL || (pc->vals[j] = strdup("2")) == NULL))
        goto nomem;
    return 0;
nomem:
    lm_store_seterr(err, errlen, "store postgres: out of memory");
    return -1;
}

int lm_pgconn_init(lm_pgconn_t *pc, struct lm_store_s *st, const char *name, const char *conninfo,
                   char *err, size_t errlen)
{
    memset(pc, 0, sizeof(*pc));
    pc->st = st;
    pc->name = name;
    pc->backoff_ms = BACKOFF_MIN_MS;
    char *perr = NULL;
    if (strstr(conninfo, "://")) {
        lm_store_seterr(err, errlen,
                        "store postgres: give the connection as \"host=... dbname=... user=... "
                        "password=env:VAR\", not as a URI");
        return -1;
    }
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (opts == NULL) {
        /* libpq's message quotes no value, only the faulty syntax */
        lm_store_seterr(err, errlen, "store postgres: %s", perr ? perr : "out of memory");
        PQfreemem(perr);
        return -1;
    }
    int rc = take_options(pc, opts, err, errlen);
    PQconninfoFree(opts);
    if (rc != 0)
        lm_pgconn_free(pc);
    return rc;
}

/* A new connection with env:VAR resolved into a stack copy of the values. */
static PGconn *connect_now(lm_pgconn_t *pc)
{
    size_t n = 0;
    while (pc->keys[n])
        n++;
    const char **vals = calloc(n + 1, sizeof(char *));
    if (vals == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        vals[i] = !strcmp(pc->keys[i], "password") ? getenv(pc->vals[i] + 4) : pc->vals[i];
    PGconn *c = PQconnectdbParams((const char *const *)pc->keys, vals, 0);
    free(vals);
    return c;
}

int lm_pgconn_ensure(lm_pgconn_t *pc, char *err, size_t errlen)
{
    if (pc->c && PQstatus(pc->c) == CONNECTION_OK)
        return 0;
    if (pc->in_tx) {
        pc->lost = 1;
        lm_store_seterr(err, errlen, "store postgres: %s connection lost in a transaction",
                        pc->name);
        return -1;
    }
    int64_t now = (int64_t)lm_clock_ms();
    if (now < pc->next_try_ms) {
        pc->lost = 1;
        lm_store_seterr(err, errlen, "store postgres: %s connection down, next try in %lld ms",
                        pc->name, (long long)(pc->next_try_ms - now));
        return -1;
    }
    int was = pc->c != NULL;
    if (pc->c)
        PQfinish(pc->c);
    pc->c = connect_now(pc);
    if (pc->c && PQstatus(pc->c) == CONNECTION_OK) {
        pc->backoff_ms = BACKOFF_MIN_MS;
        pc->lost = 0;
        if (was)
            lm_store_log(pc->st, 1, "postgres: %s connection re-established", pc->name);
        PGresult *r = PQexec(pc->c, "SET client_min_messages = warning");
        PQclear(r);
        return 0;
    }
    const char *m = pc->c ? PQerrorMessage(pc->c) : "out of memory";
    char msg[256];
    snprintf(msg, sizeof(msg), "%s", m);
    msg[strcspn(msg, "\n")] = '\0';
    lm_store_log(pc->st, 1, "postgres: %s connection failed (retry in %d ms): %s", pc->name,
                 pc->backoff_ms, msg);
    lm_store_seterr(err, errlen, "store postgres: cannot connect: %s", msg);
    pc->next_try_ms = now + pc->backoff_ms;
    pc->backoff_ms = pc->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pc->backoff_ms * 2;
    pc->lost = 1;
    return -1;
}

static int failed(lm_pgconn_t *pc, const char *what, PGresult *r);

PGresult *lm_pgconn_exec(lm_pgconn_t *pc, const char *what, const char *sql, int n,
                         const char *const *vals, const int *lens, const int *fmts)
{
    pc->sqlstate[0] = '\0';
    if (lm_pgconn_ensure(pc, NULL, 0) != 0) {
        snprintf(pc->sqlstate, sizeof(pc->sqlstate), "08006");
        return NULL;
    }
    PGresult *r = PQexecParams(pc->c, sql, n, NULL, vals, lens, fmts, 0);
    if (failed(pc, what, r) == 0)
        return r;
    if (r)
        PQclear(r);
    return NULL;
}

/* 0 if r succeeded, else -1 with the failure classified and logged. */
static int failed(lm_pgconn_t *pc, const char *what, PGresult *r)
{
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
        return 0;
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    snprintf(pc->sqlstate, sizeof(pc->sqlstate), "%s", code ? code : "08006");
    /* class 08: connection; 57P0x: the server shuts down or restarts */
    pc->lost = PQstatus(pc->c) != CONNECTION_OK || !strncmp(pc->sqlstate, "08", 2) ||
               !strncmp(pc->sqlstate, "57P", 3);
    char msg[256];
    snprintf(msg, sizeof(msg), "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(pc->c));
    msg[strcspn(msg, "\n")] = '\0';
    lm_store_log(pc->st, pc->lost ? 1 : 0, "postgres %s: %s: %s (%s)", pc->name, what, msg,
                 pc->sqlstate);
    return -1;
}

int lm_pgconn_run(lm_pgconn_t *pc, const char *what, const char *sql)
{
    pc->sqlstate[0] = '\0';
    if (lm_pgconn_ensure(pc, NULL, 0) != 0) {
        snprintf(pc->sqlstate, sizeof(pc->sqlstate), "08006");
        return -1;
    }
    PGresult *r = PQexec(pc->c, sql); /* simple protocol: several statements are fine */
    int rc = failed(pc, what, r);
    if (r)
        PQclear(r);
    return rc;
}

int lm_pgconn_constraint(const lm_pgconn_t *pc)
{
    return !strncmp(pc->sqlstate, "23", 2);
}
