/*
 * auth.h - the admin tokens: bootstrap and the check of every request.
 */
#ifndef LM_ADMIN_AUTH_H
#define LM_ADMIN_AUTH_H
#include "admin/env.h"
#include "http/admin_http.h"

#include <stddef.h>

/* Fill env's token digests (control thread, before the admin thread
 * starts): from LONGMEN_ADMIN_TOKEN / LONGMEN_ADMIN_READONLY_TOKEN when
 * set (stored, replacing the stored digests), else the stored ones, else a
 * generated full token printed once on stderr. 0, or -1 with a message. */
int lm_admin_auth_setup(lm_admin_env_t *env, char *err, size_t errlen);
/* The caller's role (LM_ADMIN_ROLE_*), or -1 after replying 401/403/429:
 * by Authorization: Bearer, else by the console's session cookie (then
 * *sess is the session, borrowed from env; a non-GET request must carry
 * its CSRF token). A wrong token counts in env->authguard; a blocked
 * address gets 429. Admin thread. */
int lm_admin_auth_check(lm_admin_env_t *env, lm_admin_http_req_t *req, lm_admin_session_t **sess);
/* The role of a token (LM_ADMIN_ROLE_*), or -1 (constant time). */
int lm_admin_auth_token_role(const lm_admin_env_t *env, const char *tok, size_t n);
/* 1 after replying 429 if the caller's address is blocked by the guard. */
int lm_admin_auth_blocked(lm_admin_env_t *env, lm_admin_http_req_t *req);
/* Count one failed authentication of the caller's address. */
void lm_admin_auth_failed(lm_admin_env_t *env, lm_admin_http_req_t *req);
#endif
