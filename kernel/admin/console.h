/*
 * console.h - the web console on the admin listener (docs/console.md):
 * its embedded files at / and /console/<file>, and the session routes
 * (sign-in, who am I, sign-out). Admin thread only.
 */
#ifndef LM_ADMIN_CONSOLE_H
#define LM_ADMIN_CONSOLE_H
#include "admin/ctx.h"

/* Serve what needs no session (the console's files; POST /admin/session,
 * the sign-in). 1 if req was answered, 0 to go on to authentication. */
int lm_admin_console_public(lm_admin_env_t *env, lm_admin_http_req_t *req);
/* GET /admin/session: the caller's role and CSRF token. */
void lm_admin_console_whoami(lm_admin_ctx_t *a);
/* DELETE /admin/session: sign out (the cookie is cleared). */
void lm_admin_console_signout(lm_admin_ctx_t *a);
/* 1 if an Accept-Language header (may be NULL) prefers Chinese over
 * English: the highest-q tag wins, the first on a tie. A pure parser
 * (fuzzed: tests/fuzz/fuzz_console.c). */
int lm_admin_console_wants_zh(const char *accept_language);
#endif
