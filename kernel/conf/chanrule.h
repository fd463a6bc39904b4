/*
 * chanrule.h - the outbound-safety rules on a channel record written
 * through the admin API (SS-2): which environment variables it may name,
 * and that a stored secret stays bound to the host it was given for; and
 * which settings are secrets.
 * Threads: any (pure functions).
 */
#ifndef LM_CHANRULE_H
#define LM_CHANRULE_H
#include "conf/conf.h"
#include "store/store.h"

#include <jansson.h>
#include <stddef.h>

/* 1 if a setting of this name holds a secret: its name contains key,
 * secret or token (the file's rule). */
int lm_chan_secret_name(const char *key);

/* Every env:NAME value of c's settings must be allowed by conf's
 * admin_env_allow. 0, or -1 with "settings.KEY" in param (plen bytes) and a
 * message naming the setting and the variable (never its value) in err. */
int lm_chanrule_env(const lm_conf_t *conf, const lm_chan_rec_t *c, char *param, size_t plen,
                    char *err, size_t errlen);

/* c is cur updated by the admin body `body` (borrowed). When the update
 * changes where requests go (the plugin, base_url, preset or a *_url
 * setting), every secret setting of c holding a literal value must have
 * been given again in body's "settings" ("***" keeps the stored value, so
 * it does not count): otherwise the stored secret would be sent to the new
 * host. env: values are not bound (admin_env_allow governs them). cur NULL
 * (a create): 0. 0, or -1 with "settings" in *param (static) and a message
 * naming the secret setting in err. */
int lm_chanrule_rebind(const lm_chan_rec_t *c, json_t *body, const lm_chan_rec_t *cur,
                       const char **param, char *err, size_t errlen);
#endif
