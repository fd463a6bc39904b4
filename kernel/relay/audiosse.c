/* audiosse.c - a streamed transcript's events read on the way (audiosse.h).
 * Thread: the relay's worker; the reader owns its splitter's buffers. */
#include "relay/audiosse.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

lm_audiosse_t *lm_audiosse_new(void)
{
    lm_audiosse_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    lm_frame_init(&s->frame, LM_FRAME_SSE, 0);
    s->in = s->out = -1;
    s->seconds = -1;
    return s;
}

static int64_t code_points(const char *p, size_t n)
{
    int64_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)p[i] & 0xc0) != 0x80;
    return k;
}

static int64_t count_of(const json_t *o, const char *name)
{
    const json_t *v = json_object_get(o, name);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v) : -1;
}

/* The done event's usage: {"type":"tokens","input_tokens",...} as
 * gpt-4o-transcribe reports it, or {"type":"duration","seconds":N}. */
static void read_usage(lm_audiosse_t *s, const json_t *u)
{
    const json_t *secs = json_object_get(u, "seconds");
    if (json_is_number(secs) && json_number_value(secs) > 0 && json_number_value(secs) < 1e9)
        s->seconds = json_number_value(secs);
    int64_t in = count_of(u, "input_tokens"), out = count_of(u, "output_tokens");
    if (in >= 0 || out >= 0) {
        s->in = in > 0 ? in : 0;
        s->out = out > 0 ? out : 0;
    }
}

static int on_event(void *arg, const lm_event *ev)
{
    lm_audiosse_t *s = arg;
    if (ev->data.n == 0 || ev->data.p[0] != '{')
        return 0; /* "[DONE]" some compatible servers add, or noise */
    json_t *j = json_loadb(ev->data.p, ev->data.n, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    const json_t *d = json_object_get(j, "delta");
    if (type && strcmp(type, "transcript.text.delta") == 0 && json_is_string(d)) {
        s->chars += code_points(json_string_value(d), json_string_length(d));
    } else if (type && strcmp(type, "transcript.text.done") == 0) {
        s->done = 1;
        read_usage(s, json_object_get(j, "usage"));
    }
    json_decref(j);
    return 0;
}

void lm_audiosse_feed(lm_audiosse_t *s, const char *p, size_t n)
{
    if (!s->broken && lm_frame_feed(&s->frame, p, n, on_event, s) != 0) {
        s->broken = 1; /* an event over 1 MiB: not ours to buffer */
        lm_frame_free(&s->frame);
    }
}

void lm_audiosse_finish(lm_audiosse_t *s)
{
    if (!s->broken)
        lm_frame_finish(&s->frame, on_event, s);
    lm_frame_free(&s->frame);
    s->broken = 1; /* nothing more is read */
}

void lm_audiosse_usage(const lm_audiosse_t *s, lm_usage *u, double *seconds)
{
    *u = (lm_usage){-1, (s->chars + 3) / 4, -1, -1, -1};
    if (s->in >= 0) {
        u->prompt = s->in;
        u->completion = s->out;
        u->total = s->in + s->out;
    }
    *seconds = s->seconds;
}

void lm_audiosse_free(lm_audiosse_t *s)
{
    if (s == NULL)
        return;
    lm_frame_free(&s->frame);
    free(s);
}
