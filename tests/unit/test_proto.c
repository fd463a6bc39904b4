/* proto/canon and proto/response: what the kernel does to every channel's
 * request and answer (ABI 1.2). */
#include "proto/canon.h"
#include "proto/response.h"
#include "t.h"

#include <string.h>

static json_t *J(const char *s)
{
    return json_loads(s, 0, NULL);
}

static const lm_param_range ranges[] = {
    {"temperature", 0.01, 1.0}, {"top_p", 0.0, 0.9}, {"max_tokens", 1, 8192}, {NULL, 0, 0}};

static lm_provider provider(uint32_t caps, uint32_t flags)
{
    lm_provider vt = {.hdr = LM_ABI_HDR(lm_provider), .caps = caps, .flags = flags};
    vt.param_ranges = ranges;
    return vt;
}

static void test_clamp(void)
{
    lm_provider vt = provider(LM_CAP_CHAT, 0);
    lm_canon_prep_t p;
    lm_err e;
    T_BEGIN("canon_clamps_into_declared_ranges_on_a_copy");
    json_t *c = J("{\"model\":\"m\",\"temperature\":1.5,\"top_p\":0.5,\"messages\":[]}");
    T_CHECK(lm_canon_prepare(&vt, LM_OP_CHAT, 0, c, &p, &e) == 0, "prepare");
    T_CHECK(p.own && p.canon != c, "a copy");
    T_CHECK(json_real_value(json_object_get(p.canon, "temperature")) == 1.0, "clamped to max");
    T_CHECK(json_real_value(json_object_get(c, "temperature")) == 1.5, "the original is unchanged");
    T_STREQ(p.clamped, "temperature=1.5->1");
    lm_canon_prep_free(&p);
    json_object_set_new(c, "temperature", json_integer(0));
    T_CHECK(lm_canon_prepare(&vt, LM_OP_CHAT, 0, c, &p, &e) == 0, "prepare 0");
    T_CHECK(json_number_value(json_object_get(p.canon, "temperature")) == 0.01,
            "0 becomes the smallest allowed value, never dropped");
    lm_canon_prep_free(&p);
    json_object_set_new(c, "temperature", json_real(0.7));
    T_CHECK(lm_canon_prepare(&vt, LM_OP_CHAT, 0, c, &p, &e) == 0 && !p.own && p.canon == c &&
                p.clamped[0] == '\0',
            "in range: no copy");
    lm_canon_prep_free(&p);
    json_object_set_new(c, "max_tokens", json_integer(100000));
    T_CHECK(lm_canon_prepare(&vt, LM_OP_CHAT, 0, c, &p, &e) == 0 &&
                json_integer_value(json_object_get(p.canon, "max_tokens")) == 8192,
            "an integer stays an integer");
    lm_canon_prep_free(&p);
    json_decref(c);
    T_END();
}

static void test_caps(void)
{
    lm_canon_prep_t p;
    lm_err e;
    T_BEGIN("canon_refuses_what_the_provider_cannot_take");
    lm_provider text_only = provider(LM_CAP_CHAT, 0);
    json_t *img = J("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                    "\"x\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:,\"}}]}]}");
    T_CHECK(lm_canon_prepare(&text_only, LM_OP_CHAT, 0, img, &p, &e) == LM_EINVAL &&
                e.http_status == 400 && strstr(e.msg, "messages[0].content[1]"),
            "image: %s", e.msg);
    T_STREQ(e.code, "vision_unsupported");
    json_t *tools = J("{\"messages\":[],\"tools\":[{\"type\":\"function\"}]}");
    T_CHECK(lm_canon_prepare(&text_only, LM_OP_CHAT, 0, tools, &p, &e) == LM_EINVAL, "tools");
    T_STREQ(e.code, "tools_unsupported");
    json_t *n2 = J("{\"messages\":[],\"n\":2}");
    T_CHECK(lm_canon_prepare(&text_only, LM_OP_CHAT, 0, n2, &p, &e) == LM_EINVAL, "n");
    lm_provider multi = provider(LM_CAP_CHAT, LM_PF_MULTI_CHOICE);
    T_CHECK(lm_canon_prepare(&multi, LM_OP_CHAT, 0, n2, &p, &e) == 0, "n with the flag");
    lm_canon_prep_free(&p);
    lm_provider old = multi;
    old.hdr.minor = 1;
    old.flags = 0;
    T_CHECK(lm_canon_prepare(&old, LM_OP_CHAT, 0, n2, &p, &e) == 0, "a 1.1 plugin decides n");
    lm_canon_prep_free(&p);
    T_CHECK(lm_canon_prepare(&text_only, LM_OP_CHAT, 1, n2, &p, &e) == LM_ENOTSUP, "stream");
    T_CHECK(lm_canon_prepare(&text_only, LM_OP_EMBED, 0, n2, &p, &e) == LM_ENOTSUP, "embed");
    json_decref(img);
    json_decref(tools);
    json_decref(n2);
    T_END();
}

static void test_finish(void)
{
    T_BEGIN("response_usage_writer_and_base64");
    json_t *out = J("{\"object\":\"chat.completion\",\"usage\":{\"prompt_tokens\":5,"
                    "\"completion_tokens\":3}}");
    lm_usage u = LM_USAGE_UNKNOWN;
    T_CHECK(lm_response_finish(out, LM_OP_CHAT, 0, &u) == 0, "finish");
    T_CHECK(u.total == 8, "total derived: %lld", (long long)u.total);
    T_CHECK(json_integer_value(json_object_get(json_object_get(out, "usage"), "total_tokens")) == 8,
            "written");
    json_decref(out);
    out = J("{\"object\":\"list\",\"data\":[{\"index\":0,\"embedding\":[1.0,-2.0]}]}");
    u = (lm_usage){4, -1, -1, -1, -1};
    T_CHECK(lm_response_finish(out, LM_OP_EMBED, 1, &u) == 0, "embed finish");
    json_t *us = json_object_get(out, "usage");
    T_CHECK(json_integer_value(json_object_get(us, "total_tokens")) == 4 &&
                json_object_get(us, "completion_tokens") == NULL,
            "embeddings usage shape");
    /* 1.0f = 00 00 80 3f, -2.0f = 00 00 00 c0 */
    T_STREQ(json_string_value(
                json_object_get(json_array_get(json_object_get(out, "data"), 0), "embedding")),
            "AACAPwAAAMA=");
    json_decref(out);
    json_t *req = J("{\"input\":\"x\",\"encoding_format\":\"base64\"}");
    T_CHECK(lm_canon_take_encoding(req) == 1 && json_object_get(req, "encoding_format") == NULL,
            "taken");
    json_decref(req);
    T_END();
}

int main(void)
{
    test_clamp();
    test_caps();
    test_finish();
    T_EXIT();
}
