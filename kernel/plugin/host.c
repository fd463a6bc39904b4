/* host.c - the host table plugins call (ABI 1.0-1.4), the upstream request
 * builder and the stream sink (host.h). Thread: the request's worker (log
 * and allocation from any); lm_ureq_t / lm_emit_t are owned by the caller. */
#include "plugin/host.h"
#include "core/clock.h"

#include "core/log.h"
#include "lmjscan.h"
#include "plugin/inst.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- upstream request builder ---- */

void lm_ureq_init(lm_ureq_t *u)
{
    memset(u, 0, sizeof(*u));
    strcpy(u->method, "POST");
}

void lm_ureq_free(lm_ureq_t *u)
{
    for (size_t i = 0; i < u->nheaders; i++)
        free(u->headers[i]);
    free(u->headers);
    lm_buf_free(&u->url);
    lm_buf_free(&u->body);
    for (size_t i = 0; i < u->nside_vals; i++)
        free(u->side_vals[i]);
    memset(u, 0, sizeof(*u));
}

static int has_ctl(lm_str s)
{
    for (size_t i = 0; i < s.n; i++)
        if ((unsigned char)s.p[i] < 0x20 && s.p[i] != '\t')
            return 1;
    return 0;
}

static int h_ureq_set_method(lm_ureq *u, const char *m)
{
    if (m == NULL ||
        (strcmp(m, "GET") && strcmp(m, "POST") && strcmp(m, "PUT") && strcmp(m, "DELETE")))
        return LM_EINVAL;
    strcpy(u->method, m);
    return LM_OK;
}

static int h_ureq_set_url(lm_ureq *u, lm_str url)
{
    if (url.p == NULL || has_ctl(url) ||
        !((url.n > 7 && strncasecmp(url.p, "http://", 7) == 0) ||
          (url.n > 8 && strncasecmp(url.p, "https://", 8) == 0)))
        return LM_EINVAL;
    lm_buf_reset(&u->url);
    return lm_buf_add(&u->url, url.p, url.n) < 0 ? LM_ENOMEM : LM_OK;
}

static int h_ureq_add_header(lm_ureq *u, lm_str name, lm_str value)
{
    /* Header injection is refused: no CR/LF in names or values. */
    if (name.p == NULL || name.n == 0 || has_ctl(name) || memchr(name.p, ':', name.n) ||
        (value.n && has_ctl(value)))
        return LM_EINVAL;
    char **nh = realloc(u->headers, (u->nheaders + 1) * sizeof(*nh));
    if (nh == NULL)
        return LM_ENOMEM;
    u->headers = nh;
    char *h = malloc(name.n + value.n + 3);
    if (h == NULL)
        return LM_ENOMEM;
    memcpy(h, name.p, name.n);
    memcpy(h + name.n, ": ", 2);
    if (value.n)
        memcpy(h + name.n + 2, value.p, value.n);
    h[name.n + 2 + value.n] = '\0';
    u->headers[u->nheaders++] = h;
    return LM_OK;
}

static int h_ureq_set_body(lm_ureq *u, lm_str body)
{
    lm_buf_reset(&u->body);
    u->has_body = 1;
    u->json_body = 0;
    return lm_buf_add(&u->body, body.p ? body.p : "", body.n) < 0 ? LM_ENOMEM : LM_OK;
}

/* v as json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) writes it (new, free()),
 * *n its length; NULL on failure. lm_jdump first: the same bytes, a
 * fraction of the instructions (a request body or a chunk per event). */
static char *dump(const json_t *v, size_t *n)
{
    char *s = lm_jdump(v, n);
    if (s == NULL && (s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)) != NULL)
        *n = strlen(s);
    return s;
}

static int h_ureq_set_json_body(lm_ureq *u, json_t *body)
{
    size_t n = 0;
    if (body == NULL)
        return LM_EINVAL;
    char *s = dump(body, &n);
    json_decref(body);
    if (s == NULL)
        return LM_ENOMEM;
    lm_buf_reset(&u->body);
    int rc = lm_buf_add(&u->body, s, n) < 0 ? LM_ENOMEM : LM_OK;
    free(s);
    u->has_body = 1;
    u->json_body = 1;
    return rc;
}

static int h_ureq_local_response(lm_ureq *u, int status, lm_str body)
{
    if (status < 100 || status > 599)
        return LM_EINVAL;
    int rc = h_ureq_set_body(u, body);
    u->local_status = status;
    return rc;
}

/* ---- usage ---- */

void lm_usage_merge(lm_usage *acc, const lm_usage *u, int mode)
{
    int64_t *a = &acc->prompt;
    const int64_t *b = &u->prompt;
    for (int i = 0; i < 5; i++) {
        if (b[i] < 0)
            continue;
        if (mode == LM_USAGE_DELTA && a[i] >= 0) {
            /* Saturate instead of overflowing on a hostile upstream. */
            a[i] = (a[i] > INT64_MAX - b[i]) ? INT64_MAX : a[i] + b[i];
        } else {
            a[i] = b[i];
        }
    }
}

static int64_t get_int(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        return json_integer_value(v);
    return -1;
}

void lm_usage_from_openai(const json_t *obj, lm_usage *u)
{
    *u = (lm_usage)LM_USAGE_UNKNOWN;
    if (!json_is_object(obj))
        return;
    u->prompt = get_int(obj, "prompt_tokens");
    u->completion = get_int(obj, "completion_tokens");
    u->total = get_int(obj, "total_tokens");
    u->cached = get_int(json_object_get(obj, "prompt_tokens_details"), "cached_tokens");
    u->reasoning = get_int(json_object_get(obj, "completion_tokens_details"), "reasoning_tokens");
}

json_t *lm_usage_to_openai(const lm_usage *u)
{
    int64_t p = u->prompt > 0 ? u->prompt : 0;
    int64_t c = u->completion > 0 ? u->completion : 0;
    int64_t t = u->total >= 0 ? u->total : p + c;
    json_t *o = json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)p, "completion_tokens",
                          (json_int_t)c, "total_tokens", (json_int_t)t);
    if (o && u->cached >= 0)
        json_object_set_new(o, "prompt_tokens_details",
                            json_pack("{s:I}", "cached_tokens", (json_int_t)u->cached));
    if (o && u->reasoning >= 0)
        json_object_set_new(o, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens", (json_int_t)u->reasoning));
    return o;
}

/* ---- stream sink ---- */

void lm_emit_init(lm_emit_t *e, int usage_mode, const char *request_id, const char *model,
                  int64_t created, lm_emit_sink_fn sink, void *arg)
{
    memset(e, 0, sizeof(*e));
    e->sink = sink;
    e->arg = arg;
    e->usage_mode = usage_mode;
    e->usage = (lm_usage)LM_USAGE_UNKNOWN;
    e->created = created;
    snprintf(e->id, sizeof(e->id), "chatcmpl-%s", request_id ? request_id : "0");
    snprintf(e->model, sizeof(e->model), "%s", model ? model : "");
}

static int deliver(lm_emit_t *e, json_t *chunk)
{
    size_t n = 0;
    char *s = dump(chunk, &n);
    json_decref(chunk);
    if (s == NULL)
        return LM_ENOMEM;
    int rc = e->sink(e->arg, s, n);
    free(s);
    if (rc != 0)
        return LM_ERR;
    e->nchunks++;
    return LM_OK;
}

/* The first upstream chunk's id/created/model become the stream's, so the
 * kernel's own chunks (deltas, usage) match them. */
static void adopt_ids(lm_emit_t *e, json_t *chunk)
{
    json_t *id = json_object_get(chunk, "id");
    json_t *created = json_object_get(chunk, "created");
    json_t *model = json_object_get(chunk, "model");
    e->ids_adopted = 1;
    if (json_is_string(id) && json_string_length(id) < sizeof(e->id))
        snprintf(e->id, sizeof(e->id), "%s", json_string_value(id));
    if (json_is_integer(created))
        e->created = json_integer_value(created);
    if (json_is_string(model) && json_string_length(model) < sizeof(e->model))
        snprintf(e->model, sizeof(e->model), "%s", json_string_value(model));
}

static void fill_chunk_ids(lm_emit_t *e, json_t *chunk)
{
    if (!e->ids_adopted)
        adopt_ids(e, chunk);
    if (!json_is_string(json_object_get(chunk, "id")))
        json_object_set_new(chunk, "id", json_string(e->id));
    if (!json_is_string(json_object_get(chunk, "object")))
        json_object_set_new(chunk, "object", json_string("chat.completion.chunk"));
    if (!json_is_integer(json_object_get(chunk, "created")))
        json_object_set_new(chunk, "created", json_integer(e->created));
    if (!json_is_string(json_object_get(chunk, "model")))
        json_object_set_new(chunk, "model", json_string(e->model));
}

/* Text a delta carries (content, reasoning, tool-call arguments). */
static uint64_t delta_chars(json_t *d)
{
    uint64_t n = json_string_length(json_object_get(d, "content")) +
                 json_string_length(json_object_get(d, "reasoning_content"));
    size_t i;
    json_t *tc;
    json_array_foreach (json_object_get(d, "tool_calls"), i, tc)
        n += json_string_length(json_object_get(json_object_get(tc, "function"), "arguments"));
    return n;
}

/* Keep the client protocol for one choice: the assistant role on its
 * first delta, tool calls turn "stop" into "tool_calls", and nothing after
 * its finish_reason. Returns 1 when the choice is to be dropped (empty, or
 * after the finish). */
static int normalise_choice(lm_emit_t *e, json_t *c)
{
    json_t *ji = json_object_get(c, "index"), *d = json_object_get(c, "delta");
    json_int_t idx = json_is_integer(ji) ? json_integer_value(ji) : 0;
    uint32_t bit = idx >= 0 && idx < 32 ? 1u << idx : 0;
    const char *fr = json_string_value(json_object_get(c, "finish_reason"));

    if (bit == 0)
        return 0; /* beyond the tracked choices: as sent */
    if (e->finished & bit)
        return 1;
    if (!json_is_object(d)) {
        d = json_object();
        json_object_set_new(c, "delta", d);
    }
    if (json_object_get(d, "role") != NULL && json_object_size(d) == 1 && !fr &&
        (e->role_sent & bit))
        return 1; /* a repeated bare role */
    if (json_object_size(d) == 0 && fr == NULL)
        return 1;
    if (json_array_size(json_object_get(d, "tool_calls")) > 0)
        e->tools_seen |= bit;
    if (!(e->role_sent & bit)) {
        e->role_sent |= bit;
        json_object_set_new(d, "role", json_string("assistant"));
        if (json_object_get(d, "content") == NULL && json_object_get(d, "tool_calls") == NULL)
            json_object_set_new(d, "content", json_string(""));
    }
    if (fr) {
        e->finished |= bit;
        if ((e->tools_seen & bit) && strcmp(fr, "stop") == 0)
            json_object_set_new(c, "finish_reason", json_string("tool_calls"));
    }
    return 0;
}

/* Normalise every choice; counts content. Returns the choices kept. */
static size_t normalise_choices(lm_emit_t *e, json_t *choices)
{
    size_t i = 0;
    while (i < json_array_size(choices)) {
        json_t *c = json_array_get(choices, i);
        if (!json_is_object(c) || normalise_choice(e, c)) {
            json_array_remove(choices, i);
            continue;
        }
        if (json_is_string(json_object_get(c, "finish_reason")))
            e->finish_seen = 1;
        e->content_chars += delta_chars(json_object_get(c, "delta"));
        i++;
    }
    return i;
}

static int h_emit_chunk(lm_emit *e, json_t *chunk)
{
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return LM_EINVAL;
    }
    if (!e->ids_adopted)
        adopt_ids(e, chunk);
    json_t *usage = json_object_get(chunk, "usage");
    if (json_is_object(usage)) {
        lm_usage u;
        lm_usage_from_openai(usage, &u);
        lm_usage_merge(&e->usage, &u, e->usage_mode);
        e->usage_seen = 1;
    }
    /* The kernel sends its own usage chunk (only if the client asked). */
    json_object_del(chunk, "usage");
    json_t *choices = json_object_get(chunk, "choices");
    if (!json_is_array(choices) || normalise_choices(e, choices) == 0) {
        json_decref(chunk); /* usage-only (or empty) chunk: nothing for the client */
        return LM_OK;
    }
    e->ncontent++;
    fill_chunk_ids(e, chunk);
    return deliver(e, chunk);
}

static int h_emit_delta(lm_emit *e, int index, json_t *delta, const char *finish_reason)
{
    if (delta == NULL)
        delta = json_object();
    if (!json_is_object(delta) || index < 0) {
        json_decref(delta);
        return LM_EINVAL;
    }
    json_t *choice = json_pack("{s:i,s:o,s:n,s:s?}", "index", index, "delta", delta, "logprobs",
                               "finish_reason", finish_reason);
    if (choice && finish_reason == NULL)
        json_object_set_new(choice, "finish_reason", json_null());
    json_t *chunk =
        json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", e->id, "object", "chat.completion.chunk",
                  "created", (json_int_t)e->created, "model", e->model, "choices", choice);
    if (chunk == NULL)
        return LM_ENOMEM;
    if (normalise_choices(e, json_object_get(chunk, "choices")) == 0) {
        json_decref(chunk);
        return LM_OK;
    }
    e->ncontent++;
    return deliver(e, chunk);
}

int lm_emit_close(lm_emit_t *e)
{
    uint32_t open = e->role_sent & ~e->finished;
    for (int i = 0; i < 32 && open; i++) {
        if (!(open & (1u << i)))
            continue;
        open &= ~(1u << i);
        int rc = h_emit_delta(e, i, NULL, (e->tools_seen & (1u << i)) ? "tool_calls" : "stop");
        if (rc < 0)
            return rc;
    }
    return LM_OK;
}

static int h_emit_usage(lm_emit *e, const lm_usage *u)
{
    if (u == NULL)
        return LM_EINVAL;
    lm_usage_merge(&e->usage, u, e->usage_mode);
    e->usage_seen = 1;
    return LM_OK;
}

/* 1 when s goes into JSON text as it is (printable ASCII, no quote or
 * backslash): Jansson writes it unescaped, so printf can. */
static int plain_ascii(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
            return 0;
    return 1;
}

/* The usage chunk by printf: the bytes lm_jdump writes for the tree below
 * (members in that order), without building it (a tree, two json_pack
 * format parses and a dump were about 20k instructions). NULL: build it. */
static char *usage_chunk_text(const lm_emit_t *e)
{
    const lm_usage *u = &e->usage;
    long long p = u->prompt > 0 ? u->prompt : 0, c = u->completion > 0 ? u->completion : 0;
    long long t = u->total >= 0 ? u->total : p + c;
    char cached[96] = "", reasoning[96] = "", *s = NULL;
    if (!plain_ascii(e->id) || !plain_ascii(e->model))
        return NULL;
    if (u->cached >= 0)
        snprintf(cached, sizeof(cached), ",\"prompt_tokens_details\":{\"cached_tokens\":%lld}",
                 (long long)u->cached);
    if (u->reasoning >= 0)
        snprintf(reasoning, sizeof(reasoning),
                 ",\"completion_tokens_details\":{\"reasoning_tokens\":%lld}",
                 (long long)u->reasoning);
    if (asprintf(
            &s,
            "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":"
            "\"%s\",\"choices\":[],\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
            "\"total_tokens\":%lld%s%s}}",
            e->id, (long long)e->created, e->model, p, c, t, cached, reasoning) < 0)
        return NULL;
    return s;
}

char *lm_emit_usage_chunk(lm_emit_t *e)
{
    if (!e->usage_seen)
        return NULL;
    char *text = usage_chunk_text(e);
    if (text != NULL)
        return text;
    json_t *chunk = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", e->id, "object",
                              "chat.completion.chunk", "created", (json_int_t)e->created, "model",
                              e->model, "choices", "usage", lm_usage_to_openai(&e->usage));
    if (chunk == NULL)
        return NULL;
    size_t n;
    char *s = dump(chunk, &n);
    json_decref(chunk);
    return s;
}

/* ---- logging, memory, config, time ---- */

static void h_log(void *ictx, int level, const char *fmt, ...) LM_PRINTF(3, 4);
static void h_log(void *ictx, int level, const char *fmt, ...)
{
    lm_inst_t *inst = ictx;
    va_list ap;
    va_start(ap, fmt);
    lm_logv(level, inst ? inst->logname : "[plugin]", fmt, ap);
    va_end(ap);
}

static int h_log_enabled(void *ictx, int level)
{
    (void)ictx;
    return level <= lm_log_level();
}

static void *h_alloc(size_t n)
{
    return malloc(n);
}

static void *h_realloc(void *p, size_t n)
{
    return realloc(p, n);
}

static void h_free(void *p)
{
    free(p);
}

static const char *cfg_lookup(lm_inst_t *inst, const char *key)
{
    const lm_kv_t *kv = inst && inst->chan ? lm_conf_chan_kv(inst->chan, key) : NULL;
    if (kv && inst->key_index > 0 && (size_t)inst->key_index <= kv->nalts)
        return kv->alts[inst->key_index - 1];
    if (kv)
        return kv->val;
    const lm_cfg_key *k = inst && inst->plugin ? inst->plugin->vt.cfg_keys : NULL;
    for (; k && k->name; k++)
        if (strcmp(k->name, key) == 0)
            return k->dflt;
    return NULL;
}

static int h_cfg_str(void *ictx, const char *key, lm_str *out)
{
    const char *v = cfg_lookup(ictx, key);
    if (v == NULL)
        return LM_DECLINED;
    *out = lm_cstr(v);
    return LM_OK;
}

static int h_cfg_int(void *ictx, const char *key, int64_t *out)
{
    const char *v = cfg_lookup(ictx, key);
    char *end;
    if (v == NULL)
        return LM_DECLINED;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end)
        return LM_EINVAL;
    *out = n;
    return LM_OK;
}

static int h_cfg_bool(void *ictx, const char *key, int *out)
{
    const char *v = cfg_lookup(ictx, key);
    if (v == NULL)
        return LM_DECLINED;
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
        *out = 1;
    else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
        *out = 0;
    else
        return LM_EINVAL;
    return LM_OK;
}

static uint64_t h_now_ms(void)
{
    return (uint64_t)lm_clock_ms();
}

static int64_t h_unix_time(void)
{
    return (int64_t)time(NULL);
}

/* A live value is copied into u (the cache may replace it concurrently);
 * otherwise u->side says whether this request fetches and what it waits
 * for, and the plugin returns LM_AGAIN. Only one name may be pending. */
static int h_side_get(lm_ureq *u, const char *name, lm_str *out)
{
    char *val;
    size_t len;
    lm_side_need_t need;
    if (u == NULL || out == NULL || u->inst == NULL || u->inst->side == NULL)
        return LM_EINVAL;
    *out = (lm_str){NULL, 0};
    if (u->nside_vals == LM_SIDE_MAX)
        return LM_EINVAL;
    int rc = lm_side_get(u->inst->side, name, (int64_t)h_now_ms(), &val, &len, &need);
    if (rc == LM_OK) {
        u->side_vals[u->nside_vals++] = val;
        *out = (lm_str){val, len};
        if (need.fetch && !u->side.fetch)
            u->side = need; /* background refresh: the caller starts it */
        return LM_OK;
    }
    if (rc == LM_AGAIN || rc == LM_EUPSTREAM)
        u->side = need;
    return rc == LM_EUPSTREAM ? LM_AGAIN : rc;
}

static void h_side_invalidate(void *ictx, const char *name, lm_str used)
{
    lm_inst_t *inst = ictx;
    if (inst)
        lm_side_invalidate(inst->side, name, used);
}

const lm_host_api lm_host_table = {
    .hdr = LM_ABI_HDR(lm_host_api),
    .log = h_log,
    .log_enabled = h_log_enabled,
    .alloc = h_alloc,
    .realloc = h_realloc,
    .free = h_free,
    .cfg_str = h_cfg_str,
    .cfg_int = h_cfg_int,
    .cfg_bool = h_cfg_bool,
    .now_ms = h_now_ms,
    .unix_time = h_unix_time,
    .ureq_set_method = h_ureq_set_method,
    .ureq_set_url = h_ureq_set_url,
    .ureq_add_header = h_ureq_add_header,
    .ureq_set_body = h_ureq_set_body,
    .ureq_set_json_body = h_ureq_set_json_body,
    .emit_chunk = h_emit_chunk,
    .emit_delta = h_emit_delta,
    .emit_usage = h_emit_usage,
    .ureq_local_response = h_ureq_local_response,
    .side_get = h_side_get,
    .side_invalidate = h_side_invalidate,
    .emit_raw = lm_emit_raw, /* 1.4 (emit_raw.c) */
};
