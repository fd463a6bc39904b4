/*
 * cacheconf.h - the response cache's part of plugins.conf (docs/cache.md):
 *
 *   cache on|off [models GLOB...] [keys GLOB...] [apis API...]
 *                           a rule; the first rule whose lists all match a
 *                           request decides (an absent list matches all);
 *                           no rule, or none matching: not cached
 *   cache_ttl DURATION      how long an answer is served (300s)
 *   cache_max_bytes SIZE    the whole cache's cap, LRU beyond it (64m)
 *   cache_max_entry SIZE    one answer's cap: larger ones are not stored,
 *                           in memory or in Redis (1m)
 *   cache_sampled on|off    also cache requests sampled at temperature > 0
 *                           (or without temperature: the providers' default
 *                           is 1); off
 *
 * Models are the name after on_request (what routes resolve), keys the
 * caller's key name, APIs the inbound API (chat, messages, responses).
 * conf.c hands the directive lines here; the rules live in lm_conf_t.
 * Threads: any (parsing on the control thread; lookups read a snapshot).
 */
#ifndef LM_CACHECONF_H
#define LM_CACHECONF_H
#include <stddef.h>
#include <stdint.h>

typedef struct lm_cache_rule_s {
    int on;
    char **models, **keys, **apis; /* fnmatch patterns; owned */
    size_t nmodels, nkeys, napis;
} lm_cache_rule_t;

typedef struct lm_cache_conf_s {
    lm_cache_rule_t *rules; /* in file order; owned */
    size_t nrules;
    int ttl_ms;         /* 300 s */
    uint64_t max_bytes; /* 64 MiB */
    uint64_t max_entry; /* 1 MiB: one stored answer (header included) */
    int sampled;        /* cache temperature > 0 too */
} lm_cache_conf_t;

/* Defaults into cc (nothing allocated). */
void lm_cacheconf_init(lm_cache_conf_t *cc);
/* One directive line (w[0] starts with "cache"): 0, 1 when w[0] is not a
 * cache directive, or -1 with a message in err. */
int lm_cacheconf_directive(lm_cache_conf_t *cc, char **w, int nw, char *err, size_t errlen);
/* 1 when some rule could turn caching on (the cache is worth creating). */
int lm_cacheconf_any(const lm_cache_conf_t *cc);
/* 1 when the first matching rule turns caching on for this request. key
 * may be NULL (no key name) and then matches only rules without keys. */
int lm_cacheconf_wanted(const lm_cache_conf_t *cc, const char *model, const char *key,
                        const char *api);
/* Frees the rules (cc itself is the caller's). */
void lm_cacheconf_free(lm_cache_conf_t *cc);
#endif
