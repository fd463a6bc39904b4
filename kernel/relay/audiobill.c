/* audiobill.c - what an audio request costs (audiobill.h). Pure but for
 * reading the relay. */
#include "relay/audiobill.h"

#include "conf/priceunit.h"

int64_t lm_audio_cost(const lm_relay_t *r, int unit, int64_t per_unit)
{
    const struct lm_audio_s *a = r->audio;
    if (unit == LM_UNIT_SECOND && r->op != LM_OP_AUDIO_SPEECH)
        return lm_billing_unit_cost(per_unit, 1000 * lm_price_unit_divisor(unit), a->millis);
    if (unit == LM_UNIT_1M_CHARS && r->op == LM_OP_AUDIO_SPEECH)
        return lm_billing_unit_cost(per_unit, lm_price_unit_divisor(unit), a->chars);
    return 0;
}

int64_t lm_audio_hold(const lm_relay_t *r, const lm_chan_conf_t *ch, const char *upstream)
{
    int unit;
    int64_t per_unit;
    lm_conf_price_unit(r->rt->conf, ch, upstream, &unit, &per_unit);
    if (unit == LM_UNIT_TOKENS || per_unit <= 0)
        return 0;
    if (r->op == LM_OP_AUDIO_SPEECH)
        return lm_audio_cost(r, unit, per_unit) > 0 ? lm_audio_cost(r, unit, per_unit) : 1;
    return 1;
}

const char *lm_audio_ctype(const lm_relay_t *r)
{
    return r->audio && r->audio->ctype[0] ? r->audio->ctype : NULL;
}
