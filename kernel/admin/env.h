/*
 * env.h - the state the server hands the admin API: the store and the
 * server handle, and the token digests filled at setup. Shared by every
 * admin file; the server owns it and keeps it alive past the listener.
 */
#ifndef LM_ADMIN_ENV_H
#define LM_ADMIN_ENV_H
#include "store/store.h"

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
