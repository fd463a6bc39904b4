/* conf.c - parses plugins.conf (or the built-in default) into an immutable
 * lm_conf_t snapshot (conf.h). Control thread (start, reload, longmen -t);
 * the caller owns the snapshot and frees it with lm_conf_free. */
#include "conf/conf.h"
#include "conf/priceunit.h"

#include "core/log.h"
#include "core/money.h"

#include <jansson.h>

#include "longmen.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_WORDS 64

const char lm_conf_default_text[] =
    "# built-in default: one offline mock channel and the demo key\n"
    "listen 127.0.0.1:8080\n"
    "key demo " LM_DEMO_KEY "\n"
    "channel mock {\n"
    "    plugin mock\n"
    "    models mock-1 mock-tools\n"
    "}\n";

typedef struct parser_s {
    const char *path;
    int line;
    char *err;
    size_t errlen;
    lm_conf_t *conf;
    lm_chan_conf_t *chan;     /* inside a channel block */
    lm_script_conf_t *script; /* inside a script block */
    int keep_env;             /* LM_CONF_KEEP_ENV: env:NAME is kept as written, not read */
} parser_t;

static int fail(parser_t *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser_t *ps, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(ps->err, ps->errlen, "%s:%d: ", ps->path, ps->line);
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < ps->errlen)
        vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* Split one line into words; quotes keep spaces, backslash escapes inside
 * quotes. Words point into `line`, which is modified. */
static int split_words(parser_t *ps, char *line, char **w, int *nw)
{
    char *p = line, *o;
    *nw = 0;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (*p == '\0' || *p == '#')
            return 0;
        if (*nw == MAX_WORDS)
            return fail(ps, "too many words on one line");
        o = p;
        w[(*nw)++] = o;
        if (*p == '"') {
            p++;
            while (*p && *p != '"') {
                if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                    p++;
                *o++ = *p++;
            }
            if (*p != '"')
                return fail(ps, "unterminated quoted string");
            p++;
            if (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '#')
                return fail(ps, "text right after a closing quote");
        } else {
            while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '#')
                *o++ = *p++;
        }
        char c = *p;
        *o = '\0';
        if (c == '#')
            return 0;
        if (c)
            p++;
    }
}

static int parse_duration_ms(const char *s, int *out)
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
    else
        return -1;
    if (v > 86400000.0)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || *s == '-')
        return -1;
    uint64_t mul = 1;
    if (!strcasecmp(end, "k"))
        mul = 1024;
    else if (!strcasecmp(end, "m"))
        mul = 1024 * 1024;
    else if (!strcasecmp(end, "g"))
        mul = 1024ULL * 1024 * 1024;
    else if (*end)
        return -1;
    if (v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static int parse_hostport(parser_t *ps, const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    char *end;
    if (colon == NULL || colon == s)
        return fail(ps, "expected host:port, got \"%s\"", s);
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535)
        return fail(ps, "bad port in \"%s\"", s);
    free(*host);
    *host = strndup(s, (size_t)(colon - s));
    *port = (int)p;
    return 0;
}

/* Resolve env:NAME (secrets come from the environment, never the repo). */
static int resolve_value(parser_t *ps, const char *v, char **out, int *from_env)
{
    *from_env = 0;
    if (strncmp(v, "env:", 4) == 0 && ps->keep_env) {
        /* The reference itself stands in for the secret: the caller only
         * wants settings such as pid_file and must not need the keys. */
        *from_env = 1;
    } else if (strncmp(v, "env:", 4) == 0) {
        const char *e = getenv(v + 4);
        if (e == NULL || *e == '\0')
            return fail(ps, "environment variable %s is not set", v + 4);
        *from_env = 1;
        v = e;
    }
    *out = strdup(v);
    return *out ? 0 : fail(ps, "out of memory");
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* redis URL [PASSWORD]: PASSWORD is env:VAR (or a literal, discouraged);
 * it replaces a password in the URL. */
static int directive_redis(parser_t *ps, char **w, int nw)
{
    char err[160];
    if (nw != 2 && nw != 3)
        return fail(ps, "redis takes a URL (redis://host:port/db) and optionally env:VAR");
    lm_redis_url_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return fail(ps, "out of memory");
    if (lm_redis_url_parse(w[1], u, err, sizeof(err)) < 0) {
        free(u);
        return fail(ps, "%s", err);
    }
    if (nw == 3) {
        char *pw = NULL;
        int from_env;
        if (resolve_value(ps, w[2], &pw, &from_env) < 0) {
            free(u);
            return -1;
        }
        snprintf(u->password, sizeof(u->password), "%s", pw);
        free(pw);
    }
    free(ps->conf->redis);
    ps->conf->redis = u;
    return 0;
}

static int directive_key(parser_t *ps, char **w, int nw)
{
    lm_conf_t *c = ps->conf;
    if (nw != 3)
        return fail(ps, "usage: key <name> <secret | env:VAR | sha256:HEX>");
    lm_key_conf_t *nk = realloc(c->keys, (c->nkeys + 1) * sizeof(*nk));
    if (nk == NULL)
        return fail(ps, "out of memory");
    c->keys = nk;
    lm_key_conf_t *k = &c->keys[c->nkeys];
    memset(k, 0, sizeof(*k));
    k->line = ps->line;
    if (strncmp(w[2], "sha256:", 7) == 0) {
        const char *h = w[2] + 7;
        if (strlen(h) != 64)
            return fail(ps, "sha256: needs 64 hex digits");
        for (int i = 0; i < 32; i++) {
            int hi = hexval(h[2 * i]), lo = hexval(h[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return fail(ps, "sha256: needs 64 hex digits");
            k->hash[i] = (unsigned char)(hi << 4 | lo);
        }
    } else {
        char *secret;
        int env;
        if (resolve_value(ps, w[2], &secret, &env) < 0)
            return -1;
        if (strlen(secret) < 8 && !(env && ps->keep_env)) {
            free(secret);
            return fail(ps, "key %s: a client key needs at least 8 characters", w[1]);
        }
        SHA256((const unsigned char *)secret, strlen(secret), k->hash);
        memset(secret, 0, strlen(secret));
        free(secret);
    }
    k->name = strdup(w[1]);
    c->nkeys++;
    return 0;
}

static int directive_models(parser_t *ps, char **w, int nw)
{
    lm_chan_conf_t *ch = ps->chan;
    if (nw < 2)
        return fail(ps, "models needs at least one model name");
    for (int i = 1; i < nw; i++) {
        lm_model_t *nm = realloc(ch->models, (ch->nmodels + 1) * sizeof(*nm));
        if (nm == NULL)
            return fail(ps, "out of memory");
        ch->models = nm;
        char *eq = strchr(w[i], '=');
        if (eq == w[i] || (eq && eq[1] == '\0'))
            return fail(ps, "bad model mapping \"%s\" (use name or alias=upstream)", w[i]);
        nm[ch->nmodels].name = eq ? strndup(w[i], (size_t)(eq - w[i])) : strdup(w[i]);
        nm[ch->nmodels].upstream = strdup(eq ? eq + 1 : w[i]);
        nm[ch->nmodels].pattern = strpbrk(nm[ch->nmodels].name, "*?[") != NULL;
        nm[ch->nmodels].mapped = eq != NULL;
        ch->nmodels++;
    }
    return 0;
}

static int add_price(parser_t *ps, lm_model_price_t **list, size_t *n, char **w, int nw);

static int chan_directive(parser_t *ps, char **w, int nw)
{
    lm_chan_conf_t *ch = ps->chan;
    int *ms = NULL;

    if (!strcmp(w[0], "plugin")) {
        if (nw != 2)
            return fail(ps, "usage: plugin <name>");
        free(ch->plugin);
        ch->plugin = strdup(w[1]);
        return 0;
    }
    if (!strcmp(w[0], "passthrough")) { /* the upstream speaks that inbound API itself */
        if (nw != 2 || (strcmp(w[1], "responses") != 0 && strcmp(w[1], "completions") != 0))
            return fail(ps, "usage: passthrough responses|completions");
        free(ch->passthrough);
        ch->passthrough = strdup(w[1]);
        return 0;
    }
    if (!strcmp(w[0], "models"))
        return directive_models(ps, w, nw);
    if (!strcmp(w[0], "connect_timeout"))
        ms = &ch->connect_timeout_ms;
    else if (!strcmp(w[0], "first_byte_timeout"))
        ms = &ch->first_byte_timeout_ms;
    else if (!strcmp(w[0], "idle_timeout"))
        ms = &ch->idle_timeout_ms;
    else if (!strcmp(w[0], "request_timeout"))
        ms = &ch->request_timeout_ms;
    else if (!strcmp(w[0], "eject_cooldown"))
        ms = &ch->eject_cooldown_ms;
    else if (!strcmp(w[0], "eject_max"))
        ms = &ch->eject_max_ms;
    if (ms) {
        if (nw != 2 || parse_duration_ms(w[1], ms) < 0 || *ms == 0)
            return fail(ps, "%s needs a positive duration such as 5s or 500ms", w[0]);
        return 0;
    }
    int *num = !strcmp(w[0], "priority")         ? &ch->priority
               : !strcmp(w[0], "weight")         ? &ch->weight
               : !strcmp(w[0], "max_inflight")   ? &ch->max_inflight
               : !strcmp(w[0], "eject_after")    ? &ch->eject_after
               : !strcmp(w[0], "error_rate")     ? &ch->error_rate_pct
               : !strcmp(w[0], "error_rate_min") ? &ch->error_rate_min
                                                 : NULL;
    if (num) {
        char *end;
        long v = nw == 2 ? strtol(w[1], &end, 10) : -1;
        long hi = num == &ch->error_rate_pct ? 100 : 1000000;
        if (nw != 2 || *end || v < (num == &ch->priority ? 0 : 1) || v > hi)
            return fail(ps, "%s needs a whole number (%s)", w[0],
                        num == &ch->priority         ? ">= 0"
                        : num == &ch->error_rate_pct ? "a percentage, 1..100"
                                                     : ">= 1");
        *num = (int)v;
        return 0;
    }
    int64_t *price = !strcmp(w[0], "price_input")          ? &ch->price_input
                     : !strcmp(w[0], "price_output")       ? &ch->price_output
                     : !strcmp(w[0], "price_cached_input") ? &ch->price_cached_input
                     : !strcmp(w[0], "price_per_request")  ? &ch->price_per_request
                                                           : NULL;
    if (price) {
        if (nw != 2 || lm_money_parse(w[1], price) < 0 || *price < 0)
            return fail(ps, "%s needs an amount >= 0 such as 2.5", w[0]);
        ch->flat_price = 1;
        return 0;
    }
    if (!strcmp(w[0], "price"))
        return add_price(ps, &ch->prices, &ch->nprices, w, nw);
    /* Anything else belongs to the plugin; checked against its cfg_keys.
     * A secret may list several values: requests rotate over them. */
    int secret_name = strstr(w[0], "key") || strstr(w[0], "secret") || strstr(w[0], "token");
    if (nw != 2 && !(secret_name && nw > 2))
        return fail(ps, "%s takes one value (quote values with spaces)", w[0]);
    if (nw > 2 && ch->nkeys > 1)
        return fail(ps, "only one setting per channel may list several keys (%s)", w[0]);
    if (lm_conf_chan_kv(ch, w[0]))
        return fail(ps, "%s is set twice in channel %s", w[0], ch->name);
    lm_kv_t *nk = realloc(ch->kv, (ch->nkv + 1) * sizeof(*nk));
    if (nk == NULL)
        return fail(ps, "out of memory");
    ch->kv = nk;
    lm_kv_t *kv = &ch->kv[ch->nkv];
    memset(kv, 0, sizeof(*kv));
    if (resolve_value(ps, w[1], &kv->val, &kv->secret) < 0)
        return -1;
    kv->key = strdup(w[0]);
    kv->line = ps->line;
    if (secret_name)
        kv->secret = 1;
    ch->nkv++;
    if (nw > 2) {
        kv->alts = calloc((size_t)nw - 2, sizeof(char *));
        if (kv->alts == NULL)
            return fail(ps, "out of memory");
        for (int i = 2; i < nw; i++) {
            int env;
            if (resolve_value(ps, w[i], &kv->alts[kv->nalts], &env) < 0)
                return -1;
            kv->nalts++;
        }
        ch->nkeys = (size_t)nw - 1;
    }
    return 0;
}

static int open_channel(parser_t *ps, char **w, int nw)
{
    lm_conf_t *c = ps->conf;
    if (nw != 3 || strcmp(w[2], "{"))
        return fail(ps, "usage: channel <name> {");
    for (size_t i = 0; i < c->nchans; i++)
        if (!strcmp(c->chans[i].name, w[1]))
            return fail(ps, "channel %s is already defined at line %d", w[1], c->chans[i].line);
    lm_chan_conf_t *nc = realloc(c->chans, (c->nchans + 1) * sizeof(*nc));
    if (nc == NULL)
        return fail(ps, "out of memory");
    c->chans = nc;
    ps->chan = &c->chans[c->nchans++];
    memset(ps->chan, 0, sizeof(*ps->chan));
    ps->chan->name = strdup(w[1]);
    ps->chan->line = ps->line;
    ps->chan->connect_timeout_ms = 5000;
    ps->chan->first_byte_timeout_ms = 120000;
    ps->chan->idle_timeout_ms = 60000;
    ps->chan->request_timeout_ms = 600000;
    ps->chan->weight = 1;
    ps->chan->max_inflight = 1024;
    ps->chan->nkeys = 1;
    return 0;
}

static int add_patterns(parser_t *ps, char ***list, size_t *n, char **w, int nw)
{
    if (nw < 2)
        return fail(ps, "%s needs at least one pattern", w[0]);
    char **nl = realloc(*list, (*n + (size_t)nw) * sizeof(char *));
    if (nl == NULL)
        return fail(ps, "out of memory");
    *list = nl;
    for (int i = 1; i < nw; i++)
        (*list)[(*n)++] = strdup(w[i]);
    return 0;
}

/* "args JSON [# comment]" inside a script block: the rest of the raw line is
 * one JSON value (spaces and quotes as JSON has them), so it is read before
 * the line is split into words. */
static int script_args(parser_t *ps, const char *rest)
{
    lm_script_conf_t *sc = ps->script;
    json_error_t je;
    rest += strspn(rest, " \t");
    json_t *v = json_loadb(rest, strlen(rest), JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK, &je);
    if (v == NULL)
        return fail(ps, "args must be JSON: %s", je.text);
    json_decref(v);
    size_t used = (size_t)je.position;
    const char *after = rest + used + strspn(rest + used, " \t\r");
    if (*after != '\0' && *after != '#')
        return fail(ps, "args: text after the JSON value (comments start with #)");
    free(sc->args_json);
    sc->args_json = strndup(rest, used);
    return sc->args_json ? 0 : fail(ps, "out of memory");
}

/* 1 if line (raw) is an "args" directive: the word args, then a blank. */
static int is_args_line(const char *line)
{
    line += strspn(line, " \t");
    return !strncmp(line, "args", 4) && (line[4] == ' ' || line[4] == '\t');
}

/* Inside "script NAME PATH {": models, keys (args: script_args). */
static int script_directive(parser_t *ps, char **w, int nw)
{
    lm_script_conf_t *sc = ps->script;
    if (!strcmp(w[0], "models"))
        return add_patterns(ps, &sc->models, &sc->nmodels, w, nw);
    if (!strcmp(w[0], "keys"))
        return add_patterns(ps, &sc->keys, &sc->nkeys, w, nw);
    return fail(ps, "unknown script setting \"%s\" (models, keys or args)", w[0]);
}

static int open_script(parser_t *ps, char **w, int nw)
{
    lm_conf_t *c = ps->conf;
    if (nw != 3 && !(nw == 4 && !strcmp(w[3], "{")))
        return fail(ps, "usage: script <name> <file.lua> [{]");
    for (size_t i = 0; i < c->nscripts; i++)
        if (!strcmp(c->scripts[i].name, w[1]))
            return fail(ps, "script %s is already defined at line %d", w[1], c->scripts[i].line);
    lm_script_conf_t *ns = realloc(c->scripts, (c->nscripts + 1) * sizeof(*ns));
    if (ns == NULL)
        return fail(ps, "out of memory");
    c->scripts = ns;
    lm_script_conf_t *sc = &c->scripts[c->nscripts++];
    memset(sc, 0, sizeof(*sc));
    sc->name = strdup(w[1]);
    sc->path = strdup(w[2]);
    sc->line = ps->line;
    if (nw == 4)
        ps->script = sc;
    return 0;
}

static int close_channel(parser_t *ps)
{
    lm_chan_conf_t *ch = ps->chan;
    if (ch->plugin == NULL)
        return fail(ps, "channel %s (line %d) has no plugin", ch->name, ch->line);
    if (ch->nmodels == 0)
        return fail(ps, "channel %s (line %d) serves no models (add: models <name> ...)", ch->name,
                    ch->line);
    ps->chan = NULL;
    return 0;
}

/* price GLOB INPUT OUTPUT [CACHED_INPUT [PER_REQUEST]] (money units), or
 * price GLOB AMOUNT UNIT (conf/priceunit.h). */
static int add_price(parser_t *ps, lm_model_price_t **list, size_t *n, char **w, int nw)
{
    lm_model_price_t p = {0};
    int64_t *v[] = {&p.input, &p.output, &p.cached_input, &p.per_request};
    int unit = nw == 4 ? lm_price_unit_parse(w[3]) : -1;
    if (nw == 4 && unit < 0 && strncmp(w[3], "per_", 4) == 0)
        return fail(ps,
                    "price: unknown unit \"%s\" (per_1k_searches, per_image, per_second, "
                    "per_1m_chars)",
                    w[3]);
    if (unit > 0) { /* one amount per unit, no token prices */
        p.unit = unit;
        v[0] = &p.per_unit;
        nw = 3;
    } else if (nw < 4 || nw > 6) {
        return fail(ps, "usage: price MODEL INPUT OUTPUT [CACHED_INPUT [PER_REQUEST]] "
                        "(money units per 1M tokens, e.g. price gpt-4o* 2.5 10 1.25), or price "
                        "MODEL AMOUNT per_1k_searches|per_image|per_second|per_1m_chars");
    }
    for (int i = 2; i < nw; i++)
        if (lm_money_parse(w[i], v[i - 2]) < 0 || *v[i - 2] < 0)
            return fail(ps, "price: \"%s\" is not an amount >= 0 such as 2.5", w[i]);
    p.has_cached = p.unit == 0 && nw >= 5;
    lm_model_price_t *nl = realloc(*list, (*n + 1) * sizeof(*nl));
    if (nl == NULL || (p.pattern = strdup(w[1])) == NULL) {
        if (nl)
            *list = nl;
        return fail(ps, "out of memory");
    }
    *list = nl;
    nl[(*n)++] = p;
    return 0;
}

static const lm_model_price_t *find_price(const lm_model_price_t *l, size_t n, const char *model)
{
    for (size_t i = 0; model && i < n; i++)
        if (fnmatch(l[i].pattern, model, 0) == 0)
            return &l[i];
    return NULL;
}

void lm_conf_price(const lm_conf_t *c, const lm_chan_conf_t *ch, const char *model, int64_t *input,
                   int64_t *output, int64_t *cached_input, int64_t *per_request)
{
    const lm_model_price_t *p = find_price(ch->prices, ch->nprices, model);
    if (p == NULL && !ch->flat_price && c)
        p = find_price(c->prices, c->nprices, model);
    if (p) {
        *input = p->input;
        *output = p->output;
        *cached_input = p->has_cached ? p->cached_input : p->input;
        *per_request = p->per_request;
        return;
    }
    *input = ch->price_input;
    *output = ch->price_output;
    *cached_input = ch->price_cached_input ? ch->price_cached_input : ch->price_input;
    *per_request = ch->price_per_request;
}

void lm_conf_price_unit(const lm_conf_t *c, const lm_chan_conf_t *ch, const char *model, int *unit,
                        int64_t *per_unit)
{
    const lm_model_price_t *p = find_price(ch->prices, ch->nprices, model);
    if (p == NULL && !ch->flat_price && c)
        p = find_price(c->prices, c->nprices, model);
    *unit = p ? p->unit : 0;
    *per_unit = p ? p->per_unit : 0;
}

static void free_prices(lm_model_price_t *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i].pattern);
    free(l);
}

static int strategy_known(const char *s)
{
    const char *ok[] = {"weighted", "round_robin", "least_inflight", "lowest_latency",
                        "lowest_cost"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        if (!strcmp(s, ok[i]))
            return 1;
    return 0;
}

/* route_strategy S model-glob...: a strategy for one group of models. */
static int model_strategies(parser_t *ps, char **w, int nw)
{
    lm_conf_t *c = ps->conf;
    if (!strategy_known(w[1]))
        return fail(ps, "route_strategy must be weighted, round_robin, least_inflight, "
                        "lowest_latency or lowest_cost");
    lm_model_strategy_t *n =
        realloc(c->model_strategies, (c->nmodel_strategies + (size_t)nw - 2) * sizeof(*n));
    if (n == NULL)
        return fail(ps, "out of memory");
    c->model_strategies = n;
    for (int i = 2; i < nw; i++) {
        lm_model_strategy_t *m = &c->model_strategies[c->nmodel_strategies];
        m->pattern = strdup(w[i]);
        m->strategy = strdup(w[1]);
        c->nmodel_strategies++;
    }
    return 0;
}

/* admin_env_allow GLOB...: may repeat, the globs add up. */
static int admin_env_allow(parser_t *ps, char **w, int nw)
{
    lm_conf_t *c = ps->conf;
    if (nw < 2)
        return fail(ps, "usage: admin_env_allow NAME_GLOB... (e.g. LM_UP_*)");
    char **v = realloc(c->admin_env_allow, (c->nadmin_env_allow + (size_t)nw - 1) * sizeof(*v));
    if (v == NULL)
        return fail(ps, "out of memory");
    c->admin_env_allow = v;
    for (int i = 1; i < nw; i++) {
        if ((v[c->nadmin_env_allow] = strdup(w[i])) == NULL)
            return fail(ps, "out of memory");
        c->nadmin_env_allow++;
    }
    return 0;
}

/* store sqlite | store postgres "host=... dbname=... user=... password=env:VAR".
 * The conninfo is kept as written (env:VAR resolved at connect, so the
 * password is never in the configuration); a literal password is refused. */
static int directive_store(parser_t *ps, char **w, int nw)
{
    lm_conf_t *c = ps->conf;
    if (nw == 2 && !strcmp(w[1], "sqlite")) {
        free(c->store_pg);
        c->store_pg = NULL;
        return 0;
    }
    if (nw != 3 || strcmp(w[1], "postgres"))
        return fail(ps, "usage: store sqlite | store postgres \"host=... dbname=... user=... "
                        "password=env:VAR\"");
    const char *p = w[2];
    if (strstr(p, "://"))
        return fail(ps, "store postgres takes key=value settings, not a URI");
    for (const char *q = strstr(p, "password"); q; q = strstr(q + 1, "password")) {
        const char *v = q + 8;
        while (*v == ' ')
            v++;
        if (*v != '=' || (q > p && q[-1] != ' '))
            continue;
        v++;
        while (*v == ' ')
            v++;
        if (*v == '\'')
            v++;
        if (strncmp(v, "env:", 4) != 0)
            return fail(ps, "store postgres: a literal password is refused; write "
                            "password=env:VAR and set VAR in the environment");
    }
    free(c->store_pg);
    if ((c->store_pg = strdup(p)) == NULL)
        return fail(ps, "out of memory");
    return 0;
}

static int top_directive(parser_t *ps, char **w, int nw)
{
    lm_conf_t *c = ps->conf;
    const char *d = w[0];

    if (!strcmp(d, "channel"))
        return open_channel(ps, w, nw);
    if (!strcmp(d, "script"))
        return open_script(ps, w, nw);
    if (!strcmp(d, "lua_instructions") && nw == 2) {
        if (parse_size(w[1], &c->lua_instructions) < 0 || c->lua_instructions < 1000)
            return fail(ps, "lua_instructions must be a number >= 1000");
        return 0;
    }
    if (!strcmp(d, "lua_deadline") && nw == 2) {
        if (parse_duration_ms(w[1], &c->lua_deadline_ms) < 0 || c->lua_deadline_ms < 1)
            return fail(ps, "lua_deadline needs a duration such as 10ms");
        return 0;
    }
    if (!strcmp(d, "lua_memory") && nw == 2) {
        if (parse_size(w[1], &c->lua_memory) < 0 || c->lua_memory < 1024 * 1024)
            return fail(ps, "lua_memory must be a size >= 1m");
        return 0;
    }
    if (!strcmp(d, "key"))
        return directive_key(ps, w, nw);
    if (!strcmp(d, "redis"))
        return directive_redis(ps, w, nw);
    if (!strcmp(d, "route_strategy") && nw > 2)
        return model_strategies(ps, w, nw);
    if (!strcmp(d, "price"))
        return add_price(ps, &c->prices, &c->nprices, w, nw);
    if (!strncmp(d, "cache", 5)) { /* conf/cacheconf.h */
        char msg[256];
        int rc = lm_cacheconf_directive(&c->cache, w, nw, msg, sizeof(msg));
        if (rc <= 0)
            return rc < 0 ? fail(ps, "%s", msg) : 0;
    }
    if (!strncmp(d, "otel_", 5) || !strncmp(d, "request_log", 11)) { /* conf/obsconf.h */
        char msg[256];
        int rc = lm_obsconf_directive(&c->obs, w, nw, msg, sizeof(msg));
        if (rc <= 0)
            return rc < 0 ? fail(ps, "%s", msg) : 0;
    }
    if (!strcmp(d, "store"))
        return directive_store(ps, w, nw);
    if (!strcmp(d, "admin_env_allow")) /* conf/outbound.h */
        return admin_env_allow(ps, w, nw);
    if (nw != 2)
        return fail(ps, "%s takes exactly one value", d);
    if (!strcmp(d, "listen"))
        return parse_hostport(ps, w[1], &c->listen_host, &c->listen_port);
    if (!strcmp(d, "admin_listen"))
        return parse_hostport(ps, w[1], &c->admin_host, &c->admin_port);
    if (!strcmp(d, "workers")) {
        char *end;
        long n = strtol(w[1], &end, 10);
        if (!strcmp(w[1], "auto"))
            c->workers = 0;
        else if (*end || n < 1 || n > 256)
            return fail(ps, "workers must be auto or 1..256");
        else
            c->workers = (int)n;
        return 0;
    }
    if (!strcmp(d, "audio_max_bytes")) {
        if (parse_size(w[1], &c->audio_max_bytes) < 0 || c->audio_max_bytes < 1024)
            return fail(ps, "audio_max_bytes must be a size >= 1k such as 25m");
        return 0;
    }
    if (!strcmp(d, "max_body_size")) {
        if (parse_size(w[1], &c->max_body) < 0 || c->max_body < 1024)
            return fail(ps, "max_body_size must be a size >= 1k such as 8m");
        return 0;
    }
    if (!strcmp(d, "stream_buffer")) {
        uint64_t v;
        if (parse_size(w[1], &v) < 0 || v < 4096 || v > 64 * 1024 * 1024)
            return fail(ps, "stream_buffer must be a size between 4k and 64m");
        c->stream_high_water = (size_t)v;
        return 0;
    }
    if (!strcmp(d, "route_strategy")) {
        if (!strategy_known(w[1]))
            return fail(ps, "route_strategy must be weighted, round_robin, least_inflight, "
                            "lowest_latency or lowest_cost");
        free(c->route_strategy);
        c->route_strategy = strdup(w[1]);
        return 0;
    }
    if (!strcmp(d, "max_inflight")) {
        char *end;
        long v = strtol(w[1], &end, 10);
        if (*end || v < 1 || v > 10000000)
            return fail(ps, "max_inflight must be a whole number >= 1");
        c->max_inflight = v;
        return 0;
    }
    if (!strcmp(d, "auth_fail_limit")) {
        char *end;
        long v = strtol(w[1], &end, 10);
        if (*end || v < 0 || v > 1000000)
            return fail(ps, "auth_fail_limit must be a whole number >= 0 (0 turns it off)");
        c->auth_fail_limit = (int)v;
        return 0;
    }
    if (!strcmp(d, "admin_private_upstreams")) { /* conf/outbound.h */
        if (strcmp(w[1], "on") && strcmp(w[1], "off"))
            return fail(ps, "admin_private_upstreams must be on or off");
        c->admin_private_upstreams = !strcmp(w[1], "on");
        return 0;
    }
    if (!strcmp(d, "supervise")) {
        if (strcmp(w[1], "on") && strcmp(w[1], "off"))
            return fail(ps, "supervise must be on or off");
        c->supervise = !strcmp(w[1], "on");
        return 0;
    }
    if (!strcmp(d, "data_dir")) {
        free(c->data_dir);
        c->data_dir = strdup(w[1]);
        return 0;
    }
    if (!strcmp(d, "store_wait")) {
        if (parse_duration_ms(w[1], &c->store_wait_ms) < 0 || c->store_wait_ms < 100 ||
            c->store_wait_ms > 600000)
            return fail(ps, "store_wait needs a duration between 100ms and 10m such as 2s");
        return 0;
    }
    if (!strcmp(d, "on_store_failure")) {
        if (strcmp(w[1], "closed") && strcmp(w[1], "open"))
            return fail(ps, "on_store_failure must be closed or open");
        c->store_fail_open = !strcmp(w[1], "open");
        return 0;
    }
    if (!strcmp(d, "store_spool")) {
        free(c->store_spool);
        c->store_spool = strdup(w[1]);
        return 0;
    }
    if (!strcmp(d, "pid_file")) {
        free(c->pid_file);
        c->pid_file = strdup(w[1]);
        return 0;
    }
    if (!strcmp(d, "plugin_dir")) {
        free(c->plugin_dir);
        c->plugin_dir = strdup(w[1]);
        return 0;
    }
    if (!strcmp(d, "client_header_timeout")) {
        if (parse_duration_ms(w[1], &c->client_header_timeout_ms) < 0 ||
            c->client_header_timeout_ms < 100)
            return fail(ps, "client_header_timeout needs a duration >= 100ms such as 30s");
        return 0;
    }
    if (!strcmp(d, "client_body_timeout")) {
        if (parse_duration_ms(w[1], &c->client_body_timeout_ms) < 0 ||
            c->client_body_timeout_ms < 100)
            return fail(ps, "client_body_timeout needs a duration >= 100ms such as 60s");
        return 0;
    }
    if (!strcmp(d, "client_send_timeout")) {
        if (parse_duration_ms(w[1], &c->client_send_timeout_ms) < 0 ||
            c->client_send_timeout_ms < 100)
            return fail(ps, "client_send_timeout needs a duration >= 100ms such as 60s");
        return 0;
    }
    if (!strcmp(d, "drain_timeout")) {
        if (parse_duration_ms(w[1], &c->drain_timeout_ms) < 0)
            return fail(ps, "drain_timeout needs a duration such as 30s");
        return 0;
    }
    if (!strcmp(d, "log_level")) {
        if ((c->log_level = lm_log_parse_level(w[1])) < 0)
            return fail(ps, "log_level must be error, warn, info or debug");
        return 0;
    }
    return fail(ps, "unknown directive \"%s\"", d);
}

static lm_conf_t *conf_new(const char *path)
{
    lm_conf_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->path = strdup(path);
    c->listen_host = strdup("127.0.0.1");
    c->listen_port = 8080;
    c->admin_host = strdup("127.0.0.1");
    c->admin_port = 8081;
    c->max_body = 8ULL * 1024 * 1024;
    c->audio_max_bytes = 25ULL * 1024 * 1024;
    c->plugin_dir = strdup("build/plugins"); /* where make puts them */
    c->drain_timeout_ms = 30000;
    c->store_wait_ms = 2000;
    c->client_header_timeout_ms = 10000;
    c->client_body_timeout_ms = 60000;
    c->client_send_timeout_ms = 60000;
    c->log_level = LM_LOG_INFO;
    c->stream_high_water = 256 * 1024;
    c->auth_fail_limit = 20;
    c->max_inflight = 10000;
    lm_cacheconf_init(&c->cache);
    lm_obsconf_init(&c->obs);
    return c;
}

/* Every line of text into ps->conf. channels_only: a top-level directive
 * other than `channel` is refused (lm_conf_parse_channels). 0 or -1. */
static int parse_lines(parser_t *ps, const char *text, size_t len, int channels_only)
{
    char *w[MAX_WORDS];
    int nw, rc = 0;
    size_t off = 0;

    if (memchr(text, '\0', len)) {
        ps->line = 1;
        rc = fail(ps, "file contains a NUL byte");
    }
    while (rc == 0 && off < len) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t n = nl ? (size_t)(nl - text - off) : len - off;
        ps->line++;
        if (n > 4096) {
            rc = fail(ps, "line longer than 4096 bytes");
            break;
        }
        char line[4097], raw[4097];
        memcpy(line, text + off, n);
        line[n] = '\0';
        memcpy(raw, line, n + 1);
        off += n + 1;
        if (ps->script && is_args_line(raw)) {
            rc = script_args(ps, raw + strspn(raw, " \t") + 4);
            continue;
        }
        if ((rc = split_words(ps, line, w, &nw)) < 0 || nw == 0)
            continue;
        if (!strcmp(w[0], "}") && nw == 1) {
            if (ps->script)
                ps->script = NULL;
            else
                rc = ps->chan ? close_channel(ps) : fail(ps, "unexpected }");
        } else if (ps->script) {
            rc = script_directive(ps, w, nw);
        } else if (ps->chan) {
            rc = chan_directive(ps, w, nw);
        } else if (channels_only && strcmp(w[0], "channel") != 0) {
            rc = fail(ps, "only channel blocks are allowed here, not \"%s\"", w[0]);
        } else {
            rc = top_directive(ps, w, nw);
        }
    }
    if (rc == 0 && ps->chan)
        rc = fail(ps, "channel %s (line %d) is not closed with }", ps->chan->name, ps->chan->line);
    if (rc == 0 && ps->script)
        rc = fail(ps, "script %s (line %d) is not closed with }", ps->script->name,
                  ps->script->line);
    return rc;
}

static int conf_parse(const char *path, const char *text, size_t len, int flags, lm_conf_t **out,
                      char *err, size_t errlen)
{
    parser_t ps = {path,           0,    err,  errlen,
                   conf_new(path), NULL, NULL, (flags & LM_CONF_KEEP_ENV) != 0};

    *out = NULL;
    if (ps.conf == NULL)
        return fail(&ps, "out of memory");
    if (parse_lines(&ps, text, len, 0) < 0) {
        lm_conf_free(ps.conf);
        return -1;
    }
    *out = ps.conf;
    return 0;
}

int lm_conf_parse(const char *path, const char *text, size_t len, lm_conf_t **out, char *err,
                  size_t errlen)
{
    return conf_parse(path, text, len, 0, out, err, errlen);
}

int lm_conf_parse_channels(lm_conf_t *c, const char *path, const char *text, size_t len, char *err,
                           size_t errlen)
{
    parser_t ps = {path, 0, err, errlen, conf_new(path), NULL, NULL, 0};
    if (ps.conf == NULL)
        return fail(&ps, "out of memory");
    int rc = parse_lines(&ps, text, len, 1);
    lm_conf_t *add = ps.conf;
    for (size_t i = 0; rc == 0 && i < add->nchans; i++)
        for (size_t j = 0; rc == 0 && j < c->nchans; j++)
            if (!strcmp(add->chans[i].name, c->chans[j].name)) {
                ps.line = add->chans[i].line;
                rc = fail(&ps, "channel %s is already defined in %s (line %d)", add->chans[i].name,
                          c->path, c->chans[j].line);
            }
    lm_chan_conf_t *nc = NULL;
    if (rc == 0 && add->nchans) {
        nc = realloc(c->chans, (c->nchans + add->nchans) * sizeof(*nc));
        if (nc == NULL)
            rc = fail(&ps, "out of memory");
    }
    if (rc == 0 && add->nchans) {
        c->chans = nc;
        memcpy(c->chans + c->nchans, add->chans, add->nchans * sizeof(*nc));
        c->nchans += add->nchans;
        add->nchans = 0; /* moved: only the array is freed below */
    }
    lm_conf_free(add);
    return rc;
}

int lm_conf_load_ex(const char *path, int flags, lm_conf_t **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    *out = NULL;
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    char chunk[8192];
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (len + n > 1024 * 1024) {
            fclose(f);
            free(text);
            snprintf(err, errlen, "%s: larger than 1 MiB", path);
            return -1;
        }
        if (len + n > cap) {
            cap = (len + n) * 2;
            char *nt = realloc(text, cap);
            if (nt == NULL) {
                fclose(f);
                free(text);
                snprintf(err, errlen, "%s: out of memory", path);
                return -1;
            }
            text = nt;
        }
        memcpy(text + len, chunk, n);
        len += n;
    }
    fclose(f);
    int rc = conf_parse(path, text ? text : "", len, flags, out, err, errlen);
    free(text);
    return rc;
}

int lm_conf_load(const char *path, lm_conf_t **out, char *err, size_t errlen)
{
    return lm_conf_load_ex(path, 0, out, err, errlen);
}

void lm_conf_free(lm_conf_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nadmin_env_allow; i++)
        free(c->admin_env_allow[i]);
    free(c->admin_env_allow);
    for (size_t i = 0; i < c->nchans; i++) {
        lm_chan_conf_t *ch = &c->chans[i];
        for (size_t j = 0; j < ch->nmodels; j++) {
            free(ch->models[j].name);
            free(ch->models[j].upstream);
        }
        for (size_t j = 0; j < ch->nkv; j++) {
            if (ch->kv[j].val)
                memset(ch->kv[j].val, 0, strlen(ch->kv[j].val));
            for (size_t k = 0; k < ch->kv[j].nalts; k++) {
                memset(ch->kv[j].alts[k], 0, strlen(ch->kv[j].alts[k]));
                free(ch->kv[j].alts[k]);
            }
            free(ch->kv[j].alts);
            free(ch->kv[j].key);
            free(ch->kv[j].val);
        }
        free(ch->models);
        free_prices(ch->prices, ch->nprices);
        free(ch->kv);
        free(ch->name);
        free(ch->plugin);
        free(ch->passthrough);
    }
    for (size_t i = 0; i < c->nscripts; i++) {
        lm_script_conf_t *sc = &c->scripts[i];
        for (size_t j = 0; j < sc->nmodels; j++)
            free(sc->models[j]);
        for (size_t j = 0; j < sc->nkeys; j++)
            free(sc->keys[j]);
        free(sc->models);
        free(sc->keys);
        free(sc->name);
        free(sc->path);
        free(sc->args_json);
    }
    free(c->scripts);
    for (size_t i = 0; i < c->nkeys; i++)
        free(c->keys[i].name);
    free(c->keys);
    free(c->chans);
    free(c->path);
    free(c->listen_host);
    free(c->admin_host);
    free(c->plugin_dir);
    free(c->pid_file);
    free(c->data_dir);
    free(c->store_spool);
    free(c->store_pg);
    if (c->redis) /* the password */
        explicit_bzero(c->redis, sizeof(*c->redis));
    free(c->redis);
    free(c->route_strategy);
    for (size_t i = 0; i < c->nmodel_strategies; i++) {
        free(c->model_strategies[i].pattern);
        free(c->model_strategies[i].strategy);
    }
    free(c->model_strategies);
    free_prices(c->prices, c->nprices);
    lm_cacheconf_free(&c->cache);
    lm_obsconf_free(&c->obs);
    free(c);
}
