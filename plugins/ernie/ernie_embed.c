/*
 * ernie_embed.c - v1 embeddings: {"input":[texts]} to the model's endpoint,
 * data[].embedding back as float arrays. The kernel splits requests larger
 * than embed_max_inputs (16), applies encoding_format and writes "usage".
 */
#include "ernie.h"

int eb1_embed_body(const json_t *canon, json_t **out, lm_err *e)
{
    const json_t *inp = json_object_get(canon, "input"), *v;
    size_t i;
    json_array_foreach (inp, i, v) {
        if (!json_is_string(v))
            return lms_unsupported(e, "input[%zu]: ERNIE v1 embeddings take text, not tokens", i);
    }
    *out =
        json_is_string(inp) ? json_pack("{s:[O]}", "input", inp) : json_pack("{s:O}", "input", inp);
    if (*out == NULL ||
        lms_copy_params(canon, *out, (const lms_rename[]){{"user", "user_id"}, {NULL, NULL}}) < 0) {
        json_decref(*out);
        *out = NULL;
        return lms_oom(e);
    }
    return LM_OK;
}

int eb1_parse_embed(const lm_call *c, const json_t *j, json_t **out, lm_usage *usage, lm_err *e)
{
    const json_t *data = json_object_get(j, "data"), *it;
    size_t i;
    if (!json_is_array(data))
        return lms_bad_upstream(e, "an ERNIE v1 embeddings answer without data");
    json_t *vecs = json_array();
    if (vecs == NULL)
        return lms_oom(e);
    json_array_foreach (data, i, it) {
        json_t *vec = json_object_get(it, "embedding");
        if (!json_is_array(vec)) {
            json_decref(vecs);
            return lms_bad_upstream(e, "data[%zu].embedding is not a list", i);
        }
        json_array_append(vecs, vec);
    }
    /* v1 reports prompt_tokens and total_tokens; embeddings complete nothing */
    lm_usage_from_json(json_object_get(j, "usage"), usage);
    if (usage->prompt < 0)
        usage->prompt = usage->total;
    usage->completion = usage->prompt >= 0 ? 0 : -1;
    *out = lms_embedding_list(c, vecs);
    return *out ? LM_OK : lms_oom(e);
}
