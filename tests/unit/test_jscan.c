/* test_jscan.c - the zero-allocation JSON scanner (sdk/lmjscan.h). */
#include "lmjscan.h"
#include "t.h"

#include <stdlib.h>
#include <string.h>

static int valid(const char *s)
{
    return lm_jscan_valid(s, strlen(s));
}

static lm_str S(const char *s)
{
    return (lm_str){s, strlen(s)};
}

static void test_valid(void)
{
    static const char *good[] = {"{}",
                                 "[]",
                                 " {\"a\" : [1, -2.5e+3, true, false, null, \"x\"] } ",
                                 "\"\\u00e9\\ud83d\\ude00\"",
                                 "0",
                                 "-0",
                                 "1E9",
                                 "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
                                 "{\"a\":{\"b\":{\"c\":[[]]}}}",
                                 "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""};
    static const char *bad[] = {"",
                                " ",
                                "{",
                                "}",
                                "{\"a\"}",
                                "{\"a\":}",
                                "{\"a\":1,}",
                                "[1,]",
                                "[1 2]",
                                "01",
                                "1.",
                                "-",
                                "1e",
                                ".5",
                                "tru",
                                "nul",
                                "\"abc",
                                "\"\\x\"",
                                "\"\\u12\"",
                                "\"\\u0000\"",
                                "\"\\ud800\"",
                                "\"\\udc00\\ud800\"",
                                "\"\t\"",
                                "\"\xc3\"",
                                "\"\xc0\xaf\"",
                                "\"\xed\xa0\x80\"",
                                "\"\xf5\x80\x80\x80\"",
                                "{} {}",
                                "{1:2}",
                                "[1]]",
                                "{\"a\":1}}"};
    T_BEGIN("jscan_valid_and_invalid");
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        T_CHECK(valid(good[i]), "should be valid: %s", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        T_CHECK(!valid(bad[i]), "should be invalid: %s", bad[i]);
    T_CHECK(!lm_jscan_valid("{\"a\":\"\0\"}", 8), "a raw NUL inside a string");
    T_CHECK(!lm_jscan_object("[]", 2) && lm_jscan_object(" {} ", 4), "object check");
    T_END();
}

static void test_depth(void)
{
    size_t n = LM_JSCAN_MAX_DEPTH + 1;
    char *s = malloc(2 * n);
    T_BEGIN("jscan_depth_bounded");
    memset(s, '[', n);
    memset(s + n, ']', n);
    T_CHECK(!lm_jscan_valid(s, 2 * n), "depth beyond the bound refused");
    T_CHECK(lm_jscan_valid(s + 1, 2 * n - 2), "depth at the bound accepted");
    T_END();
    free(s);
}

static void test_members(void)
{
    const char *doc = "{\"id\":\"c-1\",\"model\":\"m\\\"x\",\"usage\":{\"total_tokens\":297,"
                      "\"prompt_tokens\":245},\"n\":[1,{\"id\":2}],\"id\":\"c-2\"}";
    static const char *const keys[] = {"id", "usage", "model", "missing"};
    lm_str v[4], t;
    long long x = 0;
    T_BEGIN("jscan_members_spans");
    T_CHECK(lm_jscan_members(doc, strlen(doc), keys, 4, v) == 0, "valid object");
    T_CHECK(lm_jscan_str_is(v[0], "c-2"), "the last of a repeated key");
    T_CHECK(v[2].n == 6 && memcmp(v[2].p, "\"m\\\"x\"", 6) == 0, "escaped string span");
    T_CHECK(v[3].p == NULL, "absent key");
    T_CHECK(lm_jscan_get(v[1], "total_tokens", &t) == 1 && lm_jscan_int(t, &x) == 0 && x == 297,
            "nested get + int");
    T_CHECK(lm_jscan_members("{\"a\":1", 6, keys, 1, v) < 0, "truncated object");
    T_CHECK(lm_jscan_get(S("{}"), "a", &t) == 0, "empty object");
    T_CHECK(lm_jscan_get(S("[1]"), "a", &t) < 0, "not an object");
    T_END();
}

static void test_scalars(void)
{
    long long x = 0;
    T_BEGIN("jscan_int_str_true");
    T_CHECK(lm_jscan_int(S("-9223372036854775808"), &x) == 0 && x == (-9223372036854775807LL - 1),
            "LLONG_MIN");
    T_CHECK(lm_jscan_int(S("9223372036854775808"), &x) < 0, "overflow refused");
    T_CHECK(lm_jscan_int(S("1.0"), &x) < 0 && lm_jscan_int(S("1e3"), &x) < 0, "not integers");
    T_CHECK(lm_jscan_int(S("012"), &x) < 0 && lm_jscan_int(S(""), &x) < 0, "bad integers");
    T_CHECK(lm_jscan_str_is(S("\"abc\""), "abc") && !lm_jscan_str_is(S("\"abcd\""), "abc"),
            "str_is");
    T_CHECK(lm_jscan_true(S("true")) && !lm_jscan_true(S("false")), "true");
    T_CHECK(lm_jscan_skip("[1,2] x", "[1,2] x" + 7) != NULL, "skip stops after the value");
    T_END();
}

static void test_jparse(void)
{
    const char *doc = "{\"model\":\"m\",\"n\":[1,-2,2.5e1,true,null],\"s\":\"a\\u00e9\\ud83d"
                      "\\ude00\\n\",\"o\":{}}";
    json_t *v = lm_jparse_object(doc, strlen(doc), 64);
    char *out = v ? json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    T_BEGIN("jparse_builds_what_jansson_builds");
    T_STREQ(out, "{\"model\":\"m\",\"n\":[1,-2,25.0,true,null],\"s\":\"a\\u00E9\\uD83D\\uDE00\\n\","
                 "\"o\":{}}");
    T_CHECK(lm_jparse_object("{\"a\":1,\"a\":2}", 13, 64) == NULL,
            "a repeated key: Jansson decides");
    T_CHECK(lm_jparse_object("[1]", 3, 64) == NULL, "not an object");
    T_CHECK(lm_jparse_object("{\"a\":[[1]]}", 11, 2) == NULL, "deeper than the bound");
    T_CHECK(lm_jparse_object("{\"a\":1e999}", 11, 64) == NULL, "a real that overflows");
    T_CHECK(lm_jparse_object("{\"a\":99999999999999999999}", 25, 64) == NULL, "a too big integer");
    T_END();
    free(out);
    json_decref(v);
}

static void test_jdump(void)
{
    static const double reals[] = {25.0, 0.1, 1e20, 1e-5, -2.5e-300, 123456789.125, 0.0, -0.0};
    json_t *o =
        json_pack("{s:s,s:s#,s:I,s:[b,n],s:{}}", "k\"\\", "a\x01\n\t\x7f\xc3\xa9\xf0\x9f\x98\x80",
                  "b", "z\0z", 3, "i", (json_int_t)-9007199254740993LL, "l", 1, "o");
    json_t *arr = json_array();
    for (size_t i = 0; i < sizeof(reals) / sizeof(*reals); i++)
        json_array_append_new(arr, json_real(reals[i]));
    json_object_set_new(o, "r", arr);
    json_object_set_new(o, "m", json_integer(-9223372036854775807LL - 1));
    json_object_set_new(o, "z", json_integer(0));
    size_t n = 0;
    char *a = lm_jdump(o, &n), *b = json_dumps(o, JSON_COMPACT);
    T_BEGIN("jdump_writes_json_dumps_bytes");
    T_CHECK(a && b && n == strlen(b) && memcmp(a, b, n) == 0, "%s != %s", a ? a : "(null)",
            b ? b : "(null)");
    json_t *bad = json_stringn_nocheck("\xff", 1);
    T_CHECK(lm_jdump(bad, &n) == NULL, "invalid UTF-8: refused, as Jansson does");
    T_END();
    free(a);
    free(b);
    json_decref(o);
    json_decref(bad);
}

int main(void)
{
    test_jdump();
    test_jparse();
    test_valid();
    test_depth();
    test_members();
    test_scalars();
    T_EXIT();
}
