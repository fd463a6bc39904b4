/* test_inbound_pt.c - the pass-through readers (proto/inbound_pt.h): the
 * model splice keeps every other byte, SSE cuts, and the usage, end and
 * error events of Anthropic Messages, OpenAI Responses and legacy
 * completions streams. */
#include "t.h"
#include "conf/conf.h"
#include "proto/inbound.h"
#include "proto/inbound_pt.h"

#include <stdlib.h>

static void test_set_model(void)
{
    T_BEGIN("inpt_set_model");
    lm_buf_t b = {0};
    const char *in =
        "{ \"messages\":[{\"model\":\"inner\"}], \"x\":\"}\\\"\" ,\n \"model\" : \"a\" ,\"z\":1}";
    T_CHECK(lm_inpt_set_model(in, strlen(in), "up/\"m\"", &b) == 0, "spliced");
    T_STREQ(lm_buf_cstr(&b),
            "{ \"messages\":[{\"model\":\"inner\"}], \"x\":\"}\\\"\" ,\n \"model\" : "
            "\"up/\\\"m\\\"\" ,\"z\":1}");
    lm_buf_free(&b);
    const char *bad[] = {"[]", "{\"model\":1}", "{\"m\":\"x\"}", "{\"model\":\"x",
                         "",   "{\"a\":[1,2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        lm_buf_t o = {0};
        T_CHECK(lm_inpt_set_model(bad[i], strlen(bad[i]), "m", &o) < 0, "refused: %s", bad[i]);
        lm_buf_free(&o);
    }
    T_END();
}

static void test_event_len(void)
{
    T_BEGIN("inpt_event_len");
    T_CHECK(lm_inpt_event_len("data: x\n\nrest", 14) == 9, "LF");
    T_CHECK(lm_inpt_event_len("data: x\r\n\r\n", 11) == 11, "CRLF");
    T_CHECK(lm_inpt_event_len("data: x\n", 8) == 0, "incomplete");
    T_END();
}

static int feed(lm_inpt_reader_t *rd, const char *ev, lm_err *e)
{
    return lm_inpt_reader_event(rd, ev, strlen(ev), e);
}

static void test_messages(void)
{
    T_BEGIN("inpt_messages_stream");
    lm_inpt_reader_t rd;
    lm_err e;
    lm_inpt_reader_init(&rd, LM_API_MESSAGES);
    feed(&rd,
         "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_"
         "tokens\":10,\"cache_creation_input_tokens\":2,\"cache_read_input_tokens\":3,\"output_"
         "tokens\":1}}}\n\n",
         &e);
    lm_usage u = lm_inpt_reader_usage(&rd);
    T_CHECK(u.prompt == 15 && u.cached == 3 && u.completion == -1, "start: %lld %lld",
            (long long)u.prompt, (long long)u.completion);
    feed(&rd,
         "data: "
         "{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hey\"}}"
         "\n\n",
         &e);
    T_CHECK(rd.chars == 3, "chars %llu", (unsigned long long)rd.chars);
    feed(&rd,
         "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_"
         "turn\"},\"usage\":{\"output_tokens\":4}}\n\n",
         &e);
    u = lm_inpt_reader_usage(&rd);
    T_CHECK(u.completion == 4 && u.total == 19 && rd.finished, "delta");
    T_CHECK(feed(&rd, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", &e) == LM_DONE,
            "stop");
    lm_inpt_reader_init(&rd, LM_API_MESSAGES);
    T_CHECK(feed(&rd,
                 "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                 "\"message\":\"busy\"}}\n\n",
                 &e) == LM_EUPSTREAM &&
                e.http_status == 503 && strcmp(e.msg, "busy") == 0,
            "error event");
    T_CHECK(feed(&rd, ": ping\n\n", &e) == LM_OK && feed(&rd, "data: [DONE]\n\n", &e) == LM_OK,
            "comments skipped");
    const char *whole = "{\"type\":\"message\",\"usage\":{\"input_tokens\":5,\"output_tokens\":6}}";
    T_CHECK(lm_inpt_reader_whole(&rd, whole, strlen(whole)) == 0 &&
                lm_inpt_reader_usage(&rd).completion == 6,
            "whole");
    T_CHECK(lm_inpt_reader_whole(&rd, "{\"object\":\"x\"}", 14) < 0, "not an answer");
    T_END();
}

static void test_responses(void)
{
    T_BEGIN("inpt_responses_stream");
    lm_inpt_reader_t rd;
    lm_err e;
    lm_inpt_reader_init(&rd, LM_API_RESPONSES);
    feed(&rd,
         "event: response.output_text.delta\ndata: "
         "{\"type\":\"response.output_text.delta\",\"delta\":\"abcd\"}\n\n",
         &e);
    T_CHECK(rd.chars == 4, "chars");
    T_CHECK(
        feed(&rd,
             "data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":9,"
             "\"input_tokens_details\":{\"cached_tokens\":2},\"output_tokens\":5,\"output_tokens_"
             "details\":{\"reasoning_tokens\":1}}}}\n\n",
             &e) == LM_DONE,
        "completed");
    lm_usage u = lm_inpt_reader_usage(&rd);
    T_CHECK(u.prompt == 9 && u.completion == 5 && u.cached == 2 && u.reasoning == 1, "usage");
    lm_inpt_reader_init(&rd, LM_API_RESPONSES);
    T_CHECK(feed(&rd,
                 "data: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_"
                 "error\",\"message\":\"boom\"}}}\n\n",
                 &e) == LM_EUPSTREAM &&
                strcmp(e.code, "server_error") == 0,
            "failed");
    T_END();
}

static void test_completions(void)
{
    T_BEGIN("inpt_completions_stream");
    lm_inpt_reader_t rd;
    lm_err e;
    lm_inpt_reader_init(&rd, LM_API_COMPLETIONS);
    T_CHECK(feed(&rd,
                 "data: {\"object\":\"text_completion\",\"choices\":[{\"text\":\"abc\","
                 "\"index\":0,\"finish_reason\":null}]}\n\n",
                 &e) == LM_OK &&
                rd.chars == 3 && !rd.finished,
            "text");
    feed(&rd, "data: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\n", &e);
    feed(&rd,
         "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3,"
         "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
         &e);
    T_CHECK(rd.finished && feed(&rd, "data: [DONE]\n\n", &e) == LM_DONE && rd.done, "end");
    lm_usage u = lm_inpt_reader_usage(&rd);
    T_CHECK(u.prompt == 7 && u.completion == 3 && u.cached == 4 && u.total == 10, "usage");
    lm_inpt_reader_init(&rd, LM_API_COMPLETIONS);
    T_CHECK(feed(&rd, "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n",
                 &e) == LM_EUPSTREAM &&
                strcmp(e.msg, "boom") == 0,
            "error chunk");
    static const char whole[] = "{\"object\":\"text_completion\",\"choices\":[],\"usage\":"
                                "{\"prompt_tokens\":2,\"completion_tokens\":1}}";
    static const char chat[] = "{\"object\":\"chat.completion\"}";
    lm_inpt_reader_init(&rd, LM_API_COMPLETIONS);
    T_CHECK(lm_inpt_reader_whole(&rd, whole, sizeof(whole) - 1) == 0 &&
                lm_inpt_reader_usage(&rd).total == 3,
            "whole");
    T_CHECK(lm_inpt_reader_whole(&rd, chat, sizeof(chat) - 1) < 0, "not one");
    T_END();
}

/* The channel setting that turns the Responses pass-through on. */
static void test_conf_passthrough(void)
{
    T_BEGIN("inpt_conf_passthrough");
    static const char ok[] = "channel a {\n plugin openai\n models m\n passthrough responses\n}\n";
    static const char bad[] = "channel a {\n plugin openai\n models m\n passthrough chat\n}\n";
    lm_conf_t *c = NULL;
    char err[256];
    static const char cmpl[] =
        "channel a {\n plugin openai\n models m\n passthrough completions\n}\n";
    T_CHECK(lm_conf_parse("t.conf", ok, sizeof(ok) - 1, &c, err, sizeof(err)) == 0, "%s", err);
    T_CHECK(c && c->nchans == 1 && c->chans[0].passthrough &&
                strcmp(c->chans[0].passthrough, "responses") == 0,
            "set");
    lm_conf_free(c);
    c = NULL;
    T_CHECK(lm_conf_parse("t.conf", cmpl, sizeof(cmpl) - 1, &c, err, sizeof(err)) == 0 && c &&
                strcmp(c->chans[0].passthrough, "completions") == 0,
            "completions: %s", err);
    lm_conf_free(c);
    c = NULL;
    T_CHECK(lm_conf_parse("t.conf", bad, sizeof(bad) - 1, &c, err, sizeof(err)) < 0 &&
                strstr(err, "passthrough responses"),
            "refused: %s", err);
    lm_conf_free(c);
    T_END();
}

int main(void)
{
    test_conf_passthrough();
    test_set_model();
    test_event_len();
    test_messages();
    test_responses();
    test_completions();
    T_EXIT();
}
