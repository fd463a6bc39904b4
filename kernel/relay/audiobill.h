/*
 * audiobill.h - an audio request's state (audio.h fills it) and what it
 * costs: the answer's duration for per_second, speech's input for
 * per_1m_chars, the admission hold, and the held answer's Content-Type.
 * Apart from audio.c so that settlement reads it without a cycle. Thread:
 * the relay's worker.
 */
#ifndef LM_RELAY_AUDIOBILL_H
#define LM_RELAY_AUDIOBILL_H
#include "relay/relay_int.h"

struct lm_audio_s {
    lm_http_body_t *held;      /* the upload, moved out of the request; NULL for speech */
    lm_str body;               /* its bytes */
    char form_ctype[160];      /* the upload's Content-Type (its boundary) */
    lm_str model_val;          /* the model part's data, inside body */
    char ctype[128];           /* the upstream answer's Content-Type ("" unknown) */
    int streaming;             /* speech or transcript bytes went to the client */
    struct lm_audiosse_s *sse; /* a streamed transcript's reader (audiosse.h), or NULL */
    int64_t millis;            /* the answer's audio duration (0 unknown) */
    int64_t chars;             /* speech input code points */
};

/* The cost of r's audio units at per_unit for `unit` (conf/priceunit.h):
 * per_second on the answer's duration (in milliseconds, rounded up to the
 * micro-unit), per_1m_chars on speech's input code points; else 0. */
int64_t lm_audio_cost(const lm_relay_t *r, int unit, int64_t per_unit);
/* What admission holds for r's unit price on channel ch, model upstream:
 * speech's whole cost (its input is known), one micro-unit for an upload
 * (its seconds come with the answer: a key with nothing left is refused);
 * 0 without a unit price. */
int64_t lm_audio_hold(const lm_relay_t *r, const lm_chan_conf_t *ch, const char *upstream);
/* The held answer's Content-Type (borrowed), or NULL for JSON. */
const char *lm_audio_ctype(const lm_relay_t *r);
#endif
