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
/* The address as 32 hex digits (IPv4 mapped into IPv6) into hex[33];
 * -1 for another family. */
int lm_authguard_addr_hex(const struct sockaddr *peer, char hex[33]);
/* Block the address (as lm_authguard_addr_hex wrote it) until until_ms:
 * a block another instance decided (shared.h). */
void lm_authguard_block_hex(lm_authguard_t *g, const char *hex, int64_t until_ms);
#endif
