/*
 * admin.h - the admin API, served on its own listener (admin_listen,
 * 127.0.0.1:8081 by default) by one dedicated thread, so its blocking
 * store calls never touch a data-plane worker. Every route requires the
 * admin token (Authorization: Bearer <token>); the data-plane port has no
 * admin routes.
 */
#ifndef LM_ADMIN_H
#define LM_ADMIN_H
#include "admin/env.h"

struct evhtp;

/* Register the admin routes on `htp` (created by the server on the control
 * thread, before its thread starts). Makes sure an admin token exists:
 * on first start a random one is generated, stored hashed and printed once
 * on stderr. LONGMEN_ADMIN_TOKEN (full) and LONGMEN_ADMIN_READONLY_TOKEN
 * (GET routes only), when set, replace the stored digests (an empty
 * LONGMEN_ADMIN_READONLY_TOKEN removes the read-only token). Returns 0, or
 * -1 with a message. env must outlive htp. See docs/admin.md. */
int lm_admin_setup(struct evhtp *htp, lm_admin_env_t *env, char *err, size_t errlen);
#endif
