/* otel_enc.c - OTLP/JSON encoding of span records (otel_enc.h). Ids are
 * lowercase hex and 64-bit integers are strings, as OTLP/JSON requires.
 * Keys are literals written with their quotes; text runs that need no
 * escape are copied whole. */
#include "relay/otel_enc.h"

#include <stdlib.h>

void lm_otel_buf_grow(lm_otel_buf_t *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 16384;
    while (cap - b->len < n)
        cap *= 2;
    char *np = b->failed ? NULL : realloc(b->p, cap);
    if (np == NULL) {
        b->failed = 1;
        return;
    }
    b->p = np;
    b->cap = cap;
}

#define ADDS(b, lit) lm_otel_put((b), (lit), sizeof(lit) - 1)

/* 1: the byte is copied as is inside a JSON string (printable ASCII but
 * the quote and the backslash). */
static const unsigned char plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* s[0, n) as a JSON string, quotes included. */
static void strn(lm_otel_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *run = p, *end = p + n;
    if (b->cap - b->len < n + 2)
        lm_otel_buf_grow(b, n + 2);
    ADDS(b, "\"");
    while (p < end) {
        if (plain[*p]) {
            p++;
            continue;
        }
        size_t u = *p >= 0x80 ? lm_otel_utf8_len(p, (size_t)(end - p)) : 0;
        if (u) {
            p += u;
            continue;
        }
        lm_otel_put(b, run, (size_t)(p - run));
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            lm_otel_put(b, e, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            lm_otel_put(b, e, 6);
        } else {
            ADDS(b, "\\ufffd");
        }
        run = ++p;
    }
    lm_otel_put(b, run, (size_t)(p - run));
    ADDS(b, "\"");
}

static void str(lm_otel_buf_t *b, const char *s)
{
    strn(b, s ? s : "", s ? strlen(s) : 0);
}

/* v as a quoted decimal (OTLP/JSON's int64 and fixed64), two digits a
 * step (timestamps have 19). */
static void qint(lm_otel_buf_t *b, int64_t v)
{
    static const char d2[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                             "34353637383940414243444546474849505152535455565758596061626364656667"
                             "6869707172737475767778798081828384858687888990919293949596979899";
    char d[24], *p = d + sizeof(d);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    *--p = '"';
    while (u >= 10) {
        p -= 2;
        memcpy(p, d2 + 2 * (u % 100), 2);
        u /= 100;
    }
    if (u || p[0] == '"') /* the last digit, or the only one (0) */
        *--p = (char)('0' + u);
    if (v < 0)
        *--p = '-';
    *--p = '"';
    lm_otel_put(b, p, (size_t)(d + sizeof(d) - p));
}

static void hexid(lm_otel_buf_t *b, const uint8_t *id, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char h[35];
    h[0] = '"';
    for (size_t i = 0; i < n; i++) {
        h[1 + 2 * i] = hex[id[i] >> 4];
        h[2 + 2 * i] = hex[id[i] & 15];
    }
    h[2 * n + 1] = '"';
    lm_otel_put(b, h, 2 * n + 2);
}

/* Attributes: the caller writes "[" and "]"; *first tracks the commas.
 * head is the literal opening of one KeyValue up to its value's scalar. */
static void attr_open(lm_otel_buf_t *b, int *first, const char *head, size_t n)
{
    if (!*first)
        ADDS(b, ",");
    *first = 0;
    lm_otel_put(b, head, n);
}

#define KV(k, type) "{\"key\":\"" k "\",\"value\":{\"" type "\":"
#define ATTR_S(b, f, k, v)                                                                         \
    do {                                                                                           \
        const char *v_ = (v);                                                                      \
        if (v_ && *v_) {                                                                           \
            attr_open((b), (f), KV(k, "stringValue"), sizeof(KV(k, "stringValue")) - 1);           \
            str((b), v_);                                                                          \
            ADDS((b), "}}");                                                                       \
        }                                                                                          \
    } while (0)
#define ATTR_I(b, f, k, v)                                                                         \
    do {                                                                                           \
        attr_open((b), (f), KV(k, "intValue"), sizeof(KV(k, "intValue")) - 1);                     \
        qint((b), (v));                                                                            \
        ADDS((b), "}}");                                                                           \
    } while (0)

/* The fields every span has, up to the opening of "attributes". */
static void span_head(lm_otel_buf_t *b, const lm_otel_rec_t *r, const char *op, const uint8_t *span,
                      const uint8_t *parent, const char *model, int kind, int64_t start,
                      int64_t end, int error)
{
    ADDS(b, "{\"traceId\":");
    hexid(b, r->trace_id, 16);
    ADDS(b, ",\"spanId\":");
    hexid(b, span, 8);
    if (parent) {
        ADDS(b, ",\"parentSpanId\":");
        hexid(b, parent, 8);
    }
    char name[sizeof(r->operation) + sizeof(r->model_req) + 2];
    size_t on = strnlen(op, sizeof(r->operation) - 1), mn = model && *model ? strlen(model) : 1;
    if (mn > sizeof(name) - on - 2)
        mn = sizeof(name) - on - 2;
    memcpy(name, op, on);
    name[on] = ' ';
    memcpy(name + on + 1, model && *model ? model : "-", mn);
    ADDS(b, ",\"name\":");
    strn(b, name, on + 1 + mn);
    if (kind == 2)
        ADDS(b, ",\"kind\":2,\"startTimeUnixNano\":"); /* SPAN_KIND_SERVER */
    else if (kind == 1)
        ADDS(b, ",\"kind\":1,\"startTimeUnixNano\":"); /* SPAN_KIND_INTERNAL */
    else
        ADDS(b, ",\"kind\":3,\"startTimeUnixNano\":"); /* SPAN_KIND_CLIENT */
    qint(b, start);
    ADDS(b, ",\"endTimeUnixNano\":");
    qint(b, end > start ? end : start);
    if (error)
        ADDS(b, ",\"status\":{\"code\":2},\"attributes\":[");
    else
        ADDS(b, ",\"status\":{\"code\":1},\"attributes\":[");
}

static void request_span(lm_otel_buf_t *b, const lm_otel_rec_t *r, int64_t shift)
{
    int f = 1;
    span_head(b, r, r->operation, r->span_id, r->has_parent ? r->parent_id : NULL, r->model_req, 2,
              r->start_ns + shift, r->end_ns + shift, r->status >= 400 || r->status == 0);
    ATTR_S(b, &f, "gen_ai.operation.name", r->operation);
    ATTR_S(b, &f, "gen_ai.system", r->system);
    ATTR_S(b, &f, "gen_ai.request.model", r->model_req);
    ATTR_S(b, &f, "gen_ai.response.model", r->model_resp);
    if (r->input_tokens >= 0)
        ATTR_I(b, &f, "gen_ai.usage.input_tokens", r->input_tokens);
    if (r->output_tokens >= 0)
        ATTR_I(b, &f, "gen_ai.usage.output_tokens", r->output_tokens);
    if (r->finish[0]) {
        attr_open(b, &f, KV("gen_ai.response.finish_reasons", "arrayValue"),
                  sizeof(KV("gen_ai.response.finish_reasons", "arrayValue")) - 1);
        ADDS(b, "{\"values\":[{\"stringValue\":");
        str(b, r->finish);
        ADDS(b, "}]}}}");
    }
    ATTR_I(b, &f, "http.response.status_code", r->status);
    ATTR_S(b, &f, "error.type", r->error_code);
    ATTR_S(b, &f, "longmen.request_id", r->request_id);
    ATTR_S(b, &f, "longmen.api", r->api);
    ATTR_S(b, &f, "longmen.channel", r->channel);
    ATTR_S(b, &f, "longmen.key.name", r->key_name);
    if (r->key_id > 0)
        ATTR_I(b, &f, "longmen.key.id", r->key_id);
    ATTR_I(b, &f, "longmen.attempts", r->nattempts);
    ATTR_I(b, &f, "longmen.cost_micros", r->cost);
    ATTR_I(b, &f, "longmen.generation", r->generation);
    ATTR_I(b, &f, "longmen.stream", r->stream);
    if (r->ttft_ms > 0)
        ATTR_I(b, &f, "longmen.ttft_ms", r->ttft_ms);
    ATTR_S(b, &f, "gen_ai.prompt", r->prompt);
    ATTR_S(b, &f, "gen_ai.completion", r->completion);
    ADDS(b, "]}");
}

static void attempt_span(lm_otel_buf_t *b, const lm_otel_rec_t *r, int i, int64_t shift)
{
    const lm_otel_attempt_t *t = &r->attempts[i];
    int f = 1;
    span_head(b, r, r->operation, t->span_id, r->span_id, t->model, 3, t->start_ns + shift,
              t->end_ns + shift, t->status == 0 || t->status >= 400);
    ATTR_S(b, &f, "gen_ai.operation.name", r->operation);
    ATTR_S(b, &f, "gen_ai.system", t->system);
    ATTR_S(b, &f, "gen_ai.request.model", t->model);
    ATTR_S(b, &f, "longmen.channel", t->channel);
    ATTR_I(b, &f, "longmen.attempt", i + 1);
    if (t->status)
        ATTR_I(b, &f, "http.response.status_code", t->status);
    ADDS(b, "]}");
}

/* An asynchronous task's polling, named "task MODEL". */
static void task_span(lm_otel_buf_t *b, const lm_otel_rec_t *r, int64_t shift)
{
    const lm_otel_task_t *t = &r->task;
    int f = 1;
    span_head(b, r, "task", t->span_id, r->span_id, t->model, 1, t->start_ns + shift,
              t->end_ns + shift, strcmp(t->outcome, "succeeded") != 0);
    ATTR_S(b, &f, "gen_ai.operation.name", r->operation);
    ATTR_S(b, &f, "gen_ai.system", t->system);
    ATTR_S(b, &f, "gen_ai.request.model", t->model);
    ATTR_S(b, &f, "longmen.channel", t->channel);
    ATTR_I(b, &f, "longmen.task.polls", t->polls);
    ATTR_S(b, &f, "longmen.task.outcome", t->outcome);
    ADDS(b, "]}");
}

int lm_otel_encode_json(lm_otel_buf_t *b, const lm_otel_rec_t *const *recs, size_t n,
                        const lm_otel_batch_t *batch)
{
    b->off = b->len = 0;
    b->failed = 0;
    int first = 1;
    ADDS(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    ATTR_S(b, &first, "service.name", batch->service_name ? batch->service_name : "longmen");
    ADDS(b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"longmen\"},\"spans\":[");
    for (size_t k = 0; k < n; k++) {
        const lm_otel_rec_t *r = recs[k];
        if (k)
            ADDS(b, ",");
        request_span(b, r, batch->shift_ns);
        for (int i = 0; i < r->nattempts; i++) {
            ADDS(b, ",");
            attempt_span(b, r, i, batch->shift_ns);
        }
        if (r->task.start_ns) {
            ADDS(b, ",");
            task_span(b, r, batch->shift_ns);
        }
    }
    ADDS(b, "]}]}]}");
    return b->failed ? -1 : 0;
}
