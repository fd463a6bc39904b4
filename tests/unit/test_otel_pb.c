/* test_otel_pb.c - the OTLP/protobuf encoder (relay/otel_enc.h), read back
 * with a tiny protobuf decoder written here from the wire format (varint,
 * fixed64, length-delimited): the message nesting, ids as bytes, times as
 * fixed64 shifted by the batch, string/int/array attributes, negative
 * ints as 10-byte varints, status codes, invalid UTF-8 replaced, and the
 * buffer reused by a second, smaller batch. */
#include "relay/otel_enc.h"
#include "t.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- the decoder ---- */

typedef struct rd_s {
    const uint8_t *p, *end;
    int bad;
} rd_t;

typedef struct fld_s {
    int num, wire;
    uint64_t v;       /* varint or fixed64 */
    const uint8_t *s; /* length-delimited */
    size_t n;
} fld_t;

static uint64_t varint(rd_t *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) {
            r->bad = 1;
            return 0;
        }
        uint8_t c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
    }
    r->bad = 1;
    return 0;
}

/* The next field, 0 at the end, -1 when malformed. */
static int next(rd_t *r, fld_t *f)
{
    if (r->p >= r->end || r->bad)
        return r->bad ? -1 : 0;
    uint64_t key = varint(r);
    f->num = (int)(key >> 3);
    f->wire = (int)(key & 7);
    if (f->wire == 0) {
        f->v = varint(r);
    } else if (f->wire == 1) {
        if (r->end - r->p < 8)
            return -1;
        f->v = 0;
        for (int i = 0; i < 8; i++)
            f->v |= (uint64_t)r->p[i] << (8 * i);
        r->p += 8;
    } else if (f->wire == 2) {
        f->n = (size_t)varint(r);
        if (r->bad || (size_t)(r->end - r->p) < f->n)
            return -1;
        f->s = r->p;
        r->p += f->n;
    } else {
        return -1;
    }
    return r->bad ? -1 : 1;
}

static rd_t sub(const fld_t *f)
{
    return (rd_t){f->s, f->s + f->n, 0};
}

/* ---- what the decoder gathers ---- */

typedef struct attr_s {
    char key[64];
    int type; /* 's' string, 'i' int, 'a' array of strings */
    char s[256];
    int64_t i;
} attr_t;

typedef struct span_s {
    uint8_t trace[16], id[8], parent[8];
    int has_parent, kind, status;
    char name[256];
    uint64_t start, end;
    attr_t attrs[40];
    int nattrs;
} span_t;

static void copy_str(char *d, size_t cap, const fld_t *f)
{
    size_t n = f->n < cap - 1 ? f->n : cap - 1;
    memcpy(d, f->s, n);
    d[n] = '\0';
}

/* KeyValue into a; 0 or -1. */
static int keyvalue(const fld_t *kvf, attr_t *a)
{
    rd_t r = sub(kvf);
    fld_t f;
    int rc;
    memset(a, 0, sizeof(*a));
    while ((rc = next(&r, &f)) > 0) {
        if (f.num == 1 && f.wire == 2) {
            copy_str(a->key, sizeof(a->key), &f);
        } else if (f.num == 2 && f.wire == 2) { /* AnyValue */
            rd_t v = sub(&f);
            fld_t g;
            if (next(&v, &g) <= 0)
                return -1;
            if (g.num == 1 && g.wire == 2) {
                a->type = 's';
                copy_str(a->s, sizeof(a->s), &g);
            } else if (g.num == 3 && g.wire == 0) {
                a->type = 'i';
                a->i = (int64_t)g.v;
            } else if (g.num == 5 && g.wire == 2) { /* ArrayValue{values: AnyValue...} */
                rd_t av = sub(&g);
                fld_t h, s;
                a->type = 'a';
                if (next(&av, &h) <= 0 || h.num != 1) /* first value only */
                    return -1;
                rd_t one = sub(&h);
                if (next(&one, &s) <= 0 || s.num != 1)
                    return -1;
                copy_str(a->s, sizeof(a->s), &s);
            } else {
                return -1;
            }
        }
    }
    return rc;
}

static int span(const fld_t *sf, span_t *s)
{
    rd_t r = sub(sf);
    fld_t f;
    int rc;
    memset(s, 0, sizeof(*s));
    while ((rc = next(&r, &f)) > 0) {
        if (f.num == 1 && f.n == 16)
            memcpy(s->trace, f.s, 16);
        else if (f.num == 2 && f.n == 8)
            memcpy(s->id, f.s, 8);
        else if (f.num == 4 && f.n == 8)
            memcpy(s->parent, f.s, 8), s->has_parent = 1;
        else if (f.num == 5)
            copy_str(s->name, sizeof(s->name), &f);
        else if (f.num == 6 && f.wire == 0)
            s->kind = (int)f.v;
        else if (f.num == 7 && f.wire == 1)
            s->start = f.v;
        else if (f.num == 8 && f.wire == 1)
            s->end = f.v;
        else if (f.num == 9 && f.wire == 2 && s->nattrs < 40) {
            if (keyvalue(&f, &s->attrs[s->nattrs++]) < 0)
                return -1;
        } else if (f.num == 15 && f.wire == 2) {
            rd_t st = sub(&f);
            fld_t g;
            while (next(&st, &g) > 0)
                if (g.num == 3)
                    s->status = (int)g.v;
        } else
            return -1; /* a field the encoder does not write */
    }
    return rc;
}

/* The whole request: service.name, scope name and the spans. */
static int decode(const uint8_t *p, size_t n, char *service, char *scope, span_t *spans, int max)
{
    rd_t top = {p, p + n, 0};
    fld_t f, g, h;
    int nspans = 0, nrs = 0;
    while (next(&top, &f) > 0) {
        if (f.num != 1 || f.wire != 2 || nrs++)
            return -1; /* exactly one ResourceSpans */
        rd_t rs = sub(&f);
        while (next(&rs, &g) > 0) {
            rd_t in = sub(&g);
            if (g.num == 1) { /* Resource */
                while (next(&in, &h) > 0) {
                    attr_t a;
                    if (h.num != 1 || keyvalue(&h, &a) < 0 || strcmp(a.key, "service.name"))
                        return -1;
                    strcpy(service, a.s);
                }
            } else if (g.num == 2) { /* ScopeSpans */
                while (next(&in, &h) > 0) {
                    if (h.num == 1) {
                        rd_t sc = sub(&h);
                        fld_t k;
                        if (next(&sc, &k) <= 0 || k.num != 1)
                            return -1;
                        copy_str(scope, 64, &k);
                    } else if (h.num == 2 && nspans < max) {
                        if (span(&h, &spans[nspans++]) < 0)
                            return -1;
                    } else {
                        return -1;
                    }
                }
            } else {
                return -1;
            }
        }
    }
    return top.bad ? -1 : nspans;
}

static const attr_t *find(const span_t *s, const char *k)
{
    for (int i = 0; i < s->nattrs; i++)
        if (!strcmp(s->attrs[i].key, k))
            return &s->attrs[i];
    return NULL;
}

static int64_t ival(const span_t *s, const char *k)
{
    const attr_t *a = find(s, k);
    return a && a->type == 'i' ? a->i : -999;
}

static const char *sval(const span_t *s, const char *k)
{
    const attr_t *a = find(s, k);
    return a && (a->type == 's' || a->type == 'a') ? a->s : NULL;
}

static void fill(lm_otel_rec_t *r, int k)
{
    memset(r, 0, sizeof(*r));
    for (int i = 0; i < 16; i++)
        r->trace_id[i] = (uint8_t)(i + 1 + k);
    memset(r->span_id, 0xab + k, 8);
    r->start_ns = 1000;
    r->end_ns = 5000;
    strcpy(r->operation, "chat");
    strcpy(r->model_req, "gpt-x");
    strcpy(r->system, "openai");
    strcpy(r->request_id, k ? "req-2" : "req-1");
    r->input_tokens = 300; /* two varint bytes */
    r->output_tokens = -1; /* unknown: left out */
    r->cost = -3;          /* ten varint bytes */
    r->status = k ? 502 : 200;
    r->generation = 7;
}

int main(void)
{
    static span_t spans[8];
    char service[256] = "", scope[64] = "";
    lm_otel_rec_t a, c;
    fill(&a, 0);
    memset(a.parent_id, 0x01, 8);
    a.has_parent = 1;
    strcpy(a.finish, "stop");
    strcpy(a.key_name, "caf\xc3\xa9 \xff cut\xe2\x82");
    a.nattempts = 1;
    memset(a.attempts[0].span_id, 0xcd, 8);
    a.attempts[0].start_ns = 2000;
    a.attempts[0].end_ns = 4000;
    a.attempts[0].status = 200;
    strcpy(a.attempts[0].channel, "ch");
    strcpy(a.attempts[0].model, "up");
    char *big = malloc(70000); /* a capture text: spans longer than 2^16 */
    memset(big, 'x', 69999);
    big[69999] = '\0';
    a.completion = big;
    fill(&c, 1);

    T_BEGIN("otel_pb_decodes");
    lm_otel_buf_t b = {0};
    const lm_otel_rec_t *recs[2] = {&a, &c};
    lm_otel_batch_t meta = {"svc \xff", 1700000000000000000};
    T_CHECK(lm_otel_encode_pb(&b, recs, 2, &meta) == 0, "encode failed");
    int n = decode((const uint8_t *)b.p + b.off, b.len - b.off, service, scope, spans, 8);
    T_CHECK(n == 3, "%d spans", n);
    T_STREQ(service, "svc \xef\xbf\xbd");
    T_STREQ(scope, "longmen");
    const span_t *s = &spans[0], *k = &spans[1], *e = &spans[2];
    T_CHECK(memcmp(s->trace, a.trace_id, 16) == 0 && memcmp(s->id, a.span_id, 8) == 0, "ids");
    T_CHECK(s->has_parent && memcmp(s->parent, a.parent_id, 8) == 0, "parent");
    T_STREQ(s->name, "chat gpt-x");
    T_CHECK(s->kind == 2 && s->status == 1, "kind %d status %d", s->kind, s->status);
    T_CHECK(s->start == 1700000000000001000ull && s->end == 1700000000000005000ull, "times %llu",
            (unsigned long long)s->start);
    T_CHECK(ival(s, "gen_ai.usage.input_tokens") == 300, "input tokens");
    T_CHECK(ival(s, "longmen.cost_micros") == -3, "cost %lld",
            (long long)ival(s, "longmen.cost_micros"));
    T_CHECK(ival(s, "http.response.status_code") == 200 && ival(s, "longmen.attempts") == 1,
            "status, attempts");
    T_CHECK(find(s, "gen_ai.usage.output_tokens") == NULL && find(s, "gen_ai.prompt") == NULL,
            "unknown count or prompt exported");
    T_CHECK(find(s, "gen_ai.response.finish_reasons") &&
                find(s, "gen_ai.response.finish_reasons")->type == 'a',
            "finish_reasons not an array");
    T_STREQ(sval(s, "gen_ai.response.finish_reasons"), "stop");
    T_STREQ(sval(s, "longmen.key.name"), "caf\xc3\xa9 \xef\xbf\xbd cut\xef\xbf\xbd\xef\xbf\xbd");
    T_STREQ(sval(s, "longmen.request_id"), "req-1");
    T_CHECK(sval(s, "gen_ai.completion") && strlen(sval(s, "gen_ai.completion")) == 255,
            "completion");
    T_CHECK(k->kind == 3 && k->has_parent && memcmp(k->parent, a.span_id, 8) == 0 &&
                memcmp(k->trace, a.trace_id, 16) == 0,
            "attempt span links");
    T_STREQ(k->name, "chat up");
    T_CHECK(k->start == 1700000000000002000ull && ival(k, "longmen.attempt") == 1, "attempt");
    T_STREQ(sval(k, "longmen.channel"), "ch");
    T_CHECK(!e->has_parent && e->status == 2 && ival(e, "http.response.status_code") == 502,
            "second request: root, error status");
    T_STREQ(sval(e, "longmen.request_id"), "req-2");
    T_END();

    T_BEGIN("otel_pb_buffer_reused");
    const lm_otel_rec_t *one[1] = {&c};
    lm_otel_batch_t m2 = {NULL, 0};
    T_CHECK(lm_otel_encode_pb(&b, one, 1, &m2) == 0, "encode failed");
    n = decode((const uint8_t *)b.p + b.off, b.len - b.off, service, scope, spans, 8);
    T_CHECK(n == 1 && spans[0].start == 1000, "%d spans", n);
    T_STREQ(service, "longmen");
    T_CHECK(lm_otel_encode_json(&b, one, 1, &m2) == 0 && b.off == 0 && b.p[0] == '{',
            "JSON after protobuf in the same buffer");
    T_END();

    T_BEGIN("otel_pb_empty");
    T_CHECK(lm_otel_encode_pb(&b, one, 0, &m2) == 0, "encode failed");
    n = decode((const uint8_t *)b.p + b.off, b.len - b.off, service, scope, spans, 8);
    T_CHECK(n == 0, "%d spans", n);
    T_END();
    free(b.p);
    free(big);
    T_EXIT();
}
