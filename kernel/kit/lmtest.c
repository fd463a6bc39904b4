/* lmtest.c - the plugin test kit (sdk/lmtest.h) over the kernel's own host
 * table, splitter and usage merge. */
#include "lmtest.h"

#include "core/buf.h"
#include "core/errors.h"
#include "plugin/plugin.h"
#include "proto/canon.h"
#include "proto/response.h"
#include "proto/stream.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct lmt_plugin {
    lm_plugin_t *plugin;
    lm_chan_conf_t chan;
    lm_inst_t inst;
    lm_call call;
    int call_open;
    int want_b64; /* the last embeddings build asked encoding_format base64 */
    char model[128];
    char *raw; /* the raw body handed with the last build (lmt_build_raw) */
};

static void close_call(lmt_plugin *p)
{
    if (p->call_open && p->plugin->vt.req_close)
        p->plugin->vt.req_close(p->inst.istate, &p->call);
    p->call_open = 0;
    memset(&p->call, 0, sizeof(p->call));
    free(p->raw);
    p->raw = NULL;
}

lmt_plugin *lmt_load(const char *so_path, const char *const *cfg, char *errbuf, size_t errlen)
{
    lmt_plugin *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->plugin = lm_plugin_load_path(so_path, errbuf, errlen);
    if (p->plugin == NULL) {
        free(p);
        return NULL;
    }
    p->chan.name = "test";
    p->chan.plugin = p->plugin->vt.name ? (char *)p->plugin->vt.name : "plugin";
    size_t n = 0;
    while (cfg && cfg[n] && cfg[n + 1])
        n += 2;
    p->chan.kv = calloc(n / 2 + 1, sizeof(lm_kv_t));
    for (size_t i = 0; i < n; i += 2) {
        p->chan.kv[i / 2].key = strdup(cfg[i]);
        p->chan.kv[i / 2].val = strdup(cfg[i + 1]);
        p->chan.kv[i / 2].line = (int)(i / 2 + 1);
    }
    p->chan.nkv = n / 2;
    if (lm_inst_init(&p->inst, p->plugin, &p->chan, "lmtest", errbuf, errlen) < 0) {
        lmt_unload(p);
        return NULL;
    }
    return p;
}

void lmt_unload(lmt_plugin *p)
{
    if (p == NULL)
        return;
    close_call(p);
    if (p->inst.inited)
        lm_inst_fini(&p->inst);
    for (size_t i = 0; i < p->chan.nkv; i++) {
        free(p->chan.kv[i].key);
        free(p->chan.kv[i].val);
    }
    free(p->chan.kv);
    lm_plugin_unref(p->plugin);
    free(p);
}

const lm_provider *lmt_provider(lmt_plugin *p)
{
    return &p->plugin->vt;
}

static void copy_ureq(const lm_ureq_t *u, lmt_ureq *out)
{
    out->method = strdup(u->method);
    out->url = strdup(lm_buf_cstr((lm_buf_t *)&u->url));
    out->headers = calloc(u->nheaders + 1, sizeof(char *));
    for (size_t i = 0; i < u->nheaders; i++)
        out->headers[i] = strdup(u->headers[i]);
    out->nheaders = u->nheaders;
    out->body = strdup(lm_buf_cstr((lm_buf_t *)&u->body));
    out->body_len = u->body.len;
}

/* Build as the relay does: encoding_format taken by the kernel, the
 * channel's capability checks and parameter ranges applied, then the
 * plugin's build_request. raw: hand canon_json as the client's bytes. */
static int build(lmt_plugin *p, int op, const char *canon_json, int raw, lmt_ureq *out, lm_err *e)
{
    lm_ureq_t u;
    lm_canon_prep_t prep;
    int rc;

    memset(out, 0, sizeof(*out));
    memset(e, 0, sizeof(*e));
    close_call(p);
    json_t *canon = json_loads(canon_json, JSON_REJECT_DUPLICATES, NULL);
    if (canon == NULL)
        return lm_error_set(e, LM_EINVAL, 400, "invalid_request_error", NULL,
                            "lmt_build: canon_json is not valid JSON");
    snprintf(p->model, sizeof(p->model), "%s",
             json_is_string(json_object_get(canon, "model"))
                 ? json_string_value(json_object_get(canon, "model"))
                 : "");
    p->want_b64 = op == LM_OP_EMBED && lm_canon_take_encoding(canon);
    p->call = (lm_call){.hdr = LM_ABI_HDR(lm_call),
                        .op = op,
                        .stream = json_is_true(json_object_get(canon, "stream")),
                        .model = p->model,
                        .request_id = "lmtest-1"};
    if ((rc = lm_canon_prepare(&p->plugin->vt, op, p->call.stream, canon, &prep, e)) < 0) {
        json_decref(canon);
        return rc;
    }
    if (raw && !prep.own && !p->want_b64 && (p->raw = strdup(canon_json)) != NULL)
        p->call.raw_body = (lm_str){p->raw, strlen(p->raw)};
    p->call_open = 1;
    lm_ureq_init(&u);
    u.inst = &p->inst;
    rc = p->plugin->vt.build_request(p->inst.istate, &p->call, prep.canon, &u, e);
    lm_canon_prep_free(&prep);
    json_decref(canon);
    copy_ureq(&u, out);
    if (rc == LM_AGAIN && u.side.fetch) /* nobody fetches here: let the test do it */
        lm_side_complete(p->inst.side, u.side.name, 0, NULL, 0, NULL, 0);
    lm_ureq_free(&u);
    return rc;
}

int lmt_build(lmt_plugin *p, int op, const char *canon_json, lmt_ureq *out, lm_err *e)
{
    return build(p, op, canon_json, 0, out, e);
}

int lmt_build_raw(lmt_plugin *p, int op, const char *canon_json, lmt_ureq *out, lm_err *e)
{
    return build(p, op, canon_json, 1, out, e);
}

void lmt_ureq_clear(lmt_ureq *u)
{
    free(u->method);
    free(u->url);
    for (size_t i = 0; i < u->nheaders; i++)
        free(u->headers[i]);
    free(u->headers);
    free(u->body);
    memset(u, 0, sizeof(*u));
}

const char *lmt_header(const lmt_ureq *u, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < u->nheaders; i++)
        if (strncasecmp(u->headers[i], name, n) == 0 && u->headers[i][n] == ':')
            return u->headers[i] + n + 2;
    return NULL;
}

void lmt_response(lmt_plugin *p, int status, const char *body, size_t len, lmt_result *out)
{
    memset(out, 0, sizeof(*out));
    size_t json_len;
    out->rc = lm_response_translate(&p->inst, &p->call, status, (lm_str){body, len}, p->want_b64,
                                    &out->json, &json_len, &out->usage, &out->err);
}

int lmt_poll(lmt_plugin *p, int status, const char *body, size_t len, lmt_ureq *req,
             lmt_result *out)
{
    const lm_provider *vt = &p->plugin->vt;
    lm_ureq_t u;
    size_t json_len;
    int64_t units;
    memset(req, 0, sizeof(*req));
    memset(out, 0, sizeof(*out));
    if (vt->poll_request == NULL || vt->poll_parse == NULL)
        return out->rc = lm_error_set(&out->err, LM_ENOTSUP, 500, "api_error", NULL,
                                      "lmt_poll: the plugin has no poll_request/poll_parse");
    lm_ureq_init(&u);
    out->rc = vt->poll_request(p->inst.istate, &p->call, &u, &out->err);
    copy_ureq(&u, req);
    lm_ureq_free(&u);
    if (out->rc < 0)
        return out->rc;
    out->rc = lm_response_poll(&p->inst, &p->call, status, (lm_str){body, len}, &out->json,
                               &json_len, &out->usage, &units, &out->err);
    return out->rc;
}

const lm_call *lmt_call(lmt_plugin *p)
{
    return &p->call;
}

static int collect(void *arg, const char *json, size_t len)
{
    lm_buf_t *b = arg;
    if (b->len > 1 && lm_buf_add(b, ",", 1) < 0)
        return -1;
    return lm_buf_add(b, json, len);
}

void lmt_stream(lmt_plugin *p, const char *body, size_t len, size_t split, lmt_result *out)
{
    lm_stream_t s;
    lm_buf_t chunks = {0};
    int rc = LM_OK;

    memset(out, 0, sizeof(*out));
    lm_buf_add(&chunks, "[", 1);
    lm_stream_init(&s, &p->inst, &p->call, 1700000000, collect, &chunks);
    s.emit.raw_ok = 1; /* as the gateway runs it (ABI 1.4 emit_raw) */
    if (split == 0)
        split = len ? len : 1;
    for (size_t off = 0; off < len && rc == LM_OK; off += split) {
        size_t n = len - off < split ? len - off : split;
        rc = lm_stream_feed(&s, body + off, n);
    }
    if (rc == LM_OK)
        rc = lm_stream_finish(&s);
    lm_buf_add(&chunks, "]", 1);
    out->rc = rc;
    out->err = s.err;
    out->usage = s.emit.usage;
    out->done = s.done;
    out->json = strdup(lm_buf_cstr(&chunks));
    lm_buf_free(&chunks);
    lm_stream_free(&s);
}

static void stream_once(lmt_plugin *p, const char *canon, const char *body, size_t split,
                        lmt_result *r)
{
    lmt_ureq u;
    lm_err e;
    lmt_build(p, LM_OP_CHAT, canon, &u, &e);
    lmt_ureq_clear(&u);
    lmt_stream(p, body, strlen(body), split, r);
}

static int same_result(const lmt_result *a, const lmt_result *b)
{
    return strcmp(a->json, b->json) == 0 && a->rc == b->rc && a->done == b->done &&
           memcmp(&a->usage, &b->usage, sizeof(a->usage)) == 0 &&
           a->err.http_status == b->err.http_status && strcmp(a->err.code, b->err.code) == 0 &&
           strcmp(a->err.type, b->err.type) == 0 && strcmp(a->err.msg, b->err.msg) == 0;
}

size_t lmt_stream_every_split(lmt_plugin *p, const char *canon, const char *body, lmt_result *ref)
{
    size_t len = strlen(body), bad = 0;
    stream_once(p, canon, body, 0, ref);
    for (size_t s = 1; s <= len && bad == 0; s++) {
        lmt_result r;
        stream_once(p, canon, body, s, &r);
        if (!same_result(&r, ref))
            bad = s;
        lmt_result_clear(&r);
    }
    return bad;
}

void lmt_result_clear(lmt_result *r)
{
    free(r->json);
    memset(r, 0, sizeof(*r));
}

void lmt_side_set(lmt_plugin *p, const char *name, const char *value)
{
    lm_side_put(p->inst.side, name, value);
}

char *lmt_side_value(lmt_plugin *p, const char *name)
{
    char *val = NULL;
    size_t len;
    lm_side_need_t need;
    if (lm_side_get(p->inst.side, name, 1, &val, &len, &need) != LM_OK) {
        if (need.fetch) /* the lookup claimed a fetch nobody will run */
            lm_side_complete(p->inst.side, name, 0, NULL, 0, NULL, 0);
        return NULL;
    }
    return val;
}

int lmt_side_fetch(lmt_plugin *p, const char *name, int status, const char *body, lmt_ureq *req,
                   int64_t *ttl_s, lm_err *e)
{
    const lm_provider *vt = &p->plugin->vt;
    lm_ureq_t u;
    char *value = NULL;
    int64_t ttl = 0;
    memset(req, 0, sizeof(*req));
    memset(e, 0, sizeof(*e));
    if (vt->side_request == NULL || vt->side_parse == NULL)
        return lm_error_set(e, LM_ENOTSUP, 500, "api_error", NULL,
                            "lmt_side_fetch: the plugin has no side_request/side_parse");
    lm_ureq_init(&u);
    int rc = vt->side_request(p->inst.istate, name, &u, e);
    copy_ureq(&u, req);
    lm_ureq_free(&u);
    if (rc < 0)
        return rc;
    rc = vt->side_parse(p->inst.istate, name, status, (lm_str){body, body ? strlen(body) : 0},
                        &value, &ttl, e);
    if (ttl_s)
        *ttl_s = ttl;
    if (rc >= 0 && value)
        lm_side_complete(p->inst.side, name, 1, value, 0, NULL, 1);
    else
        free(value);
    return rc;
}
