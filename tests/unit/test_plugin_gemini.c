/* gemini plugin through the test kit: golden cases 9.5 (G1/G2/G3, the
 * API_KEY_INVALID probe), request shape, SSE (CRLF) at every split,
 * STOP -> tool_calls, safety blocks, thinking usage, embeddings, errors. */
#define PT_PLUGIN "gemini"
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

/* ---- golden inputs (9 + 9.5) ---- */

static const char *G1, *G2, *G3, *G1_RESP, *G2_SSE, *G3_RESP;

static void init_golden(void)
{
    G1 = pt_q("{'model':'gemini-2.0-flash','messages':[{'role':'system','content':'You are "
              "terse.'},{'role':'user','content':'Say hi'}],'max_tokens':16,'temperature':0.2}");
    G2 = pt_q("{'model':'gemini-2.0-flash','messages':[{'role':'system','content':'You are "
              "terse.'},{'role':'user','content':'Say hi'}],'max_tokens':16,'temperature':0.2,"
              "'stream':true,'stream_options':{'include_usage':true}}");
    G3 =
        pt_q("{'model':'gemini-2.0-flash','messages':[{'role':'user','content':'Weather in "
             "Paris?'}],'tools':[{'type':'function','function':{'name':'get_weather','description':"
             "'Get weather','parameters':{'type':'object','properties':{'city':{'type':'string'}},"
             "'required':['city']}}}],'tool_choice':'auto'}");
    G1_RESP = pt_q("{'candidates':[{'content':{'role':'model','parts':[{'text':'Hi!'}]},"
                   "'finishReason':'STOP','index':0}],'usageMetadata':{'promptTokenCount':12,"
                   "'candidatesTokenCount':2,'totalTokenCount':14},'modelVersion':"
                   "'gemini-2.0-flash','responseId':'resp-g1'}");
    /* Google frames with CRLF: data: ...\r\n\r\n */
    G2_SSE = pt_q("data: {'candidates':[{'content':{'role':'model','parts':[{'text':'Hi'}]},"
                  "'index':0}],'usageMetadata':{'promptTokenCount':12,'candidatesTokenCount':1,"
                  "'totalTokenCount':13},'responseId':'resp-g2'}\r\n\r\n"
                  "data: {'candidates':[{'content':{'role':'model','parts':[{'text':'!'}]},"
                  "'finishReason':'STOP','index':0}],'usageMetadata':{'promptTokenCount':12,"
                  "'candidatesTokenCount':2,'totalTokenCount':14},'responseId':'resp-g2'}\r\n\r\n");
    G3_RESP = pt_q("{'candidates':[{'content':{'role':'model','parts':[{'functionCall':{'name':"
                   "'get_weather','args':{'city':'Paris'}}}]},'finishReason':'STOP','index':0}],"
                   "'usageMetadata':{'promptTokenCount':30,'candidatesTokenCount':10,"
                   "'totalTokenCount':40}}");
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
    json_t *b, *m, *gc;

    T_BEGIN("gemini_g1_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G1, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.method, "POST");
    T_STREQ(
        u.url,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent");
    T_STREQ(lmt_header(&u, "x-goog-api-key"), "k");
    T_CHECK(strstr(u.url, "key=") == NULL, "no key in the URL");
    b = body_of(&u);
    T_STREQ(JSTR(json_array_get(JGET(JGET(b, "systemInstruction"), "parts"), 0), "text"),
            "You are terse.");
    T_CHECK(json_array_size(JGET(b, "contents")) == 1, "one content");
    m = json_array_get(JGET(b, "contents"), 0);
    T_STREQ(JSTR(m, "role"), "user");
    T_STREQ(JSTR(json_array_get(JGET(m, "parts"), 0), "text"), "Say hi");
    gc = JGET(b, "generationConfig");
    T_CHECK(json_number_value(JGET(gc, "temperature")) == 0.2, "temperature");
    T_CHECK(JINT(gc, "maxOutputTokens") == 16, "maxOutputTokens");
    T_CHECK(JGET(b, "model") == NULL && JGET(b, "messages") == NULL && JGET(b, "stream") == NULL,
            "no OpenAI fields in the body");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("gemini_g1_response");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G1_RESP, strlen(G1_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d %s", r.rc, r.err.msg);
    b = resp_json(&r);
    m = json_array_get(JGET(b, "choices"), 0);
    T_STREQ(JSTR(b, "object"), "chat.completion");
    T_STREQ(JSTR(JGET(m, "message"), "content"), "Hi!");
    T_STREQ(JSTR(m, "finish_reason"), "stop");
    T_CHECK(JINT(JGET(b, "usage"), "total_tokens") == 14, "the kernel's usage object");
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

    T_BEGIN("gemini_g2_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build");
    T_STREQ(u.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                   "gemini-2.0-flash:streamGenerateContent?alt=sse");
    T_STREQ(lmt_header(&u, "x-goog-api-key"), "k");
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("gemini_g2_stream_every_split");
    pt_stream_all(p, G2, G2_SSE, &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    T_CHECK(r.done == 0, "no end marker: the kernel ends on a clean EOF");
    pt_aggregate(r.json, 0, &a);
    T_STREQ(a.content, "Hi!");
    T_CHECK(a.nfinish == 1, "one finish, got %d", a.nfinish);
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
    json_t *b, *d, *m, *tc, *args;

    T_BEGIN("gemini_g3_request");
    T_CHECK(lmt_build(p, LM_OP_CHAT, G3, &u, &e) == LM_OK, "build");
    b = body_of(&u);
    d = json_array_get(JGET(json_array_get(JGET(b, "tools"), 0), "functionDeclarations"), 0);
    T_STREQ(JSTR(d, "name"), "get_weather");
    T_STREQ(JSTR(d, "description"), "Get weather");
    T_STREQ(JSTR(JGET(d, "parameters"), "type"), "object");
    T_CHECK(JGET(JGET(JGET(d, "parameters"), "properties"), "city") != NULL, "schema");
    T_STREQ(JSTR(JGET(JGET(b, "toolConfig"), "functionCallingConfig"), "mode"), "AUTO");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("gemini_g3_response_stop_is_tool_calls");
    lmt_build(p, LM_OP_CHAT, G3, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, G3_RESP, strlen(G3_RESP), &r);
    T_CHECK(r.rc == LM_OK, "rc %d", r.rc);
    b = resp_json(&r);
    m = json_array_get(JGET(b, "choices"), 0);
    tc = json_array_get(JGET(JGET(m, "message"), "tool_calls"), 0);
    T_CHECK(JSTR(tc, "id") && JSTR(tc, "id")[0], "non-empty id");
    T_STREQ(JSTR(tc, "type"), "function");
    T_STREQ(JSTR(JGET(tc, "function"), "name"), "get_weather");
    args = json_loads(
        JSTR(JGET(tc, "function"), "arguments") ? JSTR(JGET(tc, "function"), "arguments") : "", 0,
        NULL);
    T_CHECK(pt_same_json(JSTR(JGET(tc, "function"), "arguments"), "{\"city\":\"Paris\"}"), "args");
    T_STREQ(JSTR(m, "finish_reason"), "tool_calls");
    T_CHECK(json_is_null(JGET(JGET(m, "message"), "content")), "content null");
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
    const char *bkey =
        pt_q("{'error':{'code':400,'message':'API key not valid. Please pass a valid "
             "API key.','status':'INVALID_ARGUMENT','details':[{'@type':"
             "'type.googleapis.com/google.rpc.ErrorInfo','reason':'API_KEY_INVALID'}]}}");
    const char *b400 = pt_q("{'error':{'code':400,'message':'Invalid JSON payload','status':"
                            "'INVALID_ARGUMENT'}}");
    const char *b429 = pt_q("{'error':{'code':429,'message':'Resource has been exhausted','status':"
                            "'RESOURCE_EXHAUSTED'}}");
    const char *b500 = pt_q("{'error':{'code':500,'message':'An internal error has occurred.',"
                            "'status':'INTERNAL'}}");
    const char *b404 =
        pt_q("{'error':{'code':404,'message':'models/gemini-9 is not found','status':"
             "'NOT_FOUND'}}");
    const char *b403 = pt_q("{'error':{'code':403,'message':'Permission denied','status':"
                            "'PERMISSION_DENIED'}}");

    T_BEGIN("gemini_error_api_key_invalid_is_401");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 400, bkey, strlen(bkey), &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 401, "status %d", r.err.http_status);
    T_STREQ(r.err.type, "authentication_error");
    T_STREQ(r.err.msg, "API key not valid. Please pass a valid API key.");
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("gemini_error_400_401_403_404_429_500");
    lmt_response(p, 400, b400, strlen(b400), &r);
    T_CHECK(r.err.http_status == 400, "400 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "invalid_request_error");
    lmt_result_clear(&r);
    lmt_response(p, 401, "{}", 2, &r);
    T_CHECK(r.err.http_status == 401, "401 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "authentication_error");
    lmt_result_clear(&r);
    lmt_response(p, 403, b403, strlen(b403), &r);
    T_CHECK(r.err.http_status == 403, "403 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "permission_error");
    lmt_result_clear(&r);
    lmt_response(p, 404, b404, strlen(b404), &r);
    T_CHECK(r.err.http_status == 404, "404 -> %d", r.err.http_status);
    T_STREQ(r.err.code, "model_not_found");
    T_STREQ(r.err.msg, "models/gemini-9 is not found");
    lmt_result_clear(&r);
    lmt_response(p, 429, b429, strlen(b429), &r);
    T_CHECK(r.err.http_status == 429, "429 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "rate_limit_error");
    T_STREQ(r.err.msg, "Resource has been exhausted");
    lmt_result_clear(&r);
    lmt_response(p, 500, b500, strlen(b500), &r);
    T_CHECK(r.err.http_status == 500, "500 -> %d", r.err.http_status);
    T_STREQ(r.err.type, "api_error");
    lmt_result_clear(&r);
    lmt_response(p, 503, "Service Unavailable", 19, &r);
    T_CHECK(r.rc < 0 && r.err.http_status == 503, "plain 503 -> %d", r.err.http_status);
    lmt_result_clear(&r);
    T_END();

    T_BEGIN("gemini_malformed_response");
    lmt_build(p, LM_OP_CHAT, G1, &u, &e);
    lmt_ureq_clear(&u);
    lmt_response(p, 200, "{\"candidates\":[{\"content\"", 25, &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 502, "rc %d status %d", r.rc,
            r.err.http_status);
    lmt_result_clear(&r);
    lmt_response(p, 200, bkey, strlen(bkey), &r);
    T_CHECK(r.rc == LM_EUPSTREAM && r.err.http_status == 401, "error object with 200");
    lmt_result_clear(&r);
    T_END();
}

static void test_quirks(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    pt_agg a;
    json_t *b, *m;

    T_BEGIN("gemini_stream_tool_calls_after_stop");
    {
        const char *s = pt_q(
            "data: {'candidates':[{'content':{'role':'model','parts':[{'text':'Let me check.'}]},"
            "'index':0}]}\r\n\r\n"
            "data: {'candidates':[{'content':{'role':'model','parts':[{'functionCall':{'name':"
            "'get_weather','args':{'city':'Paris'}}},{'functionCall':{'name':'get_weather',"
            "'args':{'city':'Rome','units':{'c':true}}}}]},'index':0}]}\r\n\r\n"
            "data: {'candidates':[{'content':{'role':'model','parts':[{'functionCall':{'name':"
            "'get_time'}}]},'finishReason':'STOP','index':0}],'usageMetadata':"
            "{'promptTokenCount':30,'candidatesTokenCount':10,'totalTokenCount':40}}\r\n\r\n");
        pt_stream_all(p, G3, s, &r);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Let me check.");
        T_CHECK(a.ntools == 3, "3 tool calls, got %d", a.ntools);
        T_STREQ(a.tools[0].name, "get_weather");
        T_CHECK(pt_same_json(a.tools[0].args, "{\"city\":\"Paris\"}"), "args0 %s", a.tools[0].args);
        T_CHECK(pt_same_json(a.tools[1].args, "{\"city\":\"Rome\",\"units\":{\"c\":true}}"),
                "args1 %s", a.tools[1].args);
        T_STREQ(a.tools[2].args, "{}");
        T_CHECK(a.tools[0].id[0] && strcmp(a.tools[0].id, a.tools[1].id) != 0 &&
                    strcmp(a.tools[1].id, a.tools[2].id) != 0,
                "distinct ids %s %s %s", a.tools[0].id, a.tools[1].id, a.tools[2].id);
        T_CHECK(a.tools[0].nid == 1 && a.tools[0].ntype == 1, "id/type once");
        T_STREQ(a.finish, "tool_calls");
        T_CHECK(r.usage.total == 40, "usage");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("gemini_safety_blocks");
    {
        const char *s1 = pt_q("{'candidates':[{'content':{'role':'model','parts':[]},"
                              "'finishReason':'SAFETY','index':0,'safetyRatings':[{'category':"
                              "'HARM_CATEGORY_HARASSMENT','probability':'HIGH','blocked':true}]}],"
                              "'usageMetadata':{'promptTokenCount':5,'totalTokenCount':5}}");
        const char *s2 = pt_q("{'promptFeedback':{'blockReason':'SAFETY','safetyRatings':[]},"
                              "'usageMetadata':{'promptTokenCount':7,'totalTokenCount':7}}");
        const char *s3 =
            pt_q("data: {'promptFeedback':{'blockReason':'PROHIBITED_CONTENT'},"
                 "'usageMetadata':{'promptTokenCount':7,'totalTokenCount':7}}\r\n\r\n");
        const char *s4 =
            pt_q("data: {'candidates':[{'content':{'parts':[{'text':'Once upon'}],"
                 "'role':'model'},'index':0}]}\r\n\r\n"
                 "data: {'candidates':[{'finishReason':'RECITATION','index':0}]}\r\n\r\n");
        lmt_build(p, LM_OP_CHAT, G1, &u, &e);
        lmt_ureq_clear(&u);
        lmt_response(p, 200, s1, strlen(s1), &r);
        b = resp_json(&r);
        m = json_array_get(JGET(b, "choices"), 0);
        T_STREQ(JSTR(m, "finish_reason"), "content_filter");
        T_STREQ(JSTR(JGET(m, "message"), "content"), "");
        json_decref(b);
        lmt_result_clear(&r);
        lmt_response(p, 200, s2, strlen(s2), &r);
        T_CHECK(r.rc == LM_OK, "blocked prompt is a 200");
        b = resp_json(&r);
        m = json_array_get(JGET(b, "choices"), 0);
        T_STREQ(JSTR(m, "finish_reason"), "content_filter");
        T_STREQ(JSTR(JGET(m, "message"), "content"), "");
        T_CHECK(r.usage.prompt == 7, "usage on a blocked prompt");
        json_decref(b);
        lmt_result_clear(&r);
        pt_stream_all(p, G2, s3, &r);
        pt_aggregate(r.json, 0, &a);
        T_CHECK(r.rc == LM_OK && a.nfinish == 1, "stream block finishes (rc %d)", r.rc);
        T_STREQ(a.finish, "content_filter");
        lmt_result_clear(&r);
        pt_stream_all(p, G2, s4, &r);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Once upon");
        T_STREQ(a.finish, "content_filter");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("gemini_thinking_and_usage");
    {
        const char *s =
            pt_q("{'candidates':[{'content':{'role':'model','parts':[{'text':'Plan: add.',"
                 "'thought':true},{'text':'4'}]},'finishReason':'MAX_TOKENS','index':0}],"
                 "'usageMetadata':{'promptTokenCount':10,'candidatesTokenCount':1,"
                 "'thoughtsTokenCount':20,'cachedContentTokenCount':4,"
                 "'totalTokenCount':31}}");
        const char *st =
            pt_q("data: {'candidates':[{'content':{'role':'model','parts':[{'text':"
                 "'Plan','thought':true}]},'index':0}],'usageMetadata':"
                 "{'promptTokenCount':10,'thoughtsTokenCount':5,'totalTokenCount':15}}"
                 "\r\n\r\n"
                 "data: {'candidates':[{'content':{'role':'model','parts':[{'text':"
                 "'4'}]},'finishReason':'STOP','index':0}],'usageMetadata':"
                 "{'promptTokenCount':10,'candidatesTokenCount':1,'thoughtsTokenCount':"
                 "20,'totalTokenCount':31}}\r\n\r\n");
        lmt_build(p, LM_OP_CHAT, G1, &u, &e);
        lmt_ureq_clear(&u);
        lmt_response(p, 200, s, strlen(s), &r);
        b = resp_json(&r);
        m = json_array_get(JGET(b, "choices"), 0);
        T_STREQ(JSTR(JGET(m, "message"), "content"), "4");
        T_STREQ(JSTR(JGET(m, "message"), "reasoning_content"), "Plan: add.");
        T_STREQ(JSTR(m, "finish_reason"), "length");
        T_CHECK(r.usage.prompt == 10 && r.usage.completion == 21 && r.usage.total == 31 &&
                    r.usage.reasoning == 20 && r.usage.cached == 4,
                "usage %lld/%lld/%lld r%lld c%lld", (long long)r.usage.prompt,
                (long long)r.usage.completion, (long long)r.usage.total,
                (long long)r.usage.reasoning, (long long)r.usage.cached);
        T_CHECK(JINT(JGET(JGET(b, "usage"), "completion_tokens_details"), "reasoning_tokens") == 20,
                "reasoning_tokens in the kernel's usage object");
        json_decref(b);
        lmt_result_clear(&r);
        pt_stream_all(p, G2, st, &r);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.reasoning, "Plan");
        T_STREQ(a.content, "4");
        T_CHECK(r.usage.completion == 21 && r.usage.total == 31 && r.usage.reasoning == 20,
                "stream usage is the last report");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("gemini_two_candidates");
    {
        const char *s = pt_q("{'candidates':[{'content':{'role':'model','parts':[{'text':'A'}]},"
                             "'finishReason':'STOP','index':0},{'content':{'role':'model','parts':"
                             "[{'text':'B'}]},'finishReason':'MAX_TOKENS','index':1}]}");
        const char *st =
            pt_q("data: {'candidates':[{'content':{'parts':[{'text':'A'}]},'index':0},"
                 "{'content':{'parts':[{'text':'B'}]},'index':1}]}\r\n\r\n"
                 "data: {'candidates':[{'content':{'parts':[{'text':'a'}]},"
                 "'finishReason':'STOP','index':0},{'content':{'parts':[{'text':'b'}]},"
                 "'finishReason':'MAX_TOKENS','index':1}]}\r\n\r\n");
        const char *c2 = pt_q("{'model':'gemini-2.0-flash','n':2,'stream':true,'messages':[{'role':"
                              "'user','content':'x'}]}");
        T_CHECK(lmt_build(p, LM_OP_CHAT, c2, &u, &e) == LM_OK, "build");
        b = body_of(&u);
        T_CHECK(JINT(JGET(b, "generationConfig"), "candidateCount") == 2, "candidateCount");
        json_decref(b);
        lmt_ureq_clear(&u);
        lmt_response(p, 200, s, strlen(s), &r);
        b = resp_json(&r);
        T_CHECK(json_array_size(JGET(b, "choices")) == 2, "2 choices");
        m = json_array_get(JGET(b, "choices"), 1);
        T_CHECK(JINT(m, "index") == 1, "index 1");
        T_STREQ(JSTR(JGET(m, "message"), "content"), "B");
        T_STREQ(JSTR(m, "finish_reason"), "length");
        json_decref(b);
        lmt_result_clear(&r);
        pt_stream_all(p, c2, st, &r);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Aa");
        T_STREQ(a.finish, "stop");
        pt_aggregate(r.json, 1, &a);
        T_STREQ(a.content, "Bb");
        T_STREQ(a.finish, "length");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("gemini_stream_error_event");
    {
        const char *s =
            pt_q("data: {'candidates':[{'content':{'parts':[{'text':'Hel'}],'role':"
                 "'model'},'index':0}]}\r\n\r\n"
                 "data: {'error':{'code':503,'message':'The model is overloaded. Please "
                 "try again later.','status':'UNAVAILABLE'}}\r\n\r\n"
                 "data: {'candidates':[{'content':{'parts':[{'text':'NEVER'}]},"
                 "'index':0}]}\r\n\r\n");
        pt_stream_all(p, G2, s, &r);
        T_CHECK(r.rc == LM_EUPSTREAM, "rc %d", r.rc);
        T_CHECK(r.err.http_status == 503, "status %d", r.err.http_status);
        T_STREQ(r.err.msg, "The model is overloaded. Please try again later.");
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Hel");
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("gemini_stream_cut_off");
    {
        const char *end = strstr(G2_SSE, "\r\n\r\n") + 4;
        char *cut = strndup(G2_SSE, (size_t)(end - G2_SSE));
        pt_stream_all(p, G2, cut, &r);
        T_CHECK(r.rc == LM_OK && r.done == 0, "rc %d done %d", r.rc, r.done);
        pt_aggregate(r.json, 0, &a);
        T_STREQ(a.content, "Hi");
        T_CHECK(a.nfinish == 0, "no finish chunk");
        lmt_result_clear(&r);
        free(cut);
        cut = strndup(G2_SSE, strlen(G2_SSE) - 40); /* inside the last event */
        pt_stream_all(p, G2, cut, &r);
        T_CHECK(r.done == 0, "not done");
        pt_aggregate(r.json, 0, &a);
        T_CHECK(a.nfinish == 0, "half event gives no finish");
        lmt_result_clear(&r);
        free(cut);
    }
    T_END();

    T_BEGIN("gemini_stream_malformed_json");
    {
        const char *s = pt_q("data: {'candidates':[{'content':{'parts':[{'text':'ok'}]}}]}\r\n\r\n"
                             "data: {'candidates':[{'content'\r\n\r\n");
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
    json_t *b, *cs, *c, *parts, *gc;
    const char *conv = pt_q(
        "{'model':'models/gemini-2.5-flash','messages':["
        "{'role':'system','content':'Rule one.'},"
        "{'role':'developer','content':[{'type':'text','text':'Rule two.'}]},"
        "{'role':'user','content':[{'type':'text','text':'What is this?'},"
        "{'type':'image_url','image_url':{'url':'data:image/jpeg;base64,/9j/4AAQ'}}]},"
        "{'role':'user','content':'Also weather.'},"
        "{'role':'assistant','content':'Checking.','tool_calls':["
        "{'id':'call_1','type':'function','function':{'name':'get_weather','arguments':"
        "'{\\'city\\':\\'Paris\\'}'}},"
        "{'id':'call_2','type':'function','function':{'name':'get_time','arguments':'{}'}}]},"
        "{'role':'tool','tool_call_id':'call_1','content':'{\\'temp_c\\':18}'},"
        "{'role':'tool','tool_call_id':'call_2','content':'noon'}],"
        "'top_p':0.9,'stop':['END','STOP'],'seed':7,'presence_penalty':0.1,"
        "'frequency_penalty':0.2,'max_completion_tokens':50,'user':'u1','logprobs':true,"
        "'response_format':{'type':'json_schema','json_schema':{'name':'x','strict':true,"
        "'schema':{'$schema':'http://json-schema.org/draft-07/schema#','type':'object',"
        "'additionalProperties':false,'properties':{'a':{'type':'object',"
        "'additionalProperties':false,'properties':{'b':{'type':'string'}}}}}}},"
        "'tools':[{'type':'function','function':{'name':'get_weather','parameters':"
        "{'type':'object','additionalProperties':false,'properties':{'city':{'type':'string'}}}}},"
        "{'type':'function','function':{'name':'get_time','parameters':{'type':'object',"
        "'properties':{}}}}],"
        "'tool_choice':{'type':'function','function':{'name':'get_weather'}}}");

    T_BEGIN("gemini_roles_parts_and_tools");
    T_CHECK(lmt_build(p, LM_OP_CHAT, conv, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                   "gemini-2.5-flash:generateContent");
    b = body_of(&u);
    parts = JGET(JGET(b, "systemInstruction"), "parts");
    T_CHECK(json_array_size(parts) == 2, "two system parts");
    T_STREQ(JSTR(json_array_get(parts, 1), "text"), "Rule two.");
    cs = JGET(b, "contents");
    T_CHECK(json_array_size(cs) == 3, "user, model, user; got %zu", json_array_size(cs));
    c = json_array_get(cs, 0);
    parts = JGET(c, "parts");
    T_STREQ(JSTR(c, "role"), "user");
    T_CHECK(json_array_size(parts) == 3, "merged user parts");
    T_STREQ(JSTR(JGET(json_array_get(parts, 1), "inlineData"), "mimeType"), "image/jpeg");
    T_STREQ(JSTR(JGET(json_array_get(parts, 1), "inlineData"), "data"), "/9j/4AAQ");
    T_STREQ(JSTR(json_array_get(parts, 2), "text"), "Also weather.");
    c = json_array_get(cs, 1);
    parts = JGET(c, "parts");
    T_STREQ(JSTR(c, "role"), "model");
    T_STREQ(JSTR(json_array_get(parts, 0), "text"), "Checking.");
    T_STREQ(JSTR(JGET(json_array_get(parts, 1), "functionCall"), "name"), "get_weather");
    T_STREQ(JSTR(JGET(JGET(json_array_get(parts, 1), "functionCall"), "args"), "city"), "Paris");
    c = json_array_get(cs, 2);
    parts = JGET(c, "parts");
    T_STREQ(JSTR(c, "role"), "user");
    T_CHECK(json_array_size(parts) == 2, "adjacent tool results in one turn");
    T_STREQ(JSTR(JGET(json_array_get(parts, 0), "functionResponse"), "name"), "get_weather");
    T_CHECK(JINT(JGET(JGET(json_array_get(parts, 0), "functionResponse"), "response"), "temp_c") ==
                18,
            "JSON object result kept");
    T_STREQ(JSTR(JGET(json_array_get(parts, 1), "functionResponse"), "name"), "get_time");
    T_STREQ(JSTR(JGET(JGET(json_array_get(parts, 1), "functionResponse"), "response"), "content"),
            "noon");
    T_END();

    T_BEGIN("gemini_generation_config");
    gc = JGET(b, "generationConfig");
    T_CHECK(json_number_value(JGET(gc, "topP")) == 0.9, "topP");
    T_CHECK(json_array_size(JGET(gc, "stopSequences")) == 2, "stopSequences");
    T_CHECK(JINT(gc, "seed") == 7, "seed");
    T_CHECK(JINT(gc, "maxOutputTokens") == 50, "maxOutputTokens");
    T_CHECK(json_number_value(JGET(gc, "presencePenalty")) == 0.1, "presencePenalty");
    T_CHECK(json_number_value(JGET(gc, "frequencyPenalty")) == 0.2, "frequencyPenalty");
    T_STREQ(JSTR(gc, "responseMimeType"), "application/json");
    T_CHECK(JGET(gc, "responseSchema") != NULL &&
                JGET(JGET(gc, "responseSchema"), "additionalProperties") == NULL &&
                JGET(JGET(gc, "responseSchema"), "$schema") == NULL &&
                JGET(JGET(JGET(JGET(gc, "responseSchema"), "properties"), "a"),
                     "additionalProperties") == NULL,
            "schema stripped");
    T_CHECK(JGET(b, "user") == NULL && JGET(b, "logprobs") == NULL && JGET(gc, "logprobs") == NULL,
            "dropped");
    {
        json_t *decls = JGET(json_array_get(JGET(b, "tools"), 0), "functionDeclarations");
        json_t *fcc = JGET(JGET(b, "toolConfig"), "functionCallingConfig");
        T_CHECK(json_array_size(decls) == 2, "two declarations");
        T_CHECK(JGET(JGET(json_array_get(decls, 0), "parameters"), "additionalProperties") == NULL,
                "parameters stripped");
        T_CHECK(JGET(json_array_get(decls, 1), "parameters") == NULL,
                "empty object schema omitted");
        T_STREQ(JSTR(fcc, "mode"), "ANY");
        T_STREQ(json_string_value(json_array_get(JGET(fcc, "allowedFunctionNames"), 0)),
                "get_weather");
    }
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();

    T_BEGIN("gemini_bad_requests");
    T_CHECK(
        lmt_build(p, LM_OP_CHAT,
                  pt_q("{'model':'gemini-2.0-flash','messages':[{'role':'user','content':[{'type':"
                       "'image_url','image_url':{'url':'https://example.com/a.png'}}]}]}"),
                  &u, &e) == LM_EINVAL &&
            e.http_status == 400,
        "http image URL -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(p, LM_OP_CHAT,
                      pt_q("{'model':'gemini-2.0-flash','messages':[{'role':'tool','tool_call_id':"
                           "'nope','content':'x'}]}"),
                      &u, &e) == LM_EINVAL,
            "unknown tool_call_id -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(p, LM_OP_CHAT,
                      pt_q("{'model':'../../evil?x=','messages':[{'role':'user','content':'x'}]}"),
                      &u, &e) == LM_EINVAL,
            "model with path characters -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(
                p, LM_OP_CHAT,
                pt_q("{'model':'gemini-2.0-flash','messages':[{'role':'assistant','tool_calls':"
                     "[{'id':'c','type':'function','function':{'name':'f','arguments':'[1]'}}]}]}"),
                &u, &e) == LM_EINVAL,
            "array arguments -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(
        lmt_build(p, LM_OP_CHAT,
                  pt_q("{'model':'gemini-2.0-flash','messages':[{'role':'user','content':'x'}],"
                       "'tool_choice':'required','tools':[{'type':'function','function':{'name':"
                       "'f'}}]}"),
                  &u, &e) == LM_OK,
        "required ok");
    b = body_of(&u);
    T_STREQ(JSTR(JGET(JGET(b, "toolConfig"), "functionCallingConfig"), "mode"), "ANY");
    json_decref(b);
    lmt_ureq_clear(&u);
    T_END();
}

static void test_embeddings(lmt_plugin *p)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *b, *d;
    const char *one = pt_q("{'model':'text-embedding-004','input':'hi','dimensions':256}");
    const char *many = pt_q("{'model':'text-embedding-004','input':['a','b'],'encoding_format':"
                            "'float'}");

    T_BEGIN("gemini_embed_single");
    T_CHECK(lmt_build(p, LM_OP_EMBED, one, &u, &e) == LM_OK, "build: %s", e.msg);
    T_STREQ(u.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                   "text-embedding-004:embedContent");
    T_STREQ(lmt_header(&u, "x-goog-api-key"), "k");
    b = body_of(&u);
    T_STREQ(JSTR(b, "model"), "models/text-embedding-004");
    T_STREQ(JSTR(json_array_get(JGET(JGET(b, "content"), "parts"), 0), "text"), "hi");
    T_CHECK(JINT(b, "outputDimensionality") == 256, "dimensions");
    json_decref(b);
    lmt_ureq_clear(&u);
    {
        const char *resp = pt_q("{'embedding':{'values':[0.013,-0.008]}}");
        lmt_response(p, 200, resp, strlen(resp), &r);
        b = resp_json(&r);
        d = json_array_get(JGET(b, "data"), 0);
        T_STREQ(JSTR(b, "object"), "list");
        T_STREQ(JSTR(b, "model"), "text-embedding-004");
        T_STREQ(JSTR(d, "object"), "embedding");
        T_CHECK(JINT(d, "index") == 0, "index");
        T_CHECK(json_array_size(JGET(d, "embedding")) == 2 &&
                    json_real_value(json_array_get(JGET(d, "embedding"), 1)) == -0.008,
                "values");
        /* the kernel writes the object clients read (zeros); billing sees it unknown */
        T_CHECK(JINT(JGET(b, "usage"), "total_tokens") == 0, "usage object present");
        T_CHECK(r.usage.prompt == -1 && r.usage.total == -1, "Gemini reports no embedding usage");
        json_decref(b);
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("gemini_embed_batch");
    T_CHECK(lmt_build(p, LM_OP_EMBED, many, &u, &e) == LM_OK, "build");
    T_STREQ(u.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                   "text-embedding-004:batchEmbedContents");
    b = body_of(&u);
    T_CHECK(json_array_size(JGET(b, "requests")) == 2, "two requests");
    T_STREQ(JSTR(json_array_get(JGET(b, "requests"), 1), "model"), "models/text-embedding-004");
    T_STREQ(JSTR(json_array_get(
                     JGET(JGET(json_array_get(JGET(b, "requests"), 1), "content"), "parts"), 0),
                 "text"),
            "b");
    json_decref(b);
    lmt_ureq_clear(&u);
    {
        const char *resp = pt_q("{'embeddings':[{'values':[1,2]},{'values':[3,4]}]}");
        lmt_response(p, 200, resp, strlen(resp), &r);
        b = resp_json(&r);
        T_CHECK(json_array_size(JGET(b, "data")) == 2, "2 rows");
        d = json_array_get(JGET(b, "data"), 1);
        T_CHECK(JINT(d, "index") == 1 &&
                    json_integer_value(json_array_get(JGET(d, "embedding"), 0)) == 3,
                "row 1");
        json_decref(b);
        lmt_result_clear(&r);
    }
    T_END();

    T_BEGIN("gemini_embed_floats_and_errors");
    T_CHECK(lmt_provider(p)->embed_max_inputs == 100, "batchEmbedContents takes 100 inputs");
    T_CHECK(lmt_build(p, LM_OP_EMBED, pt_q("{'model':'text-embedding-004','input':'x'}"), &u, &e) ==
                LM_OK,
            "build");
    lmt_ureq_clear(&u);
    {
        /* Always floats: the kernel base64-encodes when the client asked. */
        const char *resp = pt_q("{'embedding':{'values':[1.0,-2.0]}}");
        lmt_response(p, 200, resp, strlen(resp), &r);
        b = resp_json(&r);
        T_CHECK(json_real_value(json_array_get(
                    JGET(json_array_get(JGET(b, "data"), 0), "embedding"), 1)) == -2.0,
                "float array");
        json_decref(b);
        lmt_result_clear(&r);
    }
    T_CHECK(lmt_build(p, LM_OP_EMBED, pt_q("{'model':'text-embedding-004','input':[[1,2]]}"), &u,
                      &e) == LM_EINVAL,
            "token arrays -> 400");
    lmt_ureq_clear(&u);
    T_CHECK(lmt_build(p, LM_OP_EMBED, one, &u, &e) == LM_OK, "build");
    lmt_ureq_clear(&u);
    lmt_response(p, 200, "{\"nothing\":1}", 13, &r);
    T_CHECK(r.rc == LM_EUPSTREAM, "no embedding -> upstream error");
    lmt_result_clear(&r);
    T_END();
}

static void test_config(void)
{
    char err[512];
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    json_t *models = NULL;
    lm_err le;
    const char *cfg[] = {"api_key", "AIzaSECRET", "base_url", "http://127.0.0.1:9/v1beta/", NULL};
    lmt_plugin *p;

    T_BEGIN("gemini_config");
    p = lmt_load(pt_so_path(), (const char *const[]){"base_url", "http://x", NULL}, err,
                 sizeof(err));
    T_CHECK(p == NULL, "api_key is required");
    lmt_unload(p);
    p = pt_load(cfg);
    T_CHECK(p != NULL, "load");
    if (p != NULL) {
        T_CHECK(lmt_build(p, LM_OP_CHAT, G2, &u, &e) == LM_OK, "build");
        T_STREQ(u.url, "http://127.0.0.1:9/v1beta/models/gemini-2.0-flash:"
                       "streamGenerateContent?alt=sse");
        T_CHECK(strstr(u.url, "SECRET") == NULL, "no key in the URL");
        T_STREQ(lmt_header(&u, "x-goog-api-key"), "AIzaSECRET");
        lmt_ureq_clear(&u);
        const char *bkey = pt_q("{'error':{'code':400,'message':'API key not valid.','status':"
                                "'INVALID_ARGUMENT','details':[{'reason':'API_KEY_INVALID'}]}}");
        lmt_response(p, 400, bkey, strlen(bkey), &r);
        T_CHECK(strstr(r.err.msg, "SECRET") == NULL, "no key in the error");
        lmt_result_clear(&r);
        T_CHECK(lmt_provider(p)->list_models != NULL, "list_models");
        /* The static model list does not read istate. */
        if (lmt_provider(p)->list_models(NULL, &models, &le) == LM_OK) {
            T_CHECK(json_array_size(models) > 0 && json_is_string(json_array_get(models, 0)),
                    "model list");
        } else {
            T_CHECK(0, "list_models failed");
        }
        json_decref(models);
        T_CHECK(lmt_provider(p)->framing == LM_FRAME_SSE && (lmt_provider(p)->caps & LM_CAP_EMBED),
                "framing / caps");
        T_CHECK(lmt_provider(p)->flags & LM_PF_MULTI_CHOICE, "n > 1 is candidateCount");
        lmt_unload(p);
    }
    T_END();
}

int main(void)
{
    lmt_plugin *p;
    init_golden();
    p = pt_load(CFG);
    T_BEGIN("gemini_load");
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
