/*
 * session.h - the web console's sign-in sessions (docs/console.md): an
 * admin or read-only token is exchanged for a random session id carried
 * in an HttpOnly, SameSite=Strict cookie, plus a CSRF token that every
 * state-changing request must echo in X-CSRF-Token. A fixed table held in
 * the admin env: no allocation, and only the admin thread touches it.
 * The table keeps the SHA-256 of each id, never the id itself.
 */
#ifndef LM_ADMIN_SESSION_H
#define LM_ADMIN_SESSION_H
#include <stddef.h>
#include <stdint.h>

#define LM_ADMIN_SESSIONS       64            /* signed-in browsers at once */
#define LM_ADMIN_SESSION_COOKIE "lm_console"  /* the cookie's name */
#define LM_ADMIN_SESSION_IDLEN  43            /* 32 random bytes, base64url */
#define LM_ADMIN_SESSION_TTL_MS (8 * 3600000) /* default lifetime: 8 hours */

typedef struct lm_admin_session_s {
    unsigned char id_hash[32];
    char csrf[LM_ADMIN_SESSION_IDLEN + 1];
    int role;           /* LM_ADMIN_ROLE_* */
    int64_t expires_ms; /* monotonic clock; 0 = a free slot */
} lm_admin_session_t;

typedef struct lm_admin_sessions_s {
    lm_admin_session_t s[LM_ADMIN_SESSIONS];
    int64_t ttl_ms; /* lifetime of a new session (fixed, not sliding) */
} lm_admin_sessions_t;

/* Start a session of `role`: the cookie value is written to
 * id[LM_ADMIN_SESSION_IDLEN + 1]. A full table drops the session closest
 * to its end. Returns the slot (borrowed from t), or NULL if the random
 * source failed. */
lm_admin_session_t *lm_admin_session_new(lm_admin_sessions_t *t, int role, int64_t now_ms,
                                         char *id);
/* The live session named by the Cookie header (may be NULL), or NULL.
 * Expired slots found on the way are freed. */
lm_admin_session_t *lm_admin_session_find(lm_admin_sessions_t *t, const char *cookie_hdr,
                                          int64_t now_ms);
/* End a session (sign-out). */
void lm_admin_session_drop(lm_admin_session_t *s);
/* 1 if hdr (may be NULL) equals the session's CSRF token (constant time). */
int lm_admin_session_csrf_ok(const lm_admin_session_t *s, const char *hdr);
/* The value of cookie `name` in a Cookie header: a pointer into hdr and
 * its length, or NULL. A pure parser (fuzzed: tests/fuzz/fuzz_console.c). */
const char *lm_admin_cookie_value(const char *hdr, const char *name, size_t *len);
#endif
