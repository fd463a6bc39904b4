/* relay_lua.c - the relay's side of the Lua stages: kernel objects in, stage
 * results out as kernel decisions and OpenAI errors (relay_lua.h). Thread:
 * the request's worker; what it returns is owned as each header says. */
#include "relay/relay_lua.h"
#include "core/clock.h"

#include "core/errors.h"
#include "core/log.h"
#include "gov/billing.h"
#include "gov/gov.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int has(lm_lua_call_t *call, lm_lua_stage_t stage)
{
    return call && (lm_lua_call_stages(call) & LM_LUA_BIT(stage));
}

/* REJECT keeps the script's status and message; ERROR is a 500 that names
 * only the error id (the script's message is in the log, not for clients). */
static int to_err(int rc, const lm_lua_result_t *res, lm_err *e)
{
    if (rc == LM_LUA_REJECT)
        return lm_err_set(e, -1, res->status, lm_error_type_for(res->status),
                          res->code[0] ? res->code : "rejected_by_policy", "%s", res->message);
    return lm_err_set(e, -1, 500, "api_error", "script_error", "policy script failed (error id %s)",
                      res->errid);
}

lm_lua_vm_t *lm_rlua_vm(lm_worker_t *w, lm_lua_gen_t *gen, lm_err *e)
{
    char err[512];
    if (w->vm && lm_lua_vm_gen(w->vm) == gen)
        return w->vm;
    lm_lua_vm_t *vm = lm_lua_vm_new(gen, err, sizeof(err));
    if (vm == NULL) {
        lm_log(LM_LOG_ERROR, "worker %d: cannot start the scripts: %s", w->index, err);
        lm_err_set(e, -1, 500, "api_error", "script_error", "policy scripts are unavailable");
        return NULL;
    }
    lm_lua_vm_release(w->vm); /* requests still on the old state hold their own reference */
    w->vm = vm;
    return vm;
}

int lm_rlua_request(lm_lua_call_t *call, json_t *canon, lm_err *e)
{
    lm_lua_result_t res;
    if (!has(call, LM_LUA_STAGE_REQUEST))
        return 0;
    int rc = lm_lua_on_request(call, canon, &res);
    return rc == LM_LUA_OK ? 0 : rc == LM_LUA_PENDING ? 1 : to_err(rc, &res, e);
}

int lm_rlua_request_resume(lm_lua_call_t *call, json_t *canon, json_t *verdict, const char *why,
                           lm_err *e)
{
    lm_lua_result_t res;
    int rc = lm_lua_on_request_resume(call, canon, verdict, why, &res);
    return rc == LM_LUA_OK ? 0 : rc == LM_LUA_PENDING ? 1 : to_err(rc, &res, e);
}

/* ---- stage inputs as JSON text ----
 * Inputs are written as text instead of being built as Jansson values: a
 * stage that does not look at its input then never decodes it, and writing
 * text is cheaper than building and freeing a tree (lua_host.h). */

/* The text is written on the stack (no allocation for the usual sizes)
 * and moves to b only when it outgrows fix. */
typedef struct jw_s {
    lm_buf_t b;
    int oom;
    size_t n; /* bytes in fix, while b is empty */
    char fix[2048];
} jw_t;

static void jw_raw(jw_t *w, const char *p, size_t n)
{
    if (w->b.len == 0 && n <= sizeof(w->fix) - w->n) {
        memcpy(w->fix + w->n, p, n);
        w->n += n;
        return;
    }
    if ((w->b.len == 0 && lm_buf_add(&w->b, w->fix, w->n) < 0) || lm_buf_add(&w->b, p, n) < 0)
        w->oom = 1;
}

/* fix is left as it is: clearing it would cost more than writing it */
static void jw_init(jw_t *w)
{
    memset(&w->b, 0, sizeof(w->b));
    w->oom = 0;
    w->n = 0;
}

static const char *jw_text(const jw_t *w)
{
    return w->b.len ? w->b.p : w->fix;
}

static size_t jw_len(const jw_t *w)
{
    return w->b.len ? w->b.len : w->n;
}

/* The text, malloc'd for the caller (lm_lua_write_fn), or NULL. */
static char *jw_take(jw_t *w, size_t *len)
{
    char *s;

    if (w->oom) {
        lm_buf_free(&w->b);
        return NULL;
    }
    if (w->b.len) {
        *len = w->b.len;
        return w->b.p;
    }
    s = malloc(w->n ? w->n : 1);
    if (s) {
        memcpy(s, w->fix, w->n);
        *len = w->n;
    }
    return s;
}

static void jw_lit(jw_t *w, const char *s)
{
    jw_raw(w, s, strlen(s));
}

/* One character that JSON strings must escape. */
static void jw_escape(jw_t *w, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
    const char *two = c == '"'    ? "\\\""
                      : c == '\\' ? "\\\\"
                      : c == '\n' ? "\\n"
                      : c == '\r' ? "\\r"
                      : c == '\t' ? "\\t"
                                  : NULL;
    if (two)
        jw_raw(w, two, 2);
    else
        jw_raw(w, esc, sizeof(esc));
}

/* s[0..n) as a JSON string: other bytes are copied in runs (a header or a
 * URL is mostly one run). */
static void jw_strn(jw_t *w, const char *s, size_t n)
{
    size_t run = 0;

    jw_raw(w, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        jw_raw(w, s + run, i - run);
        jw_escape(w, c);
        run = i + 1;
    }
    jw_raw(w, s + run, n - run);
    jw_raw(w, "\"", 1);
}

static void jw_str(jw_t *w, const char *s)
{
    jw_strn(w, s ? s : "", s ? strlen(s) : 0);
}

/* Numbers without snprintf: these run on every request that has a script
 * on the stage, and printf's float path alone cost more than the stage call
 * itself. */
static void jw_int(jw_t *w, long long v)
{
    char b[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;

    do
        b[sizeof(b) - ++n] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        b[sizeof(b) - ++n] = '-';
    jw_raw(w, b + sizeof(b) - n, n);
}

/* x >= 0 with `places` decimals (1..4), rounded half up; "0" otherwise. */
static void jw_fixed(jw_t *w, double x, int places)
{
    static const long long scale[] = {1, 10, 100, 1000, 10000};
    long long v = x > 0 && x < 1e12 ? (long long)(x * (double)scale[places] + 0.5) : 0;
    char frac[8];

    jw_int(w, v / scale[places]);
    frac[0] = '.';
    for (int i = places; i > 0; i--, v /= 10)
        frac[i] = (char)('0' + v % 10);
    jw_raw(w, frac, (size_t)places + 1);
}

/* ,"name":v for a number */
static void jw_num_field(jw_t *w, const char *name, long long v)
{
    jw_lit(w, name);
    jw_int(w, v);
}

/* ---- stage inputs kept as bytes ----
 * on_route, on_upstream_request and on_usage get their inputs as packed
 * records (lm_lua_input_t): copying them costs far less than writing JSON,
 * and the writers below run only when a script looks at the input. A
 * writer reads nothing but the record (the input may outlive the call). */

/* Reads n bytes at *p into dst and moves on (records need not be aligned). */
static void rd(void *dst, const char **p, size_t n)
{
    memcpy(dst, *p, n);
    *p += n;
}

/* One candidate: its live figures, then name, model and plugin. */
typedef struct cand_rec_s {
    int64_t inflight, price_in, price_out, price_cached;
    double latency, ttft, error_rate;
    int state, held;
    uint32_t name_len, model_len, plugin_len;
} cand_rec_t;

static uint32_t slen(const char *s)
{
    return s ? (uint32_t)strlen(s) : 0;
}

/* One candidate's live figures: health (closed and not held by a
 * Retry-After), in-flight attempts, EWMA latency and time to first token
 * (0 until sampled), the error rate over the health window, and the
 * channel's prices in micro-units per 1M tokens. */
static void candidate_pack(jw_t *w, const lm_route_t *c, const lm_conf_t *conf, int64_t now)
{
    const lm_chan_conf_t *ch = c->inst->chan;
    lm_price_t p;
    lm_route_snap_t s = {LM_ROUTE_CLOSED, 0, 0, 0, 0, -1, -1, 0, 0};
    cand_rec_t r;
    int held = 0;

    lm_gov_price(conf, ch, c->upstream, &p);
    if (c->stats) {
        lm_route_snapshot(c->stats, now, &s);
        held = lm_route_hold_left(c->stats, now) > 0;
    }
    memset(&r, 0, sizeof(r));
    r.inflight = s.inflight;
    r.price_in = p.input;
    r.price_out = p.output;
    r.price_cached = p.cached_input;
    r.latency = s.ewma_latency_ms;
    r.ttft = s.ewma_ttft_ms;
    r.error_rate =
        s.window_ok + s.window_fail ? (double)s.window_fail / (s.window_ok + s.window_fail) : 0.0;
    r.state = (int)s.state;
    r.held = held;
    r.name_len = slen(ch->name);
    r.model_len = slen(c->upstream);
    r.plugin_len = slen(ch->plugin);
    jw_raw(w, (const char *)&r, sizeof(r));
    jw_raw(w, ch->name ? ch->name : "", r.name_len);
    jw_raw(w, c->upstream ? c->upstream : "", r.model_len);
    jw_raw(w, ch->plugin ? ch->plugin : "", r.plugin_len);
}

/* lm_lua_write_fn: the candidates as scripts see them, with their figures. */
static char *candidates_write(const void *data, size_t n, int part, size_t *len)
{
    const char *p = data, *end = p + n;
    jw_t w;

    (void)part;
    jw_init(&w);
    jw_lit(&w, "[");
    for (int i = 0; p + sizeof(cand_rec_t) <= end; i++) {
        cand_rec_t r;
        rd(&r, &p, sizeof(r));
        jw_lit(&w, i ? ",{\"name\":" : "{\"name\":");
        jw_strn(&w, p, r.name_len);
        p += r.name_len;
        jw_lit(&w, ",\"model\":");
        jw_strn(&w, p, r.model_len);
        p += r.model_len;
        jw_lit(&w, ",\"plugin\":");
        jw_strn(&w, p, r.plugin_len);
        p += r.plugin_len;
        jw_lit(&w, r.state == LM_ROUTE_CLOSED && !r.held ? ",\"healthy\":true,\"state\":"
                                                         : ",\"healthy\":false,\"state\":");
        jw_str(&w, r.held ? "held" : lm_route_state_str((lm_route_state_t)r.state));
        jw_num_field(&w, ",\"inflight\":", (long long)r.inflight);
        jw_lit(&w, ",\"latency_ms\":");
        jw_fixed(&w, r.latency, 1);
        jw_lit(&w, ",\"ttft_ms\":");
        jw_fixed(&w, r.ttft, 1);
        jw_lit(&w, ",\"error_rate\":");
        jw_fixed(&w, r.error_rate, 4);
        jw_num_field(&w, ",\"price\":{\"input\":", (long long)r.price_in);
        jw_num_field(&w, ",\"output\":", (long long)r.price_out);
        jw_num_field(&w, ",\"cached_input\":", (long long)r.price_cached);
        jw_lit(&w, "}}");
    }
    jw_lit(&w, "]");
    return jw_take(&w, len);
}

long lm_rlua_route(lm_lua_call_t *call, lm_route_t *cands, size_t n, const lm_conf_t *conf,
                   lm_err *e)
{
    lm_lua_result_t res;
    json_t *order = NULL;
    jw_t w;
    if (!has(call, LM_LUA_STAGE_ROUTE))
        return (long)n;
    jw_init(&w);
    int64_t now = lm_clock_ms();
    for (size_t i = 0; i < n; i++)
        candidate_pack(&w, &cands[i], conf, now);
    lm_lua_input_t in = {jw_text(&w), jw_len(&w), candidates_write, NULL, 0};
    int rc = w.oom ? LM_LUA_OK : lm_lua_on_route_input(call, &in, &order, &res);
    lm_buf_free(&w.b);
    if (w.oom)
        return lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
    if (rc != LM_LUA_OK)
        return to_err(rc, &res, e);
    if (order == NULL)
        return (long)n;
    lm_route_t *copy = malloc(n * sizeof(*copy));
    size_t k = 0, i;
    json_t *name;
    if (copy == NULL) {
        json_decref(order);
        return lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
    }
    memcpy(copy, cands, n * sizeof(*copy));
    json_array_foreach (order, i, name) {
        for (size_t j = 0; j < n && k < n; j++)
            if (json_is_string(name) && !strcmp(copy[j].inst->chan->name, json_string_value(name)))
                cands[k++] = copy[j];
    }
    free(copy);
    json_decref(order);
    return (long)k;
}

/* Credentials travel to the provider, not to scripts: a header that carries
 * one shows as LM_UP_REDACTED in up.headers (a script may log up), and keeps
 * its real value when a script hands the placeholder back. */
#define LM_UP_REDACTED "[redacted]"

static int secret_header(const char *name, size_t n)
{
    static const char *const words[] = {"authorization", "key",    "token",
                                        "secret",        "cookie", "signature"};
    char low[64];
    if (n >= sizeof(low))
        return 1; /* no ordinary header is this long: keep it from scripts */
    for (size_t i = 0; i < n; i++)
        low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    low[n] = 0;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strstr(low, words[i]))
            return 1;
    return 0;
}

/* The value of header name among the "Name: value" lines hs[0..n), or NULL. */
static const char *header_value(char *const *hs, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (strncasecmp(hs[i], name, len) == 0 && hs[i][len] == ':')
            return hs[i][len + 1] == ' ' ? hs[i] + len + 2 : hs[i] + len + 1;
    return NULL;
}

static void apply_headers(json_t *headers, lm_ureq_t *u)
{
    const char *name;
    json_t *value;
    size_t n = u->nheaders;
    char **old = malloc((n ? n : 1) * sizeof(*old));

    if (old == NULL)
        return;
    if (n)
        memcpy(old, u->headers, n * sizeof(*old));
    u->nheaders = 0;
    json_object_foreach (headers, name, value) {
        const char *v = json_string_value(value), *orig;
        if (v && !strcmp(v, LM_UP_REDACTED) && secret_header(name, strlen(name)) &&
            (orig = header_value(old, n, name)) != NULL)
            v = orig;
        lm_host_table.ureq_add_header(u, lm_cstr(name), lm_cstr(v ? v : ""));
    }
    for (size_t i = 0; i < n; i++)
        free(old[i]);
    free(old);
}

/* The URL with the values of credential-like query parameters (key=,
 * access_token=, ...) replaced by LM_UP_REDACTED, into b (only URLs with a
 * query need it). */
static void url_redacted(lm_buf_t *b, const char *url, size_t len)
{
    const char *q = memchr(url, '?', len), *end = url + len;
    lm_buf_add(b, url, (size_t)(q - url));
    for (const char *p = q; p < end;) {
        const char *amp = memchr(p + 1, '&', (size_t)(end - p - 1));
        const char *stop = amp ? amp : end, *eq = memchr(p + 1, '=', (size_t)(stop - p - 1));
        if (eq && secret_header(p + 1, (size_t)(eq - p - 1))) {
            lm_buf_add(b, p, (size_t)(eq + 1 - p));
            lm_buf_add(b, LM_UP_REDACTED, strlen(LM_UP_REDACTED));
        } else {
            lm_buf_add(b, p, (size_t)(stop - p));
        }
        p = stop;
    }
}

/* up as a record: the attempt and the lengths, then channel, model and the
 * redacted URL, then each header. Credentials are redacted here, when the
 * record is made: the state never holds them, looked at or not. */
typedef struct up_rec_s {
    int64_t attempt;
    uint32_t channel_len, model_len, url_len, nheaders;
} up_rec_t;
typedef struct hdr_rec_s {
    uint32_t name_len, value_len;
    int secret;
} hdr_rec_t;

static void upstream_pack(jw_t *w, const lm_route_t *route, int attempt, lm_ureq_t *u)
{
    const char *url = lm_buf_cstr(&u->url), *chan = route->inst->chan->name;
    lm_buf_t red = {0};
    up_rec_t r = {attempt, slen(chan), slen(route->upstream), (uint32_t)u->url.len, 0};

    if (memchr(url, '?', u->url.len)) {
        url_redacted(&red, url, u->url.len);
        if (red.failed)
            w->oom = 1;
        url = lm_buf_cstr(&red);
        r.url_len = (uint32_t)red.len;
    }
    for (size_t i = 0; i < u->nheaders; i++)
        r.nheaders += strchr(u->headers[i], ':') != NULL;
    jw_raw(w, (const char *)&r, sizeof(r));
    jw_raw(w, chan ? chan : "", r.channel_len);
    jw_raw(w, route->upstream ? route->upstream : "", r.model_len);
    jw_raw(w, url, r.url_len);
    lm_buf_free(&red);
    for (size_t i = 0; i < u->nheaders; i++) {
        const char *h = u->headers[i], *colon = strchr(h, ':'), *v;
        hdr_rec_t hr;
        if (colon == NULL)
            continue;
        v = colon[1] == ' ' ? colon + 2 : colon + 1;
        hr.name_len = (uint32_t)(colon - h);
        hr.secret = secret_header(h, hr.name_len);
        hr.value_len = hr.secret ? 0 : (uint32_t)strlen(v);
        jw_raw(w, (const char *)&hr, sizeof(hr));
        jw_raw(w, h, hr.name_len);
        jw_raw(w, v, hr.value_len);
    }
}

/* lm_lua_write_fn: {"channel", "model", "attempt", "url", "headers": {name:
 * value}}; the body travels beside it as it is (lm_lua_input_t.raw). */
static char *upstream_write(const void *data, size_t n, int part, size_t *len)
{
    const char *p = data;
    up_rec_t r;
    jw_t w;

    (void)n;
    (void)part;
    jw_init(&w);
    rd(&r, &p, sizeof(r));
    jw_lit(&w, "{\"channel\":");
    jw_strn(&w, p, r.channel_len);
    p += r.channel_len;
    jw_lit(&w, ",\"model\":");
    jw_strn(&w, p, r.model_len);
    p += r.model_len;
    jw_num_field(&w, ",\"attempt\":", (long long)r.attempt);
    jw_lit(&w, ",\"url\":");
    jw_strn(&w, p, r.url_len);
    p += r.url_len;
    jw_lit(&w, ",\"headers\":{");
    for (uint32_t i = 0; i < r.nheaders; i++) {
        hdr_rec_t hr;
        rd(&hr, &p, sizeof(hr));
        jw_lit(&w, i ? "," : "");
        jw_strn(&w, p, hr.name_len);
        p += hr.name_len;
        jw_lit(&w, ":");
        if (hr.secret)
            jw_str(&w, LM_UP_REDACTED);
        else
            jw_strn(&w, p, hr.value_len);
        p += hr.value_len;
    }
    jw_lit(&w, "}}");
    return jw_take(&w, len);
}

int lm_rlua_upstream(lm_lua_call_t *call, const lm_route_t *route, int attempt, lm_ureq_t *u,
                     lm_err *e)
{
    lm_lua_result_t res;
    json_t *headers = NULL, *body = NULL;
    jw_t w;
    if (!has(call, LM_LUA_STAGE_UPSTREAM_REQUEST))
        return 0;
    jw_init(&w);
    upstream_pack(&w, route, attempt, u);
    lm_lua_input_t in = {jw_text(&w), jw_len(&w), upstream_write, lm_buf_cstr(&u->body),
                         u->body.len};
    int rc = w.oom ? LM_LUA_OK : lm_lua_on_upstream_input(call, &in, &headers, &body, &res);
    lm_buf_free(&w.b);
    if (w.oom)
        return lm_err_set(e, -1, 500, "api_error", NULL, "out of memory");
    if (headers && json_is_string(body)) { /* only when a script changed them */
        apply_headers(headers, u);
        lm_buf_reset(&u->body);
        lm_buf_add(&u->body, json_string_value(body), json_string_length(body));
        u->has_body = 1;
    }
    json_decref(headers);
    json_decref(body);
    return rc == LM_LUA_OK ? 0 : to_err(rc, &res, e);
}

/* One event to send as an SSE data line. */
static void emit_sse(void *arg, const char *json, size_t len)
{
    lm_buf_t *out = arg;
    lm_buf_add(out, "data: ", 6);
    lm_buf_add(out, json, len);
    lm_buf_add(out, "\n\n", 2);
}

int lm_rlua_event(lm_lua_call_t *call, const char *json, size_t len, lm_buf_t *out, lm_err *e)
{
    lm_lua_result_t res;
    int rc = lm_lua_on_event_text(call, json, len, emit_sse, out, &res);
    return rc == LM_LUA_OK ? 0 : to_err(rc, &res, e);
}

int lm_rlua_response(lm_lua_call_t *call, char **body, size_t *len, lm_err *e)
{
    lm_lua_result_t res;
    char *changed = NULL;
    if (!has(call, LM_LUA_STAGE_RESPONSE))
        return 0;
    int rc = lm_lua_on_response_text(call, *body, *len, &changed, &res);
    if (changed) {
        free(*body);
        *body = changed;
        *len = strlen(changed); /* Jansson's text: a NUL is always escaped in it */
    }
    return rc == LM_LUA_OK ? 0 : to_err(rc, &res, e);
}

int lm_rlua_error(lm_lua_call_t *call, lm_err *e, const lm_route_t *route, int attempt, int started)
{
    lm_lua_result_t res;
    if (!has(call, LM_LUA_STAGE_ERROR))
        return 0;
    json_t *err = json_pack("{s:i,s:s,s:s,s:s,s:s,s:s,s:i}", "status", e->http_status, "type",
                            e->type, "code", e->code, "message", e->msg, "channel",
                            route ? route->inst->chan->name : "", "model",
                            route ? route->upstream : "", "attempt", attempt);
    if (err == NULL)
        return 0;
    int rc = lm_lua_on_error(call, err, started, &res);
    if (rc == LM_LUA_OK || rc == LM_LUA_RETRY) {
        json_t *st = json_object_get(err, "status");
        if (json_is_integer(st) && json_integer_value(st) >= 400 && json_integer_value(st) <= 599)
            e->http_status = (int)json_integer_value(st);
        const char *fields[] = {"type", "code", "message"};
        char *dst[] = {e->type, e->code, e->msg};
        size_t len[] = {sizeof(e->type), sizeof(e->code), sizeof(e->msg)};
        for (int i = 0; i < 3; i++) {
            const char *v = json_string_value(json_object_get(err, fields[i]));
            if (v)
                snprintf(dst[i], len[i], "%s", v);
        }
    } else {
        to_err(rc, &res, e);
    }
    json_decref(err);
    return rc == LM_LUA_RETRY;
}

/* The OpenAI usage object (as lm_usage_to_openai builds it), as text. */
static void usage_text(jw_t *w, const lm_usage *u)
{
    long long p = u->prompt > 0 ? u->prompt : 0, c = u->completion > 0 ? u->completion : 0;

    jw_num_field(w, "{\"prompt_tokens\":", p);
    jw_num_field(w, ",\"completion_tokens\":", c);
    jw_num_field(w, ",\"total_tokens\":", u->total >= 0 ? (long long)u->total : p + c);
    if (u->cached >= 0) {
        jw_num_field(w, ",\"prompt_tokens_details\":{\"cached_tokens\":", (long long)u->cached);
        jw_lit(w, "}");
    }
    if (u->reasoning >= 0) {
        jw_num_field(
            w, ",\"completion_tokens_details\":{\"reasoning_tokens\":", (long long)u->reasoning);
        jw_lit(w, "}");
    }
    jw_lit(w, "}");
}

/* on_usage's inputs as a record: written as text only if a script looks. */
typedef struct usage_rec_s {
    lm_usage u;
    lm_price_t p;
} usage_rec_t;

/* lm_lua_write_fn: part 0 the usage, part 1 the price. */
static char *usage_write(const void *data, size_t n, int part, size_t *len)
{
    usage_rec_t r;
    jw_t w;

    (void)n;
    memcpy(&r, data, sizeof(r));
    jw_init(&w);
    if (part == 0) {
        usage_text(&w, &r.u);
    } else {
        jw_num_field(&w, "{\"input\":", (long long)r.p.input);
        jw_num_field(&w, ",\"output\":", (long long)r.p.output);
        jw_num_field(&w, ",\"cached_input\":", (long long)r.p.cached_input);
        jw_num_field(&w, ",\"per_request\":", (long long)r.p.per_request);
        jw_lit(&w, "}");
    }
    return jw_take(&w, len);
}

void lm_rlua_usage(lm_lua_call_t *call, const lm_usage *u, const lm_price_t *price, int64_t *charge)
{
    lm_lua_result_t res;
    usage_rec_t r;
    if (!has(call, LM_LUA_STAGE_USAGE))
        return;
    r.u = *u;
    r.p = *price;
    lm_lua_input_t in = {&r, sizeof(r), usage_write, NULL, 0};
    lm_lua_on_usage_input(call, &in, charge, &res);
}

int lm_rlua_request_changed(const lm_lua_call_t *call)
{
    return call && lm_lua_call_request_changed(call);
}

void lm_rlua_log(lm_lua_call_t *call, json_t *record)
{
    if (has(call, LM_LUA_STAGE_LOG))
        lm_lua_on_log(call, record);
}
