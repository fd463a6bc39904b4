/*
 * pgconn.h - one PostgreSQL connection (libpq) owned by one thread at a
 * time: the conninfo parsed once (password only as env:VAR, read from the
 * environment at each connect and never kept in a message), connects with
 * a bounded timeout, reconnects after a loss with a doubling backoff, and
 * classifies failures (connection lost vs. a statement refused). Used by
 * the PostgreSQL store backend (store_pg.c): the writer thread, the admin
 * readers (under a mutex) and the change watcher each own one.
 */
#ifndef LM_STORE_PGCONN_H
#define LM_STORE_PGCONN_H
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

struct lm_store_s;

typedef struct lm_pgconn_s {
    PGconn *c;             /* NULL or a connection (maybe bad) */
    char **keys, **vals;   /* parsed conninfo (values may be env:VAR) */
    const char *name;      /* "write", "read", "watch": for log lines */
    struct lm_store_s *st; /* for lm_store_log */
    int64_t next_try_ms;   /* lm_clock_ms() before which no reconnect is tried */
    int backoff_ms;        /* next delay after a failed connect (100 ms .. 2 s) */
    int lost;              /* the last failure concerned the connection */
    int in_tx;        /* a transaction is open: a lost connection fails the statement instead of
                         reconnecting (the statements after it would run outside it) */
    char sqlstate[6]; /* of the last failed statement, "" if none */
} lm_pgconn_t;

/* Check and parse conninfo ("key=value ..."; a password must be env:VAR,
 * the variable set). 0, or -1 with a message in err (never the password).
 * Nothing is connected. */
int lm_pgconn_init(lm_pgconn_t *pc, struct lm_store_s *st, const char *name, const char *conninfo,
                   char *err, size_t errlen);
/* Close and free everything (pc itself is the caller's). */
void lm_pgconn_free(lm_pgconn_t *pc);
/* Connected (connect or reconnect if the backoff allows): 0, or -1 (lost
 * set; a message in err if err). Blocks at most connect_timeout (2 s unless
 * the conninfo says otherwise). */
int lm_pgconn_ensure(lm_pgconn_t *pc, char *err, size_t errlen);
/* Run sql with n text parameters (vals[i] NULL = SQL NULL; lens/binary
 * for bytea: fmts[i] 1 = binary of lens[i] bytes; both may be NULL).
 * Returns the result when its status is COMMAND_OK or TUPLES_OK (caller
 * PQclear()s), else NULL with the failure logged as `what`, sqlstate and
 * lost set. Connects first if needed. */
PGresult *lm_pgconn_exec(lm_pgconn_t *pc, const char *what, const char *sql, int n,
                         const char *const *vals, const int *lens, const int *fmts);
/* lm_pgconn_exec for statements whose result is not needed: 0 or -1. */
int lm_pgconn_run(lm_pgconn_t *pc, const char *what, const char *sql);
/* 1 if the last failure was a constraint (SQLSTATE class 23). */
int lm_pgconn_constraint(const lm_pgconn_t *pc);
#endif
