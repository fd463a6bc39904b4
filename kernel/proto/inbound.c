/* inbound.c - the table of inbound APIs (inbound.h). Static data; any
 * thread. */
#include "proto/inbound.h"

#include "proto/msgs.h"

/* Chat completions (and embeddings): the canonical form itself. */
static const lm_inbound_t chat = {.name = "chat"};

static const lm_inbound_t *const apis[LM_API_COUNT] = {
    [LM_API_CHAT] = &chat,
    [LM_API_MESSAGES] = &lm_msgs_api,
};

const lm_inbound_t *lm_inbound_get(int id)
{
    if (id < 0 || id >= LM_API_COUNT || apis[id] == NULL)
        return &chat;
    return apis[id];
}
