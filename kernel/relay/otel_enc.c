/* otel_enc.c - OTLP/JSON encoding of span records (otel_enc.h). Ids are
 * lowercase hex and 64-bit integers are strings, as OTLP/JSON requires. */
#include "relay/otel_enc.h"
#include "core/traceparent.h"

#include <stdlib.h>
#include <string.h>

/* The output: appends inline (some 150 per span), growth out of line. */
typedef struct ob_s {
    char *p;
    size_t len, cap;
    int failed;
} ob_t;

static void grow(ob_t *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 4096;
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

static inline void put(ob_t *b, const void *p, size_t n)
{
    if (b->cap - b->len < n)
        grow(b, n);
    if (b->failed)
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

#define ADDS(b, lit) put((b), (lit), sizeof(lit) - 1)

/* The length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0xc2 ? 0 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : p[0] < 0xf5 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
        (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
        return 0; /* overlong, surrogate, beyond U+10FFFF */
    return len;
}

/* s as a JSON string, quotes included. */
static void str(ob_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)(s ? s : ""), *run = p;
    size_t n = strlen((const char *)p);
    const unsigned char *end = p + n;
    ADDS(b, "\"");
    while (p < end) {
        if (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') {
            p++;
            continue;
        }
        size_t u = *p >= 0x80 ? utf8_len(p, (size_t)(end - p)) : 0;
        if (u) {
            p += u;
            continue;
        }
        put(b, run, (size_t)(p - run));
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            put(b, e, 2);
        } else if (*p < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            put(b, e, 6);
        } else {
            ADDS(b, "\\ufffd");
        }
        run = ++p;
    }
    put(b, run, (size_t)(p - run));
    ADDS(b, "\"");
}

/* v as a quoted decimal (OTLP/JSON's int64 and fixed64). */
static void qint(ob_t *b, int64_t v)
{
    char d[24], *p = d + sizeof(d);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    *--p = '"';
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--p = '-';
    *--p = '"';
    put(b, p, (size_t)(d + sizeof(d) - p));
}

static void hexid(ob_t *b, const uint8_t *id, size_t n)
{
    char h[35];
    h[0] = '"';
    lm_hex_encode(id, n, h + 1);
    h[2 * n + 1] = '"';
    put(b, h, 2 * n + 2);
}

/* Attributes: the caller writes "[" and "]"; *first tracks the commas. */
static void attr_head(ob_t *b, int *first, const char *k)
{
    if (!*first)
        ADDS(b, ",");
    *first = 0;
    ADDS(b, "{\"key\":");
    str(b, k);
}

static void attr_str(ob_t *b, int *first, const char *k, const char *v)
{
    if (v == NULL || *v == '\0')
        return;
    attr_head(b, first, k);
    ADDS(b, ",\"value\":{\"stringValue\":");
    str(b, v);
    ADDS(b, "}}");
}

static void attr_int(ob_t *b, int *first, const char *k, int64_t v)
{
    attr_head(b, first, k);
    ADDS(b, ",\"value\":{\"intValue\":");
    qint(b, v);
    ADDS(b, "}}");
}

/* The fields every span has, up to the opening of "attributes". */
static void span_head(ob_t *b, const lm_otel_rec_t *r, const uint8_t *span, const uint8_t *parent,
                      const char *model, int kind, int64_t start, int64_t end, int error)
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
    size_t on = strlen(r->operation), mn = model && *model ? strlen(model) : 1;
    if (mn > sizeof(name) - on - 2)
        mn = sizeof(name) - on - 2;
    memcpy(name, r->operation, on);
    name[on] = ' ';
    memcpy(name + on + 1, model && *model ? model : "-", mn);
    name[on + 1 + mn] = '\0';
    ADDS(b, ",\"name\":");
    str(b, name);
    if (kind == 2)
        ADDS(b, ",\"kind\":2,\"startTimeUnixNano\":"); /* SPAN_KIND_SERVER */
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

static void request_span(ob_t *b, const lm_otel_rec_t *r)
{
    int f = 1;
    span_head(b, r, r->span_id, r->has_parent ? r->parent_id : NULL, r->model_req, 2, r->start_ns,
              r->end_ns, r->status >= 400 || r->status == 0);
    attr_str(b, &f, "gen_ai.operation.name", r->operation);
    attr_str(b, &f, "gen_ai.system", r->system);
    attr_str(b, &f, "gen_ai.request.model", r->model_req);
    attr_str(b, &f, "gen_ai.response.model", r->model_resp);
    if (r->input_tokens >= 0)
        attr_int(b, &f, "gen_ai.usage.input_tokens", r->input_tokens);
    if (r->output_tokens >= 0)
        attr_int(b, &f, "gen_ai.usage.output_tokens", r->output_tokens);
    if (r->finish[0]) {
        attr_head(b, &f, "gen_ai.response.finish_reasons");
        ADDS(b, ",\"value\":{\"arrayValue\":{\"values\":[{\"stringValue\":");
        str(b, r->finish);
        ADDS(b, "}]}}}");
    }
    attr_int(b, &f, "http.response.status_code", r->status);
    attr_str(b, &f, "error.type", r->error_code);
    attr_str(b, &f, "longmen.request_id", r->request_id);
    attr_str(b, &f, "longmen.api", r->api);
    attr_str(b, &f, "longmen.channel", r->channel);
    attr_str(b, &f, "longmen.key.name", r->key_name);
    if (r->key_id > 0)
        attr_int(b, &f, "longmen.key.id", r->key_id);
    attr_int(b, &f, "longmen.attempts", r->nattempts);
    attr_int(b, &f, "longmen.cost_micros", r->cost);
    attr_int(b, &f, "longmen.generation", r->generation);
    attr_int(b, &f, "longmen.stream", r->stream);
    if (r->ttft_ms > 0)
        attr_int(b, &f, "longmen.ttft_ms", r->ttft_ms);
    attr_str(b, &f, "gen_ai.prompt", r->prompt);
    attr_str(b, &f, "gen_ai.completion", r->completion);
    ADDS(b, "]}");
}

static void attempt_span(ob_t *b, const lm_otel_rec_t *r, int i)
{
    const lm_otel_attempt_t *t = &r->attempts[i];
    int f = 1;
    span_head(b, r, t->span_id, r->span_id, t->model, 3, t->start_ns, t->end_ns,
              t->status == 0 || t->status >= 400);
    attr_str(b, &f, "gen_ai.operation.name", r->operation);
    attr_str(b, &f, "gen_ai.system", t->system);
    attr_str(b, &f, "gen_ai.request.model", t->model);
    attr_str(b, &f, "longmen.channel", t->channel);
    attr_int(b, &f, "longmen.attempt", i + 1);
    if (t->status)
        attr_int(b, &f, "http.response.status_code", t->status);
    ADDS(b, "]}");
}

char *lm_otel_encode(const lm_otel_rec_t *recs, const char *service_name)
{
    ob_t b = {0};
    int first = 1;
    ADDS(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    attr_str(&b, &first, "service.name", service_name ? service_name : "longmen");
    ADDS(&b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"longmen\"},\"spans\":[");
    first = 1;
    for (const lm_otel_rec_t *r = recs; r; r = r->next) {
        if (!first)
            ADDS(&b, ",");
        first = 0;
        request_span(&b, r);
        for (int i = 0; i < r->nattempts; i++) {
            ADDS(&b, ",");
            attempt_span(&b, r, i);
        }
    }
    put(&b, "]}]}]}", 7); /* with its NUL */
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
