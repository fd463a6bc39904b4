#define _POSIX_C_SOURCE 200809L
/* Test fixture for hot reload: an OpenAI-compatible pass-through that tags
 * every content delta with its build version ("v1:..."), and records its
 * fini in a file named by the `fini_log` setting (test-only I/O). Built
 * twice: verplug_v1.so and verplug_v2.so (-DVERPLUG_VERSION=N). */
#include "longmen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef VERPLUG_VERSION
#define VERPLUG_VERSION 1
#endif
#define STR2(x) #x
#define STR(x)  STR2(x)
#define TAG     "v" STR(VERPLUG_VERSION) ":"

typedef struct {
    const lm_host_api *h;
    char url[512];
    char fini_log[512];
} vp_t;

static const lm_cfg_key cfg_keys[] = {
    {"base_url", LM_CFG_STR, 1, NULL, "upstream API root"},
    {"fini_log", LM_CFG_STR, 0, NULL, "file that records fini calls"},
    {NULL, 0, 0, NULL, NULL},
};

static int vp_init(const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    lm_str base = {NULL, 0}, log = {NULL, 0};
    vp_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "oom");
    st->h = h;
    h->cfg_str(ictx, "base_url", &base);
    h->cfg_str(ictx, "fini_log", &log);
    snprintf(st->url, sizeof(st->url), "%.*s/chat/completions", (int)base.n, base.p);
    snprintf(st->fini_log, sizeof(st->fini_log), "%.*s", (int)log.n, log.p ? log.p : "");
    *istate = st;
    return LM_OK;
}

static void vp_fini(void *istate)
{
    vp_t *st = istate;
    if (st->fini_log[0]) {
        FILE *f = fopen(st->fini_log, "a");
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (f) {
            fprintf(f, "fini v%d %lld\n", VERPLUG_VERSION,
                    (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
            fclose(f);
        }
    }
    free(st);
}

static int vp_build(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    vp_t *st = istate;
    (void)e;
    st->h->ureq_set_url(u, lm_cstr(st->url));
    json_t *body = json_copy((json_t *)canon);
    if (c->stream)
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    return st->h->ureq_set_json_body(u, body);
}

static void tag(json_t *choices, const char *key)
{
    size_t i;
    json_t *c;
    json_array_foreach (choices, i, c) {
        json_t *holder = json_object_get(c, key);
        json_t *content = json_object_get(holder, "content");
        if (json_is_string(content)) {
            char buf[4096];
            snprintf(buf, sizeof(buf), TAG "%s", json_string_value(content));
            json_object_set_new(holder, "content", json_string(buf));
        }
    }
}

static int vp_parse_response(void *istate, lm_call *c, int status, lm_str body, json_t **out,
                             lm_usage *usage, lm_err *e)
{
    (void)istate, (void)c, (void)status, (void)usage;
    json_t *root = json_loadb(body.p, body.n, 0, NULL);
    if (root == NULL)
        return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", NULL, "bad json");
    tag(json_object_get(root, "choices"), "message");
    *out = root;
    return LM_OK;
}

static int vp_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    vp_t *st = istate;
    (void)c;
    if (ev->data.n == 6 && memcmp(ev->data.p, "[DONE]", 6) == 0)
        return LM_DONE;
    json_t *chunk = json_loadb(ev->data.p, ev->data.n, 0, NULL);
    if (chunk == NULL)
        return lm_err_set(e, LM_EUPSTREAM, 502, "api_error", NULL, "bad json");
    tag(json_object_get(chunk, "choices"), "delta");
    return st->h->emit_chunk(out, chunk) < 0 ? LM_ERR : LM_OK;
}

static const lm_provider provider = {
    .hdr = LM_ABI_HDR(lm_provider),
    .name = "verplug",
    .version = STR(VERPLUG_VERSION) ".0.0",
    .caps = LM_CAP_CHAT | LM_CAP_STREAM,
    .framing = LM_FRAME_SSE,
    .usage_mode = LM_USAGE_CUMULATIVE,
    .cfg_keys = cfg_keys,
    .init = vp_init,
    .fini = vp_fini,
    .build_request = vp_build,
    .parse_response = vp_parse_response,
    .parse_event = vp_parse_event,
};

LM_EXPORT const lm_provider *longmen_plugin_entry(void);
LM_EXPORT const lm_provider *longmen_plugin_entry(void)
{
    return &provider;
}
