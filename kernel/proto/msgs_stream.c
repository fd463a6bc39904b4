/* msgs_stream.c - canonical chat.completion.chunk events -> Anthropic's
 * stream events (msgs.h), with per-attempt state. Pure; the request's
 * worker; the state belongs to the relay's attempt. */
#include "proto/msgs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BLK_NONE, BLK_TEXT, BLK_THINK, BLK_TOOL };

typedef struct msgs_stream_s {
    char model[256];
    char id[96];
    int started; /* message_start went out */
    int kind;    /* the open block's kind (BLK_NONE: none open) */
    int index;   /* the open block's index */
    int nblocks; /* blocks opened so far */
    long tool;   /* the open tool block's canonical tool_calls index */
    char finish[32];
} msgs_stream_t;

/* event: name / data: o (stolen). */
static int event(lm_buf_t *out, const char *name, json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s == NULL)
        return -1;
    int rc = lm_buf_adds(out, "event: ") < 0 || lm_buf_adds(out, name) < 0 ||
                     lm_buf_adds(out, "\ndata: ") < 0 || lm_buf_adds(out, s) < 0 ||
                     lm_buf_adds(out, "\n\n") < 0
                 ? -1
                 : 0;
    free(s);
    return rc;
}

void *lm_msgs_stream_new(const char *model, const char *request_id)
{
    msgs_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    snprintf(s->model, sizeof(s->model), "%s", model ? model : "");
    snprintf(s->id, sizeof(s->id), "msg_%s", request_id ? request_id : "longmen");
    return s;
}

void lm_msgs_stream_free(void *st)
{
    free(st);
}

/* message_start (usage is known only at the end: message_delta has it) and
 * Anthropic's opening ping. */
static int start(msgs_stream_t *s, lm_buf_t *out)
{
    if (s->started)
        return 0;
    s->started = 1;
    json_t *m = json_pack("{s:s,s:{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:{s:i,s:i}}}", "type",
                          "message_start", "message", "id", s->id, "type", "message", "role",
                          "assistant", "model", s->model, "content", "stop_reason", "stop_sequence",
                          "usage", "input_tokens", 0, "output_tokens", 0);
    if (event(out, "message_start", m) < 0)
        return -1;
    return event(out, "ping", json_pack("{s:s}", "type", "ping"));
}

static int close_block(msgs_stream_t *s, lm_buf_t *out)
{
    if (s->kind == BLK_NONE)
        return 0;
    s->kind = BLK_NONE;
    return event(out, "content_block_stop",
                 json_pack("{s:s,s:i}", "type", "content_block_stop", "index", s->index));
}

/* Close what is open and open a block of `kind` described by cb (stolen). */
static int open_block(msgs_stream_t *s, int kind, json_t *cb, lm_buf_t *out)
{
    if (close_block(s, out) < 0) {
        json_decref(cb);
        return -1;
    }
    s->kind = kind;
    s->index = s->nblocks++;
    return event(out, "content_block_start",
                 json_pack("{s:s,s:i,s:o}", "type", "content_block_start", "index", s->index,
                           "content_block", cb));
}

static int delta(msgs_stream_t *s, json_t *d, lm_buf_t *out)
{
    return event(
        out, "content_block_delta",
        json_pack("{s:s,s:i,s:o}", "type", "content_block_delta", "index", s->index, "delta", d));
}

/* Reasoning or answer text: appended to the open block of its kind. */
static int text(msgs_stream_t *s, int kind, const char *t, lm_buf_t *out)
{
    if (t == NULL || *t == '\0')
        return 0;
    int think = kind == BLK_THINK;
    if (s->kind != kind &&
        open_block(s, kind,
                   think ? json_pack("{s:s,s:s}", "type", "thinking", "thinking", "")
                         : json_pack("{s:s,s:s}", "type", "text", "text", ""),
                   out) < 0)
        return -1;
    return delta(s,
                 think ? json_pack("{s:s,s:s}", "type", "thinking_delta", "thinking", t)
                       : json_pack("{s:s,s:s}", "type", "text_delta", "text", t),
                 out);
}

/* A tool call's first piece (it has an id or a name) opens a tool_use
 * block; argument pieces are input_json_delta on it. */
static int tool_calls(msgs_stream_t *s, const json_t *tcs, lm_buf_t *out)
{
    size_t i;
    json_t *tc;
    json_array_foreach (tcs, i, tc) {
        json_t *fn = json_object_get(tc, "function");
        json_t *jx = json_object_get(tc, "index");
        long idx = json_is_integer(jx) ? (long)json_integer_value(jx) : 0;
        const char *id = json_string_value(json_object_get(tc, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        int fresh = (id && *id) || (name && *name);
        if (fresh && !(s->kind == BLK_TOOL && s->tool == idx)) {
            if (open_block(s, BLK_TOOL,
                           json_pack("{s:s,s:s,s:s,s:{}}", "type", "tool_use", "id", id ? id : "",
                                     "name", name ? name : "", "input"),
                           out) < 0)
                return -1;
            s->tool = idx;
        }
        if (s->kind != BLK_TOOL || args == NULL || *args == '\0')
            continue; /* arguments without an open call: nothing to attach them to */
        if (delta(s, json_pack("{s:s,s:s}", "type", "input_json_delta", "partial_json", args),
                  out) < 0)
            return -1;
    }
    return 0;
}

int lm_msgs_stream_chunk(void *st, const char *js, size_t n, lm_buf_t *out)
{
    msgs_stream_t *s = st;
    json_t *c = json_loadb(js, n, 0, NULL);
    if (c == NULL)
        return -1;
    int rc = start(s, out);
    json_t *ch = json_array_get(json_object_get(c, "choices"), 0);
    json_t *d = json_object_get(ch, "delta");
    if (rc == 0)
        rc = text(s, BLK_THINK, json_string_value(json_object_get(d, "reasoning_content")), out);
    if (rc == 0)
        rc = text(s, BLK_TEXT, json_string_value(json_object_get(d, "content")), out);
    if (rc == 0)
        rc = tool_calls(s, json_object_get(d, "tool_calls"), out);
    const char *fin = json_string_value(json_object_get(ch, "finish_reason"));
    if (fin)
        snprintf(s->finish, sizeof(s->finish), "%s", fin);
    json_decref(c);
    return rc;
}

static json_int_t count(int64_t v)
{
    return v > 0 ? (json_int_t)v : 0;
}

int lm_msgs_stream_end(void *st, const lm_usage *u, const lm_err *e, lm_buf_t *out)
{
    msgs_stream_t *s = st;
    if (e) { /* Anthropic ends a failed stream with one error event */
        int status;
        char *body = lm_msgs_error(e, &status);
        int rc = lm_buf_adds(out, "event: error\ndata: ") < 0 || lm_buf_adds(out, body) < 0 ||
                         lm_buf_adds(out, "\n\n") < 0
                     ? -1
                     : 0;
        free(body);
        return rc;
    }
    if (start(s, out) < 0 || close_block(s, out) < 0)
        return -1;
    json_int_t cached = count(u->cached), in = count(u->prompt);
    json_t *usage = json_pack("{s:I,s:I}", "input_tokens", in > cached ? in - cached : in,
                              "output_tokens", count(u->completion));
    if (cached > 0 && in > cached)
        json_object_set_new(usage, "cache_read_input_tokens", json_integer(cached));
    json_t *md = json_pack("{s:s,s:{s:s,s:n},s:o}", "type", "message_delta", "delta", "stop_reason",
                           lm_msgs_stop_reason(s->finish[0] ? s->finish : NULL), "stop_sequence",
                           "usage", usage);
    if (event(out, "message_delta", md) < 0)
        return -1;
    return event(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
}
