/* SSE / NDJSON splitting at every byte boundary, caps, line endings. */
#include "plugin/frame.h"
#include "t.h"

#include <stdlib.h>

typedef struct {
    char out[8192];
    int n;
} sink_t;

static int collect(void *arg, const lm_event *ev)
{
    sink_t *s = arg;
    s->n++;
    size_t len = strlen(s->out);
    snprintf(s->out + len, sizeof(s->out) - len, "[%.*s|%.*s|%.*s]", (int)ev->event.n, ev->event.p,
             (int)ev->id.n, ev->id.p, (int)ev->data.n, ev->data.p);
    return 0;
}

/* Feed `in` split at every pair of offsets (three pieces) and compare. */
static void split_all(const char *name, int framing, const char *in, const char *want)
{
    size_t len = strlen(in);
    T_BEGIN(name);
    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len; b++) {
            lm_frame_t f;
            sink_t s = {{0}, 0};
            lm_frame_init(&f, framing, 0);
            int rc = lm_frame_feed(&f, in, a, collect, &s);
            rc |= lm_frame_feed(&f, in + a, b - a, collect, &s);
            rc |= lm_frame_feed(&f, in + b, len - b, collect, &s);
            rc |= lm_frame_finish(&f, collect, &s);
            lm_frame_free(&f);
            T_CHECK(rc == 0, "rc %d at split %zu,%zu", rc, a, b);
            if (strcmp(s.out, want) != 0) {
                T_CHECK(0, "split %zu,%zu: got %s want %s", a, b, s.out, want);
                T_END();
                return;
            }
        }
    }
    T_END();
}

static void test_cap(void)
{
    T_BEGIN("frame_event_cap");
    lm_frame_t f;
    sink_t s = {{0}, 0};
    char *big = malloc(2000);
    memset(big, 'x', 2000);
    lm_frame_init(&f, LM_FRAME_SSE, 1000);
    int rc = lm_frame_feed(&f, "data: ", 6, collect, &s);
    for (int i = 0; i < 5 && rc == 0; i++)
        rc = lm_frame_feed(&f, big, 300, collect, &s);
    T_CHECK(rc == LM_ERR, "an unterminated line over the cap must fail, rc=%d", rc);
    T_CHECK(lm_frame_pending(&f) <= 1000, "buffered %zu > cap", lm_frame_pending(&f));
    lm_frame_free(&f);
    /* many data lines that together pass the cap */
    lm_frame_init(&f, LM_FRAME_SSE, 1000);
    rc = 0;
    for (int i = 0; i < 20 && rc == 0; i++) {
        rc = lm_frame_feed(&f, "data: ", 6, collect, &s);
        rc = rc ? rc : lm_frame_feed(&f, big, 100, collect, &s);
        rc = rc ? rc : lm_frame_feed(&f, "\n", 1, collect, &s);
    }
    T_CHECK(rc == LM_ERR, "joined data over the cap must fail");
    lm_frame_free(&f);
    free(big);
    T_END();
}

int main(void)
{
    split_all("frame_sse_basic", LM_FRAME_SSE, "data: {\"a\":1}\n\ndata: [DONE]\n\n",
              "[||{\"a\":1}][||[DONE]]");
    split_all("frame_sse_crlf", LM_FRAME_SSE, "data: a\r\n\r\ndata:b\r\n\r\n", "[||a][||b]");
    split_all("frame_sse_cr_only", LM_FRAME_SSE, "data: a\r\rdata: b\r\r", "[||a][||b]");
    split_all("frame_sse_fields", LM_FRAME_SSE,
              "id:1\nevent:result\n:HTTP_STATUS/200\ndata:{\"x\":1}\n\n: ping\n\n",
              "[result|1|{\"x\":1}]");
    split_all("frame_sse_multiline_data", LM_FRAME_SSE, "data: a\ndata: b\nretry: 5\n\n",
              "[||a\nb]");
    split_all("frame_sse_no_final_blank", LM_FRAME_SSE, "event: x\ndata: tail", "[x||tail]");
    split_all("frame_ndjson", LM_FRAME_NDJSON, "{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}",
              "[||{\"a\":1}][||{\"b\":2}][||{\"c\":3}]");
    test_cap();
    T_EXIT();
}
