/* test_traceparent.c - the W3C traceparent parser and formatter
 * (core/traceparent.h): valid values, every rule that makes one invalid,
 * and a round trip. */
#include "t.h"
#include "core/traceparent.h"

#include <string.h>

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parse(const char *s, lm_traceparent_t *tp)
{
    return lm_traceparent_parse(s, strlen(s), tp);
}

static void test_valid(void)
{
    lm_traceparent_t tp;
    char hex[33];
    T_BEGIN("traceparent_valid");
    T_CHECK(parse(GOOD, &tp) == 0, "good value refused");
    lm_hex_encode(tp.trace_id, 16, hex);
    T_STREQ(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
    lm_hex_encode(tp.span_id, 8, hex);
    T_STREQ(hex, "00f067aa0ba902b7");
    T_CHECK(tp.flags == 1, "flags %u", tp.flags);
    T_CHECK(parse("  " GOOD "\t", &tp) == 0, "surrounding spaces refused");
    /* a later version: the first four fields, more may follow after '-' */
    T_CHECK(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra", &tp) == 0,
            "future version refused");
    T_CHECK(tp.flags == 0, "flags %u", tp.flags);
    T_END();
}

static void test_invalid(void)
{
    static const char *bad[] = {
        "",
        "00",
        GOOD "0",                                                   /* v00 is exactly 55 */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* uppercase */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero span */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  /* not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",  /* flags */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* v>00 needs '-' */
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",  /* short version */
    };
    lm_traceparent_t tp;
    T_BEGIN("traceparent_invalid");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        T_CHECK(parse(bad[i], &tp) == -1, "accepted: '%s'", bad[i]);
        T_CHECK(tp.flags == 0 && tp.trace_id[0] == 0, "not zeroed: '%s'", bad[i]);
    }
    T_CHECK(lm_traceparent_parse(NULL, 0, &tp) == -1, "NULL accepted");
    T_END();
}

static void test_roundtrip(void)
{
    lm_traceparent_t tp;
    char out[LM_TRACEPARENT_LEN + 1];
    T_BEGIN("traceparent_roundtrip");
    T_CHECK(parse(GOOD, &tp) == 0, "parse");
    lm_traceparent_format(tp.trace_id, tp.span_id, tp.flags, out);
    T_STREQ(out, GOOD);
    T_END();
}

int main(void)
{
    test_valid();
    test_invalid();
    test_roundtrip();
    T_EXIT();
}
