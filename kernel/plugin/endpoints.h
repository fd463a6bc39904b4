/*
 * endpoints.h - which data-plane endpoints a provider serves (ABI 1.3,
 * lm_provider.endpoints) and their names. Pure; any thread.
 */
#ifndef LM_ENDPOINTS_H
#define LM_ENDPOINTS_H
#include "longmen.h"

#include <stdint.h>

/* The LM_EP_* mask vt serves: its declared endpoints, or for a 1.0-1.2
 * table (or endpoints 0) chat and embeddings as its caps say. Chat
 * providers also serve /v1/completions (through the chat path). */
uint32_t lm_endpoints_of(const lm_provider *vt);
/* The LM_EP_* bit of operation op (LM_OP_*), 0 for an unknown op. */
uint32_t lm_endpoint_bit(int op);
/* The client path of op ("/v1/rerank"); static. */
const char *lm_endpoint_path(int op);
/* A new JSON array of the names of mask's endpoints ("chat", "embeddings",
 * "completions", "rerank", "moderations", "images", "audio_transcriptions",
 * "audio_translations", "audio_speech"), or NULL on no memory. */
json_t *lm_endpoints_json(uint32_t mask);
/* The op a plugin's lm_call carries: LM_OP_COMPLETIONS for a /v1/completions
 * request (completions 1) when vt declares LM_EP_COMPLETIONS itself (the
 * canonical request is still chat; the plugin may send it natively), else op. */
int lm_endpoint_call_op(const lm_provider *vt, int op, int completions);
/* 0 when vt serves op; else LM_ENOTSUP with e filled: a 400
 * endpoint_unsupported naming the endpoint and the plugin. */
int lm_endpoint_check(const lm_provider *vt, int op, lm_err *e);
#endif
