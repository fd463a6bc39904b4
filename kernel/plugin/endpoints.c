/* endpoints.c - the endpoints a provider serves (endpoints.h). Pure. */
#include "plugin/endpoints.h"

#include <stddef.h>

static const struct {
    int op;
    uint32_t bit;
    const char *name, *path;
} eps[] = {
    {LM_OP_CHAT, LM_EP_CHAT, "chat", "/v1/chat/completions"},
    {LM_OP_EMBED, LM_EP_EMBEDDINGS, "embeddings", "/v1/embeddings"},
    {LM_OP_COMPLETIONS, LM_EP_COMPLETIONS, "completions", "/v1/completions"},
    {LM_OP_RERANK, LM_EP_RERANK, "rerank", "/v1/rerank"},
    {LM_OP_MODERATIONS, LM_EP_MODERATIONS, "moderations", "/v1/moderations"},
    {LM_OP_IMAGES, LM_EP_IMAGES, "images", "/v1/images/generations"},
    {LM_OP_AUDIO_TRANSCRIBE, LM_EP_AUDIO_TRANSCRIBE, "audio_transcriptions",
     "/v1/audio/transcriptions"},
    {LM_OP_AUDIO_TRANSLATE, LM_EP_AUDIO_TRANSCRIBE, "audio_translations", "/v1/audio/translations"},
    {LM_OP_AUDIO_SPEECH, LM_EP_AUDIO_SPEECH, "audio_speech", "/v1/audio/speech"},
};
#define NEPS (sizeof(eps) / sizeof(eps[0]))

uint32_t lm_endpoints_of(const lm_provider *vt)
{
    /* the loader zeroes fields past an older table's size (plugin.c) */
    uint32_t m = vt->hdr.minor >= 3 ? vt->endpoints : 0;
    if (m == 0)
        m = ((vt->caps & LM_CAP_CHAT) ? LM_EP_CHAT : 0) |
            ((vt->caps & LM_CAP_EMBED) ? LM_EP_EMBEDDINGS : 0);
    if (m & LM_EP_CHAT)
        m |= LM_EP_COMPLETIONS; /* the kernel maps completions onto chat */
    return m;
}

uint32_t lm_endpoint_bit(int op)
{
    for (size_t i = 0; i < NEPS; i++)
        if (eps[i].op == op)
            return eps[i].bit;
    return 0;
}

const char *lm_endpoint_path(int op)
{
    for (size_t i = 0; i < NEPS; i++)
        if (eps[i].op == op)
            return eps[i].path;
    return "this endpoint";
}

json_t *lm_endpoints_json(uint32_t mask)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < NEPS; i++)
        if ((mask & eps[i].bit) && json_array_append_new(a, json_string(eps[i].name)) < 0)
            return json_decref(a), NULL;
    return a;
}

int lm_endpoint_check(const lm_provider *vt, int op, lm_err *e)
{
    if (lm_endpoints_of(vt) & lm_endpoint_bit(op))
        return 0;
    return lm_err_set(e, LM_ENOTSUP, 400, "invalid_request_error", "endpoint_unsupported",
                      "%s: this model's channel (plugin %s) does not serve this endpoint",
                      lm_endpoint_path(op), vt->name ? vt->name : "?");
}

int lm_endpoint_call_op(const lm_provider *vt, int op, int completions)
{
    if (completions && vt->hdr.minor >= 3 && (vt->endpoints & LM_EP_COMPLETIONS))
        return LM_OP_COMPLETIONS;
    return op;
}
