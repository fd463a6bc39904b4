/* ABI stability: every released field keeps its offset and size
 * (tests/abi/abi-<major>.<minor>.txt for each release), and a plugin built against the frozen 1.0
 * header loads and works in this kernel. */
#include "lmtest.h"
#include "plugin/endpoints.h"
#include "t.h"

#include <stdlib.h>

#define F(type, field)                                                                             \
    {                                                                                              \
#type, #field, offsetof(type, field), sizeof(((type *)0)->field)                           \
    }

typedef struct {
    const char *type, *field;
    size_t off, size;
} field_t;

static const field_t fields[] = {
    F(lm_abi_hdr, major),
    F(lm_abi_hdr, minor),
    F(lm_abi_hdr, size),
    F(lm_str, p),
    F(lm_str, n),
    F(lm_err, http_status),
    F(lm_err, type),
    F(lm_err, code),
    F(lm_err, msg),
    F(lm_usage, prompt),
    F(lm_usage, completion),
    F(lm_usage, total),
    F(lm_usage, cached),
    F(lm_usage, reasoning),
    F(lm_cfg_key, name),
    F(lm_cfg_key, type),
    F(lm_cfg_key, required),
    F(lm_cfg_key, dflt),
    F(lm_cfg_key, help),
    F(lm_call, hdr),
    F(lm_call, op),
    F(lm_call, stream),
    F(lm_call, model),
    F(lm_call, request_id),
    F(lm_call, rstate),
    F(lm_call, raw_body),
    F(lm_call, task_poll_ms),    /* 1.4 (async tasks) */
    F(lm_call, task_timeout_ms), /* 1.4 (async tasks) */
    F(lm_event, event),
    F(lm_event, data),
    F(lm_event, id),
    F(lm_host_api, hdr),
    F(lm_host_api, log),
    F(lm_host_api, log_enabled),
    F(lm_host_api, alloc),
    F(lm_host_api, realloc),
    F(lm_host_api, free),
    F(lm_host_api, cfg_str),
    F(lm_host_api, cfg_int),
    F(lm_host_api, cfg_bool),
    F(lm_host_api, now_ms),
    F(lm_host_api, unix_time),
    F(lm_host_api, ureq_set_method),
    F(lm_host_api, ureq_set_url),
    F(lm_host_api, ureq_add_header),
    F(lm_host_api, ureq_set_body),
    F(lm_host_api, ureq_set_json_body),
    F(lm_host_api, emit_chunk),
    F(lm_host_api, emit_delta),
    F(lm_host_api, emit_usage),
    F(lm_host_api, ureq_local_response),
    F(lm_host_api, side_get),
    F(lm_host_api, side_invalidate),
    F(lm_host_api, emit_raw), /* 1.4 */
    F(lm_provider, hdr),
    F(lm_provider, name),
    F(lm_provider, version),
    F(lm_provider, caps),
    F(lm_provider, framing),
    F(lm_provider, usage_mode),
    F(lm_provider, cfg_keys),
    F(lm_provider, init),
    F(lm_provider, fini),
    F(lm_provider, list_models),
    F(lm_provider, build_request),
    F(lm_provider, parse_response),
    F(lm_provider, parse_event),
    F(lm_provider, map_error),
    F(lm_provider, req_close),
    F(lm_provider, side_request),
    F(lm_provider, side_parse),
    F(lm_provider, param_ranges),
    F(lm_provider, embed_max_inputs),
    F(lm_provider, flags),
    F(lm_provider, endpoints),
    F(lm_provider, poll_request), /* 1.4 (async tasks) */
    F(lm_provider, poll_parse),   /* 1.4 (async tasks) */
    F(lm_param_range, name),
    F(lm_param_range, min),
    F(lm_param_range, max),
};

static const field_t *find(const char *type, const char *field)
{
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (!strcmp(fields[i].type, type) && !strcmp(fields[i].field, field))
            return &fields[i];
    return NULL;
}

static void test_offsets(const char *path)
{
    char line[256], type[64], field[64], name[128];
    int n = 0;
    FILE *f = fopen(path, "r");
    snprintf(name, sizeof(name), "abi_released_offsets_unchanged %s", path);
    T_BEGIN(name);
    T_CHECK(f != NULL, "cannot open %s", path);
    while (f && fgets(line, sizeof(line), f)) {
        size_t off, size;
        if (line[0] == '#' || sscanf(line, "%63s %63s %zu %zu", type, field, &off, &size) != 4)
            continue;
        const field_t *x = find(type, field);
        T_CHECK(x != NULL, "%s.%s was released and is gone", type, field);
        if (x)
            T_CHECK(x->off == off && x->size == size, "%s.%s moved: %zu+%zu, released %zu+%zu",
                    type, field, x->off, x->size, off, size);
        n++;
    }
    T_CHECK(n >= 60, "only %d entries read from %s", n, path);
    if (f)
        fclose(f);
    T_END();
}

static void test_frozen_plugin(void)
{
    char err[256], path[512];
    const char *o = getenv("O");
    lmt_ureq u;
    lm_err e;
    lmt_result r;
    T_BEGIN("abi_frozen_1_0_plugin_loads");
    snprintf(path, sizeof(path), "%s/test-plugins/frozen_v10.so", o ? o : "build");
    lmt_plugin *p = lmt_load(path, NULL, err, sizeof(err));
    T_CHECK(p != NULL, "load: %s", err);
    if (p) {
        T_CHECK(lmt_provider(p)->hdr.minor == 0, "built as 1.0");
        T_CHECK(lmt_build(p, LM_OP_CHAT, "{\"model\":\"m\",\"messages\":[]}", &u, &e) == LM_OK,
                "build");
        T_STREQ(u.url, "http://frozen.invalid/v1/chat");
        lmt_ureq_clear(&u);
        lmt_response(p, 200, "{\"ok\":1}", 8, &r);
        T_CHECK(r.rc == LM_OK && r.usage.prompt == 7, "response");
        lmt_result_clear(&r);
        lmt_unload(p);
    }
    T_END();
}

/* 1.3: a table from an older minor, or one that leaves endpoints 0, serves
 * chat and embeddings as its caps say (and completions through chat). */
static void test_endpoints_default(void)
{
    lm_provider old = {.hdr = {1, 2, 144}, .name = "old", .caps = LM_CAP_CHAT | LM_CAP_EMBED};
    lm_provider chat = {.hdr = LM_ABI_HDR(lm_provider), .name = "c", .caps = LM_CAP_CHAT};
    lm_provider rr = {.hdr = LM_ABI_HDR(lm_provider), .name = "rr", .endpoints = LM_EP_RERANK};
    lm_err e;
    T_BEGIN("abi_1_3_endpoints_default");
    T_CHECK(lm_endpoints_of(&old) == (LM_EP_CHAT | LM_EP_EMBEDDINGS | LM_EP_COMPLETIONS), "old");
    T_CHECK(lm_endpoints_of(&chat) == (LM_EP_CHAT | LM_EP_COMPLETIONS), "chat only");
    T_CHECK(lm_endpoints_of(&rr) == LM_EP_RERANK, "rerank only");
    T_CHECK(lm_endpoint_check(&old, LM_OP_RERANK, &e) == LM_ENOTSUP && e.http_status == 400 &&
                strstr(e.msg, "/v1/rerank") != NULL,
            "400 naming the endpoint: %s", e.msg);
    T_CHECK(lm_endpoint_check(&rr, LM_OP_RERANK, &e) == 0, "declared");
    T_END();
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--dump")) { /* to record a new minor */
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
            printf("%s %s %zu %zu\n", fields[i].type, fields[i].field, fields[i].off,
                   fields[i].size);
        return 0;
    }
    test_offsets("tests/abi/abi-1.0.txt");
    test_offsets("tests/abi/abi-1.1.txt");
    test_offsets("tests/abi/abi-1.2.txt");
    test_offsets("tests/abi/abi-1.3.txt");
    test_offsets("tests/abi/abi-1.4.txt");
    test_endpoints_default();
    test_frozen_plugin();
    T_EXIT();
}
