/* gemini_request.c - the canonical request as a Gemini request: contents,
 * systemInstruction, tools, generationConfig, embeddings (gemini.h). */
#include "gemini.h"

#include <stdio.h>
#include <string.h>

static const lms_rename gm_params[] = {{"temperature", NULL},
                                       {"top_p", "topP"},
                                       {"top_k", "topK"},
                                       {"presence_penalty", "presencePenalty"},
                                       {"frequency_penalty", "frequencyPenalty"},
                                       {"seed", NULL},
                                       {"max_tokens", "maxOutputTokens"},
                                       {"max_completion_tokens", "maxOutputTokens"},
                                       {"n", "candidateCount"},
                                       {NULL, NULL}};

/* ---- shared request pieces ---------------------------------------------- */

/* The upstream model id (without "models/"), or NULL when it is unsafe in a
 * URL path: only [A-Za-z0-9._-], so a model name never injects a path. */
static const char *model_id(const lm_call *c, const json_t *canon)
{
    const char *m = lms_nonempty(c->model) ? c->model : lms_jstr(canon, "model");
    if (m != NULL && strncmp(m, "models/", 7) == 0)
        m += 7;
    if (m == NULL || m[0] == '\0' || strlen(m) > 128 ||
        m[strspn(m, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")] != '\0')
        return NULL;
    return m;
}

/* POST {base}/models/{model}{suffix} with the key header; body stolen. */
static int send_request(gm_inst *is, lm_ureq *u, const char *model, const char *suffix,
                        json_t *body, lm_err *e)
{
    char path[256];
    const lms_header hdrs[] = {{"x-goog-api-key", is->api_key}, {NULL, {NULL, 0}}};
    snprintf(path, sizeof(path), "/models/%s%s", model, suffix);
    return lms_post_json(is->h, u, is->base_url, path, hdrs, body, e);
}

/* Remove JSON-schema keywords outside Gemini's OpenAPI subset, in place. */
static void strip_schema(json_t *s)
{
    const char *k;
    json_t *v;
    size_t i;
    void *tmp;
    if (json_is_object(s)) {
        json_object_del(s, "additionalProperties");
        json_object_del(s, "$schema");
        json_object_del(s, "strict");
        json_object_foreach_safe (s, tmp, k, v)
            strip_schema(v);
    } else if (json_is_array(s)) {
        json_array_foreach (s, i, v)
            strip_schema(v);
    }
}

/* ---- chat request: messages --------------------------------------------- */

static int text_part(json_t *parts, const json_t *text, lm_err *e)
{
    if (json_string_length(text) == 0)
        return LM_OK; /* Gemini rejects empty text parts */
    return lms_aadd(parts, json_pack("{s:O}", "text", text)) ? lms_oom(e) : LM_OK;
}

/* Gemini takes inline images only (the API fetches no URL, the plugin does
 * no I/O): data:<type>;base64,<data> -> inlineData. */
static int image_part(json_t *parts, const json_t *part, lm_err *e)
{
    lms_data_url d;
    if (lms_data_url_parse(lms_image_url(part), &d) != 0 || !d.is_base64)
        return lms_bad_request(e, "Gemini takes inline images only: send the image as a "
                                  "data:<type>;base64,<data> URL");
    return lms_aadd(parts, json_pack("{s:{s:s%,s:s%}}", "inlineData", "mimeType", d.media_type.p,
                                     d.media_type.n, "data", d.data.p, d.data.n))
               ? lms_oom(e)
               : LM_OK;
}

/* User content (string or parts) -> Gemini parts: text and inlineData. */
static int user_parts(const json_t *content, json_t *parts, lm_err *e)
{
    size_t i;
    json_t *p;
    int rc = LM_OK;
    if (!json_is_array(content))
        return text_part(parts, content, e);
    json_array_foreach (content, i, p) {
        if (lms_streq(lms_jstr(p, "type"), "image_url"))
            rc = image_part(parts, p, e);
        else if (lms_streq(lms_jstr(p, "type"), "text"))
            rc = text_part(parts, json_object_get(p, "text"), e);
        else
            rc = lms_unsupported(e, "messages[].content[%zu]: Gemini does not take \"%s\" parts", i,
                                 lms_jstr(p, "type") ? lms_jstr(p, "type") : "(no type)");
        if (rc != LM_OK)
            return rc;
    }
    return LM_OK;
}

/* Text-only content as one text part (parts joined by the lmsdk rule). */
static int text_parts(const json_t *content, int mode, json_t *parts, lm_err *e)
{
    lms_buf b = {0};
    int rc = lms_content_text(content, mode, "messages[].content", &b, e);
    if (rc == LM_OK && b.n > 0 && lms_aadd(parts, json_pack("{s:s%}", "text", b.p, b.n)))
        rc = lms_oom(e);
    lms_buf_free(&b);
    return rc;
}

/* Assistant tool_calls -> functionCall parts; remembers id -> name so a
 * later tool message can name its functionResponse. */
static int function_calls(const json_t *calls, json_t *parts, json_t *names, lm_err *e)
{
    size_t i;
    json_t *tc;
    json_array_foreach (calls, i, tc) {
        json_t *fn = json_object_get(tc, "function");
        json_t *args = lms_call_args(fn, e);
        if (args == NULL)
            return LM_EINVAL;
        if (lms_aadd(parts, json_pack("{s:{s:O,s:o}}", "functionCall", "name",
                                      json_object_get(fn, "name"), "args", args)) ||
            (lms_jstr(tc, "id") &&
             json_object_set(names, lms_jstr(tc, "id"), json_object_get(fn, "name"))))
            return lms_oom(e);
    }
    return LM_OK;
}

/* A tool message -> functionResponse{name, response}: the content when it
 * is a JSON object (Gemini wants one), else {"content":"<text>"}. */
static int function_response(const json_t *m, const json_t *names, json_t *parts, lm_err *e)
{
    const char *id = lms_jstr(m, "tool_call_id");
    const json_t *name = id ? json_object_get(names, id) : NULL;
    lms_buf t = {0};
    if (name == NULL)
        name = json_object_get(m, "name");
    if (!json_is_string(name))
        return lms_bad_request(e, "tool message: tool_call_id matches no earlier assistant "
                                  "tool call");
    int rc = lms_content_text(json_object_get(m, "content"), LMS_TEXT_ONLY, "tool message content",
                              &t, e);
    json_t *resp = rc == LM_OK && t.n ? json_loads(t.p, 0, NULL) : NULL;
    if (rc == LM_OK && !json_is_object(resp)) {
        json_decref(resp);
        resp = json_pack("{s:s%}", "content", t.p ? t.p : "", t.n);
    }
    lms_buf_free(&t);
    if (rc == LM_OK && lms_aadd(parts, json_pack("{s:{s:O,s:o}}", "functionResponse", "name", name,
                                                 "response", resp)))
        rc = lms_oom(e);
    return rc;
}

/* One message -> parts for its Gemini role. */
static int message_parts(const json_t *m, const char *role, json_t *names, json_t *parts, lm_err *e)
{
    const json_t *content = json_object_get(m, "content");
    if (lms_streq(role, "user"))
        return user_parts(content, parts, e);
    if (lms_streq(role, "assistant")) {
        int rc = text_parts(content, LMS_SKIP_OTHER, parts, e);
        return rc == LM_OK ? function_calls(json_object_get(m, "tool_calls"), parts, names, e) : rc;
    }
    if (lms_streq(role, "tool"))
        return function_response(m, names, parts, e);
    return lms_bad_request(e, "Gemini does not take messages with role '%s'", role);
}

static int convert_messages(const json_t *in, json_t *body, lm_err *e)
{
    json_t *contents = json_array(), *sys = json_array(), *names = json_object(), *m;
    size_t i;
    int rc = contents && sys && names ? LM_OK : lms_oom(e);
    json_array_foreach (in, i, m) {
        const char *role = lms_jstr(m, "role");
        if (rc != LM_OK)
            break;
        if (lms_streq(role, "system") || lms_streq(role, "developer")) {
            rc = text_parts(json_object_get(m, "content"), LMS_TEXT_ONLY, sys, e);
            continue;
        }
        json_t *parts = json_array();
        rc = parts ? message_parts(m, role, names, parts, e) : lms_oom(e);
        if (rc == LM_OK)
            rc = lms_push_turn(contents, lms_streq(role, "assistant") ? "model" : "user", "parts",
                               parts, e);
        else
            json_decref(parts);
    }
    if (rc == LM_OK && json_array_size(contents) == 0)
        rc = lms_bad_request(e, "messages must contain at least one user or assistant message");
    if (rc == LM_OK && json_array_size(sys) > 0 &&
        lms_oset(body, "systemInstruction", json_pack("{s:O}", "parts", sys)))
        rc = lms_oom(e);
    if (rc == LM_OK && json_object_set(body, "contents", contents))
        rc = lms_oom(e);
    json_decref(contents);
    json_decref(sys);
    json_decref(names);
    return rc;
}

/* ---- chat request: tools and generationConfig --------------------------- */

static int convert_tools(const json_t *canon, json_t *body, lm_err *e)
{
    static const char *const modes[] = {NULL, "AUTO", "NONE", "ANY", "ANY"};
    json_t *decls = lms_functions(json_object_get(canon, "tools"), "parameters", e), *d;
    const char *name;
    size_t i;
    int tc = lms_tool_choice(json_object_get(canon, "tool_choice"), &name, e);
    if (decls == NULL || tc < 0) {
        json_decref(decls);
        return decls ? tc : LM_EINVAL;
    }
    json_array_foreach (decls, i, d) {
        json_t *p = json_object_get(d, "parameters");
        /* Gemini rejects an OBJECT schema with no properties: omit it. */
        if (lms_streq(lms_jstr(p, "type"), "object") &&
            json_object_size(json_object_get(p, "properties")) == 0)
            json_object_del(d, "parameters");
        else if (p != NULL && lms_oset(d, "parameters", json_deep_copy(p)) == 0)
            strip_schema(json_object_get(d, "parameters"));
    }
    int rc = json_array_size(decls) > 0
                 ? lms_oset(body, "tools", json_pack("[{s:O}]", "functionDeclarations", decls))
                 : 0;
    json_decref(decls);
    json_t *fcc = tc == LMS_TC_UNSET ? NULL : json_pack("{s:s}", "mode", modes[tc]);
    if (fcc && name && lms_oset(fcc, "allowedFunctionNames", json_pack("[s]", name)))
        rc = -1;
    if (rc == 0 && tc != LMS_TC_UNSET)
        rc = lms_oset(body, "toolConfig", json_pack("{s:O}", "functionCallingConfig", fcc));
    json_decref(fcc);
    return rc ? lms_oom(e) : LM_OK;
}

/* response_format -> responseMimeType (+ responseSchema, cleaned). */
static int response_format(const json_t *rf, json_t *gc, lm_err *e)
{
    const char *type = lms_jstr(rf, "type");
    json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
    if (!lms_streq(type, "json_object") && !lms_streq(type, "json_schema"))
        return LM_OK; /* text or absent */
    if (lms_oset(gc, "responseMimeType", json_string("application/json")))
        return lms_oom(e);
    if (lms_streq(type, "json_schema") && json_is_object(schema)) {
        if (lms_oset(gc, "responseSchema", json_deep_copy(schema)))
            return lms_oom(e);
        strip_schema(json_object_get(gc, "responseSchema"));
    }
    return LM_OK;
}

static int generation_config(const json_t *canon, json_t *body, lm_err *e)
{
    json_t *gc = json_object(), *stop = NULL;
    const json_t *n = json_object_get(canon, "n");
    if (json_integer_value(n) > GM_MAX_CAND) {
        json_decref(gc);
        return lms_bad_request(e, "n is at most %d on Gemini", GM_MAX_CAND);
    }
    int rc = gc && lms_copy_params(canon, gc, gm_params) == 0 ? LM_OK : lms_oom(e);
    if (rc == LM_OK)
        rc = lms_stop_list(json_object_get(canon, "stop"), 1024, &stop, e);
    if (rc == LM_OK && json_array_size(stop) > 0 && json_object_set(gc, "stopSequences", stop))
        rc = lms_oom(e);
    if (rc == LM_OK)
        rc = response_format(json_object_get(canon, "response_format"), gc, e);
    json_decref(stop);
    if (rc == LM_OK && json_object_size(gc) > 0 && json_object_set(body, "generationConfig", gc))
        rc = lms_oom(e);
    json_decref(gc);
    return rc;
}

static int gm_build_chat(gm_inst *is, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const char *model = model_id(c, canon);
    json_t *body = json_object();
    int rc = body ? LM_OK : lms_oom(e);
    if (model == NULL)
        rc = lms_bad_request(e, "model is missing or not a valid Gemini model id");
    if (rc == LM_OK)
        rc = convert_messages(json_object_get(canon, "messages"), body, e);
    if (rc == LM_OK)
        rc = convert_tools(canon, body, e);
    if (rc == LM_OK)
        rc = generation_config(canon, body, e);
    if (rc != LM_OK) {
        json_decref(body);
        return rc;
    }
    return send_request(is, u, model,
                        c->stream ? ":streamGenerateContent?alt=sse" : ":generateContent", body, e);
}

/* ---- embeddings request ------------------------------------------------- */

/* One {"model","content":{"parts":[{"text"}]},"outputDimensionality"?}. */
static json_t *embed_request(const char *mref, json_t *text, json_t *dims)
{
    json_t *r = json_pack("{s:s,s:{s:[{s:O}]}}", "model", mref, "content", "parts", "text", text);
    if (r && json_is_integer(dims) && json_object_set(r, "outputDimensionality", dims)) {
        json_decref(r);
        return NULL;
    }
    return r;
}

static int gm_build_embed(gm_inst *is, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const char *model = model_id(c, canon);
    json_t *input = json_object_get(canon, "input"), *dims = json_object_get(canon, "dimensions");
    json_t *body, *v;
    char mref[160];
    size_t i;

    if (model == NULL)
        return lms_bad_request(e, "model is missing or not a valid Gemini model id");
    snprintf(mref, sizeof(mref), "models/%s", model);
    if (json_is_string(input)) {
        body = embed_request(mref, input, dims);
        return body ? send_request(is, u, model, ":embedContent", body, e) : lms_oom(e);
    }
    body = json_pack("{s:[]}", "requests");
    json_array_foreach (input, i, v) {
        if (!json_is_string(v)) {
            json_decref(body);
            return lms_bad_request(e, "Gemini embeddings take text input only (no token arrays)");
        }
        if (lms_aadd(json_object_get(body, "requests"), embed_request(mref, v, dims))) {
            json_decref(body);
            return lms_oom(e);
        }
    }
    return body ? send_request(is, u, model, ":batchEmbedContents", body, e) : lms_oom(e);
}

int gm_build_request(void *ist, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    gm_inst *is = ist;
    c->rstate = is->h->alloc(sizeof(gm_req));
    if (c->rstate == NULL)
        return lms_oom(e);
    memset(c->rstate, 0, sizeof(gm_req));
    if (c->op == LM_OP_EMBED)
        return gm_build_embed(is, c, canon, u, e);
    return gm_build_chat(is, c, canon, u, e);
}
