/* traceparent.c - the W3C traceparent header (traceparent.h). */
#include "core/traceparent.h"

#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is invalid in traceparent */
}

/* 2n hex digits at s into out[n]; -1 on a non-hex digit. */
static int hex_decode(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int lm_traceparent_parse(const char *s, size_t n, lm_traceparent_t *out)
{
    uint8_t ver;
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return -1;
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n < LM_TRACEPARENT_LEN || hex_decode(s, 1, &ver) < 0 || ver == 0xff)
        return -1;
    if ((ver == 0 && n != LM_TRACEPARENT_LEN) || (n > LM_TRACEPARENT_LEN && s[55] != '-'))
        return -1;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -1;
    if (hex_decode(s + 3, 16, out->trace_id) < 0 || hex_decode(s + 36, 8, out->span_id) < 0 ||
        hex_decode(s + 53, 1, &out->flags) < 0 || all_zero(out->trace_id, 16) ||
        all_zero(out->span_id, 8)) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    return 0;
}

void lm_hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

void lm_traceparent_format(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags,
                           char *out)
{
    memcpy(out, "00-", 3);
    lm_hex_encode(trace_id, 16, out + 3);
    out[35] = '-';
    lm_hex_encode(span_id, 8, out + 36);
    out[52] = '-';
    lm_hex_encode(&flags, 1, out + 53);
}
