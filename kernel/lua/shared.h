/*
 * shared.h - the lm.shared backend (shared.c); lm_lua_shared_new/_free are
 * in lua_host.h. Thread-safe.
 */
#ifndef LM_LUA_SHARED_H
#define LM_LUA_SHARED_H
#include "lua/lua_host.h"

#include <stddef.h>
#include <stdint.h>

/* Return 0 or -1 (absent / full). ttl_ms 0 = no expiry; applied when the
 * entry is created (incr) or written (set). */
int lm_lua_shared_get(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t *val);
int lm_lua_shared_incr(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t delta,
                       int64_t ttl_ms, int64_t *val);
int lm_lua_shared_set(lm_lua_shared_t *sh, const char *k, size_t klen, int64_t val, int64_t ttl_ms);
void lm_lua_shared_del(lm_lua_shared_t *sh, const char *k, size_t klen);
#endif
