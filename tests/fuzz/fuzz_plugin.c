/*
 * Fuzz one provider plugin's upstream parsers (parse_event through the
 * kernel splitter, parse_response, map_error) via the plugin test kit.
 * Compiled once per plugin with -DFUZZ_PLUGIN=\"name\"; its corpus is
 * tests/fuzz/corpus/plugin_<name>/.
 *
 * Input: byte 0 picks the path, the rest is what the upstream sent.
 *   byte0 & 3 == 0  stream, fed in pieces of (byte0 >> 2) bytes (0 = whole)
 *   byte0 & 3 == 1  whole 200 answer to a chat request
 *   byte0 & 3 == 2  error status errs[(byte0 >> 2) % 8] through map_error
 *   byte0 & 3 == 3  200 answer to an embeddings request (chat when the
 *                   plugin has none)
 * The chat requests carry tools so the tool-call translation runs too.
 */
#include "lmtest.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_PLUGIN
#error "build with -DFUZZ_PLUGIN=\"name\""
#endif

const char *lm_fuzz_name = "plugin_" FUZZ_PLUGIN;
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Weather in Paris?\"}]"
#define TOOLS                                                                                      \
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":"     \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":"           \
    "[\"city\"]}}}]"

/* What each plugin needs to load and answer: the settings of its unit test
 * (tests/unit/test_plugin_<name>.c), a model it knows, an embeddings model
 * (NULL: it has no embeddings) and a side value it would otherwise wait for. */
typedef struct fz_plugin {
    const char *name;
    const char *cfg[9];
    const char *model;
    const char *embed_model;
    const char *side_name, *side_value;
    const char *image_model; /* an asynchronous image model (ABI 1.4 tasks), or NULL */
} fz_plugin;

static const fz_plugin plugins[] = {
    {"claude", {"api_key", "k", NULL}, "claude-sonnet-4-5", NULL, NULL, NULL, NULL},
    {"ernie",
     {"base_url", "http://mock/", "client_id", "ak", "client_secret", "sk", NULL},
     "ERNIE-3.5-8K",
     "embedding-v1",
     "access_token",
     "24.test",
     NULL},
    {"ernie2",
     {"base_url", "http://mock/v2/", "api_key", "bce-v3/ALTAK-test/secret", NULL},
     "ernie-3.5-8k",
     "embedding-v1",
     NULL,
     NULL,
     NULL},
    {"gemini", {"api_key", "k", NULL}, "gemini-2.0-flash", "text-embedding-004", NULL, NULL, NULL},
    {"mock", {NULL}, "mock", "mock-embed", NULL, NULL, NULL},
    {"ollama", {NULL}, "llama3.2", "all-minilm", NULL, NULL, NULL},
    {"openai",
     {"base_url", "http://127.0.0.1:9/v1", "api_key", "sk-test", NULL},
     "gpt-4o-mini",
     "text-embedding-3-small",
     NULL,
     NULL,
     NULL},
    {"qwen",
     {"base_url", "http://mock", "api_key", "sk-test", NULL},
     "qwen-plus",
     "text-embedding-v3",
     NULL,
     NULL,
     "wanx-v1"},
    {"spark",
     {"base_url", "http://mock/v1", "api_key", "pw-test-123", NULL},
     "generalv3.5",
     NULL,
     NULL,
     NULL,
     NULL},
};

static const int errs[8] = {400, 401, 403, 404, 429, 500, 503, 529};

static const fz_plugin *spec;
static lmt_plugin *plugin;
static char chat_req[1024], stream_req[1024], embed_req[256];

static void setup(void)
{
    char err[256], path[512];
    const char *dir = getenv("PLUGIN_DIR");
    for (size_t i = 0; i < sizeof(plugins) / sizeof(plugins[0]); i++)
        if (strcmp(plugins[i].name, FUZZ_PLUGIN) == 0)
            spec = &plugins[i];
    if (spec == NULL) {
        fprintf(stderr, "fuzz_plugin: no settings for %s in the table\n", FUZZ_PLUGIN);
        abort();
    }
    snprintf(path, sizeof(path), "%s/%s.so", dir && *dir ? dir : "build/plugins", spec->name);
    plugin = lmt_load(path, spec->cfg, err, sizeof(err));
    if (plugin == NULL) {
        fprintf(stderr, "fuzz_plugin: cannot load %s: %s\n", path, err);
        abort();
    }
    if (spec->side_name)
        lmt_side_set(plugin, spec->side_name, spec->side_value);
    snprintf(chat_req, sizeof(chat_req), "{\"model\":\"%s\"," MSGS "," TOOLS ",\"max_tokens\":16}",
             spec->model);
    snprintf(stream_req, sizeof(stream_req),
             "{\"model\":\"%s\"," MSGS "," TOOLS ",\"stream\":true,"
             "\"stream_options\":{\"include_usage\":true}}",
             spec->model);
    snprintf(embed_req, sizeof(embed_req), "{\"model\":\"%s\",\"input\":[\"a\",\"b\"]}",
             spec->embed_model ? spec->embed_model : "");
    /* A row the plugin refuses would leave the target fuzzing nothing. */
    const char *reqs[3] = {chat_req, stream_req, spec->embed_model ? embed_req : NULL};
    for (int i = 0; i < 3 && reqs[i]; i++) {
        lmt_ureq u;
        lm_err e;
        if (lmt_build(plugin, i == 2 ? LM_OP_EMBED : LM_OP_CHAT, reqs[i], &u, &e) != LM_OK) {
            fprintf(stderr, "fuzz_plugin: %s refuses %s: %s\n", spec->name, reqs[i], e.msg);
            abort();
        }
        lmt_ureq_clear(&u);
    }
}

/* Load before libFuzzer starts counting, so the plugin's coverage counters
 * are registered with the rest of the program's. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup();
    return 0;
}

/* Submit an image task (answered PENDING), then feed the input as one
 * poll's answer: the plugin's task-status reader. */
static int fuzz_poll(const char *body, size_t len, unsigned sel)
{
    static const char pending[] = "{\"output\":{\"task_id\":\"t-1\",\"task_status\":\"PENDING\"}}";
    char req[256];
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    snprintf(req, sizeof(req), "{\"model\":\"%s\",\"prompt\":\"a cat\",\"size\":\"512x512\"}",
             spec->image_model);
    if (lmt_build(plugin, LM_OP_IMAGES, req, &u, &e) != LM_OK)
        abort(); /* the fixed request must be taken */
    lmt_ureq_clear(&u);
    lmt_response(plugin, 200, pending, strlen(pending), &r);
    lmt_result_clear(&r);
    lmt_poll(plugin, (sel >> 2) & 1 ? errs[(sel >> 3) % 8] : 200, body, len, &u, &r);
    lmt_ureq_clear(&u);
    lmt_result_clear(&r);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    if (plugin == NULL)
        setup();
    if (size == 0)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    unsigned sel = data[0];
    int op = LM_OP_CHAT;
    const char *req = chat_req;
    if ((sel & 0x83) == 0x81 && spec->image_model) /* a task's poll answers (ABI 1.4) */
        return fuzz_poll(body, len, sel);
    if ((sel & 3) == 0)
        req = stream_req;
    else if ((sel & 3) == 3 && spec->embed_model) {
        op = LM_OP_EMBED;
        req = embed_req;
    }
    /* An input that makes the plugin drop its side value (ERNIE v1 on an
     * expired-token answer) must not leave every later build waiting. */
    if (spec->side_name)
        lmt_side_set(plugin, spec->side_name, spec->side_value);
    int rc = lmt_build(plugin, op, req, &u, &e);
    lmt_ureq_clear(&u);
    /* A request the plugin refused never reaches the upstream. */
    if (rc != LM_OK)
        return 0;
    if ((sel & 3) == 0)
        lmt_stream(plugin, body, len, sel >> 2, &r);
    else if ((sel & 3) == 2)
        lmt_response(plugin, errs[(sel >> 2) % 8], body, len, &r);
    else
        lmt_response(plugin, 200, body, len, &r);
    lmt_result_clear(&r);
    return 0;
}
