/* responses_stream.c - canonical chat.completion.chunk objects, one by one
 * -> the Responses API's SSE events (responses.h). Per-request state, no
 * I/O; thread: the request's worker.
 *
 * The events are the ones the SDKs' stream helpers fold into a response
 * (openai-node ResponseStream, openai-python ResponseStreamState): the
 * first is response.created (they refuse anything else first), an item is
 * announced by output_item.added before its content_part.added and deltas
 * (the deltas are appended to the part the helper holds, so the announced
 * item and part start empty), and the last is response.completed,
 * .incomplete or .failed carrying the whole response. Text and reasoning
 * are one open item at a time; tool calls are items of their own, several
 * of which may be open at once (a provider may interleave their
 * arguments), closed in output order before any later text. */
#include "proto/responses.h"

#include <stdlib.h>
#include <string.h>

#define MAX_CALLS 64

enum { TEXT_NONE, TEXT_MESSAGE, TEXT_REASONING };

typedef struct call_s {
    json_int_t index; /* the canonical tool_calls[].index */
    int out;          /* output_index */
    json_t *item;     /* the function_call item; arguments kept in args */
    lm_buf_t args;
} call_t;

struct lm_resp_stream_s {
    json_t *resp; /* the response object; output holds every item announced */
    char base[128];
    json_int_t seq;
    int started, ended;
    int nout; /* the next output_index */
    int text_kind, text_out;
    lm_buf_t text;
    call_t calls[MAX_CALLS];
    int ncalls;     /* calls seen */
    int first_open; /* calls[first_open..ncalls) are open */
    char finish[32];
    lm_usage usage; /* from a usage chunk */
};

lm_resp_stream_t *lm_resp_stream_new(const char *model, const char *request_id, int64_t created,
                                     const json_t *echo)
{
    lm_resp_stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    snprintf(st->base, sizeof(st->base), "%s", request_id && *request_id ? request_id : "0");
    st->resp = lm_resp_object(st->base, created, model, echo);
    st->usage = (lm_usage)LM_USAGE_UNKNOWN;
    if (st->resp == NULL) {
        free(st);
        return NULL;
    }
    return st;
}

void lm_resp_stream_free(lm_resp_stream_t *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < st->ncalls; i++) {
        json_decref(st->calls[i].item);
        lm_buf_free(&st->calls[i].args);
    }
    lm_buf_free(&st->text);
    json_decref(st->resp);
    free(st);
}

/* Append one event ("event: <type>" and its JSON, which gets the next
 * sequence_number). Takes ev. */
static int emit(lm_resp_stream_t *st, lm_buf_t *out, json_t *ev)
{
    char *s = NULL;
    const char *type = json_string_value(json_object_get(ev, "type"));
    int rc = -1;
    if (type && json_object_set_new(ev, "sequence_number", json_integer(st->seq)) == 0 &&
        (s = json_dumps(ev, JSON_COMPACT)) != NULL) {
        st->seq++;
        lm_buf_adds(out, "event: ");
        lm_buf_adds(out, type);
        lm_buf_adds(out, "\ndata: ");
        lm_buf_adds(out, s);
        rc = lm_buf_adds(out, "\n\n");
    }
    free(s);
    json_decref(ev);
    return rc;
}

static int emit_response(lm_resp_stream_t *st, lm_buf_t *out, const char *type)
{
    return emit(st, out, json_pack("{s:s,s:O}", "type", type, "response", st->resp));
}

static int start(lm_resp_stream_t *st, lm_buf_t *out)
{
    if (st->started)
        return 0;
    st->started = 1;
    if (emit_response(st, out, "response.created") < 0)
        return -1;
    return emit_response(st, out, "response.in_progress");
}

/* Announce a new item at the next output_index (its copy stays in
 * resp.output until its done event replaces it). */
static int add_item(lm_resp_stream_t *st, lm_buf_t *out, json_t *item)
{
    int idx = st->nout;
    if (item == NULL || json_array_append(json_object_get(st->resp, "output"), item) < 0) {
        json_decref(item);
        return -1;
    }
    st->nout++;
    return emit(st, out,
                json_pack("{s:s,s:i,s:o}", "type", "response.output_item.added", "output_index",
                          idx, "item", item));
}

static int done_item(lm_resp_stream_t *st, lm_buf_t *out, int idx, json_t *item)
{
    if (item == NULL ||
        json_array_set(json_object_get(st->resp, "output"), (size_t)idx, item) < 0) {
        json_decref(item);
        return -1;
    }
    return emit(st, out,
                json_pack("{s:s,s:i,s:o}", "type", "response.output_item.done", "output_index", idx,
                          "item", item));
}

static void item_id(const lm_resp_stream_t *st, const char *prefix, int idx, char *id, size_t n)
{
    snprintf(id, n, "%s_%s_%d", prefix, st->base, idx);
}

static json_t *text_part(int kind, const char *text, size_t n)
{
    if (kind == TEXT_REASONING)
        return json_pack("{s:s,s:s%}", "type", "reasoning_text", "text", text, n);
    return json_pack("{s:s,s:s%,s:[]}", "type", "output_text", "text", text, n, "annotations");
}

static int open_text(lm_resp_stream_t *st, lm_buf_t *out, int kind)
{
    char id[180];
    int idx = st->nout;
    item_id(st, kind == TEXT_REASONING ? "rs" : "msg", idx, id, sizeof(id));
    json_t *item =
        kind == TEXT_REASONING
            ? json_pack("{s:s,s:s,s:[],s:[]}", "id", id, "type", "reasoning", "summary", "content")
            : json_pack("{s:s,s:s,s:s,s:s,s:[]}", "id", id, "type", "message", "status",
                        "in_progress", "role", "assistant", "content");
    st->text_kind = kind;
    st->text_out = idx;
    lm_buf_reset(&st->text);
    if (add_item(st, out, item) < 0)
        return -1;
    return emit(st, out,
                json_pack("{s:s,s:s,s:i,s:i,s:o}", "type", "response.content_part.added", "item_id",
                          id, "output_index", idx, "content_index", 0, "part",
                          text_part(kind, "", 0)));
}

static const char *item_status(const lm_resp_stream_t *st)
{
    return !strcmp(st->finish, "length") || !strcmp(st->finish, "content_filter") ? "incomplete"
                                                                                  : "completed";
}

static int close_text(lm_resp_stream_t *st, lm_buf_t *out)
{
    char id[180];
    int kind = st->text_kind, idx = st->text_out, rc = 0;
    if (kind == TEXT_NONE)
        return 0;
    st->text_kind = TEXT_NONE;
    if (st->text.failed)
        return -1;
    const char *text = st->text.len ? st->text.p : "";
    size_t n = st->text.len;
    item_id(st, kind == TEXT_REASONING ? "rs" : "msg", idx, id, sizeof(id));
    if (kind == TEXT_REASONING)
        rc = emit(st, out,
                  json_pack("{s:s,s:s,s:i,s:i,s:s%}", "type", "response.reasoning_text.done",
                            "item_id", id, "output_index", idx, "content_index", 0, "text", text,
                            n));
    else
        rc = emit(st, out,
                  json_pack("{s:s,s:s,s:i,s:i,s:s%,s:[]}", "type", "response.output_text.done",
                            "item_id", id, "output_index", idx, "content_index", 0, "text", text, n,
                            "logprobs"));
    if (rc == 0)
        rc = emit(st, out,
                  json_pack("{s:s,s:s,s:i,s:i,s:o}", "type", "response.content_part.done",
                            "item_id", id, "output_index", idx, "content_index", 0, "part",
                            text_part(kind, text, n)));
    json_t *item =
        kind == TEXT_REASONING
            ? json_pack("{s:s,s:s,s:[],s:[o],s:s}", "id", id, "type", "reasoning", "summary",
                        "content", text_part(kind, text, n), "status", item_status(st))
            : json_pack("{s:s,s:s,s:s,s:s,s:[o]}", "id", id, "type", "message", "status",
                        item_status(st), "role", "assistant", "content", text_part(kind, text, n));
    return rc == 0 ? done_item(st, out, idx, item) : (json_decref(item), -1);
}

static int close_calls(lm_resp_stream_t *st, lm_buf_t *out)
{
    char id[180];
    for (; st->first_open < st->ncalls; st->first_open++) {
        call_t *c = &st->calls[st->first_open];
        if (c->args.failed)
            return -1;
        json_t *args = json_stringn(c->args.len ? c->args.p : "", c->args.len);
        item_id(st, "fc", c->out, id, sizeof(id));
        if (args == NULL || json_object_set_new(c->item, "arguments", args) < 0 ||
            json_object_set_new(c->item, "status", json_string("completed")) < 0)
            return -1;
        if (emit(st, out,
                 json_pack("{s:s,s:s,s:i,s:O,s:O}", "type", "response.function_call_arguments.done",
                           "item_id", id, "output_index", c->out, "name",
                           json_object_get(c->item, "name"), "arguments", args)) < 0 ||
            done_item(st, out, c->out, json_deep_copy(c->item)) < 0)
            return -1;
    }
    return 0;
}

static int text_delta(lm_resp_stream_t *st, lm_buf_t *out, int kind, json_t *s)
{
    char id[180];
    if (close_calls(st, out) < 0)
        return -1;
    if (st->text_kind != kind && (close_text(st, out) < 0 || open_text(st, out, kind) < 0))
        return -1;
    item_id(st, kind == TEXT_REASONING ? "rs" : "msg", st->text_out, id, sizeof(id));
    if (lm_buf_add(&st->text, json_string_value(s), json_string_length(s)) < 0)
        return -1;
    if (kind == TEXT_REASONING)
        return emit(st, out,
                    json_pack("{s:s,s:s,s:i,s:i,s:O}", "type", "response.reasoning_text.delta",
                              "item_id", id, "output_index", st->text_out, "content_index", 0,
                              "delta", s));
    return emit(st, out,
                json_pack("{s:s,s:s,s:i,s:i,s:O,s:[]}", "type", "response.output_text.delta",
                          "item_id", id, "output_index", st->text_out, "content_index", 0, "delta",
                          s, "logprobs"));
}

static call_t *open_call(lm_resp_stream_t *st, lm_buf_t *out, json_int_t index, const json_t *tc)
{
    char id[180], cid[180];
    json_t *jid = json_object_get(tc, "id");
    json_t *name = json_object_get(json_object_get(tc, "function"), "name");
    if (st->ncalls == MAX_CALLS || close_text(st, out) < 0)
        return NULL;
    call_t *c = &st->calls[st->ncalls];
    c->index = index;
    c->out = st->nout;
    item_id(st, "fc", c->out, id, sizeof(id));
    snprintf(cid, sizeof(cid), "call_%s_%d", st->base, c->out);
    c->item =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "id", id, "type", "function_call", "status",
                  "in_progress", "call_id", json_string_length(jid) ? json_string_value(jid) : cid,
                  "name", json_is_string(name) ? json_string_value(name) : "", "arguments", "");
    if (c->item == NULL)
        return NULL;
    st->ncalls++;
    return add_item(st, out, json_deep_copy(c->item)) < 0 ? NULL : c;
}

static int call_delta(lm_resp_stream_t *st, lm_buf_t *out, const json_t *tc)
{
    char id[180];
    json_t *ji = json_object_get(tc, "index"), *fn = json_object_get(tc, "function");
    json_t *args = json_object_get(fn, "arguments"), *name = json_object_get(fn, "name");
    json_int_t index = json_is_integer(ji) ? json_integer_value(ji) : 0;
    call_t *c = NULL;
    if (!json_is_object(tc))
        return 0;
    for (int i = st->first_open; i < st->ncalls && c == NULL; i++)
        if (st->calls[i].index == index)
            c = &st->calls[i];
    if (c == NULL && (c = open_call(st, out, index, tc)) == NULL)
        return st->ncalls == MAX_CALLS ? 0 : -1; /* past the limit: dropped */
    if (json_string_length(name) > 0 && json_string_length(json_object_get(c->item, "name")) == 0)
        json_object_set(c->item, "name", name);
    if (json_string_length(args) == 0)
        return 0;
    if (lm_buf_add(&c->args, json_string_value(args), json_string_length(args)) < 0)
        return -1;
    item_id(st, "fc", c->out, id, sizeof(id));
    return emit(st, out,
                json_pack("{s:s,s:s,s:i,s:O}", "type", "response.function_call_arguments.delta",
                          "item_id", id, "output_index", c->out, "delta", args));
}

static void usage_from_chunk(lm_usage *u, const json_t *ju)
{
    json_t *v;
    if (json_is_integer(v = json_object_get(ju, "prompt_tokens")))
        u->prompt = json_integer_value(v);
    if (json_is_integer(v = json_object_get(ju, "completion_tokens")))
        u->completion = json_integer_value(v);
    if (json_is_integer(v = json_object_get(ju, "total_tokens")))
        u->total = json_integer_value(v);
    v = json_object_get(json_object_get(ju, "prompt_tokens_details"), "cached_tokens");
    if (json_is_integer(v))
        u->cached = json_integer_value(v);
    v = json_object_get(json_object_get(ju, "completion_tokens_details"), "reasoning_tokens");
    if (json_is_integer(v))
        u->reasoning = json_integer_value(v);
}

static int choice(lm_resp_stream_t *st, lm_buf_t *out, const json_t *c)
{
    json_t *ji = json_object_get(c, "index"), *d = json_object_get(c, "delta"), *v;
    const char *fr = json_string_value(json_object_get(c, "finish_reason"));
    size_t i;
    if ((ji && (!json_is_integer(ji) || json_integer_value(ji) != 0)) || !json_is_object(c))
        return 0; /* the Responses API has one choice */
    if (json_string_length(v = json_object_get(d, "reasoning_content")) > 0 &&
        text_delta(st, out, TEXT_REASONING, v) < 0)
        return -1;
    if (json_string_length(v = json_object_get(d, "content")) > 0 &&
        text_delta(st, out, TEXT_MESSAGE, v) < 0)
        return -1;
    json_array_foreach (json_object_get(d, "tool_calls"), i, v)
        if (call_delta(st, out, v) < 0)
            return -1;
    if (fr && st->finish[0] == '\0')
        snprintf(st->finish, sizeof(st->finish), "%s", fr);
    return 0;
}

int lm_resp_stream_chunk(lm_resp_stream_t *st, const char *json, size_t n, lm_buf_t *out)
{
    size_t i;
    json_t *c, *chunk;
    if (st->ended)
        return 0;
    if (start(st, out) < 0)
        return -1;
    chunk = json_loadb(json, n, 0, NULL);
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return 0;
    }
    int rc = 0;
    if (json_is_object(json_object_get(chunk, "usage")))
        usage_from_chunk(&st->usage, json_object_get(chunk, "usage"));
    json_array_foreach (json_object_get(chunk, "choices"), i, c)
        if (rc == 0)
            rc = choice(st, out, c);
    json_decref(chunk);
    return rc;
}

static int fail(lm_resp_stream_t *st, lm_buf_t *out, const lm_err *e)
{
    const char *code = e->code[0]              ? e->code
                       : e->http_status == 429 ? "rate_limit_exceeded"
                                               : "server_error";
    json_t *err = json_pack("{s:s,s:s}", "code", code, "message", e->msg[0] ? e->msg : "error");
    if (err == NULL) /* a message that is not UTF-8 */
        err = json_pack("{s:s,s:s}", "code", "server_error", "message", "upstream error");
    json_object_set_new(st->resp, "status", json_string("failed"));
    json_object_set_new(st->resp, "error", err);
    return emit_response(st, out, "response.failed");
}

int lm_resp_stream_end(lm_resp_stream_t *st, const lm_usage *u, const lm_err *e, lm_buf_t *out)
{
    if (st->ended)
        return 0;
    st->ended = 1;
    if (start(st, out) < 0)
        return -1;
    if (e)
        return fail(st, out, e);
    if (close_text(st, out) < 0 || close_calls(st, out) < 0)
        return -1;
    /* Nothing said at all: one empty message, as the whole answer has. */
    if (st->nout == 0 && (open_text(st, out, TEXT_MESSAGE) < 0 || close_text(st, out) < 0))
        return -1;
    if (u == NULL || (u->prompt < 0 && u->completion < 0 && u->total < 0))
        u = &st->usage;
    int incomplete = lm_resp_set_status(st->resp, st->finish);
    if (json_object_set_new(st->resp, "usage", lm_resp_usage(u)) < 0)
        return -1;
    return emit_response(st, out, incomplete ? "response.incomplete" : "response.completed");
}
