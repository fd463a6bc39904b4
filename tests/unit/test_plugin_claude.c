/* claude plugin through the test kit: golden cases 9.4 (G1/G2/G3, 529
 * probe), request shape, SSE at every split, several tool calls, thinking,
 * merged roles, in-stream errors, cut streams, malformed bodies. */
#define PT_PLUGIN "claude"
#include "plugin_t.h"

#include <stdlib.h>

/* Test JSON is written with ' for " to keep it readable. */

static const char *CFG[] = {"api_key", "k", NULL};

/* ---- result helpers ---- */

static json_t *body_of(const lmt_ureq *u)
{
    return json_loads(u->body, 0, NULL);
}

#define JGET(o, k) json_object_get((o), (k))
#define JSTR(o, k) json_string_value(json_object_get((o), (k)))
#define JINT(o, k) json_integer_value(json_object_get((o), (k)))

/* ---- golden inputs (9 + 9.4) ---- */

static const char *G1, *G2, *G3, *G1_RESP, *G2_SSE, *G3_RESP;

static void init_golden(void)
{
    G1 = pt_q("{'model':'claude-sonnet-4-5','messages':[{'role':'system','content':'You are "
              "terse.'},{'role':'user','content':'Say hi'}],'max_tokens':16,'temperature':0.2}");
    G2 = pt_q("{'model':'claude-sonnet-4-5','messages':[{'role':'system','content':'You are "
              "terse.'},{'role':'user','content':'Say hi'}],'max_tokens':16,'temperature':0.2,"
              "'stream':true,'stream_options':{'include_usage':true}}");
    G3 =
        pt_q("{'model':'claude-sonnet-4-5','messages':[{'role':'user','content':'Weather in "
             "Paris?'}],'tools':[{'type':'function','function':{'name':'get_weather','description':"
             "'Get weather','parameters':{'type':'object','properties':{'city':{'type':'string'}},"
             "'required':['city']}}}],'tool_choice':'auto'}");
    G1_RESP = pt_q("{'id':'msg_g1','type':'message','role':'assistant','model':'claude-sonnet-4-5',"
                   "'content':[{'type':'text','text':'Hi!'}],'stop_reason':'end_turn',"
                   "'stop_sequence':null,'usage':{'input_tokens':12,'output_tokens':2}}");
    G2_SSE = pt_q(
        "event: message_start\n"
        "data: {'type':'message_start','message':{'id':'msg_g2','type':'message','role':"
        "'assistant','content':[],'model':'claude-sonnet-4-5','stop_reason':null,"
        "'stop_sequence':null,'usage':{'input_tokens':12,'output_tokens':1}}}\n\n"
        "event: content_block_start\n"
        "data: {'type':'content_block_start','index':0,'content_block':{'type':'text','text':''}}"
        "\n\n"
        "event: ping\n"
        "data: {'type':'ping'}\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta','text':'Hi'}}"
        "\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta','text':'!'}}"
        "\n\n"
        "event: content_block_stop\n"
        "data: {'type':'content_block_stop','index':0}\n\n"
        "event: message_delta\n"
        "data: {'type':'message_delta','delta':{'stop_reason':'end_turn','stop_sequence':null},"
        "'usage':{'output_tokens':2}}\n\n"
        "event: message_stop\n"
        "data: {'type':'message_stop'}\n\n");
    G3_RESP = pt_q("{'id':'msg_g3','type':'message','role':'assistant','model':'claude-sonnet-4-5',"
                   "'content':[{'type':'tool_use','id':'toolu_01A','name':'get_weather','input':"
                   "{'city':'Paris'}}],'stop_reason':'tool_use','stop_sequence':null,'usage':"
                   "{'input_tokens':30,'output_tokens':10}}");
}

/* ---- tests ---- */

static void test_g1(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *m;

    T_BEGIN("claude_g1_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.method, "POST");
    T_STREQ(u.url, "https://api.anthropic.com/v1/messages");
    T_STREQ(lmt_header(&u, "x-api-key"), "k");
    T_STREQ(lmt_header(&u, "anthropic-version"), "2023-06-01");
    b = body_of(&u);
    T_STREQ(JSTR(b, "model"), "claude-sonnet-4-5");
    T_CHECK(JINT(b, "max_tokens") == 16, "max_tokens");
    T_STREQ(JSTR(b, "system"), "You are terse.");
    T_CHECK(json_array_size(JGET(b, "messages")) == 1, "one message");
    m = json_array_get(JGET(b, "messages"), 0);
    T_STREQ(JSTR(m, "role"), "user");
    T_STREQ(JSTR(m, "content"), "Say hi");
    T_CHECK(json_number_value(JGET(b, "temperature")) == 0.2, "temperature");
    T_CHECK(JGET(b, "stream") == NULL || json_is_false(JGET(b, "stream")), "no stream");
    T_CHECK(JGET(b, "stream_options") == NULL, "no stream_options");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("claude_g1_response");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G1_RESP, strlen(G1_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d %s", r.rc, r.err.msg);
    b = json_loads(r.json ? r.json : "", 0, NULL);
    m = json_array_get(JGET(b, "choices"), 0);
    T_STREQ(JSTR(b, "object"), "chat.completion");
    T_STREQ(JSTR(JGET(m, "message"), "role"), "assistant");
    T_STREQ(JSTR(JGET(m, "message"), "content"), "Hi!");
    T_STREQ(JSTR(m, "finish_reason"), "stop");
    T_CHECK(JINT(JGET(b, "usage"), "prompt_tokens") == 12 &&
                JINT(JGET(b, "usage"), "completion_tokens") == 2 &&
                JINT(JGET(b, "usage"), "total_tokens") == 14,
            "the kernel's usage object");
    T_CHECK(r.usage.prompt == 12 && r.usage.completion == 2 && r.usage.total == 14,
            "usage %lld/%lld/%lld", (long long)r.usage.prompt, (long long)r.usage.completion,
            (long long)r.usage.total);
    json_decref(b);
    lmt_result_clear(&r);
    T_END();
}

static void test_g2(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    pt_agg a;
    json_t *b;

    T_BEGIN("claude_g2_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build");
    b = body_of(&u);
    T_CHECK(json_is_true(JGET(b, "stream")), "stream:true");
    T_CHECK(JGET(b, "stream_options") == NULL, "stream_options is the kernel's");
    T_STREQ(u.url, "https://api.anthropic.com/v1/messages");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("claude_g2_stream_every_split");
    pt_stream_all(p, G2, G2_SSE, &r);
    T_CHECK(r.rc == LM_DONE && r.done == 1, "rc %d done %d", r.rc, r.done);
    pt_aggregate(r.json, 0, &a);
    T_STREQ(a.content, "Hi!");
    T_CHECK(a.nfinish == 1, "one finish chunk, got %d", a.nfinish);
    T_STREQ(a.finish, "stop");
    T_CHECK(!a.content_after_finish, "nothing after finish");
    T_CHECK(r.usage.prompt == 12 && r.usage.completion == 2 && r.usage.total == 14,
            "usage %lld/%lld/%lld", (long long)r.usage.prompt, (long long)r.usage.completion,
            (long long)r.usage.total);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("claude_g2_crlf_framing");
    {
        /* The same stream with CRLF line ends must give the same chunks. */
        const char *lf = G2_SSE;
        size_t n = strlen(lf), k = 0;
        char *crlf = malloc(2 * n + 1);
        lmt_result r2;
        for (size_t i = 0; i < n; i++) {
            if (lf[i] == '\n')
                crlf[k++] = '\r';
            crlf[k++] = lf[i];
        }
        crlf[k] = '\0';
        lmt_build(p, LM_OP_CHAT, G2, &u, &e);
        lmt_ureq_clear(&u);
        lmt_stream(p, lf, n, 0, &r);
        lmt_build(p, LM_OP_CHAT, G2, &u, &e);
        lmt_ureq_clear(&u);
        lmt_stream(p, crlf, k, 3, &r2);
        T_CHECK(r2.done && strcmp(r.json, r2.json) == 0, "CRLF differs");
        lmt_result_clear(&r);
        lmt_result_clear(&r2);
        free(crlf);
    }
    T_END();
}

static void test_g3(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *t, *m, *tc, *args;

    T_BEGIN("claude_g3_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G3, &u, &e) == LM_OK, "build");
    b = body_of(&u);
    T_CHECK(JINT(b, "max_tokens") == 4096, "default max_tokens injected (%lld)",
            (long long)JINT(b, "max_tokens"));
    t = json_array_get(JGET(b, "tools"), 0);
    T_CHECK(json_array_size(JGET(b, "tools")) == 1, "one tool");
    T_STREQ(JSTR(t, "name"), "get_weather");
    T_STREQ(JSTR(t, "description"), "Get weather");
    T_STREQ(JSTR(JGET(t, "input_schema"), "type"), "object");
    T_CHECK(JGET(JGET(JGET(t, "input_schema"), "properties"), "city") != NULL, "schema kept");
    T_CHECK(JGET(t, "function") == NULL && JGET(t, "type") == NULL, "no OpenAI wrapper");
    T_STREQ(JSTR(JGET(b, "tool_choice"), "type"), "auto");
    T_CHECK(JGET(b, "system") == NULL, "no system");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("claude_g3_response");
    lmt_build(p, LM_OP_CHAT, G3, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G3_RESP, strlen(G3_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    b = json_loads(r.json ? r.json : "", 0, NULL);
    m = json_array_get(JGET(b, "choices"), 0);
    tc = json_array_get(JGET(JGET(m, "message"), "tool_calls"), 0);
    T_STREQ(JSTR(tc, "id"), "toolu_01A");
    T_STREQ(JSTR(tc, "type"), "function");
    T_STREQ(JSTR(JGET(tc, "function"), "name"), "get_weather");
    args = json_loads(
        JSTR(JGET(tc, "function"), "arguments") ? JSTR(JGET(tc, "function"), "arguments") : "", 0,
        NULL);
    T_STREQ(JSTR(args, "city"), "Paris");
    T_CHECK(json_object_size(args) == 1, "only city");
    T_CHECK(json_is_null(JGET(JGET(m, "message"), "content")), "content null");
    T_STREQ(JSTR(m, "finish_reason"), "tool_calls");
    T_CHECK(r.usage.prompt == 30 && r.usage.completion == 10 && r.usage.total == 40, "usage");
    json_decref(args);
    json_decref(b);
    lmt_result_clear(&r);
    T_END();
}

static void test_errors(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    const char *b529 = pt_q("{'type':'error','error':{'type':'overloaded_error','message':"
                            "'Overloaded'}}");
    const char *b401 = pt_q("{'type':'error','error':{'type':'authentication_error','message':"
                            "'invalid x-api-key'},'request_id':'req_1'}");
    const char *b429 = pt_q("{'type':'error','error':{'type':'rate_limit_error','message':"
                            "'Number of request tokens has exceeded your rate limit'}}");
    const char *b500 = pt_q("{'type':'error','error':{'type':'api_error','message':'Internal "
                            "server error'}}");
    const char *b404 = pt_q("{'type':'error','error':{'type':'not_found_error','message':"
                            "'model: claude-9'}}");

    T_BEGIN("claude_error_529_overloaded");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 529, b529, strlen(b529), &r);
    T_CHECK(r.rc < 0, "rc %d", r.rc);
    T_CHECK(r.err.http_status == 503, "status %d", r.err.http_status);
    T_STREQ(r.err.type, "api_error");
    T_STREQ(r.err.code, "overloaded");
    T_STREQ(r.err.msg, "Overloaded");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("claude_error_401_429_500_404");
    lmt_response(p, 401, b401, strlen(b401), &r);
    T_CHECK(r.err.http_status == 401, "401 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "authentication_error");
    T_STREQ(r.err.msg, "invalid x-api-key");
    lmt_result_clear(&r);
    lmt_response(p, 429, b429, strlen(b429), &r);
    T_CHECK(r.err.http_status == 429, "429 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "rate_limit_error");
    T_STREQ(r.err.code, "rate_limit_exceeded");
    T_STREQ(r.err.msg, "Number of request tokens has exceeded your rate limit");
    lmt_result_clear(&r);
    lmt_response(p, 500, b500, strlen(b500), &r);
    T_CHECK(r.err.http_status == 500, "500 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "api_error");
    T_STREQ(r.err.msg, "Internal server error");
    lmt_result_clear(&r);
    lmt_response(p, 404, b404, strlen(b404), &r);
    T_CHECK(r.err.http_status == 404, "404 -> %d", r.err.http_status);
    T_STREQ(r.err.code, "model_not_found");
    lmt_result_clear(&r);
    lmt_response(p, 502, "<html>bad gateway</html>", 24, &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 502, "html 502 -> %d", r.err.http_status);
    T_CHECK(strstr(r.err.msg, "502") != NULL, "msg %s", r.err.msg);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("claude_malformed_response");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, "{\"id\":\"msg\",\"content\":[{\"ty", 28, &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "rc %d status %d", r.rc,
            r.err.http_status);
    lmt_result_clear(&r);
    lmt_response(p, 200, "[]", 2, &r);
    T_CHECK(r.rc == LM_EUPSTREAM, "array body rc %d", r.rc);
    lmt_result_clear(&r);
    lmt_response(p, 200, b529, strlen(b529), &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 503, "error body with 200");
    lmt_result_clear(&r);
    T_END();
}

static void test_stream_quirks(lmt_plugin *p)
{
    lmt_result r;
    pt_agg a;
    const char *tools = pt_q(
        "event: message_start\n"
        "data: {'type':'message_start','message':{'id':'msg_t','type':'message','role':"
        "'assistant','content':[],'model':'claude-sonnet-4-5','usage':{'input_tokens':50,"
        "'cache_read_input_tokens':8,'cache_creation_input_tokens':2,'output_tokens':1}}}\n\n"
        "event: content_block_start\n"
        "data: {'type':'content_block_start','index':0,'content_block':{'type':'text','text':''}}"
        "\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta','text':"
        "'Checking.'}}\n\n"
        "event: content_block_stop\n"
        "data: {'type':'content_block_stop','index':0}\n\n"
        "event: content_block_start\n"
        "data: {'type':'content_block_start','index':1,'content_block':{'type':'tool_use','id':"
        "'toolu_A','name':'get_weather','input':{}}}\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':1,'delta':{'type':'input_json_delta',"
        "'partial_json':''}}\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':1,'delta':{'type':'input_json_delta',"
        "'partial_json':'{\\'city\\': \\'Par'}}\n\n"
        "event: ping\n"
        "data: {'type': 'ping'}\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':1,'delta':{'type':'input_json_delta',"
        "'partial_json':'is\\'}'}}\n\n"
        "event: content_block_stop\n"
        "data: {'type':'content_block_stop','index':1}\n\n"
        "event: content_block_start\n"
        "data: {'type':'content_block_start','index':2,'content_block':{'type':'tool_use','id':"
        "'toolu_B','name':'get_time','input':{}}}\n\n"
        "event: content_block_stop\n"
        "data: {'type':'content_block_stop','index':2}\n\n"
        "event: content_block_start\n"
        "data: {'type':'content_block_start','index':3,'content_block':{'type':'tool_use','id':"
        "'toolu_C','name':'get_weather','input':{}}}\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':3,'delta':{'type':'input_json_delta',"
        "'partial_json':'{\\'city\\':\\'Rome\\'}'}}\n\n"
        "event: content_block_stop\n"
        "data: {'type':'content_block_stop','index':3}\n\n"
        "event: message_delta\n"
        "data: {'type':'message_delta','delta':{'stop_reason':'tool_use','stop_sequence':null},"
        "'usage':{'output_tokens':25}}\n\n"
        "event: message_stop\n"
        "data: {'type':'message_stop'}\n\n");
    const char *think = pt_q(
        "event: message_start\n"
        "data: {'type':'message_start','message':{'id':'msg_k','usage':{'input_tokens':5,"
        "'output_tokens':1}}}\n\n"
        "event: content_block_start\n"
        "data: {'type':'content_block_start','index':0,'content_block':{'type':'thinking',"
        "'thinking':''}}\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':0,'delta':{'type':'thinking_delta',"
        "'thinking':'Let me think'}}\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':0,'delta':{'type':'thinking_delta',"
        "'thinking':' hard.'}}\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':0,'delta':{'type':'signature_delta',"
        "'signature':'EqQBCgIYAhIM'}}\n\n"
        "event: content_block_stop\n"
        "data: {'type':'content_block_stop','index':0}\n\n"
        "event: content_block_start\n"
        "data: {'type':'content_block_start','index':1,'content_block':{'type':'text','text':''}}"
        "\n\n"
        "event: content_block_delta\n"
        "data: {'type':'content_block_delta','index':1,'delta':{'type':'text_delta','text':"
        "'42'}}\n\n"
        "event: content_block_stop\n"
        "data: {'type':'content_block_stop','index':1}\n\n"
        "event: message_delta\n"
        "data: {'type':'message_delta','delta':{'stop_reason':'max_tokens'},'usage':"
        "{'output_tokens':30}}\n\n"
        "event: message_stop\n"
        "data: {'type':'message_stop'}\n\n");

    T_BEGIN("claude_stream_several_tool_calls");
    pt_stream_all(p, G2, tools, &r);
    T_CHECK(r.rc == LM_DONE && r.done, "rc %d", r.rc);
    pt_aggregate(r.json, 0, &a);
    T_STREQ(a.content, "Checking.");
    T_CHECK(a.ntools == 3, "3 tool calls, got %d", a.ntools);
    T_STREQ(a.tools[0].id, "toolu_A");
    T_STREQ(a.tools[0].name, "get_weather");
    T_CHECK(pt_same_json(a.tools[0].args, "{\"city\":\"Paris\"}"), "args0 %s", a.tools[0].args);
    T_STREQ(a.tools[1].id, "toolu_B");
    T_STREQ(a.tools[1].name, "get_time");
    T_STREQ(a.tools[1].args, "{}");
    T_STREQ(a.tools[2].id, "toolu_C");
    T_CHECK(pt_same_json(a.tools[2].args, "{\"city\":\"Rome\"}"), "args2 %s", a.tools[2].args);
    for (int i = 0; i < 3; i++)
        T_CHECK(a.tools[i].nid == 1 && a.tools[i].ntype == 1, "id/type once for tool %d", i);
    T_CHECK(a.nfinish == 1, "one finish");
    T_STREQ(a.finish, "tool_calls");
    T_CHECK(r.usage.prompt == 60 && r.usage.cached == 8 && r.usage.completion == 25 &&
                r.usage.total == 85,
            "usage %lld/%lld/%lld cached %lld", (long long)r.usage.prompt,
            (long long)r.usage.completion, (long long)r.usage.total, (long long)r.usage.cached);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("claude_stream_thinking");
    pt_stream_all(p, G2, think, &r);
    pt_aggregate(r.json, 0, &a);
    T_STREQ(a.reasoning, "Let me think hard.");
    T_STREQ(a.content, "42");
    T_STREQ(a.finish, "length");
    T_CHECK(r.usage.prompt == 5 && r.usage.completion == 30 && r.usage.total == 35, "usage");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("claude_stream_error_event");
    {
        const char *err = pt_q(
            "event: message_start\n"
            "data: {'type':'message_start','message':{'id':'m','usage':{'input_tokens':3,"
            "'output_tokens':1}}}\n\n"
            "event: content_block_start\n"
            "data: {'type':'content_block_start','index':0,'content_block':{'type':'text',"
            "'text':''}}\n\n"
            "event: content_block_delta\n"
            "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta','text':"
            "'Par'}}\n\n"
            "event: error\n"
            "data: {'type':'error','error':{'type':'overloaded_error','message':'Overloaded'}}\n\n"
            "event: content_block_delta\n"
            "data: {'type':'content_block_delta','index':0,'delta':{'type':'text_delta','text':"
            "'NEVER'}}\n\n");
        pt_stream_all(p, G2, err, &r);
        T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
        T_CHECK(r.err.http_status == 503, "status %d", r.err.http_status);
        T_STREQ(r.err.code, "overloaded");
        T_STREQ(r.err.msg, "Overloaded");
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Par");
        T_CHECK(a.nfinish == 0 && !r.done, "no finish, not done");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("claude_stream_cut_off");
    {
        /* G2 without message_delta / message_stop. */
        const char *end = strstr(G2_SSE, "event: message_delta");
        char *cut = strndup(G2_SSE, (size_t)(end - G2_SSE));
        pt_stream_all(p, G2, cut, &r);
        T_CHECK(r.rc == LM_OK && r.done == 0, "rc %d done %d", r.rc, r.done);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Hi!");
        T_CHECK(a.nfinish == 0, "no finish chunk");
        lmt_result_clear(&r);
        free(cut);
        /* cut in the middle of an event */
        cut = strndup(G2_SSE, strlen(G2_SSE) / 2);
        pt_stream_all(p, G2, cut, &r);
        T_CHECK(r.done == 0, "half stream not done");
        lmt_result_clear(&r);
        free(cut);
    }
    T_END();

    T_BEGIN("claude_stream_malformed_json");
    {
        const char *bad =
            pt_q("event: message_start\n"
                 "data: {'type':'message_start','message':{'usage':{'input_tokens':1}}}"
                 "\n\n"
                 "event: content_block_delta\n"
                 "data: {'type':'content_block_delta','index':0,'delta':{'type\n\n");
        pt_stream_all(p, G2, bad, &r);
        T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
        T_CHECK(r.err.http_status == 502, "status %d", r.err.http_status);
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_request_mapping(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    json_t *b, *ms, *m, *c;
    const char *conv =
        pt_q("{'model':'claude-sonnet-4-5','messages':["
             "{'role':'system','content':'Rule one.'},"
             "{'role':'developer','content':[{'type':'text','text':'Rule two.'}]},"
             "{'role':'user','content':'Look at this.'},"
             "{'role':'user','content':[{'type':'text','text':'And this:'},"
             "{'type':'image_url','image_url':{'url':'data:image/png;base64,iVBORw0KGgo='}},"
             "{'type':'image_url','image_url':{'url':'https://example.com/cat.jpg'}}]},"
             "{'role':'assistant','content':null,'tool_calls':["
             "{'id':'call_1','type':'function','function':{'name':'get_weather','arguments':"
             "'{\\'city\\':\\'Paris\\'}'}},"
             "{'id':'call_2','type':'function','function':{'name':'get_time','arguments':''}}]},"
             "{'role':'tool','tool_call_id':'call_1','content':'18C sunny'},"
             "{'role':'tool','tool_call_id':'call_2','content':'noon'},"
             "{'role':'user','content':'Thanks'},"
             "{'role':'assistant','content':'You are welcome.'},"
             "{'role':'assistant','content':'Anything else?'}],"
             "'stop':'END','user':'u1','temperature':1.7,'top_p':0.9,'n':1,'logprobs':true,"
             "'presence_penalty':0.5,'max_completion_tokens':99,'max_tokens':7,"
             "'tools':[{'type':'function','function':{'name':'get_weather','parameters':"
             "{'type':'object','properties':{}}}}],"
             "'tool_choice':'required','parallel_tool_calls':false}");

    T_BEGIN("claude_merged_roles_and_blocks");
    T_CHECK(lmt_build(p, LM_OP_CHAT, conv, &u, &e) == LM_OK, "build: %s", e.msg);
    b = body_of(&u);
    T_STREQ(JSTR(b, "system"), "Rule one.\n\nRule two.");
    ms = JGET(b, "messages");
    T_CHECK(json_array_size(ms) == 4, "4 merged messages, got %zu", json_array_size(ms));
    /* user: text, text, image(base64), image(url) */
    m = json_array_get(ms, 0);
    T_STREQ(JSTR(m, "role"), "user");
    c = JGET(m, "content");
    T_CHECK(json_array_size(c) == 4, "user blocks %zu", json_array_size(c));
    T_STREQ(JSTR(json_array_get(c, 0), "text"), "Look at this.");
    T_STREQ(JSTR(json_array_get(c, 1), "text"), "And this:");
    T_STREQ(JSTR(json_array_get(c, 2), "type"), "image");
    T_STREQ(JSTR(JGET(json_array_get(c, 2), "source"), "type"), "base64");
    T_STREQ(JSTR(JGET(json_array_get(c, 2), "source"), "media_type"), "image/png");
    T_STREQ(JSTR(JGET(json_array_get(c, 2), "source"), "data"), "iVBORw0KGgo=");
    T_STREQ(JSTR(JGET(json_array_get(c, 3), "source"), "type"), "url");
    T_STREQ(JSTR(JGET(json_array_get(c, 3), "source"), "url"), "https://example.com/cat.jpg");
    /* assistant: two tool_use blocks with parsed input */
    m = json_array_get(ms, 1);
    c = JGET(m, "content");
    T_STREQ(JSTR(m, "role"), "assistant");
    T_CHECK(json_array_size(c) == 2, "two tool_use blocks");
    T_STREQ(JSTR(json_array_get(c, 0), "type"), "tool_use");
    T_STREQ(JSTR(json_array_get(c, 0), "id"), "call_1");
    T_STREQ(JSTR(JGET(json_array_get(c, 0), "input"), "city"), "Paris");
    T_CHECK(json_is_object(JGET(json_array_get(c, 1), "input")) &&
                json_object_size(JGET(json_array_get(c, 1), "input")) == 0,
            "empty arguments -> {}");
    /* user: tool_result, tool_result, text */
    m = json_array_get(ms, 2);
    c = JGET(m, "content");
    T_STREQ(JSTR(m, "role"), "user");
    T_CHECK(json_array_size(c) == 3, "tool results merged with the next user turn");
    T_STREQ(JSTR(json_array_get(c, 0), "type"), "tool_result");
    T_STREQ(JSTR(json_array_get(c, 0), "tool_use_id"), "call_1");
    T_STREQ(JSTR(json_array_get(c, 0), "content"), "18C sunny");
    T_STREQ(JSTR(json_array_get(c, 1), "tool_use_id"), "call_2");
    T_STREQ(JSTR(json_array_get(c, 2), "text"), "Thanks");
    /* assistant: two texts merged */
    m = json_array_get(ms, 3);
    T_CHECK(json_array_size(JGET(m, "content")) == 2, "assistant texts merged");
    T_END();

    T_BEGIN("claude_parameters");
    T_CHECK(JINT(b, "max_tokens") == 99, "max_completion_tokens wins");
    T_STREQ(json_string_value(json_array_get(JGET(b, "stop_sequences"), 0)), "END");
    T_CHECK(json_array_size(JGET(b, "stop_sequences")) == 1, "stop string -> array");
    T_STREQ(JSTR(JGET(b, "metadata"), "user_id"), "u1");
    /* The kernel clamps into the declared range before build_request. */
    T_CHECK(json_number_value(JGET(b, "temperature")) == 1.0, "temperature clamped to 1 (kernel)");
    {
        const lm_param_range *pr = lmt_provider(p)->param_ranges;
        T_CHECK(pr && pr[0].name && strcmp(pr[0].name, "temperature") == 0 && pr[0].min == 0.0 &&
                    pr[0].max == 1.0 && pr[1].name == NULL,
                "temperature range [0, 1] declared");
    }
    T_CHECK(json_number_value(JGET(b, "top_p")) == 0.9, "top_p");
    T_STREQ(JSTR(JGET(b, "tool_choice"), "type"), "any");
    T_CHECK(json_is_true(JGET(JGET(b, "tool_choice"), "disable_parallel_tool_use")),
            "parallel_tool_calls:false");
    T_CHECK(JGET(b, "n") == NULL && JGET(b, "logprobs") == NULL &&
                JGET(b, "presence_penalty") == NULL && JGET(b, "user") == NULL &&
                JGET(b, "max_completion_tokens") == NULL,
            "unsupported parameters dropped");
    T_STREQ(JSTR(JGET(json_array_get(JGET(b, "tools"), 0), "input_schema"), "type"), "object");
    json_decref(b);
    lmt_ureq_clear(&u);

    b = NULL;
    T_CHECK(
        lmt_build(p, LM_OP_CHAT,
                  pt_q("{'model':'m','messages':[{'role':'user','content':'x'}],'tools':[{'type':"
                       "'function','function':{'name':'f'}}],'tool_choice':{'type':'function',"
                       "'function':{'name':'f'}}}"),
                  &u, &e) == LM_OK,
        "build");
    b = body_of(&u);
    T_STREQ(JSTR(JGET(b, "tool_choice"), "type"), "tool");
    T_STREQ(JSTR(JGET(b, "tool_choice"), "name"), "f");
    T_STREQ(JSTR(JGET(json_array_get(JGET(b, "tools"), 0), "input_schema"), "type"), "object");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("claude_bad_requests");
    T_CHECK(lmt_build(p, LM_OP_CHAT,
                      pt_q("{'model':'m','messages':[{'role':'assistant','tool_calls':[{'id':'c',"
                           "'type':'function','function':{'name':'f','arguments':'{oops'}}]}]}"),
                      &u, &e) == LM_EINVAL &&
                e.http_status == 400,
            "bad arguments JSON -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(p, LM_OP_CHAT,
                      pt_q("{'model':'m','messages':[{'role':'user','content':[{'type':'image_url',"
                           "'image_url':{'url':'ftp://x/y.png'}}]}]}"),
                      &u, &e) == LM_EINVAL,
            "ftp image -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(p, LM_OP_CHAT, pt_q("{'model':'m','messages':[]}"), &u, &e) == LM_EINVAL,
            "empty messages -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(p, LM_OP_CHAT,
                      pt_q("{'model':'m','messages':[{'role':'wizard','content':'x'}]}"), &u,
                      &e) == LM_EINVAL,
            "unknown role -> 400");
    lmt_ureq_clear(&u);
    /* The kernel refuses embeddings and n > 1 from the table. */
    T_CHECK(!(lmt_provider(p)->caps & LM_CAP_EMBED), "no embeddings API");
    T_CHECK(!(lmt_provider(p)->flags & LM_PF_MULTI_CHOICE), "one choice per request");
    T_END();

    T_BEGIN("claude_thinking_response");
    {
        lmt_result r;
        const char *resp = pt_q("{'id':'msg_t','type':'message','content':[{'type':'thinking',"
                                "'thinking':'Hmm.','signature':'sig'},{'type':'text','text':'A'},"
                                "{'type':'tool_use','id':'toolu_X','name':'f','input':{}},"
                                "{'type':'text','text':'B'}],'stop_reason':'refusal','usage':"
                                "{'input_tokens':4,'output_tokens':6,'cache_read_input_tokens':"
                                "10}}");
        json_t *o, *msg;
        lmt_build(p, LM_OP_CHAT, G1, &u, &e);
        lmt_ureq_clear(&u);
        lmt_response(p, 200, resp, strlen(resp), &r);
        o = json_loads(r.json ? r.json : "", 0, NULL);
        msg = JGET(json_array_get(JGET(o, "choices"), 0), "message");
        T_STREQ(JSTR(msg, "content"), "AB");
        T_STREQ(JSTR(msg, "reasoning_content"), "Hmm.");
        T_STREQ(JSTR(JGET(json_array_get(JGET(msg, "tool_calls"), 0), "function"), "arguments"),
                "{}");
        T_STREQ(JSTR(json_array_get(JGET(o, "choices"), 0), "finish_reason"), "content_filter");
        T_CHECK(r.usage.prompt == 14 && r.usage.cached == 10 && r.usage.total == 20, "usage");
        json_decref(o);
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_config(void)
{
    char err[512];
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    const char *cfg[] = {
        "api_key",    "sk-ant-SECRET",      "base_url", "http://127.0.0.1:9/", "anthropic_version",
        "2024-01-01", "max_tokens_default", "100",      "anthropic_beta",      "tools-2024",
        NULL};
    lmt_plugin *p;

    T_BEGIN("claude_config");
    p = lmt_load(pt_so_path(), (const char *const[]){"base_url", "http://x", NULL}, err,
                 sizeof(err));
    T_CHECK(p == NULL, "api_key is required");
    lmt_unload(p);
    p = pt_load(cfg);
    T_CHECK(p != NULL, "load");
    if (p != NULL) {
        T_CHECK(lmt_build(p, LM_OP_CHAT, G3, &u, &e) == LM_OK, "build");
        T_STREQ(u.url, "http://127.0.0.1:9/v1/messages");
        T_STREQ(lmt_header(&u, "anthropic-version"), "2024-01-01");
        T_STREQ(lmt_header(&u, "anthropic-beta"), "tools-2024");
        T_CHECK(strstr(u.url, "SECRET") == NULL, "no key in the URL");
        json_t *b = body_of(&u);
        T_CHECK(JINT(b, "max_tokens") == 100, "max_tokens_default");
        json_decref(b);
        lmt_ureq_clear(&u);
        const char *b401 = pt_q("{'type':'error','error':{'type':'authentication_error','message':"
                                "'invalid x-api-key'}}");
        lmt_response(p, 401, b401, strlen(b401), &r);
        T_CHECK(strstr(r.err.msg, "SECRET") == NULL, "no key in the error");
        lmt_result_clear(&r);
        T_CHECK(lmt_provider(p)->framing == LM_FRAME_SSE &&
                    lmt_provider(p)->usage_mode == LM_USAGE_CUMULATIVE,
                "framing / usage mode");
        lmt_unload(p);
    }
    T_END();
}

int main(void)
{
    lmt_plugin *p;
    init_golden();
    p = pt_load(CFG);
    T_BEGIN("claude_load");
    T_CHECK(p != NULL, "load");
    T_END();
    if (p != NULL) {
        test_g1(p);
        test_g2(p);
        test_g3(p);
        test_errors(p);
        test_stream_quirks(p);
        test_request_mapping(p);
        lmt_unload(p);
    }
    test_config();
    pt_q_free_all();
    T_EXIT();
}
