/*
 * chanconf.c - channels stored through the admin API, as configuration
 * (chanconf.h). The record <-> JSON conversions for the admin replies, the
 * checks, the rendering into a channel block and the glue that parses the
 * stored channels together with the file.
 */
#include "conf/chanconf.h"
#include "conf/outbound.h"
#include "conf/priceunit.h"
#include "core/buf.h"
#include "core/mask.h"

#include "core/log.h"
#include "core/money.h"

#include "longmen.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAN_LINE_MAX 4096 /* the parser's line limit (conf.c) */
#define CHAN_MASK     LM_MASK
#define CHAN_SRC      "(store)" /* the "file" name of rendered text */

/* Channel fields that are kernel directives inside a channel block, in
 * rendering order after plugin and models. The API names durations *_ms. */
typedef struct chan_num_s {
    const char *directive; /* in the block */
    const char *field;     /* in the API */
    size_t off;
    int kind; /* 0 integer, 1 duration (ms), 2 money (micro-units) */
} chan_num_t;

static const chan_num_t chan_nums[] = {
    {"priority", "priority", offsetof(lm_chan_rec_t, priority), 0},
    {"weight", "weight", offsetof(lm_chan_rec_t, weight), 0},
    {"max_inflight", "max_inflight", offsetof(lm_chan_rec_t, max_inflight), 0},
    {"connect_timeout", "connect_timeout_ms", offsetof(lm_chan_rec_t, connect_timeout_ms), 1},
    {"first_byte_timeout", "first_byte_timeout_ms", offsetof(lm_chan_rec_t, first_byte_timeout_ms),
     1},
    {"idle_timeout", "idle_timeout_ms", offsetof(lm_chan_rec_t, idle_timeout_ms), 1},
    {"request_timeout", "request_timeout_ms", offsetof(lm_chan_rec_t, request_timeout_ms), 1},
    {"price_input", "price_input", offsetof(lm_chan_rec_t, price_input), 2},
    {"price_output", "price_output", offsetof(lm_chan_rec_t, price_output), 2},
    {"price_cached_input", "price_cached_input", offsetof(lm_chan_rec_t, price_cached_input), 2},
    {"price_per_request", "price_per_request", offsetof(lm_chan_rec_t, price_per_request), 2},
};
#define CHAN_NNUMS (sizeof(chan_nums) / sizeof(chan_nums[0]))

static int64_t *num_at(lm_chan_rec_t *c, const chan_num_t *n)
{
    return (int64_t *)(void *)((char *)c + n->off);
}

static int64_t num_get(const lm_chan_rec_t *c, const chan_num_t *n)
{
    return *(const int64_t *)(const void *)((const char *)c + n->off);
}

static int fail(const char **param, const char *p, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(const char **param, const char *p, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (param)
        *param = p;
    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* records                                                                   */

lm_chan_rec_t *lm_chan_rec_new(void)
{
    lm_chan_rec_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->weight = 1;
    c->max_inflight = 1024;
    c->connect_timeout_ms = 5000;
    c->first_byte_timeout_ms = 120000;
    c->idle_timeout_ms = 60000;
    c->request_timeout_ms = 600000;
    c->enabled = 1;
    return c;
}

static void setting_clear(lm_chan_setting_t *kv)
{
    for (size_t j = 0; j < kv->nvals; j++) {
        if (kv->vals[j])
            OPENSSL_cleanse(kv->vals[j], strlen(kv->vals[j]));
        free(kv->vals[j]);
    }
    free(kv->vals);
    free(kv->key);
    memset(kv, 0, sizeof(*kv));
}

/* dst (zeroed) = a copy of vals. 0 or -1. */
static int vals_copy(lm_chan_setting_t *dst, char *const *vals, size_t n)
{
    dst->vals = calloc(n ? n : 1, sizeof(char *));
    if (dst->vals == NULL)
        return -1;
    for (size_t j = 0; j < n; j++) {
        if ((dst->vals[j] = strdup(vals[j])) == NULL)
            return -1;
        dst->nvals++;
    }
    return 0;
}

static char **strv_dup(char *const *v, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; out && i < n; i++)
        if ((out[i] = strdup(v[i])) == NULL) {
            while (i--)
                free(out[i]);
            free(out);
            return NULL;
        }
    return out;
}

lm_chan_rec_t *lm_chan_rec_dup(const lm_chan_rec_t *c)
{
    lm_chan_rec_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    *d = *c;
    d->name = d->plugin = NULL;
    d->models = d->prices = NULL;
    d->nmodels = d->nsettings = d->nprices = 0;
    d->settings = NULL;
    int bad = (c->name && (d->name = strdup(c->name)) == NULL) ||
              (c->plugin && (d->plugin = strdup(c->plugin)) == NULL);
    if (!bad && (d->models = strv_dup(c->models, c->nmodels)) != NULL)
        d->nmodels = c->nmodels;
    bad |= d->models == NULL;
    if (!bad && (d->prices = strv_dup(c->prices, c->nprices)) != NULL)
        d->nprices = c->nprices;
    bad |= d->prices == NULL;
    d->settings = calloc(c->nsettings + 1, sizeof(*d->settings));
    bad |= d->settings == NULL;
    for (size_t i = 0; !bad && i < c->nsettings; i++) {
        lm_chan_setting_t *kv = &d->settings[d->nsettings++];
        bad = (kv->key = strdup(c->settings[i].key)) == NULL ||
              vals_copy(kv, c->settings[i].vals, c->settings[i].nvals) != 0;
    }
    if (bad) {
        lm_chan_rec_free(d);
        return NULL;
    }
    return d;
}

static lm_chan_setting_t *setting_find(const lm_chan_rec_t *c, const char *key)
{
    for (size_t i = 0; c && i < c->nsettings; i++)
        if (!strcmp(c->settings[i].key, key))
            return &c->settings[i];
    return NULL;
}

static void setting_remove(lm_chan_rec_t *c, const char *key)
{
    lm_chan_setting_t *kv = setting_find(c, key);
    if (kv == NULL)
        return;
    setting_clear(kv);
    size_t i = (size_t)(kv - c->settings);
    memmove(kv, kv + 1, (c->nsettings - i - 1) * sizeof(*kv));
    c->nsettings--;
}

/* ------------------------------------------------------------------------ */
/* JSON in                                                                   */

static int json_text(json_t *v, const char *k, char **out, const char **param, char *err,
                     size_t errlen)
{
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return fail(param, k, err, errlen, "%s must be a string without NUL", k);
    char *s = strdup(json_string_value(v));
    if (s == NULL)
        return fail(param, k, err, errlen, "out of memory");
    free(*out);
    *out = s;
    return 0;
}

/* A list member ("models", "prices"): an array of at most
 * LM_STORE_LIST_MAX strings without NUL, replacing *list. */
static int json_list(json_t *v, const char *k, const char *what, char ***list, size_t *nlist,
                     const char **param, char *err, size_t errlen)
{
    if (!json_is_array(v) || json_array_size(v) > LM_STORE_LIST_MAX)
        return fail(param, k, err, errlen, "%s must be an array of at most %d strings (%s)", k,
                    LM_STORE_LIST_MAX, what);
    size_t n = json_array_size(v);
    char **m = calloc(n ? n : 1, sizeof(char *));
    if (m == NULL)
        return fail(param, k, err, errlen, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *it = json_array_get(v, i);
        if (!json_is_string(it) || (m[i] = strdup(json_string_value(it))) == NULL ||
            strlen(m[i]) != json_string_length(it)) {
            for (size_t j = 0; j <= i; j++)
                free(m[j]);
            free(m);
            return fail(param, k, err, errlen, "%s[%zu] must be a string without NUL", k, i);
        }
    }
    for (size_t i = 0; i < *nlist; i++)
        free((*list)[i]);
    free(*list);
    *list = m;
    *nlist = n;
    return 0;
}

/* One setting value: a string, or an array of strings (rotating secret). */
static int json_setting(lm_chan_rec_t *c, const char *k, json_t *v, const lm_chan_rec_t *cur,
                        const char **param, char *err, size_t errlen)
{
    lm_chan_setting_t kv = {0};
    int keep =
        json_is_string(v) && !strcmp(json_string_value(v), CHAN_MASK) && lm_chan_secret_name(k);
    if (keep) {
        const lm_chan_setting_t *old = setting_find(cur, k);
        if (old == NULL)
            return fail(param, "settings", err, errlen,
                        "settings.%.64s is \"***\" (the masked form) but no value is stored to "
                        "keep; give the value",
                        k);
        if ((kv.key = strdup(k)) == NULL || vals_copy(&kv, old->vals, old->nvals) != 0)
            goto oom;
    } else {
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        if (!json_is_string(v) && !(json_is_array(v) && n >= 1 && n <= LM_CHAN_VALUES_MAX))
            return fail(param, "settings", err, errlen,
                        "settings.%.64s must be a string, an array of 1 to %d strings (a "
                        "rotating secret) or null",
                        k, LM_CHAN_VALUES_MAX);
        if ((kv.key = strdup(k)) == NULL || (kv.vals = calloc(n, sizeof(char *))) == NULL)
            goto oom;
        for (size_t j = 0; j < n; j++) {
            json_t *it = json_is_array(v) ? json_array_get(v, j) : v;
            if (!json_is_string(it) || strlen(json_string_value(it)) != json_string_length(it) ||
                (json_is_array(v) && !strcmp(json_string_value(it), CHAN_MASK))) {
                setting_clear(&kv);
                return fail(param, "settings", err, errlen,
                            "settings.%.64s: values must be strings without NUL (\"***\" keeps "
                            "a stored secret only as the whole value)",
                            k);
            }
            if ((kv.vals[j] = strdup(json_string_value(it))) == NULL)
                goto oom;
            kv.nvals++;
        }
    }
    lm_chan_setting_t *old = setting_find(c, k);
    if (old) {
        setting_clear(old);
        *old = kv;
        return 0;
    }
    lm_chan_setting_t *ns = realloc(c->settings, (c->nsettings + 1) * sizeof(*ns));
    if (ns == NULL)
        goto oom;
    c->settings = ns;
    c->settings[c->nsettings++] = kv;
    return 0;
oom:
    setting_clear(&kv);
    return fail(param, "settings", err, errlen, "out of memory");
}

static int json_settings(lm_chan_rec_t *c, json_t *v, int merge, const lm_chan_rec_t *cur,
                         const char **param, char *err, size_t errlen)
{
    const char *k;
    json_t *it;
    if (!json_is_object(v))
        return fail(param, "settings", err, errlen,
                    "settings must be an object of plugin settings (name: value)");
    if (json_object_size(v) > LM_CHAN_SETTINGS_MAX)
        return fail(param, "settings", err, errlen, "at most %d settings", LM_CHAN_SETTINGS_MAX);
    if (!merge)
        while (c->nsettings)
            setting_remove(c, c->settings[0].key);
    json_object_foreach (v, k, it) {
        if (strlen(k) > LM_CHAN_NAME_MAX)
            return fail(param, "settings", err, errlen, "setting names are at most %d bytes",
                        LM_CHAN_NAME_MAX);
        if (json_is_null(it)) {
            setting_remove(c, k);
            continue;
        }
        if (json_setting(c, k, it, cur, param, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int json_int(json_t *v, const char *k, int64_t *out, const char **param, char *err,
                    size_t errlen)
{
    if (!json_is_integer(v))
        return fail(param, k, err, errlen, "%s must be an integer", k);
    *out = json_integer_value(v);
    return 0;
}

/* price_X: a decimal string of units ("2.5"); price_X_micro: an integer. */
static int json_price(json_t *v, const chan_num_t *n, int micro, int64_t *out, const char **param,
                      char *err, size_t errlen)
{
    if (micro)
        return json_int(v, n->field, out, param, err, errlen);
    if (!json_is_string(v) || json_string_length(v) > 32 ||
        strlen(json_string_value(v)) != json_string_length(v) ||
        lm_money_parse(json_string_value(v), out) != 0)
        return fail(param, n->field, err, errlen,
                    "%s must be a decimal string in units of currency per 1M tokens (e.g. "
                    "\"2.5\", at most 6 fraction digits); or give %s_micro",
                    n->field, n->field);
    return 0;
}

/* A channel number member (priority, *_timeout_ms, price_*[_micro]). 1 if
 * k is not one, 0 done, -1 failed. */
static int json_num(lm_chan_rec_t *c, const char *k, json_t *v, const char **param, char *err,
                    size_t errlen)
{
    for (size_t i = 0; i < CHAN_NNUMS; i++) {
        const chan_num_t *n = &chan_nums[i];
        size_t fl = strlen(n->field);
        if (!strcmp(k, n->field))
            return n->kind == 2 ? json_price(v, n, 0, num_at(c, n), param, err, errlen)
                                : json_int(v, n->field, num_at(c, n), param, err, errlen);
        if (n->kind == 2 && !strncmp(k, n->field, fl) && !strcmp(k + fl, "_micro"))
            return json_price(v, n, 1, num_at(c, n), param, err, errlen);
    }
    return 1;
}

int lm_chan_from_json(lm_chan_rec_t *c, json_t *body, int merge, const lm_chan_rec_t *cur,
                      const char **param, char *err, size_t errlen)
{
    const char *k;
    json_t *v;
    if (param)
        *param = NULL;
    json_object_foreach (body, k, v) {
        int rc;
        if (!strcmp(k, "name"))
            rc = json_text(v, "name", &c->name, param, err, errlen);
        else if (!strcmp(k, "plugin"))
            rc = json_text(v, "plugin", &c->plugin, param, err, errlen);
        else if (!strcmp(k, "models"))
            rc = json_list(v, "models", "\"name\" or \"alias=upstream\"", &c->models, &c->nmodels,
                           param, err, errlen);
        else if (!strcmp(k, "prices"))
            rc = json_list(v, "prices",
                           "a price line's arguments: \"MODEL AMOUNT UNIT\" or \"MODEL INPUT "
                           "OUTPUT [CACHED_INPUT [PER_REQUEST]]\"",
                           &c->prices, &c->nprices, param, err, errlen);
        else if (!strcmp(k, "settings"))
            rc = json_settings(c, v, merge, cur, param, err, errlen);
        else if (!strcmp(k, "enabled"))
            rc = json_is_boolean(v)
                     ? (c->enabled = json_is_true(v), 0)
                     : fail(param, "enabled", err, errlen, "enabled must be true or false");
        else if ((rc = json_num(c, k, v, param, err, errlen)) == 1)
            /* id, object, source, created_at, ... and anything else */
            rc = fail(param, NULL, err, errlen, "unknown or read-only field \"%.64s\"", k);
        if (rc != 0)
            return -1;
    }
    for (size_t i = 0; i < CHAN_NNUMS; i++) {
        char micro[64];
        snprintf(micro, sizeof(micro), "%s_micro", chan_nums[i].field);
        if (chan_nums[i].kind == 2 && json_object_get(body, chan_nums[i].field) &&
            json_object_get(body, micro))
            return fail(param, chan_nums[i].field, err, errlen, "give %s or %s, not both",
                        chan_nums[i].field, micro);
    }
    return lm_chanrule_rebind(c, body, cur, param, err, errlen); /* SS-2 */
}

/* ------------------------------------------------------------------------ */
/* checks                                                                    */

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return 1;
    return 0;
}

/* Bytes of `"v"` as rendered (quotes, escapes) plus the separating space. */
static size_t quoted_len(const char *v)
{
    size_t n = 3;
    for (; *v; v++)
        n += (*v == '"' || *v == '\\') ? 2 : 1;
    return n;
}

static int reserved_name(const char *k)
{
    if (!strcmp(k, "plugin") || !strcmp(k, "models") || !strcmp(k, "price"))
        return 1;
    for (size_t i = 0; i < CHAN_NNUMS; i++)
        if (!strcmp(k, chan_nums[i].directive))
            return 1;
    return 0;
}

static int check_settings(const lm_chan_rec_t *c, const char **param, char *err, size_t errlen)
{
    const char *rotating = NULL;
    for (size_t i = 0; i < c->nsettings; i++) {
        const lm_chan_setting_t *kv = &c->settings[i];
        if (reserved_name(kv->key))
            return fail(param, "settings", err, errlen,
                        "%s is a channel field, not a plugin setting: give it at the top level",
                        kv->key);
        if (kv->nvals > 1 && !lm_chan_secret_name(kv->key))
            return fail(param, "settings", err, errlen,
                        "settings.%s: only a secret (a name containing key, secret or token) "
                        "may list several values",
                        kv->key);
        if (kv->nvals > 1 && rotating)
            return fail(param, "settings", err, errlen,
                        "only one setting may list several values (%s and %s)", rotating, kv->key);
        if (kv->nvals > 1)
            rotating = kv->key;
        size_t line = strlen(kv->key);
        for (size_t j = 0; j < kv->nvals; j++) {
            if (has_ctl(kv->vals[j]))
                return fail(param, "settings", err, errlen,
                            "settings.%s: control characters are not allowed", kv->key);
            line += quoted_len(kv->vals[j]);
        }
        if (line > CHAN_LINE_MAX)
            return fail(param, "settings", err, errlen,
                        "settings.%s is too long (%zu bytes when written as configuration, at "
                        "most %d)",
                        kv->key, line, CHAN_LINE_MAX);
    }
    return 0;
}

int lm_chan_check(const lm_chan_rec_t *c, const char **param, char *err, size_t errlen)
{
    if (param)
        *param = NULL;
    for (size_t i = 0; i < c->nmodels; i++)
        if (has_ctl(c->models[i]))
            return fail(param, "models", err, errlen,
                        "models[%zu]: control characters are not allowed", i);
    for (size_t i = 0; i < c->nprices; i++)
        if (has_ctl(c->prices[i]))
            return fail(param, "prices", err, errlen,
                        "prices[%zu]: control characters are not allowed", i);
    return check_settings(c, param, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* JSON out                                                                  */

static json_t *jstr(const char *s)
{
    json_t *j = json_string(s ? s : "");
    return j ? j : json_string(""); /* not UTF-8 (never stored so): empty */
}

/* A secret shows as "***", or as env:VAR when it is a reference. */
static json_t *masked(const char *key, const char *v)
{
    if (lm_chan_secret_name(key) && strncmp(v, "env:", 4) != 0)
        return json_string(CHAN_MASK);
    return jstr(v);
}

static void put_nums(json_t *o, const lm_chan_rec_t *c)
{
    for (size_t i = 0; i < CHAN_NNUMS; i++) {
        const chan_num_t *n = &chan_nums[i];
        int64_t v = num_get(c, n);
        if (n->kind == 2) {
            char buf[48], key[64];
            json_object_set_new(o, n->field, jstr(lm_money_format(v, buf, sizeof(buf))));
            snprintf(key, sizeof(key), "%s_micro", n->field);
            json_object_set_new(o, key, json_integer(v));
        } else {
            json_object_set_new(o, n->field, json_integer(v));
        }
    }
}

json_t *lm_chan_to_json(const lm_chan_rec_t *c)
{
    json_t *o = json_object(), *models = json_array(), *settings = json_object();
    json_t *prices = json_array();
    for (size_t i = 0; i < c->nmodels; i++)
        json_array_append_new(models, jstr(c->models[i]));
    for (size_t i = 0; i < c->nprices; i++)
        json_array_append_new(prices, jstr(c->prices[i]));
    for (size_t i = 0; i < c->nsettings; i++) {
        const lm_chan_setting_t *kv = &c->settings[i];
        json_t *v = kv->nvals == 1 ? masked(kv->key, kv->vals[0]) : json_array();
        for (size_t j = 0; kv->nvals > 1 && j < kv->nvals; j++)
            json_array_append_new(v, masked(kv->key, kv->vals[j]));
        json_object_set_new(settings, kv->key, v);
    }
    json_object_set_new(o, "object", json_string("channel"));
    json_object_set_new(o, "name", jstr(c->name));
    json_object_set_new(o, "source", json_string("store"));
    json_object_set_new(o, "id", json_integer(c->id));
    json_object_set_new(o, "plugin", jstr(c->plugin));
    json_object_set_new(o, "models", models);
    json_object_set_new(o, "settings", settings);
    put_nums(o, c);
    json_object_set_new(o, "prices", prices);
    json_object_set_new(o, "enabled", json_boolean(c->enabled));
    json_object_set_new(o, "created_at", json_integer(c->created_at));
    json_object_set_new(o, "updated_at", json_integer(c->updated_at));
    return o;
}

/* A file channel's `price` lines as the admin API writes them. */
static json_t *conf_prices(const lm_chan_conf_t *ch)
{
    json_t *a = json_array();
    for (size_t i = 0; i < ch->nprices; i++) {
        const lm_model_price_t *p = &ch->prices[i];
        char m[5][48], line[LM_STORE_ITEM_MAX + 256];
        const char *unit = lm_price_unit_name(p->unit);
        if (unit) {
            snprintf(line, sizeof(line), "%s %s %s", p->pattern,
                     lm_money_format(p->per_unit, m[0], sizeof(m[0])), unit);
        } else {
            int n = p->per_request ? 4 : p->has_cached ? 3 : 2;
            const int64_t v[4] = {p->input, p->output, p->has_cached ? p->cached_input : p->input,
                                  p->per_request};
            snprintf(line, sizeof(line), "%s", p->pattern);
            for (int j = 0; j < n; j++) {
                size_t l = strlen(line);
                snprintf(line + l, sizeof(line) - l, " %s",
                         lm_money_format(v[j], m[j], sizeof(m[j])));
            }
        }
        json_array_append_new(a, jstr(line));
    }
    return a;
}

json_t *lm_chan_conf_to_json(const lm_chan_conf_t *ch)
{
    lm_chan_rec_t r = {0};
    r.priority = ch->priority;
    r.weight = ch->weight;
    r.max_inflight = ch->max_inflight;
    r.connect_timeout_ms = ch->connect_timeout_ms;
    r.first_byte_timeout_ms = ch->first_byte_timeout_ms;
    r.idle_timeout_ms = ch->idle_timeout_ms;
    r.request_timeout_ms = ch->request_timeout_ms;
    r.price_input = ch->price_input;
    r.price_output = ch->price_output;
    r.price_cached_input = ch->price_cached_input;
    r.price_per_request = ch->price_per_request;
    json_t *o = json_object(), *models = json_array(), *settings = json_object();
    for (size_t i = 0; i < ch->nmodels; i++) {
        const lm_model_t *m = &ch->models[i];
        if (!m->mapped && !strcmp(m->name, m->upstream)) {
            json_array_append_new(models, jstr(m->name));
        } else {
            size_t n = strlen(m->name) + strlen(m->upstream) + 2;
            char *s = malloc(n);
            if (s)
                snprintf(s, n, "%s=%s", m->name, m->upstream);
            json_array_append_new(models, jstr(s));
            free(s);
        }
    }
    for (size_t i = 0; i < ch->nkv; i++) {
        const lm_kv_t *kv = &ch->kv[i];
        json_t *v = kv->secret ? json_string(CHAN_MASK) : jstr(kv->val);
        if (kv->nalts) {
            json_t *a = json_array();
            json_array_append_new(a, v);
            for (size_t j = 0; j < kv->nalts; j++)
                json_array_append_new(a, kv->secret ? json_string(CHAN_MASK) : jstr(kv->alts[j]));
            v = a;
        }
        json_object_set_new(settings, kv->key, v);
    }
    json_object_set_new(o, "object", json_string("channel"));
    json_object_set_new(o, "name", jstr(ch->name));
    json_object_set_new(o, "source", json_string("file"));
    json_object_set_new(o, "line", json_integer(ch->line));
    json_object_set_new(o, "plugin", jstr(ch->plugin));
    json_object_set_new(o, "models", models);
    json_object_set_new(o, "settings", settings);
    put_nums(o, &r);
    json_object_set_new(o, "prices", conf_prices(ch));
    json_object_set_new(o, "enabled", json_true());
    return o;
}

/* ------------------------------------------------------------------------ */
/* rendering                                                                 */

/* " \"value\"" with backslash and quote escaped (conf.c split_words). */
static void sb_quoted(lm_buf_t *b, const char *v)
{
    lm_buf_add(b, " \"", 2);
    for (const char *p = v; *p; p++) {
        if (*p == '"' || *p == '\\')
            lm_buf_add(b, "\\", 1);
        lm_buf_add(b, p, 1);
    }
    lm_buf_add(b, "\"", 1);
}

/* Each blank-separated word of line, quoted: the words of a price line
 * stay words (a quote inside one is escaped, never a delimiter). */
static void sb_words(lm_buf_t *b, const char *line)
{
    char w[LM_STORE_ITEM_MAX + 1];
    while (*line) {
        size_t n = strcspn(line, " \t");
        if (n > 0 && n < sizeof(w)) {
            memcpy(w, line, n);
            w[n] = '\0';
            sb_quoted(b, w);
        }
        line += n;
        line += strspn(line, " \t");
    }
}

char *lm_chan_render(const lm_chan_rec_t *c, size_t *len)
{
    lm_buf_t b = {.secret = 1}; /* it holds the channel's literal keys */
    char num[64];
    lm_buf_adds(&b, "channel ");
    lm_buf_adds(&b, c->name);
    lm_buf_adds(&b, " {\nplugin");
    sb_quoted(&b, c->plugin);
    lm_buf_adds(&b, "\n");
    for (size_t i = 0; i < c->nmodels; i++) {
        lm_buf_adds(&b, "models");
        sb_quoted(&b, c->models[i]);
        lm_buf_adds(&b, "\n");
    }
    for (size_t i = 0; i < CHAN_NNUMS; i++) {
        const chan_num_t *n = &chan_nums[i];
        int64_t v = num_get(c, n);
        lm_buf_adds(&b, n->directive);
        if (n->kind == 2) {
            lm_buf_adds(&b, " ");
            lm_buf_adds(&b, lm_money_format(v, num, sizeof(num)));
        } else {
            snprintf(num, sizeof(num), " %lld%s", (long long)v, n->kind == 1 ? "ms" : "");
            lm_buf_adds(&b, num);
        }
        lm_buf_adds(&b, "\n");
    }
    for (size_t i = 0; i < c->nprices; i++) {
        lm_buf_adds(&b, "price");
        sb_words(&b, c->prices[i]);
        lm_buf_adds(&b, "\n");
    }
    for (size_t i = 0; i < c->nsettings; i++) {
        lm_buf_adds(&b, c->settings[i].key);
        for (size_t j = 0; j < c->settings[i].nvals; j++)
            sb_quoted(&b, c->settings[i].vals[j]);
        lm_buf_adds(&b, "\n");
    }
    lm_buf_adds(&b, "}\n");
    return lm_buf_take(&b, len); /* NULL if an append failed (then wiped) */
}

const char *lm_chan_line_field(const lm_chan_rec_t *c, int line, char *buf, size_t len)
{
    size_t l = line > 0 ? (size_t)line : 0;
    if (l == 2)
        return "plugin";
    if (l >= 3 && l < 3 + c->nmodels)
        return "models";
    l = l >= 3 ? l - 3 - c->nmodels : CHAN_NNUMS + c->nprices + c->nsettings;
    if (l < CHAN_NNUMS)
        return chan_nums[l].field;
    l -= CHAN_NNUMS;
    if (l < c->nprices)
        return "prices";
    l -= c->nprices;
    if (l < c->nsettings) {
        snprintf(buf, len, "settings.%s", c->settings[l].key);
        return buf;
    }
    return NULL;
}

/* "(store):LINE: message" -> message; *line = LINE (0 if not that form). */
static void strip_location(char *err, int *line)
{
    size_t pl = strlen(CHAN_SRC);
    *line = 0;
    if (strncmp(err, CHAN_SRC ":", pl + 1) != 0)
        return;
    char *p = err + pl + 1, *end;
    long v = strtol(p, &end, 10);
    if (end == p || strncmp(end, ": ", 2) != 0)
        return;
    *line = (int)v;
    memmove(err, end + 2, strlen(end + 2) + 1);
}

void lm_chan_rec_scrub(const lm_chan_rec_t *c, char *text)
{
    for (size_t i = 0; i < c->nsettings; i++) {
        if (!lm_chan_secret_name(c->settings[i].key))
            continue;
        for (size_t j = 0; j < c->settings[i].nvals; j++)
            lm_mask_secret(text, c->settings[i].vals[j]);
    }
}

int lm_chan_conf_add(lm_conf_t *conf, const lm_chan_rec_t *c, char *param, size_t plen, char *err,
                     size_t errlen)
{
    size_t len = 0;
    int line = 0;
    size_t before = conf->nchans;
    if (param && plen)
        param[0] = '\0';
    if (lm_chanrule_env(conf, c, param, param ? plen : 0, err, errlen) != 0)
        return -1; /* before the parser reads any variable (SS-2) */
    char *text = lm_chan_render(c, &len);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = lm_conf_parse_channels(conf, CHAN_SRC, text, len, err, errlen);
    OPENSSL_cleanse(text, len);
    free(text);
    if (rc == 0) {
        lm_outbound_mark_admin(conf, before); /* its upstream address policy (SS-7) */
        return 0;
    }
    strip_location(err, &line);
    lm_chan_rec_scrub(c, err);
    const char *f = lm_chan_line_field(c, line, param, plen);
    if (f && param && f != param)
        snprintf(param, plen, "%s", f);
    return -1;
}

int lm_chan_conf_apply(lm_conf_t *conf, lm_store_t *st, const char *skip, int strict, char *err,
                       size_t errlen)
{
    lm_chan_rec_t **v = NULL;
    size_t n = 0;
    int rc = lm_store_chan_list(st, &v, &n);
    if (rc != LM_STORE_OK) {
        snprintf(err, errlen, "cannot read the stored channels: %s", lm_store_strerror(rc));
        return -1;
    }
    rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const lm_chan_rec_t *c = v[i];
        int shadowed = 0;
        if (!c->enabled || (skip && !strcmp(c->name, skip)))
            continue;
        for (size_t j = 0; j < conf->nchans && !shadowed; j++)
            shadowed = !strcmp(conf->chans[j].name, c->name);
        if (shadowed) {
            lm_log(LM_LOG_WARN, "stored channel %s is not used: %s defines a channel of that name",
                   c->name, conf->path);
            continue;
        }
        char msg[1024], param[96];
        if (lm_chan_conf_add(conf, c, param, sizeof(param), msg, sizeof(msg)) == 0)
            continue;
        if (strict) {
            snprintf(err, errlen, "stored channel %s: %s%s%s", c->name, param, param[0] ? ": " : "",
                     msg);
            rc = -1;
        } else {
            lm_log(LM_LOG_ERROR, "stored channel %s left out: %s%s%s", c->name, param,
                   param[0] ? ": " : "", msg);
        }
    }
    lm_store_chan_list_free(v, n);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* secrets                                                                   */

static int secrets_add(lm_chan_secrets_t *s, const char *v)
{
    if (v == NULL || strlen(v) < 4)
        return 0;
    char **nv = realloc(s->v, (s->n + 1) * sizeof(*nv));
    if (nv == NULL)
        return -1;
    s->v = nv;
    if ((s->v[s->n] = strdup(v)) == NULL)
        return -1;
    s->n++;
    return 0;
}

int lm_chan_secrets_collect(const lm_conf_t *conf, lm_chan_secrets_t *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < conf->nchans; i++)
        for (size_t k = 0; k < conf->chans[i].nkv; k++) {
            const lm_kv_t *kv = &conf->chans[i].kv[k];
            if (!kv->secret)
                continue;
            int bad = secrets_add(out, kv->val);
            for (size_t a = 0; !bad && a < kv->nalts; a++)
                bad = secrets_add(out, kv->alts[a]);
            if (bad) {
                lm_chan_secrets_free(out);
                return -1;
            }
        }
    return 0;
}

void lm_chan_secrets_scrub(const lm_chan_secrets_t *s, char *text)
{
    for (size_t i = 0; s && i < s->n; i++)
        lm_mask_secret(text, s->v[i]);
}

void lm_chan_secrets_free(lm_chan_secrets_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        OPENSSL_cleanse(s->v[i], strlen(s->v[i]));
        free(s->v[i]);
    }
    free(s->v);
    memset(s, 0, sizeof(*s));
}
