/* oai_build.c - the OpenAI-compatible base: channel state and the upstream
 * request (lmoai.h). init/fini on the control thread; build on a worker. */
#include "lmoai.h"

#include <string.h>
#include <strings.h>

static char *join(const lm_host_api *h, const char *a, size_t an, const char *b, size_t bn)
{
    char *s = h->alloc(an + bn + 1);
    if (s == NULL)
        return NULL;
    memcpy(s, a, an);
    memcpy(s + an, b, bn);
    s[an + bn] = '\0';
    return s;
}

static char *url_for(const lm_host_api *h, lm_str base, const char *path)
{
    while (base.n && base.p[base.n - 1] == '/')
        base.n--;
    return join(h, base.p, base.n, path, strlen(path));
}

static int is_http(lm_str b)
{
    return (b.n > 7 && strncmp(b.p, "http://", 7) == 0) ||
           (b.n > 8 && strncmp(b.p, "https://", 8) == 0);
}

/* Optional settings: stream_usage (bool) and q->cfg_headers. */
static void read_options(lmo_inst *in)
{
    int su = 1;
    if (LM_HOST_HAS(in->h, cfg_bool) && in->h->cfg_bool(in->ictx, "stream_usage", &su) == LM_OK)
        in->stream_usage = su != 0;
    for (size_t i = 0; in->q->cfg_headers && in->q->cfg_headers[i].from && i < LMO_MAX_HEADERS; i++)
        if (in->h->cfg_str(in->ictx, in->q->cfg_headers[i].from, &in->hdr[i]) != LM_OK)
            in->hdr[i] = (lm_str){NULL, 0};
}

int lmo_init(const lmo_quirks *q, const lm_host_api *h, void *ictx, void **istate, lm_err *e)
{
    lm_str base = {NULL, 0}, key = {NULL, 0};
    lmo_inst *in = h->alloc(sizeof(*in));
    if (in == NULL)
        return lms_oom(e);
    memset(in, 0, sizeof(*in));
    *in = (lmo_inst){.h = h, .ictx = ictx, .q = q, .stream_usage = 1};
    if (h->cfg_str(ictx, "base_url", &base) != LM_OK)
        base.n = 0;
    int rc = q->init ? q->init(in, &base, e) : LM_OK;
    if (rc == LM_OK && !is_http(base))
        rc = lm_err_set(e, LM_ERR, 500, "api_error", NULL,
                        "base_url must start with http:// or https://");
    if (rc != LM_OK) {
        lmo_fini(in);
        return rc;
    }
    read_options(in);
    lm_str cm;
    in->native_completions = h->cfg_str(ictx, "completions", &cm) == LM_OK && cm.n == 6 &&
                             memcmp(cm.p, "native", 6) == 0;
    in->base = url_for(h, base, "");
    in->chat_url = url_for(h, base, q->chat_path ? q->chat_path : "/chat/completions");
    in->embed_url = url_for(h, base, q->embed_path ? q->embed_path : "/embeddings");
    if (h->cfg_str(ictx, "api_key", &key) == LM_OK && key.n) {
        in->auth = join(h, "Bearer ", 7, key.p, key.n);
        in->key = in->auth ? in->auth + 7 : NULL;
    }
    if (in->chat_url == NULL || in->embed_url == NULL || in->base == NULL ||
        (key.n && in->auth == NULL)) {
        lmo_fini(in);
        return lms_oom(e);
    }
    *istate = in;
    return LM_OK;
}

void lmo_fini(void *istate)
{
    lmo_inst *in = istate;
    if (in == NULL)
        return;
    if (in->auth)
        memset(in->auth, 0, strlen(in->auth)); /* the key does not outlive the channel */
    in->h->free(in->base);
    in->h->free(in->chat_url);
    in->h->free(in->embed_url);
    in->h->free(in->auth);
    in->h->free(in);
}

void lmo_req_close(void *istate, lm_call *c)
{
    lmo_inst *in = istate;
    in->h->free(c->rstate);
    c->rstate = NULL;
}

const char *lmo_model(const lmo_quirks *q, const char *model)
{
    for (const lms_rename *a = q->aliases; a && a->from && model; a++)
        if (strcasecmp(model, a->from) == 0)
            return a->to;
    return model;
}

/* Whether the client's bytes can go upstream as they are. */
static int pass_through(const lmo_inst *in, const lm_call *c)
{
    const lmo_quirks *q = in->q;
    return c->raw_body.n > 0 && q->params == NULL && q->keep == NULL && q->aliases == NULL &&
           q->request == NULL &&
           (q->flags & (LMO_DEV_AS_SYSTEM | LMO_NULL_CONTENT | LMO_TEXT_ONLY | LMO_STOP_ARRAY)) ==
               0;
}

/* Forward the raw body; a stream gets stream_options spliced in before the
 * final '}' (saves a parse-tree copy and a serialisation per request). A
 * stream whose client sent its own stream_options goes as it is when that
 * is exactly {"include_usage":true} (what the JSON way writes), else the
 * JSON way, so usage is still asked for. Returns 1 when the body was set. */
static int raw_body(const lmo_inst *in, lm_call *c, const json_t *canon, lm_ureq *u)
{
    static const char opt[] = ",\"stream_options\":{\"include_usage\":true}";
    lm_str raw = c->raw_body;
    size_t end = raw.n;
    const json_t *so = json_object_get(canon, "stream_options");
    if (c->stream && so != NULL)
        return in->stream_usage && json_object_size(so) == 1 &&
               json_is_true(json_object_get(so, "include_usage")) &&
               in->h->ureq_set_body(u, raw) == LM_OK;
    if (!c->stream || !in->stream_usage)
        return in->h->ureq_set_body(u, raw) == LM_OK;
    while (end > 0 && raw.p[end - 1] != '}')
        end--;
    if (end == 0)
        return 0;
    char *b = join(in->h, raw.p, end - 1, opt, sizeof(opt) - 1);
    if (b == NULL)
        return 0;
    char *all = join(in->h, b, strlen(b), raw.p + end - 1, raw.n - end + 1);
    int ok = all && in->h->ureq_set_body(u, lm_cstr(all)) == LM_OK;
    in->h->free(b);
    in->h->free(all);
    return ok;
}

/* One message with the flagged rewrites into *out (new). */
static int message(unsigned flags, const json_t *m, size_t i, json_t **out, lm_err *e)
{
    char where[48];
    const json_t *ct = json_object_get(m, "content");
    json_t *nm = *out = json_copy((json_t *)m);
    if (nm == NULL)
        return lms_oom(e);
    if ((flags & LMO_DEV_AS_SYSTEM) && lms_streq(lms_jstr(m, "role"), "developer"))
        json_object_set_new(nm, "role", json_string("system"));
    if ((flags & LMO_NULL_CONTENT) && (ct == NULL || json_is_null(ct)))
        json_object_set_new(nm, "content", json_string(""));
    if (!(flags & LMO_TEXT_ONLY))
        return LM_OK;
    lms_buf b = {0};
    snprintf(where, sizeof(where), "messages[%zu].content", i);
    int rc = lms_content_text(ct, LMS_TEXT_ONLY, where, &b, e);
    if (rc == LM_OK && lms_oset(nm, "content", lms_buf_json(&b)) < 0)
        rc = lms_oom(e);
    lms_buf_free(&b);
    return rc;
}

static int messages(const lmo_inst *in, const json_t *canon, json_t *body, lm_err *e)
{
    const json_t *msgs = json_object_get(canon, "messages"), *m;
    size_t i;
    if (msgs == NULL) /* the kernel's validation owns a missing messages */
        return LM_OK;
    if (!(in->q->flags & (LMO_DEV_AS_SYSTEM | LMO_NULL_CONTENT | LMO_TEXT_ONLY)))
        return json_object_set(body, "messages", (json_t *)msgs) < 0 ? lms_oom(e) : LM_OK;
    json_t *arr = json_array();
    if (arr == NULL || json_object_set_new(body, "messages", arr) < 0)
        return lms_oom(e);
    json_array_foreach (msgs, i, m) {
        json_t *nm = NULL;
        int rc = message(in->q->flags, m, i, &nm, e);
        if (rc == LM_OK && json_array_append_new(arr, nm) < 0)
            rc = lms_oom(e);
        else if (rc != LM_OK)
            json_decref(nm);
        if (rc != LM_OK)
            return rc;
    }
    return LM_OK;
}

/* Copy the chat parameters q->keep names (space-separated). */
static int keep_params(const char *keep, const json_t *canon, json_t *body)
{
    char name[64];
    while (keep && *keep) {
        size_t n = strcspn(keep, " ");
        if (n > 0 && n < sizeof(name)) {
            memcpy(name, keep, n);
            name[n] = '\0';
            json_t *v = json_object_get(canon, name);
            if (v && !json_is_null(v) && json_object_set(body, name, v) < 0)
                return -1;
        }
        keep += n + (keep[n] == ' ');
    }
    return 0;
}

/* The upstream body for a chat or embeddings call into *out (new). */
static int body_for(const lmo_inst *in, lm_call *c, const json_t *canon, json_t **out, lm_err *e)
{
    const lmo_quirks *q = in->q;
    int op = lmo_wire_op(in, c), chat = op == LM_OP_CHAT || op == LM_OP_COMPLETIONS;
    int pick = chat && (q->params || q->keep);
    json_t *b = pick ? json_object() : json_copy((json_t *)canon);
    const char *model = lmo_model(q, c->model ? c->model : lms_jstr(canon, "model"));
    int rc = b ? LM_OK : lms_oom(e);
    if (rc == LM_OK && pick &&
        (keep_params(q->keep, canon, b) < 0 || lms_copy_params(canon, b, q->params) < 0))
        rc = lms_oom(e);
    if (rc == LM_OK && model && json_object_set_new(b, "model", json_string(model)) < 0)
        rc = lms_oom(e);
    if (rc == LM_OK && chat)
        rc = messages(in, canon, b, e);
    const json_t *stop = json_object_get(b, "stop");
    if (rc == LM_OK && (q->flags & LMO_STOP_ARRAY) && json_is_string(stop))
        json_object_set_new(b, "stop", json_pack("[O]", stop));
    json_object_del(b, "stream_options");
    if (rc == LM_OK && chat && c->stream) {
        json_object_set_new(b, "stream", json_true());
        if (in->stream_usage)
            json_object_set_new(b, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    if (rc == LM_OK && op == LM_OP_COMPLETIONS)
        rc = lmo_completions_body(b, e);
    if (rc == LM_OK && q->request)
        rc = q->request(in, c, canon, b, e);
    if (rc != LM_OK)
        json_decref(b);
    *out = rc == LM_OK ? b : NULL;
    return rc;
}

static int headers(const lmo_inst *in, lm_call *c, lm_ureq *u)
{
    const lm_host_api *h = in->h;
    int op = lmo_wire_op(in, c);
    char *ep = lmo_is_endpoint_op(op) ? lmo_endpoint_url(in, op) : NULL;
    if (lmo_is_endpoint_op(op) && ep == NULL)
        return LM_ENOMEM;
    int rc = h->ureq_set_url(u, lm_cstr(ep                     ? ep
                                        : c->op == LM_OP_EMBED ? in->embed_url
                                                               : in->chat_url));
    h->free(ep);
    if (rc == LM_OK && in->auth)
        rc = h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(in->auth));
    for (size_t i = 0;
         rc == LM_OK && i < LMO_MAX_HEADERS && in->q->cfg_headers && in->q->cfg_headers[i].from;
         i++)
        if (in->hdr[i].n)
            rc = h->ureq_add_header(u, lm_cstr(in->q->cfg_headers[i].to), in->hdr[i]);
    if (rc == LM_OK && c->stream)
        rc = h->ureq_add_header(u, LM_STR("Accept"), LM_STR("text/event-stream"));
    return rc;
}

int lmo_build_request(void *istate, lm_call *c, const json_t *canon, lm_ureq *u, lm_err *e)
{
    lmo_inst *in = istate;
    lmo_req *rs = in->h->alloc(sizeof(*rs));
    if (rs == NULL)
        return lms_oom(e);
    *rs = (lmo_req){.op = c->op};
    c->rstate = rs;
    if (headers(in, c, u) != LM_OK)
        return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "the upstream request is invalid");
    if (c->op == LM_OP_AUDIO_TRANSCRIBE || c->op == LM_OP_AUDIO_TRANSLATE)
        return LM_OK; /* the kernel sends the client's multipart body (longmen.h) */
    if (pass_through(in, c) && raw_body(in, c, canon, u))
        return in->h->ureq_add_header(u, LM_STR("Content-Type"), LM_STR("application/json"));
    json_t *body = NULL;
    int rc = body_for(in, c, canon, &body, e);
    if (rc != LM_OK)
        return rc;
    if (in->h->ureq_set_json_body(u, body) != LM_OK)
        return lms_oom(e);
    return LM_OK;
}
