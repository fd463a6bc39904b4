/* obsconf.c - the observability directives of plugins.conf (obsconf.h).
 * Control thread for parsing; lm_obsconf_bodies on any thread. */
#include "conf/obsconf.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void lm_obsconf_init(lm_obs_conf_t *oc)
{
    memset(oc, 0, sizeof(*oc));
    oc->otel_sample_ratio = 1.0;
    oc->otel_queue = 4096;
    oc->otel_timeout_ms = 2000;
    oc->request_log_max_age_s = 7 * 86400;
    oc->request_log_max_rows = 1000000;
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

static void rule_free(lm_obs_rule_t *r)
{
    for (size_t i = 0; i < r->nmodels; i++)
        free(r->models[i]);
    for (size_t i = 0; i < r->nkeys; i++)
        free(r->keys[i]);
    free(r->models);
    free(r->keys);
}

/* request_log_bodies on|off [models G...] [keys G...] */
static int add_rule(lm_obs_conf_t *oc, char **w, int nw, char *err, size_t errlen)
{
    static const char usage[] = "usage: request_log_bodies on|off [models GLOB...] [keys GLOB...]";
    lm_obs_rule_t r = {0};
    char ***list = NULL;
    size_t *cnt = NULL;
    if (nw < 2 || (strcmp(w[1], "on") && strcmp(w[1], "off")))
        return bad(err, errlen, "%s", usage);
    r.on = !strcmp(w[1], "on");
    for (int i = 2; i < nw; i++) {
        int is_m = !strcmp(w[i], "models"), is_k = !strcmp(w[i], "keys");
        if (is_m || is_k) {
            list = is_m ? &r.models : &r.keys;
            cnt = is_m ? &r.nmodels : &r.nkeys;
            if (*cnt || i + 1 == nw || !strcmp(w[i + 1], "models") || !strcmp(w[i + 1], "keys")) {
                rule_free(&r);
                return bad(err, errlen, "request_log_bodies: \"%s\" needs values, once; %s", w[i],
                           usage);
            }
            continue;
        }
        char **nv = list ? realloc(*list, (*cnt + 1) * sizeof(*nv)) : NULL;
        if (list == NULL || nv == NULL || (nv[*cnt] = strdup(w[i])) == NULL) {
            if (nv)
                *list = nv;
            rule_free(&r);
            return bad(err, errlen, list ? "out of memory" : "request_log_bodies: unexpected %s",
                       list ? "" : w[i]);
        }
        *list = nv;
        (*cnt)++;
    }
    lm_obs_rule_t *nr = realloc(oc->body_rules, (oc->nbody_rules + 1) * sizeof(*nr));
    if (nr == NULL) {
        rule_free(&r);
        return bad(err, errlen, "out of memory");
    }
    oc->body_rules = nr;
    oc->body_rules[oc->nbody_rules++] = r;
    return 0;
}

/* 90, 90s, 15m, 12h, 7d, 1500ms into milliseconds, within [lo, hi]. */
static int duration_ms(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return -1;
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    size_t i = 0;
    while (i < sizeof(units) / sizeof(units[0]) && strcmp(end, units[i].unit))
        i++;
    if (i == sizeof(units) / sizeof(units[0]))
        return -1;
    v *= units[i].ms;
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int on_off(const char *s, int *out)
{
    if (strcmp(s, "on") && strcmp(s, "off"))
        return -1;
    *out = !strcmp(s, "on");
    return 0;
}

/* otel_header NAME VALUE...: one "Name: value" line for every export
 * (an API key for a hosted collector, say; never logged). */
static int add_header(lm_obs_conf_t *oc, char **w, int nw, char *err, size_t errlen)
{
    if (nw < 3)
        return bad(err, errlen, "usage: otel_header NAME VALUE");
    const char *n = w[1];
    size_t len = strlen(n) + 2;
    for (const char *p = n; *p; p++)
        if (!strchr("!#$%&'*+-.^_`|~", *p) && !(*p >= '0' && *p <= '9') &&
            !((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'))
            return bad(err, errlen, "otel_header: \"%s\" is not a header name", n);
    if (!strcasecmp(n, "Content-Type") || !strcasecmp(n, "Content-Length"))
        return bad(err, errlen, "otel_header: %s is set by otel_protocol", n);
    for (int i = 2; i < nw; i++)
        len += strlen(w[i]) + 1;
    char *line = malloc(len + 1),
         **v = realloc(oc->otel_headers, (oc->notel_headers + 1) * sizeof(*v));
    if (v)
        oc->otel_headers = v;
    if (line == NULL || v == NULL) {
        free(line);
        return bad(err, errlen, "out of memory");
    }
    char *p = line + sprintf(line, "%s:", n);
    for (int i = 2; i < nw; i++)
        p += sprintf(p, " %s", w[i]);
    oc->otel_headers[oc->notel_headers++] = line;
    return 0;
}

/* One-value directives: 0, 1 when not one of ours, -1 with a message. */
static int one_value(lm_obs_conf_t *oc, const char *d, const char *v, char *err, size_t errlen)
{
    char *end;
    double ms;
    if (!strcmp(d, "otel_endpoint")) {
        if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8))
            return bad(err, errlen, "otel_endpoint needs an http:// or https:// URL");
        free(oc->otel_endpoint);
        return (oc->otel_endpoint = strdup(v)) ? 0 : bad(err, errlen, "out of memory");
    }
    if (!strcmp(d, "otel_protocol")) {
        if (strcmp(v, "http/protobuf") && strcmp(v, "http/json"))
            return bad(err, errlen, "otel_protocol takes http/protobuf or http/json");
        oc->otel_protocol = !strcmp(v, "http/json") ? LM_OTEL_JSON : LM_OTEL_PROTOBUF;
        return 0;
    }
    if (!strcmp(d, "otel_service_name")) {
        free(oc->otel_service_name);
        return (oc->otel_service_name = strdup(v)) ? 0 : bad(err, errlen, "out of memory");
    }
    if (!strcmp(d, "otel_sample_ratio")) {
        errno = 0;
        oc->otel_sample_ratio = strtod(v, &end);
        if (end == v || *end || errno || !(oc->otel_sample_ratio >= 0) || oc->otel_sample_ratio > 1)
            return bad(err, errlen, "otel_sample_ratio needs a number from 0 to 1");
        return 0;
    }
    if (!strcmp(d, "otel_capture_content"))
        return on_off(v, &oc->otel_capture_content) ? bad(err, errlen, "%s takes on or off", d) : 0;
    if (!strcmp(d, "request_log"))
        return on_off(v, &oc->request_log) ? bad(err, errlen, "%s takes on or off", d) : 0;
    if (!strcmp(d, "otel_queue") || !strcmp(d, "request_log_max_rows")) {
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (end == v || *end || errno || n < 1 || n > (d[0] == 'o' ? 1000000 : 1000000000LL))
            return bad(err, errlen, "%s needs a positive count", d);
        if (d[0] == 'o')
            oc->otel_queue = (int)n;
        else
            oc->request_log_max_rows = n;
        return 0;
    }
    if (!strcmp(d, "otel_timeout")) {
        if (duration_ms(v, 10, 60000, &ms) < 0)
            return bad(err, errlen, "otel_timeout needs a duration from 10ms to 60s");
        oc->otel_timeout_ms = (int)ms;
        return 0;
    }
    if (!strcmp(d, "request_log_max_age")) {
        if (duration_ms(v, 1000, 3650 * 86400000.0, &ms) < 0)
            return bad(err, errlen, "request_log_max_age needs a duration from 1s to 3650d");
        oc->request_log_max_age_s = (int64_t)(ms / 1000);
        return 0;
    }
    return 1;
}

int lm_obsconf_directive(lm_obs_conf_t *oc, char **w, int nw, char *err, size_t errlen)
{
    const char *d = w[0];
    if (strncmp(d, "otel_", 5) && strncmp(d, "request_log", 11))
        return 1;
    if (!strcmp(d, "request_log_bodies"))
        return add_rule(oc, w, nw, err, errlen);
    if (!strcmp(d, "otel_header"))
        return add_header(oc, w, nw, err, errlen);
    static const char *const names[] = {
        "otel_endpoint",        "otel_protocol",       "otel_service_name", "otel_sample_ratio",
        "otel_capture_content", "otel_queue",          "otel_timeout",      "request_log",
        "request_log_max_age",  "request_log_max_rows"};
    size_t i = 0;
    while (i < sizeof(names) / sizeof(names[0]) && strcmp(d, names[i]))
        i++;
    if (i == sizeof(names) / sizeof(names[0]))
        return 1; /* not ours: conf.c reports it */
    if (nw != 2)
        return bad(err, errlen, "%s takes exactly one value", d);
    return one_value(oc, d, w[1], err, errlen);
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

int lm_obsconf_bodies(const lm_obs_conf_t *oc, const char *model, const char *key)
{
    for (size_t i = 0; i < oc->nbody_rules; i++) {
        const lm_obs_rule_t *r = &oc->body_rules[i];
        if (matches(r->models, r->nmodels, model) && matches(r->keys, r->nkeys, key))
            return r->on;
    }
    return 0;
}

void lm_obsconf_free(lm_obs_conf_t *oc)
{
    for (size_t i = 0; i < oc->nbody_rules; i++)
        rule_free(&oc->body_rules[i]);
    free(oc->body_rules);
    for (size_t i = 0; i < oc->notel_headers; i++)
        free(oc->otel_headers[i]);
    free(oc->otel_headers);
    free(oc->otel_endpoint);
    free(oc->otel_service_name);
    memset(oc, 0, sizeof(*oc));
}
