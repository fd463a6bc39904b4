/* test_otel.c - the OTLP/JSON encoder (relay/otel_enc.h): the output parses
 * as JSON, carries the ids as hex, int64 values as strings, the parent
 * links and the attributes, and hostile text (quotes, control bytes,
 * invalid or cut UTF-8) stays valid JSON. */
#include "conf/obsconf.h"
#include "relay/otel_enc.h"
#include "t.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static json_t *attr(json_t *span, const char *k)
{
    size_t i;
    json_t *a;
    json_array_foreach (json_object_get(span, "attributes"), i, a)
        if (strcmp(json_string_value(json_object_get(a, "key")), k) == 0)
            return json_object_get(a, "value");
    return NULL;
}

int main(void)
{
    lm_otel_rec_t r;
    memset(&r, 0, sizeof(r));
    for (int i = 0; i < 16; i++)
        r.trace_id[i] = (uint8_t)(i + 1);
    memset(r.span_id, 0xab, 8);
    memset(r.parent_id, 0x01, 8);
    r.has_parent = 1;
    r.start_ns = 1700000000000000000 - 1000; /* monotonic; the batch's shift adds 1000 */
    r.end_ns = r.start_ns + 5000000;
    strcpy(r.operation, "chat");
    strcpy(r.model_req, "m\"od\\el\n\x01");
    strcpy(r.system, "openai");
    strcpy(r.finish, "stop");
    strcpy(r.key_name, "caf\xc3\xa9 \xff cut\xe2\x82");
    r.input_tokens = 7;
    r.output_tokens = -1; /* unknown: left out */
    r.cost = -3;          /* negative integers still encode */
    r.status = 200;
    r.key_id = 10;
    r.generation = 100;
    r.nattempts = 1;
    memset(r.attempts[0].span_id, 0xcd, 8);
    r.attempts[0].status = 502;
    strcpy(r.attempts[0].channel, "ch");
    strcpy(r.attempts[0].model, "up");

    T_BEGIN("otel_encode");
    lm_otel_buf_t b = {0};
    const lm_otel_rec_t *recs[1] = {&r};
    lm_otel_batch_t meta = {NULL, 1000};
    T_CHECK(lm_otel_encode_json(&b, recs, 1, &meta) == 0, "encode failed");
    json_error_t je;
    json_t *doc = json_loadb(b.p, b.len, 0, &je);
    T_CHECK(doc != NULL, "not JSON: %.*s (%s)", (int)b.len, b.p, je.text);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *svc = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    T_STREQ(json_string_value(json_object_get(json_object_get(svc, "value"), "stringValue")),
            "longmen");
    json_t *spans = json_object_get(json_array_get(json_object_get(rs, "scopeSpans"), 0), "spans");
    T_CHECK(json_array_size(spans) == 2, "%zu spans", json_array_size(spans));
    json_t *s = json_array_get(spans, 0), *c = json_array_get(spans, 1);
    T_STREQ(json_string_value(json_object_get(s, "traceId")), "0102030405060708090a0b0c0d0e0f10");
    T_STREQ(json_string_value(json_object_get(s, "parentSpanId")), "0101010101010101");
    T_STREQ(json_string_value(json_object_get(c, "parentSpanId")), "abababababababab");
    T_STREQ(json_string_value(json_object_get(s, "startTimeUnixNano")), "1700000000000000000");
    T_STREQ(json_string_value(json_object_get(s, "name")), "chat m\"od\\el\n\x01");
    T_STREQ(json_string_value(json_object_get(attr(s, "gen_ai.request.model"), "stringValue")),
            "m\"od\\el\n\x01");
    T_STREQ(json_string_value(json_object_get(attr(s, "longmen.key.name"), "stringValue")),
            "caf\xc3\xa9 \xef\xbf\xbd cut\xef\xbf\xbd\xef\xbf\xbd");
    T_STREQ(json_string_value(json_object_get(attr(s, "gen_ai.usage.input_tokens"), "intValue")),
            "7");
    T_STREQ(json_string_value(json_object_get(attr(s, "longmen.cost_micros"), "intValue")), "-3");
    T_STREQ(json_string_value(json_object_get(attr(s, "longmen.key.id"), "intValue")), "10");
    T_STREQ(json_string_value(json_object_get(attr(s, "longmen.generation"), "intValue")), "100");
    T_STREQ(json_string_value(json_object_get(attr(s, "longmen.stream"), "intValue")), "0");
    T_CHECK(attr(s, "gen_ai.usage.output_tokens") == NULL, "unknown count exported");
    T_CHECK(attr(s, "gen_ai.prompt") == NULL, "no content without capture");
    json_t *fr = json_object_get(
        json_object_get(attr(s, "gen_ai.response.finish_reasons"), "arrayValue"), "values");
    T_STREQ(json_string_value(json_object_get(json_array_get(fr, 0), "stringValue")), "stop");
    T_CHECK(json_integer_value(json_object_get(c, "kind")) == 3, "client kind");
    T_CHECK(json_integer_value(json_object_get(json_object_get(c, "status"), "code")) == 2,
            "a 502 attempt is an error");
    json_decref(doc);
    free(b.p);
    T_END();

    T_BEGIN("obsconf_protocol_and_headers");
    lm_obs_conf_t oc;
    char err[256];
    lm_obsconf_init(&oc);
    T_CHECK(oc.otel_protocol == LM_OTEL_PROTOBUF, "protobuf is the default");
    char *p1[] = {"otel_protocol", "http/json"}, *p2[] = {"otel_protocol", "grpc"};
    T_CHECK(lm_obsconf_directive(&oc, p1, 2, err, sizeof(err)) == 0 &&
                oc.otel_protocol == LM_OTEL_JSON,
            "http/json");
    T_CHECK(lm_obsconf_directive(&oc, p2, 2, err, sizeof(err)) < 0, "grpc accepted");
    char *h1[] = {"otel_header", "X-Api-Key", "abc", "def"},
         *h2[] = {"otel_header", "Bad:Name", "v"},
         *h3[] = {"otel_header", "content-type", "text/plain"}, *h4[] = {"otel_header", "X-Only"};
    T_CHECK(lm_obsconf_directive(&oc, h1, 4, err, sizeof(err)) == 0 && oc.notel_headers == 1, "%s",
            err);
    T_STREQ(oc.otel_headers[0], "X-Api-Key: abc def");
    T_CHECK(lm_obsconf_directive(&oc, h2, 3, err, sizeof(err)) < 0, "a colon in a name");
    T_CHECK(lm_obsconf_directive(&oc, h3, 3, err, sizeof(err)) < 0, "Content-Type overridden");
    T_CHECK(lm_obsconf_directive(&oc, h4, 2, err, sizeof(err)) < 0, "no value");
    T_CHECK(oc.notel_headers == 1, "%zu headers", oc.notel_headers);
    lm_obsconf_free(&oc);
    T_END();
    T_EXIT();
}
