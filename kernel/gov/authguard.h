/*
 * authguard.h - brute-force protection (AU-4): an address that fails
 * authentication `limit` times within a minute is answered 429 for a
 * minute, without looking at its keys. Thread-safe (one mutex); a fixed
 * table, so a flood of addresses cannot grow memory (old entries are
 * overwritten).
 */
#ifndef LM_AUTHGUARD_H
#define LM_AUTHGUARD_H
#include <stdint.h>

struct sockaddr;
typedef struct lm_authguard_s lm_authguard_t;

/* limit 0 disables the guard (both calls then do nothing). */
lm_authguard_t *lm_authguard_new(int limit);
void lm_authguard_free(lm_authguard_t *g);
/* Seconds the address must still wait (0 = may try). */
int64_t lm_authguard_blocked(lm_authguard_t *g, const struct sockaddr *peer, int64_t now_ms);
/* Record one failed authentication. */
void lm_authguard_fail(lm_authguard_t *g, const struct sockaddr *peer, int64_t now_ms);
#endif
