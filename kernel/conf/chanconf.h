/*
 * chanconf.h - channels stored through the admin API, as configuration.
 *
 * A stored channel (store.h, lm_chan_rec_t) becomes configuration by being
 * rendered as the text of a `channel NAME { ... }` block (one directive per
 * line, every value quoted) and parsed by the file's own parser
 * (lm_conf_parse_channels). So a stored channel means exactly what the same
 * block in the file would mean: env:VAR is read at parse time, settings are
 * checked against the plugin's cfg_keys, secrets are scrubbed the same way.
 * The channels are appended after the file's; a name the file defines wins.
 *
 * Secrets: a setting whose name contains key, secret or token (the file's
 * rule) is a secret. Replies show it as "***", or as "env:VAR" when it was
 * given that way; literal values never leave the process except into the
 * store and the upstream request.
 *
 * Threads: any (pure functions), except lm_chan_conf_apply, which reads the
 * store (admin or control thread).
 */
#ifndef LM_CHANCONF_H
#define LM_CHANCONF_H
#include "conf/chanrule.h" /* lm_chan_secret_name */
#include "conf/conf.h"
#include "store/store.h"

#include <jansson.h>

/* A new record holding the file's defaults (priority 0, weight 1,
 * max_inflight 1024, timeouts 5 s / 120 s / 60 s / 600 s, prices 0),
 * enabled, without name, plugin, models or settings. NULL on ENOMEM.
 * The caller frees it with lm_chan_rec_free. */
lm_chan_rec_t *lm_chan_rec_new(void);
/* A deep copy of c (caller frees), or NULL. */
lm_chan_rec_t *lm_chan_rec_dup(const lm_chan_rec_t *c);

/* Read the members of an admin JSON body (borrowed) into c. merge (PATCH):
 * each setting named in "settings" replaces that setting, null removes it,
 * the others stay; otherwise "settings" replaces them all. A secret whose
 * value is "***" (the masked form) keeps the value of the same setting in
 * `cur` (may be NULL). Types are checked here, ranges by
 * lm_store_chan_check. Unknown and read-only members are refused. 0, or -1
 * with a message in err and the member's name in *param (static or
 * borrowed from body). */
int lm_chan_from_json(lm_chan_rec_t *c, json_t *body, int merge, const lm_chan_rec_t *cur,
                      const char **param, char *err, size_t errlen);

/* The configuration rules a record must meet besides the store's shape
 * checks: no setting named like a channel field (priority, models, ...),
 * several values only for one secret setting, no control characters, no
 * rendered line over the parser's limit. 0, or -1 with a message in err and
 * the field in *param (static). */
int lm_chan_check(const lm_chan_rec_t *c, const char **param, char *err, size_t errlen);

/* Admin JSON of a stored channel (source "store"); secrets masked. New
 * reference. */
json_t *lm_chan_to_json(const lm_chan_rec_t *c);
/* Admin JSON of a channel of the configuration file (source "file",
 * read-only); secret settings and values from env: show as "***". */
json_t *lm_chan_conf_to_json(const lm_chan_conf_t *ch);

/* c as a channel block, NUL-terminated, *len bytes (len may be NULL). The
 * text may hold literal secrets: wipe it (OPENSSL_cleanse) and free it.
 * NULL on ENOMEM. */
char *lm_chan_render(const lm_chan_rec_t *c, size_t *len);
/* The field line `line` (1-based) of lm_chan_render(c) comes from:
 * "plugin", "models", "priority", ..., "settings.NAME" (written into buf);
 * NULL for the block's first and last lines. */
const char *lm_chan_line_field(const lm_chan_rec_t *c, int line, char *buf, size_t len);

/* Parse c into conf, after its channels. On error returns -1 with the
 * parser's message (its "file:line: " prefix removed, secrets scrubbed) in
 * err and the field it concerns in param ("" when none); conf is unchanged.
 */
int lm_chan_conf_add(lm_conf_t *conf, const lm_chan_rec_t *c, char *param, size_t plen, char *err,
                     size_t errlen);

/* Add every enabled stored channel except the one named skip (NULL = none)
 * to conf. A name conf already has is left out with a warning (the file
 * wins). strict (reload, validation): the first channel that does not parse
 * fails the call with "stored channel NAME: message" in err; otherwise it
 * is logged and left out (start-up). 0, or -1 (also when the store cannot
 * be read). */
int lm_chan_conf_apply(lm_conf_t *conf, lm_store_t *st, const char *skip, int strict, char *err,
                       size_t errlen);

/* Replace, in place, each secret value (of 4 bytes or more) of c in text
 * with "***". */
void lm_chan_rec_scrub(const lm_chan_rec_t *c, char *text);

/* Copies of every secret value of conf's channels, to scrub messages
 * produced after conf is gone (lm_rt_build consumes it). */
typedef struct lm_chan_secrets_s {
    char **v;
    size_t n;
} lm_chan_secrets_t;
/* 0, or -1 on ENOMEM (out is then empty). Free with lm_chan_secrets_free. */
int lm_chan_secrets_collect(const lm_conf_t *conf, lm_chan_secrets_t *out);
/* Replace, in place, each secret (of 4 bytes or more) in text with "***". */
void lm_chan_secrets_scrub(const lm_chan_secrets_t *s, char *text);
/* Wipe and free the copies. */
void lm_chan_secrets_free(lm_chan_secrets_t *s);
#endif
