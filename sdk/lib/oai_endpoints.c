/* oai_endpoints.c - the OpenAI-compatible base's ABI 1.3 endpoints
 * (lmoai.h): rerank (Cohere/Jina shape), moderations, image generations and
 * text completions go to <base><path> and come back as the upstream wrote
 * them; only usage is read. Thread: a worker; the instance is read only. */
#include "lmoai.h"

#include <string.h>

static const char *path_of(int op)
{
    switch (op) {
    case LM_OP_RERANK: return "/rerank";
    case LM_OP_MODERATIONS: return "/moderations";
    case LM_OP_IMAGES: return "/images/generations";
    case LM_OP_COMPLETIONS: return "/completions"; /* only with `completions native` */
    case LM_OP_AUDIO_TRANSCRIBE: return "/audio/transcriptions";
    case LM_OP_AUDIO_TRANSLATE: return "/audio/translations";
    case LM_OP_AUDIO_SPEECH: return "/audio/speech";
    default: return NULL;
    }
}

int lmo_is_endpoint_op(int op)
{
    return path_of(op) != NULL;
}

char *lmo_endpoint_url(const lmo_inst *in, int op)
{
    const char *p = path_of(op);
    size_t bn = strlen(in->base), pn = strlen(p);
    char *s = in->h->alloc(bn + pn + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, in->base, bn);
    memcpy(s + bn, p, pn + 1);
    return s;
}

/* Rerank usage as the servers report it: usage.total_tokens (Jina, vLLM,
 * Xinference), meta.tokens.input_tokens (SiliconFlow, Cohere v2) or
 * meta.billed_units.input_tokens; -1 when none. */
static int64_t rerank_tokens(const json_t *j)
{
    const json_t *meta = json_object_get(j, "meta");
    int64_t t = lm_json_int_or_unknown(json_object_get(j, "usage"), "total_tokens");
    if (t < 0)
        t = lm_json_int_or_unknown(json_object_get(j, "usage"), "prompt_tokens");
    if (t < 0)
        t = lm_json_int_or_unknown(json_object_get(meta, "tokens"), "input_tokens");
    if (t < 0)
        t = lm_json_int_or_unknown(json_object_get(meta, "billed_units"), "input_tokens");
    return t;
}

int lmo_endpoint_response(lmo_inst *in, lm_call *c, lm_str body, json_t **out, lm_usage *usage,
                          lm_err *e)
{
    json_t *j = lms_parse_object(body, "the response", e);
    if (j == NULL)
        return LM_EUPSTREAM;
    if (lmo_error(in, j, 0, e))
        return json_decref(j), LM_EUPSTREAM;
    if (c->op == LM_OP_RERANK) {
        if (!json_is_array(json_object_get(j, "results")))
            return json_decref(j), lms_bad_upstream(e, "no \"results\" array");
        usage->prompt = usage->total = rerank_tokens(j);
        json_object_del(j, "usage"); /* the kernel writes the one usage object */
        *out = j;
        return LM_OK;
    }
    /* moderations, images, completions: forwarded unchanged (*out NULL) */
    const json_t *u = json_object_get(j, "usage");
    if (!lm_usage_from_json(u, usage)) { /* gpt-image: input_tokens / output_tokens */
        usage->prompt = lm_json_int_or_unknown(u, "input_tokens");
        usage->completion = lm_json_int_or_unknown(u, "output_tokens");
        usage->total = lm_json_int_or_unknown(u, "total_tokens");
    }
    json_decref(j);
    return LM_OK;
}

int lmo_wire_op(const lmo_inst *in, const lm_call *c)
{
    return c->op == LM_OP_COMPLETIONS && !in->native_completions ? LM_OP_CHAT : c->op;
}

int lmo_completions_body(json_t *body, lm_err *e)
{
    const json_t *msgs = json_object_get(body, "messages"), *m = json_array_get(msgs, 0);
    const json_t *ct = json_object_get(m, "content");
    if (json_array_size(msgs) != 1 || !lms_streq(lms_jstr(m, "role"), "user") ||
        !json_is_string(ct))
        return lms_unsupported(e, "messages: a native completions upstream takes one prompt");
    if (json_object_set(body, "prompt", (json_t *)ct) < 0)
        return lms_oom(e);
    json_object_del(body, "messages");
    return LM_OK;
}

void lmo_completion_as_chat(json_t *root, int stream)
{
    json_t *choices = json_object_get(root, "choices"), *ch;
    size_t i;
    json_object_set_new(root, "object",
                        json_string(stream ? "chat.completion.chunk" : "chat.completion"));
    json_array_foreach (choices, i, ch) {
        json_t *t = json_object_get(ch, "text");
        json_t *part = stream ? json_object() : json_pack("{s:s}", "role", "assistant");
        if (part && json_is_string(t) && (!stream || json_string_length(t) > 0))
            json_object_set(part, "content", t);
        json_object_set_new(ch, stream ? "delta" : "message", part ? part : json_object());
        json_object_del(ch, "text");
        json_object_del(ch, "logprobs");
    }
}
