/*
 * chans.c - stored channel records: freeing (secrets wiped), the settings
 * JSON column, name and shape checks. Any thread; see store.h for ownership.
 */
#include "store/internal.h"
#include "store/store.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lm_store_wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

void lm_chan_rec_free(lm_chan_rec_t *c)
{
    if (c == NULL)
        return;
    free(c->name);
    free(c->plugin);
    for (size_t i = 0; i < c->nmodels; i++)
        free(c->models[i]);
    free(c->models);
    for (size_t i = 0; i < c->nprices; i++)
        free(c->prices[i]);
    free(c->prices);
    for (size_t i = 0; i < c->nsettings; i++) {
        free(c->settings[i].key);
        for (size_t j = 0; j < c->settings[i].nvals; j++)
            lm_store_wipe_free(c->settings[i].vals[j]);
        free(c->settings[i].vals);
    }
    free(c->settings);
    free(c);
}

#define CHAN_PRICES_KEY "@prices" /* store.h: the price lines, inside settings */

/* prices -> o["@prices"] (none: left out). 0, or -1 on ENOMEM. */
static int prices_encode(const lm_chan_rec_t *c, json_t *o)
{
    if (c->nprices == 0)
        return 0;
    json_t *a = json_array();
    for (size_t i = 0; a && i < c->nprices; i++)
        if (json_array_append_new(a, json_string(c->prices[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    return a && json_object_set_new(o, CHAN_PRICES_KEY, a) == 0 ? 0 : -1;
}

/* o["@prices"] -> c->prices. 0, or -1 on bad data or ENOMEM. */
static int prices_decode(json_t *a, lm_chan_rec_t *c)
{
    size_t n = json_array_size(a);
    if (!json_is_array(a) || (c->prices = calloc(n + 1, sizeof(char *))) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *v = json_string_value(json_array_get(a, i));
        if (v == NULL || (c->prices[i] = strdup(v)) == NULL)
            return -1;
        c->nprices++;
    }
    return 0;
}

/* settings -> {"key": "value" | ["v1", "v2"], ..., "@prices": [...]} (new
 * text; wipe it). */
char *lm_store_chan_settings_encode(const lm_chan_rec_t *c)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < c->nsettings; i++) {
        const lm_chan_setting_t *kv = &c->settings[i];
        json_t *v = NULL;
        if (kv->nvals == 1) {
            v = json_string(kv->vals[0]);
        } else if ((v = json_array()) != NULL) {
            for (size_t j = 0; j < kv->nvals; j++)
                if (json_array_append_new(v, json_string(kv->vals[j])) != 0) {
                    json_decref(v);
                    v = NULL;
                    break;
                }
        }
        if (v == NULL || json_object_set_new(o, kv->key, v) != 0) {
            json_decref(o);
            o = NULL;
        }
    }
    if (o && prices_encode(c, o) != 0) {
        json_decref(o);
        o = NULL;
    }
    char *t = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o); /* jansson does not wipe: the values were copies anyway */
    return t;
}

/* The inverse; -1 on bad data or ENOMEM. */
int lm_store_chan_settings_decode(const char *text, lm_chan_rec_t *c)
{
    json_t *o = json_loads(text ? text : "{}", 0, NULL);
    const char *k;
    json_t *v;
    int rc = -1;
    if (o == NULL || !json_is_object(o))
        goto out;
    c->settings = calloc(json_object_size(o) + 1, sizeof(*c->settings));
    if (c->settings == NULL)
        goto out;
    json_object_foreach (o, k, v) {
        lm_chan_setting_t *kv = &c->settings[c->nsettings];
        if (!strcmp(k, CHAN_PRICES_KEY)) {
            if (c->prices != NULL || prices_decode(v, c) != 0)
                goto out;
            continue;
        }
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        if ((kv->key = strdup(k)) == NULL || (kv->vals = calloc(n, sizeof(char *))) == NULL) {
            free(kv->key);
            goto out;
        }
        c->nsettings++;
        for (size_t j = 0; j < n; j++) {
            const char *sv = json_string_value(json_is_array(v) ? json_array_get(v, j) : v);
            if (sv == NULL || (kv->vals[j] = strdup(sv)) == NULL)
                goto out;
            kv->nvals++;
        }
        if (n == 0)
            goto out;
    }
    rc = 0;
out:
    json_decref(o);
    return rc;
}

int lm_store_name_ok(const char *s, int plugin)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > LM_CHAN_NAME_MAX || (!plugin && (!strcmp(s, ".") || !strcmp(s, ".."))))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
        if (!plugin)
            ok |= (ch >= 'A' && ch <= 'Z') || ch == '.';
        if (!ok)
            return 0;
    }
    return 1;
}

int lm_store_chan_name_ok(const char *name)
{
    return lm_store_name_ok(name, 0);
}

static int chan_fail(const char **param, const char *p, char *err, size_t errlen, const char *fmt,
                     ...) __attribute__((format(printf, 5, 6)));
static int chan_fail(const char **param, const char *p, char *err, size_t errlen, const char *fmt,
                     ...)
{
    if (param)
        *param = p;
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return LM_STORE_EINVAL;
}

static int chan_settings_check(const lm_chan_rec_t *c, const char **param, char *err, size_t errlen)
{
    if (c->nsettings > LM_CHAN_SETTINGS_MAX || (c->nsettings && c->settings == NULL))
        return chan_fail(param, "settings", err, errlen, "at most %d settings",
                         LM_CHAN_SETTINGS_MAX);
    for (size_t i = 0; i < c->nsettings; i++) {
        const lm_chan_setting_t *kv = &c->settings[i];
        if (!lm_store_name_ok(kv->key, 1))
            return chan_fail(param, "settings", err, errlen,
                             "setting names must match [a-z0-9_-]+ (at most %d bytes)",
                             LM_CHAN_NAME_MAX);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(c->settings[j].key, kv->key))
                return chan_fail(param, "settings", err, errlen, "setting %s is given twice",
                                 kv->key);
        if (kv->nvals == 0 || kv->nvals > LM_CHAN_VALUES_MAX || kv->vals == NULL)
            return chan_fail(param, "settings", err, errlen, "setting %s needs 1 to %d values",
                             kv->key, LM_CHAN_VALUES_MAX);
        for (size_t j = 0; j < kv->nvals; j++)
            if (kv->vals[j] == NULL || !lm_store_cstr_ok(kv->vals[j], LM_CHAN_VALUE_MAX))
                return chan_fail(param, "settings", err, errlen,
                                 "setting %s: values must be valid UTF-8 without NUL, at most "
                                 "%d bytes",
                                 kv->key, LM_CHAN_VALUE_MAX);
    }
    return LM_STORE_OK;
}

int lm_store_chan_check(const lm_chan_rec_t *c, const char **param, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t off;
        int64_t lo, hi;
    } nums[] = {
        {"priority", offsetof(lm_chan_rec_t, priority), 0, 1000000},
        {"weight", offsetof(lm_chan_rec_t, weight), 1, 1000000},
        {"max_inflight", offsetof(lm_chan_rec_t, max_inflight), 1, 1000000},
        {"connect_timeout_ms", offsetof(lm_chan_rec_t, connect_timeout_ms), 1, 86400000},
        {"first_byte_timeout_ms", offsetof(lm_chan_rec_t, first_byte_timeout_ms), 1, 86400000},
        {"idle_timeout_ms", offsetof(lm_chan_rec_t, idle_timeout_ms), 1, 86400000},
        {"request_timeout_ms", offsetof(lm_chan_rec_t, request_timeout_ms), 1, 86400000},
        {"price_input", offsetof(lm_chan_rec_t, price_input), 0, INT64_C(1000000000000000)},
        {"price_output", offsetof(lm_chan_rec_t, price_output), 0, INT64_C(1000000000000000)},
        {"price_cached_input", offsetof(lm_chan_rec_t, price_cached_input), 0,
         INT64_C(1000000000000000)},
        {"price_per_request", offsetof(lm_chan_rec_t, price_per_request), 0,
         INT64_C(1000000000000000)},
    };
    if (param)
        *param = NULL;
    if (c == NULL)
        return chan_fail(param, NULL, err, errlen, "no channel");
    if (!lm_store_name_ok(c->name, 0))
        return chan_fail(param, "name", err, errlen,
                         "name must match [A-Za-z0-9_.-]+ (1 to %d characters, not . or ..)",
                         LM_CHAN_NAME_MAX);
    if (!lm_store_name_ok(c->plugin, 1))
        return chan_fail(param, "plugin", err, errlen,
                         "plugin must match [a-z0-9_-]+ (a file in plugin_dir, at most %d bytes)",
                         LM_CHAN_NAME_MAX);
    if (c->nmodels == 0 || c->nmodels > LM_STORE_LIST_MAX || c->models == NULL)
        return chan_fail(param, "models", err, errlen, "models needs 1 to %d entries",
                         LM_STORE_LIST_MAX);
    for (size_t i = 0; i < c->nmodels; i++)
        if (c->models[i] == NULL || c->models[i][0] == '\0' ||
            !lm_store_cstr_ok(c->models[i], LM_STORE_ITEM_MAX))
            return chan_fail(param, "models", err, errlen,
                             "models[%zu] must be non-empty UTF-8 of at most %d bytes", i,
                             LM_STORE_ITEM_MAX);
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        int64_t v = *(const int64_t *)(const void *)((const char *)c + nums[i].off);
        if (v < nums[i].lo || v > nums[i].hi)
            return chan_fail(param, nums[i].name, err, errlen, "%s must be from %lld to %lld",
                             nums[i].name, (long long)nums[i].lo, (long long)nums[i].hi);
    }
    if (c->enabled != 0 && c->enabled != 1)
        return chan_fail(param, "enabled", err, errlen, "enabled must be true or false");
    if (c->nprices > LM_STORE_LIST_MAX || (c->nprices && c->prices == NULL))
        return chan_fail(param, "prices", err, errlen, "prices has at most %d lines",
                         LM_STORE_LIST_MAX);
    for (size_t i = 0; i < c->nprices; i++)
        if (c->prices[i] == NULL || c->prices[i][0] == '\0' ||
            !lm_store_cstr_ok(c->prices[i], LM_STORE_ITEM_MAX))
            return chan_fail(param, "prices", err, errlen,
                             "prices[%zu] must be non-empty UTF-8 of at most %d bytes", i,
                             LM_STORE_ITEM_MAX);
    return chan_settings_check(c, param, err, errlen);
}
