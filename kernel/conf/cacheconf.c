/* cacheconf.c - the cache directives of plugins.conf (cacheconf.h).
 * Control thread for parsing; lm_cacheconf_wanted on any thread. */
#include "conf/cacheconf.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void lm_cacheconf_init(lm_cache_conf_t *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->ttl_ms = 300000;
    cc->max_bytes = 64ULL * 1024 * 1024;
    cc->max_entry = 1024 * 1024;
}

static int bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void rule_free(lm_cache_rule_t *r)
{
    free_list(r->models, r->nmodels);
    free_list(r->keys, r->nkeys);
    free_list(r->apis, r->napis);
}

static int push(char ***v, size_t *n, const char *s)
{
    char **nv = realloc(*v, (*n + 1) * sizeof(*nv));
    if (nv == NULL)
        return -1;
    *v = nv;
    if ((nv[*n] = strdup(s)) == NULL)
        return -1;
    (*n)++;
    return 0;
}

/* cache on|off [models G...] [keys G...] [apis A...] */
static int add_rule(lm_cache_conf_t *cc, char **w, int nw, char *err, size_t errlen)
{
    static const char usage[] = "usage: cache on|off [models GLOB...] [keys GLOB...] [apis API...]";
    lm_cache_rule_t r = {0};
    char ***list = NULL;
    size_t *cnt = NULL;
    if (nw < 2 || (strcmp(w[1], "on") && strcmp(w[1], "off")))
        return bad(err, errlen, "%s", usage);
    r.on = !strcmp(w[1], "on");
    for (int i = 2; i < nw; i++) {
        if (!strcmp(w[i], "models") || !strcmp(w[i], "keys") || !strcmp(w[i], "apis")) {
            list = w[i][0] == 'm' ? &r.models : w[i][0] == 'k' ? &r.keys : &r.apis;
            cnt = w[i][0] == 'm' ? &r.nmodels : w[i][0] == 'k' ? &r.nkeys : &r.napis;
            if (*cnt || i + 1 == nw || !strcmp(w[i + 1], "models") || !strcmp(w[i + 1], "keys") ||
                !strcmp(w[i + 1], "apis")) {
                rule_free(&r);
                return bad(err, errlen, "cache: \"%s\" needs one or more values, once; %s", w[i],
                           usage);
            }
        } else if (list == NULL) {
            return bad(err, errlen, "cache: unexpected \"%s\"; %s", w[i], usage);
        } else if (push(list, cnt, w[i]) < 0) {
            rule_free(&r);
            return bad(err, errlen, "out of memory");
        }
    }
    lm_cache_rule_t *nr = realloc(cc->rules, (cc->nrules + 1) * sizeof(*nr));
    if (nr == NULL) {
        rule_free(&r);
        return bad(err, errlen, "out of memory");
    }
    cc->rules = nr;
    cc->rules[cc->nrules++] = r;
    return 0;
}

/* 300, 300s, 5m, 1500ms */
static int duration_ms(const char *s, int *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return -1;
    if (!strcmp(end, "ms"))
        ;
    else if (!strcmp(end, "s") || !*end)
        v *= 1000;
    else if (!strcmp(end, "m"))
        v *= 60000;
    else if (!strcmp(end, "h"))
        v *= 3600000;
    else
        return -1;
    if (v < 1 || v > 7 * 86400000.0)
        return -1;
    *out = (int)v;
    return 0;
}

/* 4096, 512k, 64m, 1g */
static int size_bytes(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        return -1;
    uint64_t mul = !strcasecmp(end, "k")   ? 1024
                   : !strcasecmp(end, "m") ? 1024 * 1024
                   : !strcasecmp(end, "g") ? 1024ULL * 1024 * 1024
                   : *end                  ? 0
                                           : 1;
    if (mul == 0 || v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

int lm_cacheconf_directive(lm_cache_conf_t *cc, char **w, int nw, char *err, size_t errlen)
{
    const char *d = w[0];
    if (!strcmp(d, "cache"))
        return add_rule(cc, w, nw, err, errlen);
    if (strcmp(d, "cache_ttl") && strcmp(d, "cache_max_bytes") && strcmp(d, "cache_sampled") &&
        strcmp(d, "cache_max_entry"))
        return 1;
    if (nw != 2)
        return bad(err, errlen, "%s takes exactly one value", d);
    if (!strcmp(d, "cache_ttl")) {
        if (duration_ms(w[1], &cc->ttl_ms) < 0)
            return bad(err, errlen, "cache_ttl needs a duration from 1ms to 7 days, such as 300s");
    } else if (!strcmp(d, "cache_max_bytes")) {
        if (size_bytes(w[1], &cc->max_bytes) < 0 || cc->max_bytes < 1024)
            return bad(err, errlen, "cache_max_bytes must be a size >= 1k such as 64m");
    } else if (!strcmp(d, "cache_max_entry")) {
        if (size_bytes(w[1], &cc->max_entry) < 0 || cc->max_entry < 1024 ||
            cc->max_entry > 512ULL * 1024 * 1024)
            return bad(err, errlen, "cache_max_entry must be a size from 1k to 512m such as 1m");
    } else {
        if (strcmp(w[1], "on") && strcmp(w[1], "off"))
            return bad(err, errlen, "cache_sampled takes on or off");
        cc->sampled = !strcmp(w[1], "on");
    }
    return 0;
}

int lm_cacheconf_any(const lm_cache_conf_t *cc)
{
    for (size_t i = 0; i < cc->nrules; i++)
        if (cc->rules[i].on)
            return 1;
    return 0;
}

/* An empty list matches everything; otherwise one pattern must. */
static int matches(char **v, size_t n, const char *s)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; s && i < n; i++)
        if (fnmatch(v[i], s, 0) == 0)
            return 1;
    return 0;
}

int lm_cacheconf_wanted(const lm_cache_conf_t *cc, const char *model, const char *key,
                        const char *api)
{
    for (size_t i = 0; i < cc->nrules; i++) {
        const lm_cache_rule_t *r = &cc->rules[i];
        if (matches(r->models, r->nmodels, model) && matches(r->keys, r->nkeys, key) &&
            matches(r->apis, r->napis, api))
            return r->on;
    }
    return 0;
}

void lm_cacheconf_free(lm_cache_conf_t *cc)
{
    for (size_t i = 0; i < cc->nrules; i++)
        rule_free(&cc->rules[i]);
    free(cc->rules);
    cc->rules = NULL;
    cc->nrules = 0;
}
