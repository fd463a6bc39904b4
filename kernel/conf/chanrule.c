/* chanrule.c - outbound-safety rules on admin channel records (chanrule.h):
 * the env: allow-list and the binding of stored secrets to their host. Any
 * thread; pure, nothing returned is owned by the caller. */
#include "conf/chanrule.h"
#include "conf/outbound.h"
#include "core/mask.h"

#include <stdio.h>
#include <string.h>

int lm_chan_secret_name(const char *key)
{
    return key && (strstr(key, "key") || strstr(key, "secret") || strstr(key, "token"));
}

int lm_chanrule_env(const lm_conf_t *conf, const lm_chan_rec_t *c, char *param, size_t plen,
                    char *err, size_t errlen)
{
    for (size_t i = 0; i < c->nsettings; i++) {
        const lm_chan_setting_t *kv = &c->settings[i];
        for (size_t j = 0; j < kv->nvals; j++) {
            const char *v = kv->vals[j];
            if (strncmp(v, "env:", 4) != 0 || lm_outbound_env_allowed(conf, v + 4))
                continue;
            snprintf(param, plen, "settings.%s", kv->key);
            /* The bare name (the masking of replies hides "env:NAME" of a
             * secret); the value is never read for a refused name. */
            snprintf(err, errlen,
                     "settings.%.64s: environment variable %.128s may not be used by channels of "
                     "the admin API (admin_env_allow in the configuration file lists those that "
                     "may)",
                     kv->key, v + 4);
            return -1;
        }
    }
    return 0;
}

static const lm_chan_setting_t *setting(const lm_chan_rec_t *c, const char *key)
{
    for (size_t i = 0; c && i < c->nsettings; i++)
        if (!strcmp(c->settings[i].key, key))
            return &c->settings[i];
    return NULL;
}

/* A setting that chooses the host requests go to. */
static int address_setting(const char *key)
{
    size_t n = strlen(key);
    return !strcmp(key, "base_url") || !strcmp(key, "preset") ||
           (n >= 4 && !strcmp(key + n - 4, "_url"));
}

static int same_values(const lm_chan_setting_t *a, const lm_chan_setting_t *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->nvals != b->nvals)
        return 0;
    for (size_t j = 0; j < a->nvals; j++)
        if (strcmp(a->vals[j], b->vals[j]) != 0)
            return 0;
    return 1;
}

/* Whether c sends its requests somewhere else than cur did. */
static int address_changed(const lm_chan_rec_t *c, const lm_chan_rec_t *cur)
{
    if (strcmp(c->plugin ? c->plugin : "", cur->plugin ? cur->plugin : "") != 0)
        return 1; /* another plugin: another default host */
    for (int pass = 0; pass < 2; pass++) {
        const lm_chan_rec_t *a = pass ? cur : c, *b = pass ? c : cur;
        for (size_t i = 0; i < a->nsettings; i++)
            if (address_setting(a->settings[i].key) &&
                !same_values(&a->settings[i], setting(b, a->settings[i].key)))
                return 1;
    }
    return 0;
}

static int has_literal(const lm_chan_setting_t *kv)
{
    for (size_t j = 0; j < kv->nvals; j++)
        if (strncmp(kv->vals[j], "env:", 4) != 0)
            return 1;
    return 0;
}

int lm_chanrule_rebind(const lm_chan_rec_t *c, json_t *body, const lm_chan_rec_t *cur,
                       const char **param, char *err, size_t errlen)
{
    if (cur == NULL || !address_changed(c, cur))
        return 0;
    json_t *given = json_object_get(body, "settings");
    for (size_t i = 0; i < c->nsettings; i++) {
        const lm_chan_setting_t *kv = &c->settings[i];
        if (!lm_chan_secret_name(kv->key) || !has_literal(kv))
            continue;
        json_t *v = json_is_object(given) ? json_object_get(given, kv->key) : NULL;
        if (v && !(json_is_string(v) && !strcmp(json_string_value(v), LM_MASK)))
            continue; /* given again in this request */
        if (param)
            *param = "settings";
        snprintf(err, errlen,
                 "settings.%.64s: this change sends the channel's requests to another host, and "
                 "the stored secret is bound to the host it was given for: give settings.%.64s "
                 "again in the same request (or null to remove it)",
                 kv->key, kv->key);
        return -1;
    }
    return 0;
}
