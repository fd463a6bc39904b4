/* chan.c - read-only queries on one parsed channel (conf.h): setting
 * lookup and secret masking. Any thread (the channel is immutable); returns
 * borrowed pointers into the channel. Kept apart from the parser so the
 * plugin test kit links without it. */
#include "conf/conf.h"
#include "core/mask.h"

#include <string.h>

const lm_kv_t *lm_conf_chan_kv(const lm_chan_conf_t *ch, const char *key)
{
    for (size_t i = 0; i < ch->nkv; i++)
        if (!strcmp(ch->kv[i].key, key))
            return &ch->kv[i];
    return NULL;
}

void lm_conf_scrub(const lm_chan_conf_t *ch, char *text)
{
    for (size_t i = 0; ch && i < ch->nkv; i++) {
        if (!ch->kv[i].secret)
            continue;
        for (size_t k = 0; k <= ch->kv[i].nalts; k++) {
            lm_mask_secret(text, k == 0 ? ch->kv[i].val : ch->kv[i].alts[k - 1]);
        }
    }
}
