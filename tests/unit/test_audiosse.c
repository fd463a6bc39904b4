/* A streamed transcript's events (relay/audiosse.h): the done event's
 * usage at every split, the delivered text's estimate without it. */
#include "relay/audiosse.h"
#include "t.h"

static const char *const STREAM =
    "data: {\"type\":\"transcript.text.delta\",\"delta\":\"h\xc3\xa9llo\"}\r\n\r\n"
    ": keep-alive\n\n"
    "data: {\"type\":\"transcript.text.delta\",\"delta\":\" world\"}\n\n"
    "data: {\"type\":\"transcript.text.done\",\"text\":\"h\xc3\xa9llo world\","
    "\"usage\":{\"type\":\"tokens\",\"input_tokens\":14,\"output_tokens\":45,\"total_tokens\":59}}"
    "\n\n"
    "data: [DONE]\n\n";

static void test_tokens_any_split(void)
{
    size_t len = strlen(STREAM);
    T_BEGIN("audiosse_tokens_any_split");
    for (size_t a = 0; a <= len; a++) {
        lm_audiosse_t *s = lm_audiosse_new();
        lm_audiosse_feed(s, STREAM, a);
        lm_audiosse_feed(s, STREAM + a, len - a);
        lm_audiosse_finish(s);
        lm_usage u;
        double secs;
        lm_audiosse_usage(s, &u, &secs);
        T_CHECK(s->done && s->chars == 11 && u.prompt == 14 && u.completion == 45 && secs < 0,
                "split %zu: done %d chars %lld usage %lld/%lld", a, s->done, (long long)s->chars,
                (long long)u.prompt, (long long)u.completion);
        lm_audiosse_free(s);
    }
    T_END();
}

static void test_cut_and_seconds(void)
{
    T_BEGIN("audiosse_cut_and_seconds");
    lm_audiosse_t *s = lm_audiosse_new();
    lm_usage u;
    double secs;
    lm_audiosse_feed(s, STREAM, 60); /* the first delta and part of the next */
    lm_audiosse_usage(s, &u, &secs);
    T_CHECK(!s->done && u.prompt == -1 && u.completion == 2 && secs < 0,
            "cut: prompt %lld completion %lld", (long long)u.prompt, (long long)u.completion);
    lm_audiosse_free(s);
    s = lm_audiosse_new();
    static const char *const d = "data: {\"type\":\"transcript.text.done\",\"text\":\"\","
                                 "\"usage\":{\"type\":\"duration\",\"seconds\":3.25}}";
    lm_audiosse_feed(s, d, strlen(d));
    lm_audiosse_finish(s); /* no blank line after the last event */
    lm_audiosse_usage(s, &u, &secs);
    T_CHECK(s->done && secs == 3.25 && u.prompt == -1 && u.completion == 0, "seconds %g", secs);
    lm_audiosse_free(s);
    T_END();
}

static void test_junk(void)
{
    T_BEGIN("audiosse_junk");
    lm_audiosse_t *s = lm_audiosse_new();
    static const char *const j = "data: {not json\n\ndata: {\"type\":\"transcript.text.done\","
                                 "\"usage\":{\"input_tokens\":-3,\"seconds\":\"x\"}}\n\n";
    lm_audiosse_feed(s, j, strlen(j));
    lm_usage u;
    double secs;
    lm_audiosse_usage(s, &u, &secs);
    T_CHECK(s->done && u.prompt == -1 && secs < 0, "junk usage read: %lld %g", (long long)u.prompt,
            secs);
    lm_audiosse_free(s);
    T_END();
}

int main(void)
{
    test_tokens_any_split();
    test_cut_and_seconds();
    test_junk();
    T_EXIT();
}
