/*
 * ollama_req.c - OpenAI request -> Ollama's /api/chat and /api/embed
 * (docs/wire-formats.md section 6, translation notes).
 *
 * The kernel has already validated the request (roles, content, tool calls,
 * numbers), rejected n > 1 and removed encoding_format.
 */
#include "ollama.h"

#include "lmsdk.h"

#include <stdint.h>
#include <string.h>

/* Sampling parameters go into "options" under Ollama's names;
 * max_completion_tokens comes after max_tokens so that it wins. Anything
 * else (tool_choice, parallel_tool_calls, user, logprobs, ...) has no
 * native equivalent and is dropped. */
static const lms_rename ol_options[] = {{"temperature", NULL},
                                        {"top_p", NULL},
                                        {"top_k", NULL},
                                        {"seed", NULL},
                                        {"presence_penalty", NULL},
                                        {"frequency_penalty", NULL},
                                        {"max_tokens", "num_predict"},
                                        {"max_completion_tokens", "num_predict"},
                                        {NULL, NULL}};

static const lms_rename ol_embed_params[] = {{"dimensions", NULL}, {NULL, NULL}};

/* ------------------------------------------------------------------ messages */

/* The base64 payloads of a user message's data-URL images -> imgs. Ollama
 * takes no image URL, and the plugin does no I/O to fetch one. */
static int ol_images(const json_t *ct, int user, const char *where, json_t *imgs, lm_err *e)
{
    size_t i;
    json_t *p;
    json_array_foreach (ct, i, p) {
        const char *type = lms_jstr(p, "type");
        lms_data_url d;
        if (lms_streq(type, "text") || lms_streq(type, "refusal"))
            continue; /* text: joined by lms_content_text; a refusal is not prompt text */
        if (!user || !lms_streq(type, "image_url"))
            return lms_unsupported(e, "%s[%zu]: Ollama takes text%s parts here, not \"%s\"", where,
                                   i, user ? " and image" : "", type ? type : "(no type)");
        if (lms_data_url_parse(lms_image_url(p), &d) < 0 || !d.is_base64)
            return lms_bad_request(e,
                                   "%s[%zu]: Ollama takes inline images only: send the image as a "
                                   "data:<type>;base64,<data> URL",
                                   where, i);
        if (lms_aadd(imgs, json_stringn(d.data.p, d.data.n)) < 0)
            return lms_oom(e);
    }
    return LM_OK;
}

/* Content -> "content" (text parts joined) and "images" on om. */
static int ol_content(const json_t *ct, int user, const char *where, json_t *om, lm_err *e)
{
    lms_buf text = {0};
    json_t *imgs = json_array();
    int rc = imgs ? lms_content_text(ct, LMS_SKIP_OTHER, where, &text, e) : lms_oom(e);

    if (rc == LM_OK)
        rc = ol_images(ct, user, where, imgs, e);
    if (rc == LM_OK && (lms_oset(om, "content", lms_buf_json(&text)) < 0 ||
                        (json_array_size(imgs) > 0 && json_object_set(om, "images", imgs) < 0)))
        rc = lms_oom(e);
    lms_buf_free(&text);
    json_decref(imgs);
    return rc;
}

/* Assistant tool calls: arguments as an object, not OpenAI's text. Each
 * call's name is remembered under its id for the tool results after it. */
static int ol_tool_calls(const json_t *calls, size_t i, json_t *om, json_t *names, lm_err *e)
{
    json_t *out, *tc;
    size_t k;
    if (json_array_size(calls) == 0)
        return LM_OK;
    if ((out = json_array()) == NULL)
        return lms_oom(e);
    json_array_foreach (calls, k, tc) {
        const json_t *fn = json_object_get(tc, "function"), *name = json_object_get(fn, "name");
        const char *id = lms_jstr(tc, "id");
        json_t *args = lms_tool_args_object(lms_jstr(fn, "arguments"));
        if (args == NULL) {
            json_decref(out);
            return lms_bad_request(
                e, "messages[%zu].tool_calls[%zu].function.arguments must be a JSON object", i, k);
        }
        if (lms_aadd(out, json_pack("{s:{s:O,s:o}}", "function", "name", name, "arguments", args)) <
                0 ||
            (id != NULL && json_object_set(names, id, (json_t *)name) < 0)) {
            json_decref(out);
            return lms_oom(e);
        }
    }
    return lms_oset(om, "tool_calls", out) < 0 ? lms_oom(e) : LM_OK;
}

/* One message; developer -> system, a tool result names its function
 * (tool_name, looked up by tool_call_id; fallback: the message's name). */
static int ol_message(const json_t *m, size_t i, json_t *names, json_t *msgs, lm_err *e)
{
    const char *role = lms_jstr(m, "role"), *id = lms_jstr(m, "tool_call_id");
    const json_t *name = id ? json_object_get(names, id) : NULL;
    char where[48];
    json_t *om;
    int rc;

    if (lms_streq(role, "developer"))
        role = "system";
    if (lms_streq(role, "function"))
        return lms_unsupported(e, "messages[%zu]: Ollama has no \"function\" role (use tools)", i);
    if ((om = json_pack("{s:s}", "role", role)) == NULL)
        return lms_oom(e);
    snprintf(where, sizeof where, "messages[%zu].content", i);
    rc = ol_content(json_object_get(m, "content"), lms_streq(role, "user"), where, om, e);
    if (rc == LM_OK && lms_streq(role, "assistant"))
        rc = ol_tool_calls(json_object_get(m, "tool_calls"), i, om, names, e);
    if (name == NULL)
        name = json_object_get(m, "name");
    if (rc == LM_OK && lms_streq(role, "tool") && json_is_string(name) &&
        json_object_set(om, "tool_name", (json_t *)name) < 0)
        rc = lms_oom(e);
    if (rc != LM_OK) {
        json_decref(om);
        return rc;
    }
    return lms_aadd(msgs, om) < 0 ? lms_oom(e) : LM_OK;
}

/* ------------------------------------------------------------------ chat */

/* response_format: json_object -> "json", json_schema -> the schema. */
static int ol_format(const json_t *rf, json_t *body)
{
    const char *type = lms_jstr(rf, "type");
    json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
    if (lms_streq(type, "json_schema") && json_is_object(schema))
        return json_object_set(body, "format", schema);
    if (lms_streq(type, "json_object") || lms_streq(type, "json_schema"))
        return lms_oset(body, "format", json_string("json"));
    return 0; /* "text": Ollama's default */
}

/* "stream" is always explicit: Ollama streams when it is absent. */
static int ol_build_chat(const ol_inst *in, const lm_call *c, const char *model,
                         const json_t *canon, lm_ureq *u, lm_err *e)
{
    const json_t *msgs = json_object_get(canon, "messages"), *m;
    json_t *tools = json_object_get(canon, "tools"), *stop = NULL;
    json_t *body = json_pack("{s:s,s:b}", "model", model, "stream", c->stream);
    json_t *opts = json_object(), *names = json_object(), *jm = json_array();
    size_t i;
    int rc = body && opts && names && jm && lms_copy_params(canon, opts, ol_options) == 0
                 ? LM_OK
                 : lms_oom(e);

    json_array_foreach (msgs, i, m)
        if (rc == LM_OK)
            rc = ol_message(m, i, names, jm, e);
    if (rc == LM_OK)
        rc = lms_stop_list(json_object_get(canon, "stop"), SIZE_MAX, &stop, e);
    if (rc == LM_OK &&
        (json_object_set(body, "messages", jm) < 0 ||
         (json_array_size(stop) > 0 && json_object_set(opts, "stop", stop) < 0) ||
         (json_object_size(opts) > 0 && json_object_set(body, "options", opts) < 0) ||
         (json_array_size(tools) > 0 && json_object_set(body, "tools", tools) < 0) ||
         ol_format(json_object_get(canon, "response_format"), body) < 0))
        rc = lms_oom(e);
    json_decref(opts);
    json_decref(names);
    json_decref(jm);
    json_decref(stop);
    if (rc != LM_OK) {
        json_decref(body);
        return rc;
    }
    return lms_post_json_auth(in->h, u, in->base, "/api/chat", in->auth, body, e);
}

/* ------------------------------------------------------------------ embeddings */

/* dimensions is forwarded: servers without it ignore unknown fields. */
static int ol_build_embed(const ol_inst *in, const char *model, const json_t *canon, lm_ureq *u,
                          lm_err *e)
{
    const json_t *input = json_object_get(canon, "input"), *v;
    json_t *body;
    size_t i;

    json_array_foreach (input, i, v)
        if (!json_is_string(v))
            return lms_unsupported(e, "input[%zu]: Ollama embeddings take text, not tokens", i);
    body = json_pack("{s:s,s:O}", "model", model, "input", input);
    if (body == NULL || lms_copy_params(canon, body, ol_embed_params) < 0) {
        json_decref(body);
        return lms_oom(e);
    }
    return lms_post_json_auth(in->h, u, in->base, "/api/embed", in->auth, body, e);
}

/* c->model is the upstream model id the kernel mapped (never NULL); the
 * request state only counts streamed tool calls. */
int ol_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const ol_inst *in = istate;
    ol_req *rs = in->h->alloc(sizeof *rs);

    if (rs == NULL)
        return lms_oom(e);
    rs->ntools = 0;
    c->rstate = rs;
    if (c->op == LM_OP_EMBED)
        return ol_build_embed(in, c->model, canon, u, e);
    return ol_build_chat(in, c, c->model, canon, u, e);
}
