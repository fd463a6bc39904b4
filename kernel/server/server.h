/*
 * server.h - the process: listener, worker threads, signals, drain.
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
/* The store (NULL without data_dir). Any thread; lives until shutdown. */
struct lm_store_s *lm_server_store(lm_server_t *s);
struct lm_metrics_std_s;
/* The standard metric families (any thread; live until shutdown). */
struct lm_metrics_std_s *lm_server_metrics(lm_server_t *s);
/* Prometheus text of every metric, gauges refreshed now (new, free()). */
char *lm_server_metrics_render(lm_server_t *s, size_t *len);
struct lm_authguard_s;
/* Failed-authentication guard (any thread; lives until shutdown). */
struct lm_authguard_s *lm_server_authguard(lm_server_t *s);
/* Ask the control thread to reload (any thread). */
void lm_server_reload(lm_server_t *s);
/* A counted reference to the current generation (any thread); release it
 * with lm_rt_unref. */
lm_rt_t *lm_server_acquire_rt(lm_server_t *s);
/* In-flight relay accounting (any thread). */
/* Requests in flight, process-wide; returns the new count. */
long lm_server_inflight_add(lm_server_t *s, int delta);
/* Any thread: tell every worker a side value changed (its waiters go on). */
void lm_server_side_wake(lm_server_t *s);
/* 1 once SIGTERM/SIGINT started the drain (any thread). */
int lm_server_draining(lm_server_t *s);
#endif
