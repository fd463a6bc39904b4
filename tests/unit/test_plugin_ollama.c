/* ollama plugin through the test kit: golden cases 9.6 (G1/G2/G3, the 404
 * probe), request shape, NDJSON at every split, argument objects, thinking,
 * images, embeddings, in-stream errors, cut streams, malformed lines. */
#define PT_PLUGIN "ollama"
#include "plugin_t.h"

#include <stdlib.h>

/* Test JSON is written with ' for " to keep it readable. */

static const char *CFG[] = {NULL};

/* ---- result helpers ---- */

static json_t *body_of(const lmt_ureq *u)
{
    return json_loads(u->body, 0, NULL);
}

#define JGET(o, k) json_object_get((o), (k))
#define JSTR(o, k) json_string_value(json_object_get((o), (k)))
#define JINT(o, k) json_integer_value(json_object_get((o), (k)))

/* ---- golden inputs (9 + 9.6) ---- */

static const char *G1, *G2, *G3, *G1_RESP, *G2_ND, *G3_RESP, *G3_TOOLS;

static void init_golden(void)
{
    G1 = pt_q("{'model':'llama3.2','messages':[{'role':'system','content':'You are terse.'},"
              "{'role':'user','content':'Say hi'}],'max_tokens':16,'temperature':0.2}");
    G2 = pt_q("{'model':'llama3.2','messages':[{'role':'system','content':'You are terse.'},"
              "{'role':'user','content':'Say hi'}],'max_tokens':16,'temperature':0.2,"
              "'stream':true,'stream_options':{'include_usage':true}}");
    G3_TOOLS = pt_q("[{'type':'function','function':{'name':'get_weather','description':"
                    "'Get weather','parameters':{'type':'object','properties':{'city':{'type':"
                    "'string'}},'required':['city']}}}]");
    G3 = pt_q("{'model':'llama3.2','messages':[{'role':'user','content':'Weather in Paris?'}],"
              "'tools':[{'type':'function','function':{'name':'get_weather','description':"
              "'Get weather','parameters':{'type':'object','properties':{'city':{'type':'string'}},"
              "'required':['city']}}}],'tool_choice':'auto'}");
    G1_RESP = pt_q("{'model':'llama3.2','created_at':'2024-07-22T20:33:28.123648Z','message':"
                   "{'role':'assistant','content':'Hi!'},'done':true,'done_reason':'stop',"
                   "'total_duration':1000,'prompt_eval_count':12,'eval_count':2}");
    G2_ND = pt_q("{'model':'llama3.2','created_at':'2024-07-22T20:33:28Z','message':{'role':"
                 "'assistant','content':'Hi'},'done':false}\n"
                 "{'model':'llama3.2','created_at':'2024-07-22T20:33:28Z','message':{'role':"
                 "'assistant','content':'!'},'done':false}\n"
                 "{'model':'llama3.2','created_at':'2024-07-22T20:33:29Z','message':{'role':"
                 "'assistant','content':''},'done':true,'done_reason':'stop','total_duration':1000,"
                 "'prompt_eval_count':12,'eval_count':2}\n");
    G3_RESP = pt_q("{'model':'llama3.2','created_at':'2024-07-22T20:33:28Z','message':{'role':"
                   "'assistant','content':'','tool_calls':[{'function':{'name':'get_weather',"
                   "'arguments':{'city':'Paris'}}}]},'done':true,'done_reason':'stop',"
                   "'prompt_eval_count':30,'eval_count':10}");
}

static json_t *resp_json(const lmt_result *r)
{
    return json_loads(r->json ? r->json : "", 0, NULL);
}

/* ---- tests ---- */

static void test_g1(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *m, *want;

    T_BEGIN("ollama_g1_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.method, "POST");
    T_STREQ(u.url, "http://localhost:11434/api/chat");
    T_CHECK(lmt_header(&u, "Authorization") == NULL, "no auth without api_key");
    b = body_of(&u);
    T_STREQ(JSTR(b, "model"), "llama3.2");
    want = json_loads(pt_q("[{'role':'system','content':'You are terse.'},{'role':'user',"
                           "'content':'Say hi'}]"),
                      0, NULL);
    T_CHECK(json_equal(JGET(b, "messages"), want), "messages");
    json_decref(want);
    T_CHECK(json_is_false(JGET(b, "stream")), "stream:false is explicit");
    T_CHECK(json_number_value(JGET(JGET(b, "options"), "temperature")) == 0.2, "temperature");
    T_CHECK(JINT(JGET(b, "options"), "num_predict") == 16, "num_predict");
    T_CHECK(JGET(b, "max_tokens") == NULL && JGET(b, "temperature") == NULL &&
                JGET(b, "stream_options") == NULL,
            "no OpenAI fields at top level");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ollama_g1_response");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G1_RESP, strlen(G1_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d %s", r.rc, r.err.msg);
    b = resp_json(&r);
    m = json_array_get(JGET(b, "choices"), 0);
    T_STREQ(JSTR(b, "object"), "chat.completion");
    T_STREQ(JSTR(b, "model"), "llama3.2");
    T_CHECK(JINT(b, "created") == 1721680408, "created from created_at (%lld)",
            (long long)JINT(b, "created"));
    T_STREQ(JSTR(JGET(m, "message"), "content"), "Hi!");
    T_STREQ(JSTR(m, "finish_reason"), "stop");
    /* The kit runs the kernel's response path: "usage" is the kernel's, from r.usage. */
    T_CHECK(JINT(JGET(b, "usage"), "total_tokens") == 14, "usage object");
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

    T_BEGIN("ollama_g2_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build");
    b = body_of(&u);
    T_CHECK(json_is_true(JGET(b, "stream")), "stream:true");
    T_STREQ(u.url, "http://localhost:11434/api/chat");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ollama_g2_stream_every_split");
    pt_stream_all(p, G2, G2_ND, &r);
    T_CHECK(r.rc == LM_DONE && r.done, "rc %d done %d", r.rc, r.done);
    pt_aggregate(r.json, 0, &a);
    T_STREQ(a.content, "Hi!");
    T_STREQ(a.finish, "stop");
    T_CHECK(r.usage.prompt == 12 && r.usage.completion == 2 && r.usage.total == 14,
            "usage %lld/%lld/%lld", (long long)r.usage.prompt, (long long)r.usage.completion,
            (long long)r.usage.total);
    lmt_result_clear(&r);
    T_END();
}

static void test_g3(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *m, *tc, *want;

    T_BEGIN("ollama_g3_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G3, &u, &e) == LM_OK, "build");
    b = body_of(&u);
    want = json_loads(G3_TOOLS, 0, NULL);
    T_CHECK(json_equal(JGET(b, "tools"), want), "tools equal to the inbound array");
    T_CHECK(json_is_false(JGET(b, "stream")), "stream:false");
    T_CHECK(JGET(b, "tool_choice") == NULL, "tool_choice dropped");
    json_decref(want);
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ollama_g3_response_argument_object");
    lmt_build(p, LM_OP_CHAT, G3, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G3_RESP, strlen(G3_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    b = resp_json(&r);
    m = json_array_get(JGET(b, "choices"), 0);
    tc = json_array_get(JGET(JGET(m, "message"), "tool_calls"), 0);
    T_CHECK(JSTR(tc, "id") && JSTR(tc, "id")[0], "synthesized id");
    T_STREQ(JSTR(tc, "type"), "function");
    T_STREQ(JSTR(JGET(tc, "function"), "name"), "get_weather");
    T_CHECK(json_is_string(JGET(JGET(tc, "function"), "arguments")), "arguments is a string");
    T_CHECK(pt_same_json(JSTR(JGET(tc, "function"), "arguments"), "{\"city\":\"Paris\"}"), "args");
    T_STREQ(JSTR(m, "finish_reason"), "tool_calls");
    T_CHECK(json_is_null(JGET(JGET(m, "message"), "content")), "content null");
    T_CHECK(r.usage.prompt == 30 && r.usage.completion == 10 && r.usage.total == 40, "usage");
    json_decref(b);
    lmt_result_clear(&r);
    T_END();
}

static void test_errors(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    const char *b404 = pt_q("{'error':'model \\'llama9\\' not found, try pulling it first'}");

    T_BEGIN("ollama_error_404_model_not_found");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 404, b404, strlen(b404), &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 404, "status %d", r.err.http_status);
    T_STREQ(r.err.code, "model_not_found");
    T_STREQ(r.err.type, "invalid_request_error");
    T_STREQ(r.err.msg, "model \"llama9\" not found, try pulling it first");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ollama_error_400_401_429_500");
    lmt_response(p, 400, "{\"error\":\"invalid options\"}", 27, &r);
    T_CHECK(r.err.http_status == 400, "400 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "invalid_request_error");
    T_STREQ(r.err.msg, "invalid options");
    lmt_result_clear(&r);
    lmt_response(p, 401, "Unauthorized", 12, &r);
    T_CHECK(r.err.http_status == 401, "401 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "authentication_error");
    lmt_result_clear(&r);
    lmt_response(p, 429, "{\"error\":\"server busy\"}", 23, &r);
    T_CHECK(r.err.http_status == 429, "429 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "rate_limit_error");
    lmt_result_clear(&r);
    lmt_response(p, 500, "{\"error\":\"llama runner process has terminated\"}", 47, &r);
    T_CHECK(r.err.http_status == 500, "500 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "api_error");
    T_STREQ(r.err.msg, "llama runner process has terminated");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("ollama_malformed_response");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, "{\"model\":\"llama3.2\",\"mess", 25, &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "rc %d status %d", r.rc,
            r.err.http_status);
    lmt_result_clear(&r);
    lmt_response(p, 200, "{\"done\":true}", 13, &r);
    T_CHECK(r.rc == LM_EUPSTREAM, "no message -> upstream error");
    lmt_result_clear(&r);
    lmt_response(p, 200, "{\"error\":\"boom\"}", 16, &r);
    T_CHECK(r.rc == LM_EUPSTREAM && strcmp(r.err.msg, "boom") == 0, "error with 200");
    lmt_result_clear(&r);
    T_END();
}

static void test_quirks(lmt_plugin *p)
{
    lmt_result r;
    pt_agg a;

    T_BEGIN("ollama_stream_tool_call_objects");
    {
        const char *s = pt_q(
            "{'model':'llama3.2','message':{'role':'assistant','content':'','tool_calls':[{"
            "'function':{'name':'get_weather','arguments':{'city':'Paris'}}}]},'done':false}\n"
            "{'model':'llama3.2','message':{'role':'assistant','content':'','tool_calls':[{'id':"
            "'call_srv','function':{'index':0,'name':'get_weather','arguments':{'city':'Rome',"
            "'days':[1,2]}}}]},'done':false}\n"
            "{'model':'llama3.2','message':{'role':'assistant','content':''},'done':true,"
            "'done_reason':'stop','prompt_eval_count':30,'eval_count':10}\n");
        pt_stream_all(p, G3, s, &r);
        T_CHECK(r.rc == LM_DONE && r.done, "rc %d", r.rc);
        pt_aggregate(r.json, 0, &a);
        T_CHECK(a.ntools == 2, "2 tool calls, got %d", a.ntools);
        T_CHECK(a.tools[0].id[0] != '\0', "synthesized id");
        T_STREQ(a.tools[1].id, "call_srv");
        T_CHECK(pt_same_json(a.tools[0].args, "{\"city\":\"Paris\"}"), "args0 %s", a.tools[0].args);
        T_CHECK(pt_same_json(a.tools[1].args, "{\"city\":\"Rome\",\"days\":[1,2]}"), "args1 %s",
                a.tools[1].args);
        T_CHECK(a.tools[0].nid == 1 && a.tools[1].nid == 1, "id once per call");
        T_STREQ(a.finish, "tool_calls");
        T_CHECK(r.usage.total == 40, "usage");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ollama_stream_thinking_and_length");
    {
        const char *s = pt_q("{'message':{'role':'assistant','content':'','thinking':'Hmm'},"
                             "'done':false}\n"
                             "{'message':{'role':'assistant','content':'','thinking':', ok.'},"
                             "'done':false}\n"
                             "{'message':{'role':'assistant','content':'Yes'},'done':false}\n"
                             "{'message':{'role':'assistant','content':''},'done':true,"
                             "'done_reason':'length','eval_count':3}\n");
        pt_stream_all(p, G2, s, &r);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.reasoning, "Hmm, ok.");
        T_STREQ(a.content, "Yes");
        T_STREQ(a.finish, "length");
        T_CHECK(r.usage.prompt == 0 && r.usage.completion == 3 && r.usage.total == 3,
                "cached prompt: prompt_eval_count omitted -> 0 (%lld)", (long long)r.usage.prompt);
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ollama_stream_error_line");
    {
        const char *s = pt_q("{'message':{'role':'assistant','content':'Hel'},'done':false}\n"
                             "{'error':'an error was encountered while running the model'}\n"
                             "{'message':{'role':'assistant','content':'NEVER'},'done':false}\n");
        pt_stream_all(p, G2, s, &r);
        T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
        T_STREQ(r.err.msg, "an error was encountered while running the model");
        T_CHECK(r.err.http_status >= 500, "status %d", r.err.http_status);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Hel");
        T_CHECK(a.nfinish == 0, "no finish");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("ollama_stream_cut_off");
    {
        const char *end = strstr(G2_ND, "\"done\":true");
        char *cut = strndup(G2_ND, (size_t)(end - G2_ND) - 60);
        /* the cut lands inside the second line: everything before the last newline */
        char *nl = strrchr(cut, '\n');
        if (nl)
            nl[1] = '\0';
        pt_stream_all(p, G2, cut, &r);
        T_CHECK(r.rc == LM_OK && r.done == 0, "rc %d done %d", r.rc, r.done);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Hi!");
        T_CHECK(a.nfinish == 0, "no finish chunk");
        lmt_result_clear(&r);
        free(cut);
        cut = strndup(G2_ND, strlen(G2_ND) - 30); /* inside the done line */
        pt_stream_all(p, G2, cut, &r);
        T_CHECK(r.done == 0 && r.rc < 0, "a half line is malformed, not done (rc %d)", r.rc);
        lmt_result_clear(&r);
        free(cut);
    }
    T_END();

    T_BEGIN("ollama_stream_malformed_line");
    {
        const char *s = "{\"message\":{\"content\":\"a\"},\"done\":false}\nnot json at all\n";
        pt_stream_all(p, G2, s, &r);
        T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "rc %d status %d", r.rc,
                r.err.http_status);
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_request_mapping(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    json_t *b, *ms, *m, *o;
    const char *conv = pt_q(
        "{'model':'llava','messages':["
        "{'role':'developer','content':'Rule.'},"
        "{'role':'user','content':[{'type':'text','text':'What is'},{'type':'text','text':"
        "'this?'},{'type':'image_url','image_url':{'url':'data:image/png;base64,iVBORw0KGgo='}}]},"
        "{'role':'assistant','content':null,'tool_calls':[{'id':'call_9','type':'function',"
        "'function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}}]},"
        "{'role':'tool','tool_call_id':'call_9','content':'18C sunny'}],"
        "'top_p':0.9,'top_k':40,'seed':42,'stop':'END','max_completion_tokens':64,"
        "'presence_penalty':0.5,'frequency_penalty':0.25,'user':'u1','logprobs':true,"
        "'response_format':{'type':'json_object'}}");

    T_BEGIN("ollama_messages_images_tools");
    T_CHECK(lmt_build(p, LM_OP_CHAT, conv, &u, &e) == LM_OK, "build: %s", e.msg);
    b = body_of(&u);
    ms = JGET(b, "messages");
    T_CHECK(json_array_size(ms) == 4, "4 messages");
    m = json_array_get(ms, 0);
    T_STREQ(JSTR(m, "role"), "system");
    T_STREQ(JSTR(m, "content"), "Rule.");
    m = json_array_get(ms, 1);
    T_STREQ(JSTR(m, "content"), "What is\nthis?");
    T_CHECK(json_array_size(JGET(m, "images")) == 1, "one image");
    T_STREQ(json_string_value(json_array_get(JGET(m, "images"), 0)), "iVBORw0KGgo=");
    m = json_array_get(ms, 2);
    T_STREQ(JSTR(m, "role"), "assistant");
    T_STREQ(JSTR(m, "content"), "");
    T_STREQ(
        JSTR(JGET(JGET(json_array_get(JGET(m, "tool_calls"), 0), "function"), "arguments"), "city"),
        "Paris");
    m = json_array_get(ms, 3);
    T_STREQ(JSTR(m, "role"), "tool");
    T_STREQ(JSTR(m, "tool_name"), "get_weather");
    T_STREQ(JSTR(m, "content"), "18C sunny");
    T_END();

    T_BEGIN("ollama_options");
    o = JGET(b, "options");
    T_CHECK(json_number_value(JGET(o, "top_p")) == 0.9, "top_p");
    T_CHECK(JINT(o, "top_k") == 40, "top_k");
    T_CHECK(JINT(o, "seed") == 42, "seed");
    T_CHECK(json_array_size(JGET(o, "stop")) == 1 &&
                strcmp(json_string_value(json_array_get(JGET(o, "stop"), 0)), "END") == 0,
            "stop always an array");
    T_CHECK(JINT(o, "num_predict") == 64, "num_predict from max_completion_tokens");
    T_CHECK(json_number_value(JGET(o, "presence_penalty")) == 0.5, "presence_penalty");
    T_CHECK(json_number_value(JGET(o, "frequency_penalty")) == 0.25, "frequency_penalty");
    T_STREQ(JSTR(b, "format"), "json");
    T_CHECK(JGET(b, "user") == NULL && JGET(b, "logprobs") == NULL, "dropped");
    T_CHECK(json_is_false(JGET(b, "stream")), "stream explicit");
    json_decref(b);
    lmt_ureq_clear(&u);

    T_CHECK(lmt_build(p, LM_OP_CHAT,
                      pt_q("{'model':'m','messages':[{'role':'user','content':'x'}],"
                           "'response_format':{'type':'json_schema','json_schema':{'name':'n',"
                           "'schema':{'type':'object','properties':{'a':{'type':'string'}}}}}}"),
                      &u, &e) == LM_OK,
            "build");
    b = body_of(&u);
    T_STREQ(JSTR(JGET(b, "format"), "type"), "object");
    T_CHECK(JGET(b, "options") == NULL, "no empty options");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ollama_bad_requests");
    T_CHECK(lmt_build(p, LM_OP_CHAT,
                      pt_q("{'model':'m','messages':[{'role':'user','content':[{'type':'image_url',"
                           "'image_url':{'url':'https://example.com/a.png'}}]}]}"),
                      &u, &e) == LM_EINVAL &&
                e.http_status == 400,
            "http image -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(p, LM_OP_CHAT,
                      pt_q("{'model':'m','messages':[{'role':'assistant','tool_calls':[{'id':'c',"
                           "'function':{'name':'f','arguments':'nope'}}]}]}"),
                      &u, &e) == LM_EINVAL,
            "bad arguments -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(
        lmt_build(p, LM_OP_CHAT,
                  pt_q("{'model':'m','messages':[{'role':'function','name':'f','content':'x'}]}"),
                  &u, &e) < 0 &&
            e.http_status == 400,
        "legacy function role -> 400");
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("ollama_done_reasons");
    {
        lmt_result r;
        const char *load = pt_q("{'model':'m','message':{'role':'assistant','content':''},'done':"
                                "true,'done_reason':'load'}");
        const char *len =
            pt_q("{'model':'m','message':{'role':'assistant','content':'a','thinking':"
                 "'t'},'done':true,'done_reason':'length','prompt_eval_count':1,"
                 "'eval_count':1}");
        lmt_build(p, LM_OP_CHAT, G1, &u, &e);
        lmt_ureq_clear(&u);
        lmt_response(p, 200, load, strlen(load), &r);
        b = resp_json(&r);
        T_STREQ(JSTR(json_array_get(JGET(b, "choices"), 0), "finish_reason"), "stop");
        json_decref(b);
        lmt_result_clear(&r);
        lmt_response(p, 200, len, strlen(len), &r);
        b = resp_json(&r);
        m = json_array_get(JGET(b, "choices"), 0);
        T_STREQ(JSTR(m, "finish_reason"), "length");
        T_STREQ(JSTR(JGET(m, "message"), "reasoning_content"), "t");
        json_decref(b);
        lmt_result_clear(&r);
    }
    T_END();
}

static void test_embeddings(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *d;
    const char *req = pt_q("{'model':'all-minilm','input':['a','b']}");
    const char *resp = pt_q("{'model':'all-minilm','embeddings':[[0.01,-0.0017],[1,2]],"
                            "'total_duration':14143917,'load_duration':1019500,"
                            "'prompt_eval_count':8}");

    T_BEGIN("ollama_embed");
    T_CHECK(lmt_build(p, LM_OP_EMBED, req, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.url, "http://localhost:11434/api/embed");
    b = body_of(&u);
    T_STREQ(JSTR(b, "model"), "all-minilm");
    T_CHECK(json_array_size(JGET(b, "input")) == 2, "input");
    json_decref(b);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, resp, strlen(resp), &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    b = resp_json(&r);
    T_STREQ(JSTR(b, "object"), "list");
    T_CHECK(json_array_size(JGET(b, "data")) == 2, "2 rows");
    d = json_array_get(JGET(b, "data"), 1);
    T_STREQ(JSTR(d, "object"), "embedding");
    T_CHECK(JINT(d, "index") == 1 &&
                json_integer_value(json_array_get(JGET(d, "embedding"), 1)) == 2,
            "row 1");
    T_CHECK(JINT(JGET(b, "usage"), "prompt_tokens") == 8 &&
                JINT(JGET(b, "usage"), "total_tokens") == 8,
            "usage (the kernel's)");
    T_CHECK(r.usage.prompt == 8 && r.usage.completion == 0 && r.usage.total == 8, "lm usage");
    json_decref(b);
    lmt_result_clear(&r);

    T_CHECK(lmt_build(p, LM_OP_EMBED,
                      pt_q("{'model':'all-minilm','input':'x','encoding_format':'base64'}"), &u,
                      &e) == LM_OK,
            "build");
    b = body_of(&u);
    T_STREQ(JSTR(b, "input"), "x");
    json_decref(b);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, "{\"embeddings\":[[1.0,-2.0]]}", 27, &r);
    b = resp_json(&r);
    /* The kernel takes encoding_format and encodes the plugin's floats. */
    T_STREQ(JSTR(json_array_get(JGET(b, "data"), 0), "embedding"), "AACAPwAAAMA=");
    json_decref(b);
    lmt_result_clear(&r);
    T_CHECK(lmt_build(p, LM_OP_EMBED, pt_q("{'model':'all-minilm','input':[[1,2]]}"), &u, &e) < 0 &&
                e.http_status == 400,
            "token arrays -> 400");
    lmt_ureq_clear(&u);
    T_END();
}

static void test_config(void)
{
    char err[512];
    lmt_ureq u;
    lm_err e;
    const char *cfg[] = {"base_url", "http://gpu-box:11434/", "api_key", "proxy-SECRET", NULL};
    lmt_plugin *p;

    T_BEGIN("ollama_config");
    p = lmt_load(pt_so_path(), (const char *const[]){"base_url", "gpu-box:11434", NULL}, err,
                 sizeof(err));
    T_CHECK(p == NULL, "base_url must be http(s)");
    lmt_unload(p);
    p = pt_load(cfg);
    T_CHECK(p != NULL, "load");
    if (p != NULL) {
        T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build");
        T_STREQ(u.url, "http://gpu-box:11434/api/chat");
        T_STREQ(lmt_header(&u, "Authorization"), "Bearer proxy-SECRET");
        T_CHECK(strstr(u.url, "SECRET") == NULL && strstr(u.body, "SECRET") == NULL,
                "key only in the header");
        lmt_ureq_clear(&u);
        T_CHECK(lmt_provider(p)->framing == LM_FRAME_NDJSON, "NDJSON framing");
        T_CHECK(lmt_provider(p)->param_ranges == NULL && lmt_provider(p)->embed_max_inputs == 0,
                "no ranges, no batch limit");
        T_CHECK(!(lmt_provider(p)->flags & LM_PF_MULTI_CHOICE), "no n > 1");
        lmt_unload(p);
    }
    T_END();
}

int main(void)
{
    lmt_plugin *p;
    init_golden();
    p = pt_load(CFG);
    T_BEGIN("ollama_load");
    T_CHECK(p != NULL, "load");
    T_END();
    if (p != NULL) {
        test_g1(p);
        test_g2(p);
        test_g3(p);
        test_errors(p);
        test_quirks(p);
        test_request_mapping(p);
        test_embeddings(p);
        lmt_unload(p);
    }
    test_config();
    pt_q_free_all();
    T_EXIT();
}
