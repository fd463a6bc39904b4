/*
 * env.h - what the process hosting the admin API hands it: the store, a
 * table of calls into the host (reload, configuration checks, metrics),
 * and the token digests filled at setup. Shared by every admin file; the
 * host owns it and keeps it alive past the listener.
 */
#ifndef LM_ADMIN_ENV_H
#define LM_ADMIN_ENV_H
#include "admin/session.h"
#include "gov/authguard.h"
#include "relay/rt.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

/* The calls the admin API makes into its host (the server fills them in,
 * lm_admin_setup's caller). Each gets `arg`; arg NULL means there is no
 * host, and the routes that need one answer 503. */
typedef struct lm_admin_ctl_s {
    void *arg;
    /* A counted reference to the current generation (any thread); release
     * it with lm_rt_unref. */
    lm_rt_t *(*acquire_rt)(void *arg);
    /* Ask the control thread to reload (any thread). */
    void (*reload)(void *arg);
    /* Prometheus text of every metric, gauges refreshed now (new, the
     * caller free()s), or NULL. */
    char *(*metrics_render)(void *arg, size_t *len);
    /* The configuration as the file (or the built-in default) says now,
     * without the stored channels: a new snapshot the caller frees with
     * lm_conf_free, or NULL with a message. */
    lm_conf_t *(*conf_file)(void *arg, char *err, size_t errlen);
    /* Build conf (consumed) as a throwaway generation on the control
     * thread, strictly, as longmen -t checks a configuration. 0, or -1
     * with the message in err. Blocks until done: admin thread only. */
    int (*check_conf)(void *arg, lm_conf_t *conf, char *err, size_t errlen);
    /* Ask for a reload and wait, at most timeout_ms, for one that started
     * after this call. 1: applied, *gen = the generation now serving; 0:
     * failed, the reason in err; -1: no answer in time, or the gateway is
     * stopping. Blocks: admin thread only. */
    int (*reload_wait)(void *arg, int timeout_ms, uint64_t *gen, char *err, size_t errlen);
} lm_admin_ctl_t;

typedef struct lm_admin_env_s {
    lm_store_t *store;  /* borrowed; outlives the admin listener */
    lm_admin_ctl_t ctl; /* the host: reload, current generation, checks */
    /* Filled by lm_admin_setup before the admin thread starts, then read by
     * that thread only: the SHA-256 of the full and read-only tokens. */
    unsigned char token_hash[32];
    unsigned char read_hash[32];
    int has_read;
    /* The data plane's brute-force guard (AU-4), borrowed; NULL = none.
     * Wrong admin tokens, by header or at the console's sign-in, count
     * in it like wrong API keys. */
    lm_authguard_t *authguard;
    /* The console's sign-in sessions (admin thread only); ttl_ms is set at
     * setup from LONGMEN_ADMIN_SESSION_TTL (seconds). */
    lm_admin_sessions_t sessions;
} lm_admin_env_t;

#endif
