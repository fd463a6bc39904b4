/*
 * server.h - the process: listener, worker threads, signals, drain,
 * reload. The layers below never include this: the relay and the routes
 * get lm_relay_services_t, the admin API its lm_admin_ctl_t.
 */
#ifndef LM_SERVER_H
#define LM_SERVER_H
#include "relay/rt.h"

typedef struct lm_server_s lm_server_t;

/* Where a reload reads its configuration from. */
typedef struct lm_server_opts_s {
    const char *conf_path;    /* NULL: the built-in default (reload re-reads it) */
    const char *plugin_dir;   /* -p override or NULL */
    lm_lua_shared_t *shared;  /* lm.shared counters for every generation (main owns) */
    lm_route_table_t *routes; /* channel health for every generation (main owns) */
} lm_server_opts_t;

/* Run the gateway until SIGTERM/SIGINT and a drain; SIGHUP reloads the
 * configuration, plugins included. Takes ownership of rt (generation 1).
 * Returns 0 on a clean stop, -1 with a message in err. */
int lm_server_run(lm_rt_t *rt, const lm_server_opts_t *opts, char *err, size_t errlen);
struct lm_metrics_std_s;
/* The standard metric families (any thread; live until shutdown). */
struct lm_metrics_std_s *lm_server_metrics(lm_server_t *s);
/* Prometheus text of every metric, gauges refreshed now (new, free()). */
char *lm_server_metrics_render(lm_server_t *s, size_t *len);
/* Ask the control thread to reload (any thread). */
void lm_server_reload(lm_server_t *s);
/* A counted reference to the current generation (any thread); release it
 * with lm_rt_unref. */
lm_rt_t *lm_server_acquire_rt(lm_server_t *s);
/* The configuration as the file (or the built-in default) says now,
 * without the stored channels: a new snapshot the caller frees, or NULL
 * with a message. */
lm_conf_t *lm_server_conf_file(lm_server_t *s, char *err, size_t errlen);
/* Build conf (consumed) as a throwaway generation on the control thread,
 * strictly, as longmen -t checks a configuration (parse done; every plugin
 * loaded, settings checked against its cfg_keys, init run, then fini).
 * 0, or -1 with the message in err. Blocks until done: not on the control
 * thread (the admin thread calls it). */
int lm_server_check_conf(lm_server_t *s, lm_conf_t *conf, char *err, size_t errlen);
/* Ask the control thread to reload and wait, at most timeout_ms, for a
 * reload that started after this call (so it saw every change committed
 * before). 1: applied, *gen = the generation now serving; 0: failed, the
 * reason in err (the current generation keeps serving); -1: no answer in
 * time, or the gateway is stopping. Blocks: not on the control thread. */
int lm_server_reload_wait(lm_server_t *s, int timeout_ms, uint64_t *gen, char *err, size_t errlen);
/* Any thread: tell every worker a side value changed (its waiters go on). */
void lm_server_side_wake(lm_server_t *s);
#endif
