/*
 * rt.h - the runtime snapshot: a parsed config plus its loaded plugins,
 * channel instances and model table. Immutable once built; shared read-only
 * by all workers. Built and freed on the control thread.
 */
#ifndef LM_RT_H
#define LM_RT_H
#include "conf/conf.h"
#include "lua/lua_host.h"
#include "plugin/plugin.h"
#include "relay/cache_store.h"
#include "route/route.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct lm_route_s {
    const char *model;    /* client-facing name (borrowed from conf) */
    const char *upstream; /* upstream id */
    lm_inst_t *inst;
    lm_route_stats_t *stats; /* health of channel x model (borrowed from the route table) */
    lm_route_group_t *group; /* round-robin position of the model (rt->routes entries only) */
} lm_route_t;

typedef struct lm_rt_s lm_rt_t;
/* Called when the last reference drops (any thread); must hand the runtime
 * to the control thread, which calls lm_rt_free. */
typedef void (*lm_rt_retire_fn)(lm_rt_t *rt, void *arg);

struct lm_rt_s {
    atomic_int refs;
    uint64_t gen; /* generation: 1 at start, +1 per successful reload */
    lm_rt_retire_fn retire;
    void *retire_arg;
    lm_rt_t *retired_next; /* the server's retire queue */
    char *models_json;     /* GET /v1/models body */
    lm_conf_t *conf;       /* owned */
    lm_plugin_t **plugins; /* one reference each */
    size_t nplugins;
    lm_inst_t *insts; /* one per working channel, in config order */
    size_t ninsts;
    lm_route_t *routes; /* in config order: first channel listing a model wins */
    size_t nroutes;
    lm_lua_gen_t *lua; /* the scripts of this generation (one reference), or NULL */
    lm_route_strategy_t strategy;
    lm_route_group_t *groups;  /* one per entry of routes */
    lm_route_table_t *table;   /* borrowed: process-wide health state, or NULL */
    lm_route_stats_t **cstats; /* per channel x model: cstats[coff[i] + j] (insts[i], model j) */
    size_t *coff;
    lm_cache_t *cache; /* the response cache (docs/cache.md), or NULL when no rule enables it */
};

/* Build a runtime from conf (takes ownership of conf, even on failure).
 * Plugins load from conf->plugin_dir unless plugin_dir is non-NULL.
 * strict: a channel whose plugin cannot be loaded or initialised fails the
 * build (longmen -t); otherwise it is logged and left out, and the other
 * channels serve. Returns NULL with a message naming the file and line. */
lm_rt_t *lm_rt_build(lm_conf_t *conf, const char *plugin_dir, int strict, lm_lua_shared_t *shared,
                     lm_route_table_t *table, char *err, size_t errlen);
/* Every channel that serves `model` (client name; exact or glob entries),
 * in config order, into out[max]; returns how many. The routes borrow from
 * the generation and, for glob entries, from `model` itself. */
size_t lm_rt_candidates(const lm_rt_t *rt, const char *model, lm_route_t *out, size_t max);
void lm_rt_free(lm_rt_t *rt);
/* Reference counting (any thread). A new runtime has one reference. */
void lm_rt_ref(lm_rt_t *rt);
void lm_rt_unref(lm_rt_t *rt);
/* The routing strategy for a client model name: the first route_strategy
 * whose patterns match it, else the global one. */
lm_route_strategy_t lm_rt_strategy(const lm_rt_t *rt, const char *model);
/* The route for a client model name, or NULL. */
const lm_route_t *lm_rt_route(const lm_rt_t *rt, const char *model);
/* The LM_EP_* endpoints any channel serving `model` declares (ABI 1.3;
 * plugin/endpoints.h), for GET /v1/models. */
uint32_t lm_rt_model_endpoints(const lm_rt_t *rt, const char *model);
#endif
