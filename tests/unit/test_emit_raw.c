/* ABI 1.4 emit_raw: an upstream chunk that needs no change reaches the
 * sink as its own bytes (its "usage" member cut out), with the same stream
 * bookkeeping the tree path does; anything else is declined untouched.
 * Each case runs a chunk sequence through emit_raw and, side by side,
 * through the tree path a quirk-free OpenAI plugin takes (parse, usage to
 * emit_usage, emit_chunk), and compares what the sink got and the state. */
#include "plugin/host.h"
#include "t.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char last[8192];
    size_t n;
    unsigned count;
} sink_t;

static int sink(void *arg, const char *json, size_t len)
{
    sink_t *s = arg;
    if (len >= sizeof(s->last))
        return -1;
    memcpy(s->last, json, len);
    s->last[len] = '\0';
    s->n = len;
    s->count++;
    return 0;
}

/* What lmo_parse_event does without emit_raw (no quirks). */
static int tree(lm_emit_t *e, const char *txt)
{
    json_t *j = json_loads(txt, 0, NULL);
    lm_usage u;
    if (!json_is_object(j))
        return json_decref(j), LM_EUPSTREAM;
    json_t *err = json_object_get(j, "error");
    if (json_is_object(err) || json_is_string(err))
        return json_decref(j), LM_EUPSTREAM;
    if (lm_usage_from_json(json_object_get(j, "usage"), &u))
        lm_host_table.emit_usage(e, &u);
    json_object_del(j, "usage");
    if (json_array_size(json_object_get(j, "choices")) == 0)
        return json_decref(j), LM_OK;
    return lm_host_table.emit_chunk(e, j);
}

static int same_state(const lm_emit_t *a, const lm_emit_t *b)
{
    return !strcmp(a->id, b->id) && !strcmp(a->model, b->model) && a->created == b->created &&
           !memcmp(&a->usage, &b->usage, sizeof(a->usage)) && a->usage_seen == b->usage_seen &&
           a->nchunks == b->nchunks && a->ncontent == b->ncontent &&
           a->ids_adopted == b->ids_adopted && a->finish_seen == b->finish_seen &&
           a->content_chars == b->content_chars && a->role_sent == b->role_sent &&
           a->finished == b->finished && a->tools_seen == b->tools_seen;
}

/* The text with its top-level "usage" member cut out, as Jansson sees it. */
static int equal_json(const char *a, const char *b)
{
    json_t *x = json_loads(a, 0, NULL), *y = json_loads(b, 0, NULL);
    int eq = x && y && json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return eq;
}

typedef struct {
    sink_t rs, ts;
    lm_emit_t raw, ref;
    int nraw, ndeclined;
} pair_t;

static void pair_init(pair_t *p)
{
    memset(p, 0, sizeof(*p));
    lm_emit_init(&p->raw, LM_USAGE_CUMULATIVE, "r1", "up-model", 5, sink, &p->rs);
    lm_emit_init(&p->ref, LM_USAGE_CUMULATIVE, "r1", "up-model", 5, sink, &p->ts);
    p->raw.raw_ok = 1;
}

/* One chunk both ways. Returns emit_raw's code. */
static int step(pair_t *p, const char *txt)
{
    lm_emit_t before = p->raw;
    unsigned rc0 = p->rs.count;
    int rc = lm_host_table.emit_raw(&p->raw, (lm_str){txt, strlen(txt)});
    if (rc == LM_DECLINED) {
        p->ndeclined++;
        T_CHECK(p->rs.count == rc0 && same_state(&before, &p->raw), "declined but acted: %s", txt);
        int a = tree(&p->raw, txt), b = tree(&p->ref, txt);
        T_CHECK(a == b, "tree paths differ: %s", txt);
    } else {
        p->nraw++;
        unsigned t0 = p->ts.count;
        T_CHECK(rc == LM_OK, "emit_raw %d: %s", rc, txt);
        T_CHECK(tree(&p->ref, txt) == LM_OK, "tree refused what raw took: %s", txt);
        T_CHECK(p->rs.count - rc0 == p->ts.count - t0, "chunk counts differ: %s", txt);
        if (p->rs.count > rc0) {
            T_CHECK(equal_json(p->rs.last, p->ts.last), "raw %s != tree %s", p->rs.last,
                    p->ts.last);
            if (strstr(txt, "\"usage\"") == NULL)
                T_CHECK(!strcmp(p->rs.last, txt), "not the upstream's bytes: %s", p->rs.last);
        }
    }
    T_CHECK(same_state(&p->raw, &p->ref), "state differs after %s", txt);
    return rc;
}

#define HDR                                                                                        \
    "\"id\":\"chatcmpl-up1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"         \
    "\"model\":\"up-real\""

static void test_plain_stream_verbatim(void)
{
    pair_t p;
    T_BEGIN("emit_raw_openai_stream_byte_exact");
    pair_init(&p);
    step(&p, "{" HDR ",\"system_fingerprint\":\"fp\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
             "\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,"
             "\"finish_reason\":null}]}");
    step(&p, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"caf\\u00e9 \\\"x\\\"\"},"
             "\"finish_reason\":null}]}");
    step(&p, "{ " HDR " , \"choices\" : [ {\"index\":0,\"delta\":{\"content\":\"\\ud83d\\ude00\"},"
             "\"finish_reason\":null} ] }");
    step(&p, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}");
    T_CHECK(p.nraw == 4 && p.ndeclined == 0, "raw %d declined %d", p.nraw, p.ndeclined);
    T_CHECK(p.raw.nraw == 4, "nraw %u", p.raw.nraw);
    T_STREQ(p.raw.id, "chatcmpl-up1");
    T_STREQ(p.raw.model, "up-real"); /* adopted as the tree path does */
    T_CHECK(p.raw.content_chars == 9 + 4, "content chars %llu",
            (unsigned long long)p.raw.content_chars);
    T_END();
}

static void test_usage_cut_out(void)
{
    pair_t p;
    T_BEGIN("emit_raw_usage_recorded_and_cut");
    pair_init(&p);
    step(&p, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
             "\"a\"},\"finish_reason\":null}],\"usage\":null}");
    T_STREQ(p.rs.last, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                       "\"content\":\"a\"},\"finish_reason\":null}]}");
    step(&p, "{\"usage\":null, " HDR ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"},"
             "\"finish_reason\":null}]}");
    T_STREQ(p.rs.last, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"},"
                       "\"finish_reason\":null}]}");
    step(&p, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
             "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}");
    T_STREQ(p.rs.last, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
                       "\"stop\"}]}");
    unsigned n = p.rs.count;
    step(&p, "{" HDR ",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}");
    T_CHECK(p.rs.count == n, "the usage-only chunk is not forwarded");
    T_CHECK(p.raw.usage_seen && p.raw.usage.prompt == 9 && p.raw.usage.completion == 3 &&
                p.raw.usage.total == 12,
            "usage %lld/%lld/%lld", (long long)p.raw.usage.prompt,
            (long long)p.raw.usage.completion, (long long)p.raw.usage.total);
    T_CHECK(p.ndeclined == 0, "declined %d", p.ndeclined);
    T_END();
}

/* What the kernel must change goes the tree path, untouched by emit_raw. */
#define FIRST                                                                                      \
    "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"      \
    "\"finish_reason\":null}]}"
#define STOP "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}"

static void test_declines(void)
{
    static const struct {
        const char *pre, *pre2, *c;
    } dec[] = {
        {NULL, NULL,
         "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
         "\"x\"}}]}"}, /* ids to fill in */
        {NULL, NULL, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}"},
        {NULL, NULL, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}"},
        {FIRST, NULL, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}"},
        {FIRST, NULL, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{}}]}"},
        {NULL, NULL,
         "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
         "\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\","
         "\"arguments\":\"{}\"}}]},\"finish_reason\":\"stop\"}]}"},
        {FIRST, STOP, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"late\"}}]}"},
        {NULL, NULL, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":\"x\"}]}"},
        {NULL, NULL, "{" HDR ",\"error\":{\"message\":\"boom\"},\"choices\":[]}"},
        {NULL, NULL, "{\"id\":\"x\",\"choices\":[1,"},
        {NULL, NULL,
         "{" HDR ",\n\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
         "\"content\":\"\"}}]}"},
        {NULL, NULL,
         "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
         "\"content\":\"\"}}],\"choices\":[]}"}, /* a repeated member */
        {NULL, NULL,
         "{\"id\":\"i\",\"object\":\"chat.completion.chunk\",\"created\":1.5,"
         "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
         "\"assistant\",\"content\":\"\"}}]}"},
        {NULL, NULL,
         "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"r\\u006fle\":"
         "\"assistant\",\"content\":\"\"}}]}"}, /* an escaped key */
    };
    T_BEGIN("emit_raw_declines_what_must_change");
    for (size_t i = 0; i < sizeof(dec) / sizeof(dec[0]); i++) {
        pair_t p;
        pair_init(&p);
        if (dec[i].pre)
            T_CHECK(step(&p, dec[i].pre) == LM_OK, "prefix of #%zu", i);
        if (dec[i].pre2)
            T_CHECK(step(&p, dec[i].pre2) == LM_OK, "prefix 2 of #%zu", i);
        T_CHECK(step(&p, dec[i].c) == LM_DECLINED, "took #%zu: %s", i, dec[i].c);
    }
    pair_t p; /* once the tree path sent the role, that choice's later chunks go raw */
    pair_init(&p);
    step(&p, dec[1].c);
    T_CHECK(step(&p, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"y\"}}]}") ==
                LM_OK,
            "a later delta of a started choice");
    T_CHECK(step(&p, "{" HDR ",\"choices\":[{\"index\":40,\"delta\":{}}]}") == LM_OK,
            "an untracked index goes as sent");
    lm_emit_t off;
    sink_t s = {0};
    lm_emit_init(&off, LM_USAGE_CUMULATIVE, "r", "m", 1, sink, &s);
    T_CHECK(lm_host_table.emit_raw(&off, LM_STR(FIRST)) == LM_DECLINED && s.count == 0,
            "raw_ok 0 (a Lua on_event) declines everything");
    T_END();
}

static void test_tools_and_choices(void)
{
    pair_t p;
    T_BEGIN("emit_raw_tool_calls_and_two_choices");
    pair_init(&p);
    step(&p, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
             "null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\","
             "\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null},"
             "{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},"
             "\"finish_reason\":null}]}");
    step(&p, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
             "\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]},\"finish_reason\":null}]}");
    step(&p, "{" HDR ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"},"
             "{\"index\":1,\"delta\":{},\"finish_reason\":\"length\"}]}");
    T_CHECK(p.nraw == 3 && p.raw.tools_seen == 1 && p.raw.finished == 3, "raw %d tools %u fin %u",
            p.nraw, p.raw.tools_seen, p.raw.finished);
    T_CHECK(lm_emit_close(&p.raw) == LM_OK && lm_emit_close(&p.ref) == LM_OK &&
                same_state(&p.raw, &p.ref),
            "close");
    T_END();
}

/* The usage chunk written by printf is byte for byte what Jansson writes
 * for the same tree (and an id that needs escaping still comes out right). */
static void test_usage_chunk_bytes(void)
{
    static const lm_usage us[] = {{9, 2, 11, -1, -1},
                                  {9, -1, -1, 4, -1},
                                  {-1, -1, 7, -1, 3},
                                  {1, 2, 3, 0, 0},
                                  {INT64_MAX, 0, -1, -1, -1}};
    static const char *const ids[] = {"chatcmpl-up1", "id \"q\" \\ caf\xc3\xa9"};
    T_BEGIN("emit_usage_chunk_bytes_as_jansson");
    for (size_t i = 0; i < sizeof(us) / sizeof(us[0]); i++)
        for (size_t k = 0; k < 2; k++) {
            lm_emit_t e;
            lm_emit_init(&e, LM_USAGE_CUMULATIVE, "r", "m/x", -5, sink, NULL);
            snprintf(e.id, sizeof(e.id), "%s", ids[k]);
            e.usage = us[i];
            e.usage_seen = 1;
            json_t *ref =
                json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", e.id, "object",
                          "chat.completion.chunk", "created", (json_int_t)e.created, "model",
                          e.model, "choices", "usage", lm_usage_to_openai(&e.usage));
            char *want = json_dumps(ref, JSON_COMPACT), *got = lm_emit_usage_chunk(&e);
            T_CHECK(want && got && !strcmp(want, got), "%s != %s", got ? got : "(null)",
                    want ? want : "(null)");
            free(want);
            free(got);
            json_decref(ref);
        }
    T_END();
}

int main(void)
{
    test_usage_chunk_bytes();
    test_plain_stream_verbatim();
    test_usage_cut_out();
    test_declines();
    test_tools_and_choices();
    T_EXIT();
}
