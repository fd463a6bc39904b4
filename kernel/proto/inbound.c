/* inbound.c - the table of inbound APIs (inbound.h). Static data; any
 * thread. */
#include "proto/inbound.h"

#include "proto/completions.h"
#include "proto/msgs.h"
#include "proto/responses.h"

/* Chat completions (and embeddings): the canonical form itself. */
static const lm_inbound_t chat = {.name = "chat"};

/* The 1.3 endpoints: no translation, only a name (endpoint.h checks them). */
static const lm_inbound_t rerank = {.name = "rerank"};
static const lm_inbound_t moderations = {.name = "moderations"};
static const lm_inbound_t images = {.name = "images"};
static const lm_inbound_t audio = {.name = "audio"};

static const lm_inbound_t *const apis[LM_API_COUNT] = {
    [LM_API_CHAT] = &chat,
    [LM_API_MESSAGES] = &lm_msgs_api,
    [LM_API_RESPONSES] = &lm_resp_api,
    [LM_API_RERANK] = &rerank,
    [LM_API_MODERATIONS] = &moderations,
    [LM_API_IMAGES] = &images,
    [LM_API_COMPLETIONS] = &lm_cmpl_api,
    [LM_API_AUDIO] = &audio,
};

const lm_inbound_t *lm_inbound_get(int id)
{
    if (id < 0 || id >= LM_API_COUNT || apis[id] == NULL)
        return &chat;
    return apis[id];
}
