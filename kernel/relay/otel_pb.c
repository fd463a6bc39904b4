/* otel_pb.c - OTLP/protobuf encoding of span records (otel_enc.h), by hand:
 * varints, length-delimited fields and fixed64 times, after
 * opentelemetry/proto/{collector/trace,trace,common,resource}/v1. A span's
 * length is known only once it is written, so its bytes are moved up by
 * the length's size (a memmove of one span); the two outer messages'
 * headers go into a gap left before the first span instead, and the body
 * starts at b->off. */
#include "relay/otel_enc.h"

#include <stdlib.h>

/* Tags: (field << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited). */
enum {
    T_RESOURCE_SPANS = 0x0a, /* ExportTraceServiceRequest.resource_spans = 1 */
    T_RS_RESOURCE = 0x0a,    /* ResourceSpans.resource = 1 */
    T_RS_SCOPE_SPANS = 0x12, /* ResourceSpans.scope_spans = 2 */
    T_RES_ATTR = 0x0a,       /* Resource.attributes = 1 */
    T_SS_SCOPE = 0x0a,       /* ScopeSpans.scope = 1 */
    T_SS_SPANS = 0x12,       /* ScopeSpans.spans = 2 */
    T_SCOPE_NAME = 0x0a,     /* InstrumentationScope.name = 1 */
    T_TRACE_ID = 0x0a,       /* Span.trace_id = 1 (bytes) */
    T_SPAN_ID = 0x12,        /* Span.span_id = 2 */
    T_PARENT = 0x22,         /* Span.parent_span_id = 4 */
    T_NAME = 0x2a,           /* Span.name = 5 */
    T_KIND = 0x30,           /* Span.kind = 6 */
    T_START = 0x39,          /* Span.start_time_unix_nano = 7 (fixed64) */
    T_END = 0x41,            /* Span.end_time_unix_nano = 8 */
    T_SPAN_ATTR = 0x4a,      /* Span.attributes = 9 */
    T_STATUS = 0x7a,         /* Span.status = 15 */
    T_STATUS_CODE = 0x18,    /* Status.code = 3 */
    T_KEY = 0x0a,            /* KeyValue.key = 1 */
    T_VALUE = 0x12,          /* KeyValue.value = 2 */
    T_STRING = 0x0a,         /* AnyValue.string_value = 1 */
    T_BOOL = 0x10,           /* AnyValue.bool_value = 2 */
    T_INT = 0x18,            /* AnyValue.int_value = 3 */
    T_DOUBLE = 0x21,         /* AnyValue.double_value = 4 (fixed64) */
    T_ARRAY = 0x2a,          /* AnyValue.array_value = 5 */
    T_VALUES = 0x0a,         /* ArrayValue.values = 1 */
};

static size_t vlen(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t vput(uint8_t *d, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        d[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    d[n++] = (uint8_t)v;
    return n;
}

/* A tag and a varint. */
static void tag_varint(lm_otel_buf_t *b, uint8_t tag, uint64_t v)
{
    if (b->cap - b->len < 11)
        lm_otel_buf_grow(b, 11);
    if (b->failed)
        return;
    uint8_t *d = (uint8_t *)b->p + b->len;
    d[0] = tag;
    b->len += 1 + vput(d + 1, v);
}

static void tag_fixed64(lm_otel_buf_t *b, uint8_t tag, uint64_t v)
{
    uint8_t t[9];
    t[0] = tag;
    for (int i = 0; i < 8; i++)
        t[1 + i] = (uint8_t)(v >> (8 * i));
    lm_otel_put(b, t, 9);
}

/* s[0, n)'s length once each invalid UTF-8 byte is U+FFFD (3 bytes);
 * *dirty tells whether any is. Plain ASCII goes eight bytes a step. */
static size_t clean_len(const unsigned char *s, size_t n, int *dirty)
{
    size_t out = n;
    *dirty = 0;
    for (size_t i = 0; i < n;) {
        uint64_t w;
        if (n - i >= 8 && (memcpy(&w, s + i, 8), (w & 0x8080808080808080ull) == 0)) {
            i += 8; /* eight ASCII bytes */
            continue;
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t u = lm_otel_utf8_len(s + i, n - i);
        if (u) {
            i += u;
            continue;
        }
        out += 2;
        *dirty = 1;
        i++;
    }
    return out;
}

static void clean_put(lm_otel_buf_t *b, const unsigned char *s, size_t n)
{
    const unsigned char *run = s, *p = s, *end = s + n;
    while (p < end) {
        size_t u = *p < 0x80 ? 1 : lm_otel_utf8_len(p, (size_t)(end - p));
        if (u) {
            p += u;
            continue;
        }
        lm_otel_put(b, run, (size_t)(p - run));
        lm_otel_put(b, "\xef\xbf\xbd", 3);
        run = ++p;
    }
    lm_otel_put(b, run, (size_t)(p - run));
}

/* One attribute value (AnyValue's oneof). */
typedef struct val_s {
    enum { V_STR, V_INT, V_DOUBLE, V_BOOL, V_STR1 /* an array of one string */ } type;
    const char *s;
    size_t n;
    int64_t i;
    double d;
} val_t;

/* A string field's bytes, known before it is written. */
typedef struct sized_s {
    const unsigned char *s;
    size_t n, clean;
    int dirty;
} sized_t;

static sized_t sized(const char *s, size_t n)
{
    sized_t z = {(const unsigned char *)s, n, 0, 0};
    z.clean = clean_len(z.s, n, &z.dirty);
    return z;
}

static void str_body(lm_otel_buf_t *b, const sized_t *z)
{
    if (z->dirty)
        clean_put(b, z->s, z->n);
    else
        lm_otel_put(b, z->s, z->n);
}

static void str_field(lm_otel_buf_t *b, uint8_t tag, const char *s, size_t n)
{
    sized_t z = sized(s, n);
    tag_varint(b, tag, z.clean);
    str_body(b, &z);
}

/* KeyValue{key, AnyValue} as field `tag` of its parent; sizes computed
 * ahead, so nothing moves. */
static void kv(lm_otel_buf_t *b, uint8_t tag, const char *key, size_t klen, const val_t *v)
{
    sized_t z = {0};
    size_t any, inner = 0;
    switch (v->type) {
    case V_STR:
    case V_STR1:
        z = sized(v->s, v->n);
        any = inner = 1 + vlen(z.clean) + z.clean;
        if (v->type == V_STR1) /* AnyValue{array_value: ArrayValue{values: [inner]}} */
            any = 1 + vlen(1 + vlen(inner) + inner) + 1 + vlen(inner) + inner;
        break;
    case V_INT: any = 1 + vlen((uint64_t)v->i); break;
    case V_DOUBLE: any = 9; break;
    default: any = 2;
    }
    size_t kvn = 1 + vlen(klen) + klen + 1 + vlen(any) + any;
    /* everything but a string's bytes and a double, in one reservation */
    if (b->cap - b->len < 1 + 10 + kvn)
        lm_otel_buf_grow(b, 1 + 10 + kvn);
    if (b->failed)
        return;
    uint8_t *d = (uint8_t *)b->p + b->len, *d0 = d;
    *d++ = tag;
    d += vput(d, kvn);
    *d++ = T_KEY;
    d += vput(d, klen);
    memcpy(d, key, klen);
    d += klen;
    *d++ = T_VALUE;
    d += vput(d, any);
    if (v->type == V_STR1) { /* then the array's one value, as a V_STR */
        *d++ = T_ARRAY;
        d += vput(d, 1 + vlen(inner) + inner);
        *d++ = T_VALUES;
        d += vput(d, inner);
    }
    switch (v->type) {
    case V_STR1:
    case V_STR:
        *d++ = T_STRING;
        d += vput(d, z.clean);
        b->len += (size_t)(d - d0);
        str_body(b, &z);
        return;
    case V_INT:
        *d++ = T_INT;
        d += vput(d, (uint64_t)v->i);
        break;
    case V_DOUBLE: {
        uint64_t u;
        memcpy(&u, &v->d, 8);
        *d++ = T_DOUBLE;
        for (int i = 0; i < 8; i++)
            *d++ = (uint8_t)(u >> (8 * i));
        break;
    }
    default: *d++ = T_BOOL; *d++ = v->i != 0;
    }
    b->len += (size_t)(d - d0);
}

#define ATTR_S(b, k, v)                                                                            \
    do {                                                                                           \
        const char *v_ = (v);                                                                      \
        if (v_ && *v_) {                                                                           \
            val_t x_ = {.type = V_STR, .s = v_, .n = strlen(v_)};                                  \
            kv((b), T_SPAN_ATTR, (k), sizeof(k) - 1, &x_);                                         \
        }                                                                                          \
    } while (0)
#define ATTR_I(b, k, v)                                                                            \
    do {                                                                                           \
        val_t x_ = {.type = V_INT, .i = (v)};                                                      \
        kv((b), T_SPAN_ATTR, (k), sizeof(k) - 1, &x_);                                             \
    } while (0)

/* Opens a span: its tag now, its length at span_close. */
static size_t span_open(lm_otel_buf_t *b)
{
    lm_otel_put(b, "\x12", 1); /* T_SS_SPANS */
    return b->len;
}

static void span_close(lm_otel_buf_t *b, size_t at)
{
    if (b->failed)
        return;
    size_t n = b->len - at, k = vlen(n);
    if (b->cap - b->len < k)
        lm_otel_buf_grow(b, k);
    if (b->failed)
        return;
    memmove(b->p + at + k, b->p + at, n);
    vput((uint8_t *)b->p + at, n);
    b->len += k;
}

/* The fields every span has, before its attributes. */
static void span_head(lm_otel_buf_t *b, const lm_otel_rec_t *r, const char *op, const uint8_t *span,
                      const uint8_t *parent, const char *model, int kind, int64_t start,
                      int64_t end)
{
    uint8_t ids[2 + 16 + 2 + 8] = {T_TRACE_ID, 16};
    memcpy(ids + 2, r->trace_id, 16);
    ids[18] = T_SPAN_ID;
    ids[19] = 8;
    memcpy(ids + 20, span, 8);
    lm_otel_put(b, ids, sizeof(ids));
    if (parent) {
        uint8_t p[10] = {T_PARENT, 8};
        memcpy(p + 2, parent, 8);
        lm_otel_put(b, p, sizeof(p));
    }
    char name[sizeof(r->operation) + sizeof(r->model_req) + 2];
    size_t on = strnlen(op, sizeof(r->operation) - 1), mn = model && *model ? strlen(model) : 1;
    if (mn > sizeof(name) - on - 2)
        mn = sizeof(name) - on - 2;
    memcpy(name, op, on);
    name[on] = ' ';
    memcpy(name + on + 1, model && *model ? model : "-", mn);
    str_field(b, T_NAME, name, on + 1 + mn);
    tag_varint(b, T_KIND, (uint64_t)kind); /* 1 INTERNAL, 2 SERVER, 3 CLIENT */
    tag_fixed64(b, T_START, (uint64_t)start);
    tag_fixed64(b, T_END, (uint64_t)(end > start ? end : start));
}

static void status(lm_otel_buf_t *b, int error)
{
    uint8_t s[4] = {T_STATUS, 2, T_STATUS_CODE, error ? 2 : 1}; /* STATUS_CODE_ERROR / _OK */
    lm_otel_put(b, s, 4);
}

static void request_span(lm_otel_buf_t *b, const lm_otel_rec_t *r, int64_t shift)
{
    size_t at = span_open(b);
    span_head(b, r, r->operation, r->span_id, r->has_parent ? r->parent_id : NULL, r->model_req, 2,
              r->start_ns + shift, r->end_ns + shift);
    ATTR_S(b, "gen_ai.operation.name", r->operation);
    ATTR_S(b, "gen_ai.system", r->system);
    ATTR_S(b, "gen_ai.request.model", r->model_req);
    ATTR_S(b, "gen_ai.response.model", r->model_resp);
    if (r->input_tokens >= 0)
        ATTR_I(b, "gen_ai.usage.input_tokens", r->input_tokens);
    if (r->output_tokens >= 0)
        ATTR_I(b, "gen_ai.usage.output_tokens", r->output_tokens);
    if (r->finish[0]) {
        val_t v = {.type = V_STR1, .s = r->finish, .n = strlen(r->finish)};
        kv(b, T_SPAN_ATTR, "gen_ai.response.finish_reasons",
           sizeof("gen_ai.response.finish_reasons") - 1, &v);
    }
    ATTR_I(b, "http.response.status_code", r->status);
    ATTR_S(b, "error.type", r->error_code);
    ATTR_S(b, "longmen.request_id", r->request_id);
    ATTR_S(b, "longmen.api", r->api);
    ATTR_S(b, "longmen.channel", r->channel);
    ATTR_S(b, "longmen.key.name", r->key_name);
    if (r->key_id > 0)
        ATTR_I(b, "longmen.key.id", r->key_id);
    ATTR_I(b, "longmen.attempts", r->nattempts);
    ATTR_I(b, "longmen.cost_micros", r->cost);
    ATTR_I(b, "longmen.generation", r->generation);
    ATTR_I(b, "longmen.stream", r->stream);
    if (r->ttft_ms > 0)
        ATTR_I(b, "longmen.ttft_ms", r->ttft_ms);
    ATTR_S(b, "gen_ai.prompt", r->prompt);
    ATTR_S(b, "gen_ai.completion", r->completion);
    status(b, r->status >= 400 || r->status == 0);
    span_close(b, at);
}

static void attempt_span(lm_otel_buf_t *b, const lm_otel_rec_t *r, int i, int64_t shift)
{
    const lm_otel_attempt_t *t = &r->attempts[i];
    size_t at = span_open(b);
    span_head(b, r, r->operation, t->span_id, r->span_id, t->model, 3, t->start_ns + shift,
              t->end_ns + shift);
    ATTR_S(b, "gen_ai.operation.name", r->operation);
    ATTR_S(b, "gen_ai.system", t->system);
    ATTR_S(b, "gen_ai.request.model", t->model);
    ATTR_S(b, "longmen.channel", t->channel);
    ATTR_I(b, "longmen.attempt", i + 1);
    if (t->status)
        ATTR_I(b, "http.response.status_code", t->status);
    status(b, t->status == 0 || t->status >= 400);
    span_close(b, at);
}

/* An asynchronous task's polling, named "task MODEL". */
static void task_span(lm_otel_buf_t *b, const lm_otel_rec_t *r, int64_t shift)
{
    const lm_otel_task_t *t = &r->task;
    size_t at = span_open(b);
    span_head(b, r, "task", t->span_id, r->span_id, t->model, 1, t->start_ns + shift,
              t->end_ns + shift);
    ATTR_S(b, "gen_ai.operation.name", r->operation);
    ATTR_S(b, "gen_ai.system", t->system);
    ATTR_S(b, "gen_ai.request.model", t->model);
    ATTR_S(b, "longmen.channel", t->channel);
    ATTR_I(b, "longmen.task.polls", t->polls);
    ATTR_S(b, "longmen.task.outcome", t->outcome);
    status(b, strcmp(t->outcome, "succeeded") != 0);
    span_close(b, at);
}

static const char scope[] = {T_SS_SCOPE, 9, T_SCOPE_NAME, 7, 'l', 'o', 'n', 'g', 'm', 'e', 'n'};

int lm_otel_encode_pb(lm_otel_buf_t *b, const lm_otel_rec_t *const *recs, size_t n,
                      const lm_otel_batch_t *batch)
{
    const char *svc = batch->service_name ? batch->service_name : "longmen";
    val_t sv = {.type = V_STR, .s = svc, .n = strlen(svc)};
    sized_t z = sized(svc, sv.n);
    /* Resource{attributes: [service.name]}: KeyValue's and Resource's sizes */
    size_t any = 1 + vlen(z.clean) + z.clean, kvn = 1 + 1 + 12 + 1 + vlen(any) + any;
    size_t res = 1 + vlen(kvn) + kvn;
    /* The headers before the spans need at most this much: written last,
     * right-aligned against the first span. */
    size_t gap = 3 * 11 + 1 + vlen(res) + res + sizeof(scope);
    b->off = 0;
    b->len = 0;
    b->failed = 0;
    if (b->cap < gap)
        lm_otel_buf_grow(b, gap);
    b->len = b->failed ? 0 : gap;
    for (size_t k = 0; k < n; k++) {
        const lm_otel_rec_t *r = recs[k];
        request_span(b, r, batch->shift_ns);
        for (int i = 0; i < r->nattempts; i++)
            attempt_span(b, r, i, batch->shift_ns);
        if (r->task.start_ns)
            task_span(b, r, batch->shift_ns);
    }
    if (b->failed)
        return -1;
    size_t spans = b->len - gap;
    size_t ss = sizeof(scope) + spans;                   /* ScopeSpans */
    size_t rs = 1 + vlen(res) + res + 1 + vlen(ss) + ss; /* ResourceSpans */
    size_t head = 1 + vlen(rs) + 1 + vlen(res) + res + 1 + vlen(ss) + sizeof(scope);
    size_t end = b->len;
    b->len = b->off = gap - head; /* write the headers into the gap, then restore */
    tag_varint(b, T_RESOURCE_SPANS, rs);
    tag_varint(b, T_RS_RESOURCE, res);
    kv(b, T_RES_ATTR, "service.name", 12, &sv);
    tag_varint(b, T_RS_SCOPE_SPANS, ss);
    lm_otel_put(b, scope, sizeof(scope));
    b->len = end;
    return 0;
}
