/*
 * mock - an offline provider that answers deterministically, so the gateway
 * is useful with no network and no key (make run), and clients can test
 * against it. It answers through host->ureq_local_response with exactly the
 * bytes an OpenAI-compatible upstream would send, so the kernel's response
 * and stream paths run for real.
 *
 *   plain:  "Hello from Longmen! You said: <last user text>"
 *   stream: the same text, one word per chunk
 *   tools:  when the request has tools (or the model is "mock-tools"), a
 *           call to the first tool with every required string property set
 *           to the last user text
 *   embed:  a deterministic 8-dimension vector per input (floats; the kernel
 *           applies encoding_format)
 *
 * The kernel owns the client protocol (ABI 1.2): stream usage goes through
 * emit_usage, never as a chunk of its own.
 */
#include "lmsdk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mock_s {
    const lm_host_api *h;
} mock_t;

static int mock_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    (void)ictx;
    mock_t *st = h->alloc(sizeof(*st));
    if (st == NULL)
        return lms_oom(e);
    st->h = h;
    *istate = st;
    return LM_OK;
}

static void mock_fini(void *istate)
{
    mock_t *st = istate;
    st->h->free(st);
}

/* The text of the last user message (string content or text parts). */
static const char *last_user_text(const json_t *canon)
{
    json_t *msgs = json_object_get(canon, "messages");
    const char *text = "";
    size_t i;
    json_t *m;
    json_array_foreach (msgs, i, m) {
        if (!json_is_string(json_object_get(m, "role")) ||
            strcmp(json_string_value(json_object_get(m, "role")), "user"))
            continue;
        json_t *content = json_object_get(m, "content");
        if (json_is_string(content)) {
            text = json_string_value(content);
        } else if (json_is_array(content)) {
            size_t j;
            json_t *part;
            json_array_foreach (content, j, part) {
                if (json_is_string(json_object_get(part, "text")))
                    text = json_string_value(json_object_get(part, "text"));
            }
        }
    }
    return text;
}

/* Tokens are counted as whitespace-separated words: deterministic and
 * simple enough for a client to predict. */
static int64_t count_words(const char *s)
{
    int64_t n = 0;
    int in = 0;
    for (; *s; s++) {
        int sp = (*s == ' ' || *s == '\n' || *s == '\t');
        if (!sp && !in)
            n++;
        in = !sp;
    }
    return n;
}

static int64_t prompt_words(const json_t *canon)
{
    json_t *msgs = json_object_get(canon, "messages");
    int64_t n = 0;
    size_t i;
    json_t *m;
    json_array_foreach (msgs, i, m) {
        json_t *c = json_object_get(m, "content");
        if (json_is_string(c))
            n += count_words(json_string_value(c));
        n += 1; /* the role */
    }
    return n;
}

static json_t *tool_call(const json_t *canon, const char *text)
{
    json_t *tool = json_array_get(json_object_get(canon, "tools"), 0);
    json_t *fn = json_object_get(tool, "function");
    const char *name = lms_jstr(fn, "name");
    json_t *params = json_object_get(fn, "parameters");
    json_t *args = json_object();
    size_t i;
    json_t *req;
    json_array_foreach (json_object_get(params, "required"), i, req) {
        if (json_is_string(req))
            json_object_set_new(args, json_string_value(req), json_string(text));
    }
    json_t *argstr = lms_json_text(args);
    json_decref(args);
    return lms_tool_call(NULL, 0, json_string("call_mock_1"), name ? name : "tool",
                         argstr ? argstr : json_string("{}"));
}

static json_t *chat_body(const json_t *canon, const lm_call *c, int want_tool, const char *reply)
{
    json_t *msg;
    if (want_tool)
        msg = json_pack("{s:s,s:n,s:[o]}", "role", "assistant", "content", "tool_calls",
                        tool_call(canon, last_user_text(canon)));
    else
        msg = json_pack("{s:s,s:s}", "role", "assistant", "content", reply);
    int64_t p = prompt_words(canon), n = want_tool ? 5 : count_words(reply);
    return json_pack("{s:s,s:s,s:i,s:s,s:[{s:i,s:o,s:n,s:s}],s:{s:I,s:I,s:I}}", "id",
                     "chatcmpl-mock", "object", "chat.completion", "created", 1700000000, "model",
                     c->model, "choices", "index", 0, "message", msg, "logprobs", "finish_reason",
                     want_tool ? "tool_calls" : "stop", "usage", "prompt_tokens", (json_int_t)p,
                     "completion_tokens", (json_int_t)n, "total_tokens", (json_int_t)(p + n));
}

/* One "data: <chunk>" event (chunk stolen). */
static void sse_add(lms_buf *buf, json_t *chunk)
{
    char *s = json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    if (s == NULL) {
        buf->oom = 1;
        return;
    }
    lms_buf_addf(buf, "data: %s\n\n", s);
    free(s);
}

static json_t *chunk_of(const lm_call *c, json_t *delta, const char *finish)
{
    return json_pack("{s:s,s:s,s:i,s:s,s:[{s:i,s:o,s:n,s:o}]}", "id", "chatcmpl-mock", "object",
                     "chat.completion.chunk", "created", 1700000000, "model", c->model, "choices",
                     "index", 0, "delta", delta, "logprobs", "finish_reason",
                     finish ? json_string(finish) : json_null());
}

/* The SSE body an OpenAI upstream would send for the same answer (into buf). */
static void stream_body(const json_t *canon, const lm_call *c, int want_tool, const char *reply,
                        lms_buf *buf)
{
    int64_t p = prompt_words(canon), n = 0;
    sse_add(buf, chunk_of(c, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL));
    if (want_tool) {
        json_t *call = tool_call(canon, last_user_text(canon));
        json_object_set_new(call, "index", json_integer(0));
        sse_add(buf, chunk_of(c, json_pack("{s:[o]}", "tool_calls", call), NULL));
        n = 5;
    } else {
        const char *w = reply;
        while (*w) {
            const char *e = strchr(w + 1, ' ');
            size_t wl = e ? (size_t)(e - w) : strlen(w);
            sse_add(buf, chunk_of(c, json_pack("{s:s%}", "content", w, wl), NULL));
            w += wl;
            n++;
        }
    }
    sse_add(buf, chunk_of(c, json_object(), want_tool ? "tool_calls" : "stop"));
    sse_add(buf,
            json_pack("{s:s,s:s,s:i,s:s,s:[],s:{s:I,s:I,s:I}}", "id", "chatcmpl-mock", "object",
                      "chat.completion.chunk", "created", 1700000000, "model", c->model, "choices",
                      "usage", "prompt_tokens", (json_int_t)p, "completion_tokens", (json_int_t)n,
                      "total_tokens", (json_int_t)(p + n)));
    lms_buf_adds(buf, "data: [DONE]\n\n");
}

static json_t *embed_body(const json_t *canon, const lm_call *c)
{
    json_t *input = json_object_get(canon, "input");
    json_t *data = json_array();
    int64_t tokens = 0;
    size_t count = json_is_array(input) ? json_array_size(input) : 1;
    for (size_t i = 0; i < count; i++) {
        json_t *item = json_is_array(input) ? json_array_get(input, i) : input;
        const char *s = json_is_string(item) ? json_string_value(item) : "";
        uint32_t hsh = 2166136261u;
        for (const char *q = s; *q; q++)
            hsh = (hsh ^ (unsigned char)*q) * 16777619u;
        json_t *vec = json_array();
        for (int d = 0; d < 8; d++)
            json_array_append_new(vec, json_real((double)((hsh >> (d * 4)) & 15) / 16.0));
        json_array_append_new(data, json_pack("{s:s,s:I,s:o}", "object", "embedding", "index",
                                              (json_int_t)i, "embedding", vec));
        tokens += count_words(s);
    }
    return json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data, "model", c->model,
                     "usage", "prompt_tokens", (json_int_t)tokens, "total_tokens",
                     (json_int_t)tokens);
}

/* Answer locally with body (stolen) as the upstream's JSON. */
static int answer_json(const mock_t *st, lm_ureq *u, json_t *body, lm_err *e)
{
    char *s = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (s == NULL)
        return lms_oom(e);
    int rc = st->h->ureq_local_response(u, 200, lm_cstr(s));
    free(s);
    return rc;
}

static int mock_build(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    mock_t *st = istate;
    if (c->op == LM_OP_EMBED)
        return answer_json(st, u, embed_body(canon, c), e);
    int want_tool = json_array_size(json_object_get(canon, "tools")) > 0;
    if (!want_tool && strcmp(c->model, "mock-tools") == 0)
        return lms_bad_request(e, "mock-tools needs a tools array");
    char reply[512];
    snprintf(reply, sizeof(reply), "Hello from Longmen! You said: %s", last_user_text(canon));
    if (!c->stream)
        return answer_json(st, u, chat_body(canon, c, want_tool, reply), e);
    lms_buf body = {0};
    stream_body(canon, c, want_tool, reply, &body);
    int rc = body.oom ? lms_oom(e) : st->h->ureq_local_response(u, 200, (lm_str){body.p, body.n});
    lms_buf_free(&body);
    return rc;
}

/* The body is already OpenAI-shaped: forwarded as is, usage read from it. */
static int mock_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                               lm_usage *usage, lm_err *e)
{
    (void)istate;
    (void)c;
    (void)status;
    json_t *root = lms_parse_object(body, "the mock answer", e);
    if (root == NULL)
        return LM_EUPSTREAM;
    lm_usage_from_json(json_object_get(root, "usage"), usage);
    json_decref(root);
    *out = NULL;
    return LM_OK;
}

/* One OpenAI chunk: its usage goes to emit_usage, the rest (when it has
 * choices) to emit_chunk. */
static int mock_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    mock_t *st = istate;
    lm_usage u;
    (void)c;
    if (lms_event_is_done(ev))
        return LM_DONE;
    json_t *chunk = lms_parse_object(ev->data, "a mock chunk", e);
    if (chunk == NULL)
        return LM_EUPSTREAM;
    int rc = LM_OK;
    if (lm_usage_from_json(json_object_get(chunk, "usage"), &u))
        rc = lms_emit_usage(st->h, out, &u, e);
    json_object_del(chunk, "usage");
    if (rc == LM_OK && json_array_size(json_object_get(chunk, "choices")) > 0) {
        if (st->h->emit_chunk(out, chunk) < 0) /* steals chunk */
            return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "the client stream is closed");
        return LM_OK;
    }
    json_decref(chunk);
    return rc;
}

static int mock_list_models(void *istate, json_t **out, lm_err *e)
{
    (void)istate;
    (void)e;
    *out = json_pack("[s,s]", "mock-1", "mock-tools");
    return LM_OK;
}

static const lm_provider provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "mock",
    .version = "1.2.0",
    .framing = LM_FRAME_SSE, /* the bytes an OpenAI upstream sends */
    .usage_mode = LM_USAGE_CUMULATIVE,
    /* No vision: mock reads text only, so the kernel refuses image parts. */
    .caps = LM_CAP_CHAT | LM_CAP_STREAM | LM_CAP_EMBED | LM_CAP_TOOLS,
    .init = mock_init,
    .fini = mock_fini,
    .list_models = mock_list_models,
    .build_request = mock_build,
    .parse_response = mock_parse_response,
    .parse_event = mock_parse_event,
    .param_ranges = NULL, /* any value is fine: nothing reaches a model */
    .embed_max_inputs = 0,
    .flags = 0, /* one choice per request */
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
