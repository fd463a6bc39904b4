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
/* The caller's role (LM_ADMIN_ROLE_*), or -1 after replying 401/403.
 * Admin thread. */
int lm_admin_auth_check(lm_admin_env_t *env, lm_admin_http_req_t *req);
#endif
