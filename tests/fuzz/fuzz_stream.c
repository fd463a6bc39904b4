/* Fuzz the stream path end to end: splitter -> openai plugin parse_event ->
 * emit (usage merge, chunk rewriting), via the plugin test kit. */
#include "lmtest.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

const char *lm_fuzz_name = "stream";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static lmt_plugin *plugin;

static void setup(void)
{
    char err[256];
    const char *dir = getenv("PLUGIN_DIR");
    char path[512];
    const char *cfg[] = {"base_url", "http://127.0.0.1:9/v1", NULL};
    snprintf(path, sizeof(path), "%s/openai.so", dir ? dir : "build/plugins");
    plugin = lmt_load(path, cfg, err, sizeof(err));
    if (plugin == NULL)
        abort();
}

/* Load before libFuzzer starts counting: counters of a plugin loaded later
 * are not registered, and the plugin's code would be invisible to it. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    if (plugin == NULL) /* the suite's replay.c does not call the above */
        setup();
    lmt_build(
        plugin, LM_OP_CHAT,
        "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
        &u, &e);
    lmt_ureq_clear(&u);
    lmt_stream(plugin, (const char *)data, size, size ? (data[0] % 13) + 1 : 1, &r);
    lmt_result_clear(&r);
    lmt_response(plugin, 200, (const char *)data, size, &r);
    lmt_result_clear(&r);
    return 0;
}
