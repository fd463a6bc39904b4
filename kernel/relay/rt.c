/* rt.c - builds and frees a runtime generation: configuration, loaded
 * plugins, channel instances, scripts and routes (rt.h). Control thread
 * builds and frees; workers read it through counted references. */
#include "relay/rt.h"

#include "core/log.h"
#include "plugin/crash.h"
#include "plugin/endpoints.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lm_plugin_t *get_plugin(lm_rt_t *rt, const char *dir, const char *name, char *err,
                               size_t errlen)
{
    for (size_t i = 0; i < rt->nplugins; i++)
        if (!strcmp(rt->plugins[i]->name, name))
            return rt->plugins[i];
    lm_plugin_t *p = lm_plugin_load(dir, name, err, errlen);
    if (p == NULL)
        return NULL;
    lm_plugin_t **np = realloc(rt->plugins, (rt->nplugins + 1) * sizeof(*np));
    if (np == NULL) {
        lm_plugin_unref(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->plugins = np;
    rt->plugins[rt->nplugins++] = p;
    lm_log(LM_LOG_INFO, "loaded plugin %s (%s %s, ABI %u.%u)", name, p->vt.name,
           p->vt.version ? p->vt.version : "?", p->vt.hdr.major, p->abi_minor);
    return p;
}

static int add_routes(lm_rt_t *rt, lm_inst_t *inst)
{
    const lm_chan_conf_t *ch = inst->chan;
    lm_route_t *nr = realloc(rt->routes, (rt->nroutes + ch->nmodels) * sizeof(*nr));
    if (nr == NULL)
        return -1;
    rt->routes = nr;
    for (size_t i = 0; i < ch->nmodels; i++) {
        if (lm_rt_route(rt, ch->models[i].name))
            continue; /* an earlier channel serves it: first wins */
        rt->routes[rt->nroutes++] =
            (lm_route_t){ch->models[i].name, ch->models[i].upstream, inst, NULL, NULL};
    }
    return 0;
}

uint32_t lm_rt_model_endpoints(const lm_rt_t *rt, const char *model)
{
    lm_route_t c[8];
    uint32_t m = 0;
    size_t n = lm_rt_candidates(rt, model, c, sizeof(c) / sizeof(c[0]));
    for (size_t i = 0; i < n; i++)
        m |= lm_endpoints_of(&c[i].inst->plugin->vt);
    return m;
}

static char *build_models_json(const lm_rt_t *rt)
{
    json_t *data = json_array();
    for (size_t i = 0; i < rt->nroutes; i++)
        if (!strpbrk(rt->routes[i].model, "*?[")) /* globs are not model ids */
            json_array_append_new(
                data,
                json_pack("{s:s,s:s,s:i,s:s,s:o*}", "id", rt->routes[i].model, "object", "model",
                          "created", 0, "owned_by", rt->routes[i].inst->chan->plugin, "endpoints",
                          lm_endpoints_json(lm_rt_model_endpoints(rt, rt->routes[i].model))));
    json_t *o = json_pack("{s:s,s:o}", "object", "list", "data", data);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* Compile every configured script together (lua_host.h): a broken one fails
 * the whole build, so a reload keeps the old generation. */
static int load_scripts(lm_rt_t *rt, lm_lua_shared_t *shared, char *err, size_t errlen)
{
    const lm_conf_t *c = rt->conf;
    if (c->nscripts == 0)
        return 0;
    lm_lua_script_spec_t *specs = calloc(c->nscripts, sizeof(*specs));
    json_t **args = calloc(c->nscripts, sizeof(*args));
    int rc = -1;
    if (specs == NULL || args == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->nscripts; i++) {
        const lm_script_conf_t *sc = &c->scripts[i];
        args[i] = sc->args_json ? json_loads(sc->args_json, JSON_DECODE_ANY, NULL) : NULL;
        specs[i] = (lm_lua_script_spec_t){sc->name,
                                          sc->path,
                                          (const char *const *)sc->models,
                                          sc->nmodels,
                                          (const char *const *)sc->keys,
                                          sc->nkeys,
                                          args[i]};
    }
    lm_lua_limits_t lim = {c->lua_instructions, (uint32_t)c->lua_deadline_ms, c->lua_memory};
    char lerr[1024];
    rt->lua = lm_lua_gen_load(specs, c->nscripts, &lim, shared, lerr, sizeof(lerr));
    if (rt->lua == NULL)
        snprintf(err, errlen, "%s: scripts: %s", c->path, lerr);
    else
        rc = 0;
out:
    for (size_t i = 0; args && i < c->nscripts; i++)
        json_decref(args[i]);
    free(args);
    free(specs);
    return rc;
}

size_t lm_rt_candidates(const lm_rt_t *rt, const char *model, lm_route_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < rt->ninsts && n < max; i++) {
        const lm_chan_conf_t *ch = rt->insts[i].chan;
        for (size_t j = 0; j < ch->nmodels; j++) {
            const lm_model_t *m = &ch->models[j];
            if (!strcmp(m->name, model) || (m->pattern && fnmatch(m->name, model, 0) == 0)) {
                lm_route_stats_t *st = rt->cstats ? rt->cstats[rt->coff[i] + j] : NULL;
                /* a glob without a=b sends the requested name upstream */
                const char *up = m->pattern && !m->mapped ? model : m->upstream;
                out[n++] = (lm_route_t){m->name, up, lm_inst_pick(&rt->insts[i]), st, NULL};
                break;
            }
        }
    }
    return n;
}

/* The channel's health settings (zeros keep the defaults). */
static lm_route_opts_t health_opts(const lm_chan_conf_t *ch)
{
    lm_route_opts_t o = {0};
    o.consecutive_failures = ch->eject_after;
    o.base_ejection_ms = ch->eject_cooldown_ms;
    o.max_ejection_ms = ch->eject_max_ms;
    o.window_error_pct = ch->error_rate_pct;
    o.window_min_requests = ch->error_rate_min;
    return o;
}

/* Health state lives in the process-wide table, so it survives reloads;
 * each route of this generation points at its channel x model entry (and
 * takes the generation's health settings). */
static int bind_routes(lm_rt_t *rt, lm_route_table_t *table)
{
    rt->groups = calloc(rt->nroutes + 1, sizeof(*rt->groups));
    if (rt->groups == NULL)
        return -1;
    for (size_t i = 0; i < rt->nroutes; i++) {
        lm_route_group_init(&rt->groups[i]);
        rt->routes[i].group = &rt->groups[i];
    }
    for (size_t i = 0; table && i < rt->ninsts; i++) {
        const lm_chan_conf_t *ch = rt->insts[i].chan;
        if (lm_route_table_limit(table, ch->name, ch->max_inflight) == NULL)
            return -1;
    }
    for (size_t i = 0; table && i < rt->nroutes; i++) {
        lm_route_opts_t o = health_opts(rt->routes[i].inst->chan);
        rt->routes[i].stats =
            lm_route_table_stats(table, rt->routes[i].inst->chan->name, rt->routes[i].model, &o);
        if (rt->routes[i].stats == NULL)
            return -1;
    }
    /* Candidate lookups per request read these, never the table's mutex. */
    size_t total = 0;
    rt->coff = calloc(rt->ninsts + 1, sizeof(*rt->coff));
    for (size_t i = 0; rt->coff && i < rt->ninsts; i++) {
        rt->coff[i] = total;
        total += rt->insts[i].chan->nmodels;
    }
    rt->cstats = calloc(total + 1, sizeof(*rt->cstats));
    if (rt->coff == NULL || rt->cstats == NULL)
        return -1;
    for (size_t i = 0; table && i < rt->ninsts; i++) {
        const lm_chan_conf_t *ch = rt->insts[i].chan;
        lm_route_opts_t o = health_opts(ch);
        for (size_t j = 0; j < ch->nmodels; j++)
            if ((rt->cstats[rt->coff[i] + j] =
                     lm_route_table_stats(table, ch->name, ch->models[j].name, &o)) == NULL)
                return -1;
    }
    rt->table = table;
    return 0;
}

lm_rt_t *lm_rt_build(lm_conf_t *conf, const char *plugin_dir, int strict, lm_lua_shared_t *shared,
                     lm_route_table_t *table, char *err, size_t errlen)
{
    lm_rt_t *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        lm_conf_free(conf);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->conf = conf;
    atomic_init(&rt->refs, 1);
    rt->gen = 1;
    const char *dir = plugin_dir ? plugin_dir : conf->plugin_dir;
    rt->insts = calloc(conf->nchans + 1, sizeof(lm_inst_t));
    if (rt->insts == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < conf->nchans; i++) {
        lm_chan_conf_t *ch = &conf->chans[i];
        char perr[1024], journal[4096];
        if (conf->data_dir) {
            snprintf(journal, sizeof(journal), "%s/crashes.log", conf->data_dir);
            if (lm_crash_disabled(journal, ch->plugin)) {
                lm_log(LM_LOG_ERROR,
                       "%s:%d: channel %s disabled: plugin %s crashed %d times within %d s "
                       "(see %s; remove those lines once the plugin is fixed)",
                       conf->path, ch->line, ch->name, ch->plugin, LM_CRASH_LIMIT, LM_CRASH_WINDOW,
                       journal);
                continue;
            }
        }
        lm_plugin_t *p = get_plugin(rt, dir, ch->plugin, perr, sizeof(perr));
        if (p == NULL) {
            snprintf(err, errlen, "%s:%d: channel %s: %s", conf->path, ch->line, ch->name, perr);
            if (strict)
                goto fail;
            lm_log(LM_LOG_ERROR, "%s; channel disabled", err);
            continue;
        }
        lm_inst_t *inst = &rt->insts[rt->ninsts];
        if (lm_inst_init_keys(inst, p, ch, conf->path, err, errlen) < 0) {
            if (strict)
                goto fail;
            lm_log(LM_LOG_ERROR, "%s; channel disabled", err);
            continue;
        }
        rt->ninsts++;
        if (add_routes(rt, inst) < 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if (load_scripts(rt, shared, err, errlen) < 0)
        goto fail;
    rt->strategy = LM_ROUTE_WEIGHTED;
    if (conf->route_strategy)
        lm_route_strategy_parse(conf->route_strategy, &rt->strategy);
    if (bind_routes(rt, table) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    rt->models_json = build_models_json(rt);
    /* per generation: a reload starts empty, so no answer outlives the
     * configuration (channels, mappings, prices) that produced it */
    if (lm_cacheconf_any(&conf->cache) && (rt->cache = lm_cache_new(conf->cache.max_bytes)) == NULL)
        rt->models_json = (free(rt->models_json), NULL);
    if (rt->models_json == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return rt;
fail:
    lm_rt_free(rt);
    return NULL;
}

void lm_rt_ref(lm_rt_t *rt)
{
    atomic_fetch_add(&rt->refs, 1);
}

void lm_rt_unref(lm_rt_t *rt)
{
    if (rt && atomic_fetch_sub(&rt->refs, 1) == 1) {
        if (rt->retire)
            rt->retire(rt, rt->retire_arg);
        else
            lm_rt_free(rt);
    }
}

void lm_rt_free(lm_rt_t *rt)
{
    if (rt == NULL)
        return;
    for (size_t i = 0; i < rt->ninsts; i++)
        lm_inst_fini(&rt->insts[i]);
    for (size_t i = 0; i < rt->nplugins; i++)
        lm_plugin_unref(rt->plugins[i]);
    free(rt->insts);
    free(rt->plugins);
    free(rt->routes);
    free(rt->models_json);
    free(rt->groups);
    free(rt->cstats);
    free(rt->coff);
    lm_cache_free(rt->cache);
    lm_lua_gen_release(rt->lua);
    lm_conf_free(rt->conf);
    free(rt);
}

lm_route_strategy_t lm_rt_strategy(const lm_rt_t *rt, const char *model)
{
    const lm_conf_t *c = rt->conf;
    for (size_t i = 0; i < c->nmodel_strategies; i++) {
        lm_route_strategy_t st;
        if (fnmatch(c->model_strategies[i].pattern, model, 0) == 0 &&
            lm_route_strategy_parse(c->model_strategies[i].strategy, &st) == 0)
            return st;
    }
    return rt->strategy;
}

/* Exact names first; then the first glob that matches. */
const lm_route_t *lm_rt_route(const lm_rt_t *rt, const char *model)
{
    for (size_t i = 0; i < rt->nroutes; i++)
        if (!strcmp(rt->routes[i].model, model))
            return &rt->routes[i];
    for (size_t i = 0; i < rt->nroutes; i++)
        if (strpbrk(rt->routes[i].model, "*?[") && fnmatch(rt->routes[i].model, model, 0) == 0)
            return &rt->routes[i];
    return NULL;
}
