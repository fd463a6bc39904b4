/*
 * audio.h - the audio endpoints through the relay: /v1/audio/transcriptions
 * and /v1/audio/translations (a multipart upload: the kernel reads the form
 * in place to route on its "model", and sends the client's bytes upstream
 * without a copy, only the model part replaced when the channel maps it)
 * and /v1/audio/speech (JSON in; the audio answer streamed to the client
 * as it arrives, with the upstream's Content-Type); an upload answered
 * text/event-stream (stream=true) is streamed the same way, its transcript
 * events read on the way for the bill (audiosse.h). Everything else (keys,
 * limits, scripts, routing, retries, health, the ledger, metrics) is the
 * relay's. Billing: per_second from the answer's duration, per_1m_chars
 * from speech's input. Thread: the relay's worker. r->audio belongs to the
 * relay (lm_audio_free in relay_free).
 */
#ifndef LM_RELAY_AUDIO_H
#define LM_RELAY_AUDIO_H
#include "relay/relay_int.h"

/* 1 for LM_OP_AUDIO_TRANSCRIBE, _TRANSLATE and _SPEECH. */
int lm_audio_op(int op);
/* The canonical request of r's audio body (new reference), with r->audio
 * set; the upload's body is moved out of the request (not copied). NULL
 * with e: 400 for a form or body that is not one (no file, no model, a bad
 * response_format), 500 on no memory. */
json_t *lm_audio_request(lm_relay_t *r, lm_err *e);
/* After build_request: an upload attempt sends the client's form (lent,
 * the model part replaced when it differs from r->upstream_model) with its
 * Content-Type, unless the plugin set a body itself. 0, or -1 with e. */
int lm_audio_attach(lm_relay_t *r, lm_err *e);
/* Upstream bytes of an audio attempt: the answer's Content-Type is noted,
 * and a 2xx speech answer, or an upload's text/event-stream one, goes to
 * the client as it comes. Returns 1 when
 * the bytes were taken (*ret is on_data's return), 0 to buffer them as for
 * any other answer. */
int lm_audio_data(lm_relay_t *r, int status, const char *p, size_t n, size_t *ret);
/* A 2xx answer ended (the caller ended the attempt for channel health): body (the whole answer, or
 * nothing after a streamed one) is billed and goes out with its Content-Type. */
void lm_audio_finish(lm_relay_t *r, lm_str body);
/* The client left an upload and its 2xx answer came: billed from the
 * answer's (or the streamed transcript's) usage, with the client_aborted
 * mark; nobody is answered. */
void lm_audio_background(lm_relay_t *r, lm_str body);
void lm_audio_free(lm_relay_t *r);
#endif
