/*
 * side.h - side values (ABI 1.1): per-channel credentials a plugin needs
 * fetched over HTTP (an OAuth access token), cached and shared by every
 * worker. The cache is pure bookkeeping under one mutex; the fetch itself
 * is run by a worker (side_fetch.c) and waiting requests are woken on their
 * own worker (relay.c). Thread: any.
 */
#ifndef LM_SIDE_H
#define LM_SIDE_H
#include "longmen.h"

#include <stdint.h>

#define LM_SIDE_NAME_MAX 32 /* including the NUL */
#define LM_SIDE_MAX      4  /* names per channel */

typedef struct lm_side_s lm_side_t;

/* What lm_side_get tells its caller to do next. */
typedef struct lm_side_need_s {
    char name[LM_SIDE_NAME_MAX];
    int fetch;    /* the caller was chosen to fetch `name` (foreground or background) */
    int wait;     /* there is no usable value: wait until the entry's seq moves */
    uint64_t seq; /* the entry's fetch sequence when the caller looked */
    lm_err err;   /* LM_EUPSTREAM: why the last fetch failed */
} lm_side_need_t;

/* New empty cache, or NULL. Freed with lm_side_free. */
lm_side_t *lm_side_new(void);
void lm_side_free(lm_side_t *s);

/* Look up `name` at `now_ms` (monotonic). LM_OK: *val is a malloc'd copy
 * (caller frees) of a live value; need->fetch may still be set (background
 * refresh past 90% of its life). LM_AGAIN: no live value; need->wait is set
 * and need->fetch says whether the caller must start the fetch.
 * LM_EUPSTREAM: the last fetch failed less than a second ago (need->err):
 * failures are not retried by every request. LM_EINVAL: a bad name or too
 * many names. */
int lm_side_get(lm_side_t *s, const char *name, int64_t now_ms, char **val, size_t *len,
                lm_side_need_t *need);

/* A fetch of `name` ended. ok: `value` (stolen, malloc'd) lives `ttl_s`
 * seconds (0: until invalidated). Otherwise e (copied) is what waiters get.
 * Bumps the entry's seq and allows the next fetch. */
void lm_side_complete(lm_side_t *s, const char *name, int ok, char *value, int64_t ttl_s,
                      const lm_err *e, int64_t now_ms);

/* Has the fetch a waiter saw at `seq` ended? 0: not yet. 1: there is a
 * value now. -1: it failed, e filled. */
int lm_side_check(lm_side_t *s, const char *name, uint64_t seq, lm_err *e);

/* Drop the value of `name` if it still equals `used` (a refusal of an
 * older value, already replaced, changes nothing). */
void lm_side_invalidate(lm_side_t *s, const char *name, lm_str used);

/* Test kit: store a value without a fetch (val NULL drops it). */
void lm_side_put(lm_side_t *s, const char *name, const char *val);
#endif
