/* Test fixture for the crash policy (PL-1): answers locally, and crashes
 * the process with SIGSEGV when the last message is "crash". */
#include "longmen.h"

#include <string.h>

static int c_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    (void)ictx, (void)e;
    *istate = (void *)h;
    return LM_OK;
}

static int c_build(void *s, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    const lm_host_api *h = s;
    json_t *msgs = json_object_get(canon, "messages");
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *text = json_string_value(json_object_get(last, "content"));
    (void)c, (void)e;
    if (text && !strcmp(text, "crash")) {
        volatile int *nowhere = NULL;
        *nowhere = 1; /* a plugin bug, on purpose */
    }
    return h->ureq_local_response(
        u, 200,
        LM_STR("{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":"
               "{\"role\":\"assistant\",\"content\":\"fine\"},\"finish_reason\":\"stop\"}],"
               "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}"));
}

static int c_parse(void *s, lm_call *c, int st, lm_str b, json_t **o, lm_usage *u, lm_err *e)
{
    (void)s, (void)c, (void)st, (void)b, (void)e;
    *o = NULL;
    u->prompt = 1;
    u->completion = 1;
    return LM_OK;
}

static const lm_provider provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "crasher",
    .version = "0.0.1",
    .caps = LM_CAP_CHAT,
    .init = c_init,
    .build_request = c_build,
    .parse_response = c_parse,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
