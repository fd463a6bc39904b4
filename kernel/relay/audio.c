/* audio.c - the audio endpoints through the relay (audio.h). Thread: the
 * relay's worker. */
#include "relay/audio.h"

#include "core/clock.h"
#include "core/errors.h"
#include "core/log.h"
#include "proto/multipart.h"
#include "relay/audiobill.h"
#include "relay/audiosse.h"
#include "relay/output.h"
#include "relay/settle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int lm_audio_op(int op)
{
    return op == LM_OP_AUDIO_TRANSCRIBE || op == LM_OP_AUDIO_TRANSLATE || op == LM_OP_AUDIO_SPEECH;
}

static json_t *bad(lm_err *e, const char *code, const char *msg)
{
    lm_error_set(e, LM_EINVAL, 400, "invalid_request_error", code, msg);
    return NULL;
}

/* ---- the upload form ---- */

typedef struct form_s {
    json_t *canon;
    lm_str model;
    int models, files, oom, bad_text;
    char bad_field[32];
} form_t;

static int is_name(const lm_mp_part_t *p, const char *want)
{
    size_t n = strlen(want);
    return p->name.n == n && memcmp(p->name.p, want, n) == 0;
}

/* A text field the kernel reads (routing, scripts): a JSON string of it. */
static int text_field(form_t *f, const lm_mp_part_t *p, const char *name)
{
    json_t *s = json_stringn(p->data.p, p->data.n);
    if (s == NULL) { /* not UTF-8 (or a NUL inside): not text */
        f->bad_text = 1;
        snprintf(f->bad_field, sizeof(f->bad_field), "%s", name);
        return 1;
    }
    if (json_object_set_new(f->canon, name, s) < 0)
        return f->oom = 1;
    return 0;
}

static int on_part(void *arg, const lm_mp_part_t *p)
{
    static const char *const texts[] = {"language", "prompt", "response_format"};
    form_t *f = arg;
    if (is_name(p, "file")) {
        f->files++;
        return 0;
    }
    if (is_name(p, "model")) {
        f->model = p->data;
        f->models++;
        return text_field(f, p, "model");
    }
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (is_name(p, texts[i]))
            return text_field(f, p, texts[i]);
    if (is_name(p, "temperature")) {
        char num[32], *end;
        if (p->data.n == 0 || p->data.n >= sizeof(num))
            return f->bad_text = 2;
        memcpy(num, p->data.p, p->data.n);
        num[p->data.n] = '\0';
        double t = strtod(num, &end);
        if (*end || !(t >= 0 && t <= 2))
            return f->bad_text = 2;
        return json_object_set_new(f->canon, "temperature", json_real(t)) < 0 ? (f->oom = 1) : 0;
    }
    return 0; /* other fields go upstream untouched */
}

static json_t *form_checked(form_t *f, lm_err *e)
{
    static const char *const formats[] = {"json", "text", "srt", "verbose_json", "vtt"};
    if (f->files == 0)
        return bad(e, "missing_file", "'file' is required (a multipart/form-data file part)");
    if (f->files > 1 || f->models > 1)
        return bad(e, "invalid_value", "the form has more than one 'file' or 'model' part");
    if (f->models == 0 || f->model.n == 0)
        return bad(e, "invalid_value", "'model' is required");
    const char *rf = json_string_value(json_object_get(f->canon, "response_format"));
    int ok = rf == NULL;
    for (size_t i = 0; !ok && i < sizeof(formats) / sizeof(formats[0]); i++)
        ok = strcmp(rf, formats[i]) == 0;
    if (!ok)
        return bad(e, "invalid_value",
                   "'response_format' must be one of json, text, srt, verbose_json, vtt");
    json_t *c = f->canon;
    f->canon = NULL;
    return c;
}

static json_t *upload_request(lm_relay_t *r, struct lm_audio_s *a, lm_err *e)
{
    char boundary[LM_MP_BOUNDARY_MAX + 1];
    const char *ct = lm_http_header(r->req, "Content-Type");
    if (lm_mp_boundary(ct, boundary, sizeof(boundary)) < 0)
        return bad(e, "invalid_content_type",
                   "the body must be multipart/form-data with a boundary (fields file and model)");
    snprintf(a->form_ctype, sizeof(a->form_ctype), "%s", ct);
    if (strlen(ct) >= sizeof(a->form_ctype) || strpbrk(ct, "\r\n"))
        return bad(e, "invalid_content_type", "the Content-Type header is too long");
    a->held = lm_http_body_take(r->req, &a->body);
    if (a->held == NULL)
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory"), NULL;
    form_t f = {.canon = json_object()};
    const char *why = NULL;
    int rc = f.canon ? lm_mp_parse(a->body.p, a->body.n, boundary, on_part, &f, &why) : 0;
    json_t *c = NULL;
    if (f.canon == NULL || f.oom)
        lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
    else if (rc < 0)
        bad(e, "invalid_multipart", why);
    else if (f.bad_text == 2)
        bad(e, "invalid_value", "'temperature' must be a number between 0 and 2");
    else if (f.bad_text) {
        lm_err_set(e, LM_EINVAL, 400, "invalid_request_error", "invalid_value",
                   "'%s' must be UTF-8 text", f.bad_field);
    } else if ((c = form_checked(&f, e)) != NULL) {
        a->model_val = f.model;
    }
    json_decref(f.canon);
    return c;
}

/* ---- speech ---- */

static int64_t code_points(const char *s, size_t n)
{
    int64_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

static json_t *speech_request(lm_relay_t *r, struct lm_audio_s *a, lm_err *e)
{
    lm_str body = lm_http_body(r->req);
    json_t *c = json_loadb(body.p, body.n, JSON_REJECT_DUPLICATES, NULL);
    const json_t *in = json_object_get(c, "input"), *v;
    if (!json_is_object(c))
        return json_decref(c), bad(e, "invalid_json", "the body must be a JSON object");
    if (!json_is_string(json_object_get(c, "model")))
        return json_decref(c), bad(e, "invalid_value", "'model' is required");
    if (!json_is_string(in) || json_string_length(in) == 0)
        return json_decref(c), bad(e, "invalid_value", "'input' is required (a non-empty string)");
    if ((v = json_object_get(c, "voice")) && !json_is_string(v) && !json_is_object(v))
        return json_decref(c), bad(e, "invalid_value", "'voice' must be a string");
    if ((v = json_object_get(c, "response_format")) && !json_is_string(v))
        return json_decref(c), bad(e, "invalid_value", "'response_format' must be a string");
    if ((v = json_object_get(c, "speed")) && !json_is_number(v))
        return json_decref(c), bad(e, "invalid_value", "'speed' must be a number");
    a->chars = code_points(json_string_value(in), json_string_length(in));
    return c;
}

json_t *lm_audio_request(lm_relay_t *r, lm_err *e)
{
    struct lm_audio_s *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory"), NULL;
    r->audio = a;
    r->prompt_est = 0; /* no tokens: the admission hold and a token price see none */
    return r->op == LM_OP_AUDIO_SPEECH ? speech_request(r, a, e) : upload_request(r, a, e);
}

/* ---- the attempt ---- */

int lm_audio_attach(lm_relay_t *r, lm_err *e)
{
    struct lm_audio_s *a = r->audio;
    lm_ureq_t *u = &r->ureq;
    if (a) { /* this attempt's answer says its own */
        a->ctype[0] = '\0';
        lm_audiosse_free(a->sse);
        a->sse = NULL;
    }
    if (a == NULL || a->held == NULL || u->has_body || u->local_status)
        return 0;
    const char *m = r->upstream_model;
    size_t mn = strlen(m);
    if (mn == a->model_val.n && memcmp(m, a->model_val.p, mn) == 0) {
        u->lent[0] = a->body;
        u->nlent = 1;
    } else { /* the channel's model name in place of the client's */
        size_t head = (size_t)(a->model_val.p - a->body.p);
        u->lent[0] = (lm_str){a->body.p, head};
        u->lent[1] = (lm_str){m, mn};
        u->lent[2] = (lm_str){a->model_val.p + a->model_val.n, a->body.n - head - a->model_val.n};
        u->nlent = 3;
    }
    lm_str ct = {a->form_ctype, strlen(a->form_ctype)};
    if (lm_host_table.ureq_add_header(u, LM_STR("Content-Type"), ct) != LM_OK)
        return lm_error_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory"), -1;
    return 0;
}

static void start_stream(lm_relay_t *r, struct lm_audio_s *a)
{
    r->headers_sent = 1;
    a->streaming = 1;
    lm_relay_to(r, LM_RELAY_STREAMING);
    r->ttft_ms = (int64_t)((uint64_t)lm_clock_ms() - r->t_start_ms);
    r->client_status = 200;
    lm_out_route_header(r);
    lm_http_stream_start_as(r->req, a->ctype[0] ? a->ctype : "application/octet-stream", r->id);
}

static int64_t millis_up(double secs)
{
    double ms = secs * 1000.0;
    int64_t k = (int64_t)ms;
    return (double)k < ms ? k + 1 : k;
}

/* What a streamed transcript bills so far (audiosse.h): a cut stream's
 * row bills what the client was sent. */
static void transcript_usage(lm_relay_t *r, struct lm_audio_s *a)
{
    double secs;
    lm_audiosse_usage(a->sse, &r->usage, &secs);
    if (secs > 0)
        a->millis = millis_up(secs);
}

/* A 2xx text/event-stream answer to an upload (stream=true) goes to the
 * client as it comes, unchanged, its events read on the way for the bill;
 * with the client gone before its first byte, it is only read. */
static int transcript_data(lm_relay_t *r, struct lm_audio_s *a, const char *p, size_t n,
                           size_t *ret)
{
    if (r->headers_sent && r->req && lm_http_out_pending(r->req) > r->rt->conf->stream_high_water) {
        r->paused = 1; /* slow reader: let the socket buffer drain */
        *ret = LM_UP_PAUSE;
        return 1;
    }
    if (a->sse == NULL && (a->sse = lm_audiosse_new()) == NULL) {
        *ret = 0; /* abort: the attempt fails before any output */
        return 1;
    }
    lm_audiosse_feed(a->sse, p, n);
    transcript_usage(r, a);
    if (r->req) {
        if (!r->headers_sent)
            start_stream(r, a);
        lm_http_stream_write(r->req, p, n);
    }
    *ret = n;
    return 1;
}

int lm_audio_data(lm_relay_t *r, int status, const char *p, size_t n, size_t *ret)
{
    struct lm_audio_s *a = r->audio;
    if (a == NULL)
        return 0;
    if (a->ctype[0] == '\0') {
        const char *ct = lm_upstream_content_type(r->up);
        if (ct && !strpbrk(ct, "\r\n"))
            snprintf(a->ctype, sizeof(a->ctype), "%s", ct);
    }
    if (status < 200 || status >= 300)
        return 0;
    if (r->op != LM_OP_AUDIO_SPEECH)
        return strncasecmp(a->ctype, "text/event-stream", 17) == 0 &&
               transcript_data(r, a, p, n, ret);
    if (r->req == NULL) { /* the client left before the audio began: stop */
        *ret = 0;
        return 1;
    }
    if (r->headers_sent && lm_http_out_pending(r->req) > r->rt->conf->stream_high_water) {
        r->paused = 1; /* slow reader: let the socket buffer drain */
        *ret = LM_UP_PAUSE;
        return 1;
    }
    if (!r->headers_sent)
        start_stream(r, a);
    lm_http_stream_write(r->req, p, n);
    *ret = n;
    return 1;
}

/* What an upload's whole answer reports: usage {"type":"duration",
 * "seconds":N} (OpenAI's current answers), else verbose_json's "duration";
 * usage {"type":"tokens","input_tokens","output_tokens"} (gpt-4o-transcribe)
 * goes to the row as tokens. */
static void read_answer(lm_relay_t *r, struct lm_audio_s *a, lm_str body)
{
    json_t *j = body.n && body.p[0] == '{' ? json_loadb(body.p, body.n, 0, NULL) : NULL;
    const json_t *u = json_object_get(j, "usage"), *s = json_object_get(u, "seconds");
    const json_t *in = json_object_get(u, "input_tokens"),
                 *out = json_object_get(u, "output_tokens");
    if (json_is_integer(in) && json_is_integer(out) && json_integer_value(in) >= 0 &&
        json_integer_value(out) >= 0) {
        r->usage.prompt = (int64_t)json_integer_value(in);
        r->usage.completion = (int64_t)json_integer_value(out);
        r->usage.total = r->usage.prompt + r->usage.completion;
    }
    if (!json_is_number(s))
        s = json_object_get(j, "duration");
    if (json_is_number(s) && json_number_value(s) > 0 && json_number_value(s) < 1e9)
        a->millis = millis_up(json_number_value(s));
    else
        lm_log(LM_LOG_DEBUG, "%s: the audio answer reports no duration; 0 seconds billed", r->id);
    json_decref(j);
}

/* r->usage and the duration of an upload's answer, whole or streamed. */
static void answer_usage(lm_relay_t *r, struct lm_audio_s *a, lm_str body)
{
    r->usage = (lm_usage){0, 0, 0, -1, -1};
    if (a->sse) {
        lm_audiosse_finish(a->sse);
        transcript_usage(r, a);
        if (!a->sse->done)
            lm_log(LM_LOG_INFO, "%s: transcript stream ended without transcript.text.done", r->id);
    } else if (r->op != LM_OP_AUDIO_SPEECH) {
        read_answer(r, a, body);
    }
}

void lm_audio_finish(lm_relay_t *r, lm_str body)
{
    struct lm_audio_s *a = r->audio;
    answer_usage(r, a, body);
    if (r->op == LM_OP_AUDIO_SPEECH || a->sse) {
        if (!a->streaming && r->req)
            start_stream(r, a); /* an empty answer is still one */
        lm_settle(r, 0, 0);     /* the bytes went out as they came: nothing is held back */
        lm_relay_to(r, LM_RELAY_DONE);
        if (r->req)
            lm_http_stream_end(r->req);
        return;
    }
    if (lm_settle(r, 0, 1)) { /* sent by lm_settle_committed once the row is committed */
        r->pending_body = malloc(body.n + 1);
        if (r->pending_body)
            memcpy(r->pending_body, body.p, body.n);
        r->pending_len = r->pending_body ? body.n : 0;
        return;
    }
    lm_relay_to(r, LM_RELAY_DONE);
    r->client_status = 200;
    lm_out_route_header(r);
    if (r->req)
        lm_http_reply(r->req, 200, a->ctype[0] ? a->ctype : "application/json", body.p, body.n,
                      r->id);
}

void lm_audio_background(lm_relay_t *r, lm_str body)
{
    answer_usage(r, r->audio, body);
    lm_settle(r, 1, 0);
    lm_log(LM_LOG_INFO, "%s: client gone; audio answer billed (charge %lld)", r->id,
           (long long)r->charge);
}

void lm_audio_free(lm_relay_t *r)
{
    if (r->audio) {
        lm_http_body_free(r->audio->held);
        lm_audiosse_free(r->audio->sse);
    }
    free(r->audio);
    r->audio = NULL;
}
