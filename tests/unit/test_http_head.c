/*
 * test_http_head.c - the request head checks of the HTTP front
 * (kernel/http/head.c): limits, control bytes, framing, and the same
 * verdict whatever the segmentation (every split of every case).
 */
#include "http/head.h"
#include "t.h"

#include <stdlib.h>

static lm_head_limits_t lim;

/* One-shot verdict for p[0..n). */
static int scan_once(const char *p, size_t n, lm_head_t *h)
{
    memset(h, 0, sizeof(*h));
    return lm_head_scan(p, n, &lim, h);
}

/* Verdict when the bytes arrive as p[0..cut) then the rest; the state is
 * resumed, as the front does between reads. */
static int scan_split(const char *p, size_t n, size_t cut, lm_head_t *h)
{
    memset(h, 0, sizeof(*h));
    int rc = lm_head_scan(p, cut, &lim, h);
    if (rc != LM_HEAD_MORE)
        return rc;
    return lm_head_scan(p, n, &lim, h);
}

static char *repeat(const char *prefix, char c, size_t n, const char *suffix)
{
    size_t a = strlen(prefix), b = strlen(suffix);
    char *s = malloc(a + n + b + 1);
    memcpy(s, prefix, a);
    memset(s + a, c, n);
    memcpy(s + a + n, suffix, b + 1);
    return s;
}

static void expect_n(const char *name, const char *req, size_t n, int rc, int status)
{
    lm_head_t h;
    T_BEGIN(name);
    int got = scan_once(req, n, &h);
    T_CHECK(got == rc, "rc %d want %d", got, rc);
    if (rc == LM_HEAD_BAD)
        T_CHECK(h.status == status && h.code && h.message, "status %d want %d", h.status, status);
    for (size_t cut = 0; cut <= n; cut++) {
        lm_head_t s;
        int r2 = scan_split(req, n, cut, &s);
        T_CHECK(r2 == got && s.status == h.status && s.head_len == h.head_len && s.body == h.body &&
                    s.content_length == h.content_length,
                "split at %zu: rc %d status %d len %zu (one read: %d %d %zu)", cut, r2, s.status,
                s.head_len, got, h.status, h.head_len);
    }
    T_END();
}

static void test_framing(void)
{
    lm_head_t h;
    const char *get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nNEXT";
    T_BEGIN("head: a GET ends at its blank line, bytes after it are not its own");
    T_CHECK(scan_once(get, strlen(get), &h) == LM_HEAD_DONE, "done");
    T_CHECK(h.head_len == strlen(get) - 4 && h.body == LM_BODY_NONE, "len %zu", h.head_len);
    T_END();
    const char *post = "\r\nPOST /v1/x HTTP/1.1\nContent-Length: 12\nExpect: 100-continue\n\n";
    T_BEGIN("head: LF line ends, leading blank line skipped, Content-Length and Expect read");
    T_CHECK(scan_once(post, strlen(post), &h) == LM_HEAD_DONE, "done");
    T_CHECK(h.skip == 2 && h.body == LM_BODY_LENGTH && h.content_length == 12 && h.expect_continue,
            "skip %zu body %d cl %llu", h.skip, h.body, (unsigned long long)h.content_length);
    T_END();
    const char *ch = "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n";
    T_BEGIN("head: chunked framing");
    T_CHECK(scan_once(ch, strlen(ch), &h) == LM_HEAD_DONE && h.body == LM_BODY_CHUNKED, "chunked");
    T_END();
    T_BEGIN("head: an incomplete head asks for more, even empty");
    T_CHECK(scan_once("", 0, &h) == LM_HEAD_MORE, "empty");
    T_CHECK(scan_once(get, 20, &h) == LM_HEAD_MORE, "partial");
    T_END();
}

/* Literals keep their NUL bytes. */
#define expect(name, lit, rc, status) expect_n(name, lit, sizeof(lit) - 1, rc, status)

static void test_refusals(void)
{
    expect("head: GET is fine", "GET /v1/models/abcdefghij HTTP/1.1\r\nHost: a\r\n\r\n",
           LM_HEAD_DONE, 0);
    expect("head: NUL in a value -> 400", "GET / HTTP/1.1\r\nAuthorization: Bearer k\0junk\r\n\r\n",
           LM_HEAD_BAD, 400);
    expect("head: \\x01 in a value -> 400", "GET / HTTP/1.1\r\nX-A: a\x01\r\n\r\n", LM_HEAD_BAD,
           400);
    expect("head: DEL in a value -> 400", "GET / HTTP/1.1\r\nX-A: a\x7f\r\n\r\n", LM_HEAD_BAD, 400);
    expect("head: tab in a value is fine", "GET / HTTP/1.1\r\nX-A: a\tb\r\n\r\n", LM_HEAD_DONE, 0);
    expect("head: control byte in the request line -> 400", "GET /a\x01 HTTP/1.1\r\n\r\n",
           LM_HEAD_BAD, 400);
    expect("head: folded header -> 400", "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", LM_HEAD_BAD,
           400);
    expect("head: space before the colon -> 400", "GET / HTTP/1.1\r\nX-A : a\r\n\r\n", LM_HEAD_BAD,
           400);
    expect("head: TE with CL -> 400",
           "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
           LM_HEAD_BAD, 400);
    expect("head: two different CL -> 400",
           "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", LM_HEAD_BAD, 400);
    expect("head: CL not a number -> 400", "POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\n",
           LM_HEAD_BAD, 400);
    expect("head: TE gzip -> 400", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
           LM_HEAD_BAD, 400);
    expect("head: CL over max_body -> 413 before any body byte",
           "POST / HTTP/1.1\r\nContent-Length: 9437184\r\nExpect: 100-continue\r\n\r\n",
           LM_HEAD_BAD, 413);
}

static void test_limits(void)
{
    lm_head_t h;
    char *line = repeat("GET /", 'a', 8200, " HTTP/1.1\r\n\r\n");
    T_BEGIN("head: request line over 8 KiB -> 414, at once and before its end");
    T_CHECK(scan_once(line, strlen(line), &h) == LM_HEAD_BAD && h.status == 414, "%d", h.status);
    T_CHECK(scan_once(line, 8300, &h) == LM_HEAD_BAD && h.status == 414, "partial %d", h.status);
    T_END();
    free(line);
    char *ok = repeat("GET /", 'a', 8000, " HTTP/1.1\r\n\r\n");
    T_BEGIN("head: a request line just under 8 KiB is fine");
    T_CHECK(scan_once(ok, strlen(ok), &h) == LM_HEAD_DONE, "done");
    T_END();
    free(ok);
    char *big = repeat("GET / HTTP/1.1\r\nX-Big: ", 'b', 8200, "\r\n\r\n");
    T_BEGIN("head: one header over 8 KiB -> 431");
    T_CHECK(scan_once(big, strlen(big), &h) == LM_HEAD_BAD && h.status == 431, "%d", h.status);
    T_END();
    free(big);
    char many[8192] = "GET / HTTP/1.1\r\n";
    for (int i = 0; i < 101; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "X-%d: v\r\n", i);
    strcat(many, "\r\n");
    T_BEGIN("head: 101 headers -> 431");
    T_CHECK(scan_once(many, strlen(many), &h) == LM_HEAD_BAD && h.status == 431, "%d", h.status);
    T_END();
    size_t cap = 40000, n = 0;
    char *total = malloc(cap);
    n += (size_t)snprintf(total, cap, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 9; i++) {
        memcpy(total + n, "X-A: ", 5);
        memset(total + n + 5, 'v', 4000);
        memcpy(total + n + 4005, "\r\n", 2);
        n += 4007;
    }
    T_BEGIN("head: more than 32 KiB of headers -> 431, and an endless head stops at 32 KiB");
    T_CHECK(scan_once(total, n, &h) == LM_HEAD_BAD && h.status == 431, "%d", h.status);
    T_END();
    free(total);
    char *blank = repeat("", '\n', 40000, "");
    T_BEGIN("head: endless blank lines count against the head limit");
    T_CHECK(scan_once(blank, strlen(blank), &h) == LM_HEAD_BAD && h.status == 431, "%d", h.status);
    T_END();
    free(blank);
}

static void chunked_case(const char *name, const char *body, int want_done, uint64_t want_total,
                         int want_bad)
{
    size_t n = strlen(body);
    T_BEGIN(name);
    for (size_t cut = 0; cut <= n; cut++) {
        lm_chunked_t c = {0};
        int done = 0, too_big = 0;
        size_t used = lm_chunked_feed(&c, body, cut, 1000, &done, &too_big);
        int failed = used == (size_t)-1;
        if (!failed && !done) {
            size_t more = lm_chunked_feed(&c, body + cut, n - cut, 1000, &done, &too_big);
            failed = more == (size_t)-1;
            used += failed ? 0 : more;
        }
        if (want_bad) {
            T_CHECK(failed, "split %zu: accepted", cut);
            continue;
        }
        T_CHECK(done == want_done && c.total == want_total, "split %zu: done %d total %llu", cut,
                done, (unsigned long long)c.total);
        T_CHECK(!want_done || used == n - 4, "split %zu: used %zu of %zu", cut, used, n);
    }
    T_END();
}

static void test_chunked(void)
{
    chunked_case("chunked: two chunks and the end, every split",
                 "5\r\nhello\r\nA;ext=1\r\n0123456789\r\n0\r\n\r\nNEXT", 1, 15, 0);
    chunked_case("chunked: trailers", "3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nNEXT", 1, 3, 0);
    chunked_case("chunked: bare LF", "3\nabc\n0\n\nNEXT", 1, 3, 0);
    chunked_case("chunked: bad hex", "zz\r\nabc\r\n0\r\n\r\n", 0, 0, 1);
    chunked_case("chunked: data not followed by CRLF", "3\r\nabcd\r\n0\r\n\r\n", 0, 0, 1);
    lm_chunked_t c = {0};
    int done, too_big;
    T_BEGIN("chunked: over max_body is refused at the size line");
    T_CHECK(lm_chunked_feed(&c, "3E9\r\n", 5, 1000, &done, &too_big) == (size_t)-1 && too_big,
            "too big");
    T_END();
}

/* /v1/audio/ uploads have their own cap (audio_max_bytes). */
static void test_audio_cap(void)
{
    lm_head_t h;
    lm_head_limits_t keep = lim;
    lim.max_body = 1000;
    lim.max_body_audio = 5000;
    static const char up[] =
        "POST /v1/audio/transcriptions HTTP/1.1\r\nContent-Length: 4000\r\n\r\n";
    static const char big[] = "POST /v1/audio/speech HTTP/1.1\r\nContent-Length: 5001\r\n\r\n";
    static const char chat[] = "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 4000\r\n\r\n";
    static const char near[] = "POST /v1/audiox HTTP/1.1\r\nContent-Length: 4000\r\n\r\n";
    T_BEGIN("head: /v1/audio/ bodies are capped by max_body_audio, others by max_body");
    T_CHECK(scan_once(up, sizeof(up) - 1, &h) == LM_HEAD_DONE && h.audio, "upload under the cap");
    T_CHECK(scan_once(big, sizeof(big) - 1, &h) == LM_HEAD_BAD && h.status == 413 &&
                strstr(h.message, "audio_max_bytes"),
            "over the audio cap %d", h.status);
    T_CHECK(scan_once(chat, sizeof(chat) - 1, &h) == LM_HEAD_BAD && h.status == 413, "chat");
    T_CHECK(scan_once(near, sizeof(near) - 1, &h) == LM_HEAD_BAD && !h.audio, "prefix only");
    T_END();
    lim = keep;
}

int main(void)
{
    lm_head_limits_default(&lim, 8 * 1024 * 1024);
    test_framing();
    test_refusals();
    test_limits();
    test_chunked();
    test_audio_cap();
    T_EXIT();
}
