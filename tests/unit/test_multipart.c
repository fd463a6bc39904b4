/*
 * test_multipart.c - multipart/form-data read in place (kernel/proto/
 * multipart.c): the boundary from a Content-Type, parts as slices of the
 * body (binary data with NULs, CRLFs and near-delimiters intact), head
 * parameters, and the refusals of malformed forms.
 */
#include "t.h"
#include "proto/multipart.h"

#include <stdlib.h>

typedef struct seen_s {
    int n;
    lm_mp_part_t p[8];
} seen_t;

static int collect(void *arg, const lm_mp_part_t *p)
{
    seen_t *s = arg;
    if (s->n < 8)
        s->p[s->n] = *p;
    s->n++;
    return 0;
}

static int stop_at_second(void *arg, const lm_mp_part_t *p)
{
    (void)p;
    return ++*(int *)arg == 2 ? 7 : 0;
}

static int eq(lm_str s, const char *want, size_t n)
{
    return s.n == n && memcmp(s.p, want, n) == 0;
}
#define EQS(s, lit) eq((s), (lit), sizeof(lit) - 1)

static void test_boundary(void)
{
    char b[LM_MP_BOUNDARY_MAX + 1];
    T_BEGIN("multipart_boundary");
    T_CHECK(lm_mp_boundary("multipart/form-data; boundary=abc123", b, sizeof(b)) == 6, "token");
    T_STREQ(b, "abc123");
    T_CHECK(lm_mp_boundary("Multipart/Form-Data;boundary=\"a b:c\"; charset=x", b, sizeof(b)) == 5,
            "quoted, case");
    T_STREQ(b, "a b:c");
    T_CHECK(lm_mp_boundary("multipart/form-data; charset=utf-8; BOUNDARY=z", b, sizeof(b)) == 1,
            "later param");
    T_CHECK(lm_mp_boundary("application/json", b, sizeof(b)) < 0, "not a form");
    T_CHECK(lm_mp_boundary("multipart/form-datax; boundary=a", b, sizeof(b)) < 0, "prefix only");
    T_CHECK(lm_mp_boundary("multipart/form-data", b, sizeof(b)) < 0, "no boundary");
    T_CHECK(lm_mp_boundary("multipart/form-data; boundary=", b, sizeof(b)) < 0, "empty");
    T_CHECK(lm_mp_boundary("multipart/form-data; boundary=\"\"", b, sizeof(b)) < 0, "empty quoted");
    T_CHECK(lm_mp_boundary(NULL, b, sizeof(b)) < 0, "no header");
    char longb[200] = "multipart/form-data; boundary=";
    memset(longb + strlen(longb), 'x', 71);
    T_CHECK(lm_mp_boundary(longb, b, sizeof(b)) < 0, "71 characters");
    T_CHECK(lm_mp_boundary("multipart/form-data; boundary=\"a\x01\"", b, sizeof(b)) < 0, "control");
    T_CHECK(lm_mp_boundary("multipart/form-data; boundary=abcd", b, 4) < 0, "out too small");
    T_END();
}

static const char file_data[] = "RIFF\0\0\r\n--XY\r\n\r\n\r\n--XYZ-not\0end";

static size_t build(char *out, const char *preamble)
{
    size_t n = 0;
#define ADD(s, len) (memcpy(out + n, (s), (len)), n += (len))
#define ADDS(s)     ADD((s), strlen(s))
    ADDS(preamble);
    ADDS("--XYZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n");
    ADDS("--XYZ  \r\ncontent-disposition: form-data; name=file; filename=\"a \\\"b\\\".wav\"\r\n"
         "Content-Type:  audio/wav\r\n\r\n");
    ADD(file_data, sizeof(file_data) - 1);
    ADDS("\r\n--XYZ\r\nContent-Disposition: form-data; name=\"empty\"\r\n\r\n\r\n");
    ADDS("--XYZ--\r\nepilogue --XYZ junk");
    return n;
}

static void test_parse(void)
{
    char body[1024];
    seen_t s = {0};
    const char *why = NULL;
    T_BEGIN("multipart_parse");
    size_t n = build(body, "");
    T_CHECK(lm_mp_parse(body, n, "XYZ", collect, &s, &why) == 0, "parse: %s", why ? why : "");
    T_CHECK(s.n == 3, "3 parts, got %d", s.n);
    T_CHECK(EQS(s.p[0].name, "model") && EQS(s.p[0].data, "whisper-1") && !s.p[0].has_filename,
            "model part");
    T_CHECK(EQS(s.p[1].name, "file") && s.p[1].has_filename &&
                EQS(s.p[1].filename, "a \\\"b\\\".wav") && EQS(s.p[1].ctype, "audio/wav"),
            "file head");
    T_CHECK(eq(s.p[1].data, file_data, sizeof(file_data) - 1), "file bytes intact (%zu)",
            s.p[1].data.n);
    T_CHECK(s.p[1].data.p > body && s.p[1].data.p < body + n, "a slice of the body, not a copy");
    T_CHECK(EQS(s.p[2].name, "empty") && s.p[2].data.n == 0, "empty part");
    s.n = 0;
    n = build(body, "a preamble\r\n");
    T_CHECK(lm_mp_parse(body, n, "XYZ", collect, &s, &why) == 0 && s.n == 3, "with a preamble");
    int k = 0;
    T_CHECK(lm_mp_parse(body, n, "XYZ", stop_at_second, &k, &why) == 7 && k == 2, "callback stops");
    T_END();
}

static int bad(const char *body, const char *boundary)
{
    seen_t s = {0};
    const char *why = NULL;
    int rc = lm_mp_parse(body, strlen(body), boundary, collect, &s, &why);
    return rc == -1 && why != NULL;
}

static void test_refusals(void)
{
    T_BEGIN("multipart_refusals");
    T_CHECK(bad("", "b"), "empty body");
    T_CHECK(bad("{\"model\":\"x\"}", "b"), "not a form");
    T_CHECK(bad("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx", "b"), "no close");
    T_CHECK(bad("--b\r\nContent-Disposition: form-data; name=\"a\"\r\nx", "b"), "head never ends");
    T_CHECK(bad("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "b"), "no name");
    T_CHECK(bad("--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--", "b"),
            "not form-data");
    T_CHECK(bad("--bX\r\n", "b"), "delimiter without line end");
    T_CHECK(bad("--b\r\n\r\nx\r\n--b--", "b"), "a part without headers has no name");
    T_CHECK(bad("--b--", ""), "empty boundary");
    /* a head over LM_MP_HEAD_MAX */
    size_t big = LM_MP_HEAD_MAX + 100;
    char *h = malloc(big + 64);
    strcpy(h, "--b\r\nContent-Disposition: form-data; name=\"a\"\r\nX: ");
    size_t at = strlen(h);
    memset(h + at, 'x', big);
    strcpy(h + at + big, "\r\n\r\nv\r\n--b--");
    T_CHECK(bad(h, "b"), "head too long");
    free(h);
    /* too many parts */
    char *many = malloc((LM_MP_PARTS_MAX + 2) * 64);
    size_t n = 0;
    for (int i = 0; i <= LM_MP_PARTS_MAX; i++)
        n +=
            (size_t)sprintf(many + n, "--b\r\nContent-Disposition: form-data; name=p\r\n\r\nv\r\n");
    strcpy(many + n, "--b--");
    T_CHECK(bad(many, "b"), "too many parts");
    free(many);
    seen_t s = {0};
    const char *why;
    T_CHECK(lm_mp_parse("--b--\r\n", 7, "b", collect, &s, &why) == 0 && s.n == 0, "no parts");
    T_END();
}

int main(void)
{
    test_boundary();
    test_parse();
    test_refusals();
    T_EXIT();
}
