/*
 * admin.h - the admin API, served on its own listener (admin_listen,
 * 127.0.0.1:8081 by default) by one dedicated thread, so its blocking
 * store calls never touch a data-plane worker. Every route requires the
 * admin token (Authorization: Bearer <token>); the data-plane port has no
 * admin routes.
 */
#ifndef LM_ADMIN_H
#define LM_ADMIN_H
#include "store/store.h"

struct evhtp;
struct lm_server_s;

typedef struct lm_admin_env_s {
    lm_store_t *store;          /* borrowed; outlives the admin listener */
    struct lm_server_s *server; /* for reload and the current generation */
    /* Filled by lm_admin_setup before the admin thread starts, then read by
     * that thread only: the SHA-256 of the full and read-only tokens. */
    unsigned char token_hash[32];
    unsigned char read_hash[32];
    int has_read;
} lm_admin_env_t;

/* Register the admin routes on `htp` (created by the server on the control
 * thread, before its thread starts). Makes sure an admin token exists:
 * on first start a random one is generated, stored hashed and printed once
 * on stderr. LONGMEN_ADMIN_TOKEN (full) and LONGMEN_ADMIN_READONLY_TOKEN
 * (GET routes only), when set, replace the stored digests (an empty
 * LONGMEN_ADMIN_READONLY_TOKEN removes the read-only token). Returns 0, or
 * -1 with a message. env must outlive htp. See docs/admin.md. */
int lm_admin_setup(struct evhtp *htp, lm_admin_env_t *env, char *err, size_t errlen);

/* Provided by server.c for the channel routes (admin thread). */
struct lm_conf_s;
/* The configuration as the file (or the built-in default) says now,
 * without the stored channels: a new snapshot the caller frees, or NULL
 * with a message. */
struct lm_conf_s *lm_server_conf_file(struct lm_server_s *s, char *err, size_t errlen);
/* Build conf (consumed) as a throwaway generation on the control thread,
 * strictly, as longmen -t checks a configuration (parse done; every plugin
 * loaded, settings checked against its cfg_keys, init run, then fini).
 * 0, or -1 with the message in err. Blocks until done: admin thread only. */
int lm_server_check_conf(struct lm_server_s *s, struct lm_conf_s *conf, char *err, size_t errlen);
/* Ask the control thread to reload and wait, at most timeout_ms, for a
 * reload that started after this call (so it saw every change committed
 * before). 1: applied, *gen = the generation now serving; 0: failed, the
 * reason in err (the current generation keeps serving); -1: no answer in
 * time, or the gateway is stopping. Blocks: admin thread only. */
int lm_server_reload_wait(struct lm_server_s *s, int timeout_ms, uint64_t *gen, char *err,
                          size_t errlen);
#endif
