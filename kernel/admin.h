/*
 * admin.h - the admin API, served on its own listener (admin_listen,
 * 127.0.0.1:8081 by default) by one dedicated thread, so its blocking
 * store calls never touch a data-plane worker. Every route requires the
 * admin token (Authorization: Bearer <token>); the data-plane port has no
 * admin routes.
 */
#ifndef LM_ADMIN_H
#define LM_ADMIN_H
#include "store.h"

#include <evhtp/evhtp.h>

struct lm_server_s;

typedef struct lm_admin_env_s {
    lm_store_t         *store;  /* borrowed; outlives the admin listener */
    struct lm_server_s *server; /* for reload and the current generation */
} lm_admin_env_t;

/* Register the admin routes on `htp` (created by the server on the control
 * thread, before its thread starts). Makes sure an admin token exists:
 * on first start a random one is generated, stored hashed and printed once
 * on stderr. Returns 0, or -1 with a message. env must outlive htp. */
int lm_admin_setup(evhtp_t *htp, lm_admin_env_t *env, char *err, size_t errlen);
#endif
