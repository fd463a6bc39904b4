/*
 * admin_http.c - the admin listener's HTTP toolkit on top of libevhtp:
 * JSON and error replies, strict query strings, JSON bodies.
 * Runs on the admin thread only; replies take the bodies they are given.
 */
#include "http/admin_http.h"
#include "core/errors.h"
#include "http/gate.h"
#include "proto/reqcheck.h"
#include "store/store.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <evhtp/evhtp.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ADMIN_BODY_MAX   (1u << 20) /* 1 MiB: 1024 models of 256 bytes fit */
#define ADMIN_JSON_DEPTH 8

/* ------------------------------------------------------------------------ */
/* replies                                                                   */

/* kalloc/valloc 1: libevhtp copies both strings. With 0 it kept the
 * caller's pointers, so a value built in a stack buffer (Allow, a cookie)
 * dangled if the reply was sent after the caller returned. */
void lm_admin_http_add_header(lm_admin_http_req_t *req, const char *k, const char *v)
{
    evhtp_header_t *h = evhtp_header_new(k, v, 1, 1);
    if (h)
        evhtp_headers_add_header(req->headers_out, h);
}

void lm_admin_http_json(lm_admin_http_req_t *req, int status, json_t *body)
{
    char *txt = body ? json_dumps(body, JSON_COMPACT | JSON_ESCAPE_SLASH) : NULL;
    json_decref(body);
    lm_admin_http_add_header(req, "Content-Type", "application/json");
    lm_admin_http_add_header(req, "Cache-Control", "no-store");
    lm_admin_http_add_header(req, "X-Content-Type-Options", "nosniff");
    lm_admin_http_add_header(req, "Content-Security-Policy",
                             "default-src 'none'; frame-ancestors 'none'");
    if (txt == NULL && status != 204) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"api_error\",\"param\":null,\"code\":\"internal_error\"}}";
        status = 500;
        evbuffer_add(req->buffer_out, oom, sizeof(oom) - 1);
    } else if (txt) {
        evbuffer_add(req->buffer_out, txt, strlen(txt));
        /* a create reply carries a secret: do not leave it in freed memory */
        OPENSSL_cleanse(txt, strlen(txt));
        free(txt);
    }
    evhtp_send_reply(req, (evhtp_res)status);
}

void lm_admin_http_error(lm_admin_http_req_t *req, int status, const char *code, const char *param,
                         const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *e = json_object();
    json_t *m = json_string(msg);
    json_object_set_new(e, "message", m ? m : json_string("invalid request"));
    json_object_set_new(e, "type", json_string(lm_error_type_for(status)));
    json_object_set_new(e, "param", param ? json_string(param) : json_null());
    json_object_set_new(e, "code", code ? json_string(code) : json_null());
    lm_admin_http_json(req, status, json_pack("{s:o}", "error", e));
}

void lm_admin_http_bad_request(lm_admin_http_req_t *req, const char *param, const char *msg)
{
    lm_admin_http_error(req, 400, "invalid_value", param, "%s", msg);
}

/* ------------------------------------------------------------------------ */
/* query strings                                                             */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into a new string; NULL if malformed, or if the
 * result is not valid UTF-8 or contains NUL. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            int a = hexval((unsigned char)s[i + 1]), b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[o++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    if (!lm_store_text_ok(out, o, 1024)) {
        free(out);
        return NULL;
    }
    return out;
}

void lm_admin_http_query_free(lm_admin_http_query_t *q)
{
    for (size_t i = 0; i < q->n; i++) {
        free(q->p[i].k);
        free(q->p[i].v);
    }
    q->n = 0;
}

int lm_admin_http_query_parse(lm_admin_http_req_t *req, const char *const *allowed,
                              lm_admin_http_query_t *q)
{
    const char *raw = (req->uri && req->uri->query_raw) ? (const char *)req->uri->query_raw : "";
    memset(q, 0, sizeof(*q));
    while (*raw) {
        size_t len = strcspn(raw, "&");
        const char *eq = memchr(raw, '=', len);
        size_t kl = eq ? (size_t)(eq - raw) : len;
        if (len > 0) {
            char *k = pct_decode(raw, kl);
            char *v = eq ? pct_decode(eq + 1, len - kl - 1) : strdup("");
            int known = 0;
            for (size_t i = 0; k && allowed[i]; i++)
                known |= strcmp(k, allowed[i]) == 0;
            for (size_t i = 0; k && i < q->n; i++)
                if (strcmp(q->p[i].k, k) == 0)
                    known = -1;
            if (k == NULL || v == NULL || known != 1 || q->n == LM_ADMIN_HTTP_QUERY_MAX) {
                free(k);
                free(v);
                lm_admin_http_query_free(q);
                lm_admin_http_bad_request(req, NULL,
                                          known == -1 ? "a query parameter is repeated"
                                                      : "unknown or malformed query parameter");
                return -1;
            }
            q->p[q->n++] = (lm_admin_http_qparam_t){k, v};
        }
        raw += len;
        if (*raw == '&')
            raw++;
    }
    return 0;
}

const char *lm_admin_http_query_get(const lm_admin_http_query_t *q, const char *k)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->p[i].k, k) == 0)
            return q->p[i].v;
    return NULL;
}

int lm_admin_http_parse_uint(const char *s, int64_t max, int64_t *out)
{
    int64_t v = 0;
    if (s == NULL || *s == '\0' || strlen(s) > 19)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v))
            return -1;
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

int lm_admin_http_query_int(lm_admin_http_req_t *req, const lm_admin_http_query_t *q, const char *k,
                            int64_t lo, int64_t hi, int64_t def, int64_t *out)
{
    const char *v = lm_admin_http_query_get(q, k);
    *out = def;
    if (v == NULL)
        return 0;
    if (lm_admin_http_parse_uint(v, hi, out) != 0 || *out < lo) {
        lm_admin_http_error(req, 400, "invalid_value", k, "%s must be an integer from %lld to %lld",
                            k, (long long)lo, (long long)hi);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* JSON bodies                                                               */

/* Bodies must be declared JSON: libevhtp parses a form-urlencoded body as
 * query arguments, which would mix the body into the URL's parameters. */
static int json_content_type(lm_admin_http_req_t *req)
{
    const char *ct = evhtp_header_find(req->headers_in, "Content-Type");
    if (ct == NULL)
        return 0;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

json_t *lm_admin_http_body_object(lm_admin_http_req_t *req)
{
    if (!json_content_type(req)) {
        lm_admin_http_error(req, 415, "unsupported_media_type", NULL,
                            "send the body as Content-Type: application/json");
        return NULL;
    }
    size_t n = evbuffer_get_length(req->buffer_in);
    const char *p = n ? (const char *)evbuffer_pullup(req->buffer_in, -1) : "";
    if (n == 0) {
        lm_admin_http_bad_request(req, NULL, "request body is empty; expected a JSON object");
        return NULL;
    }
    if (!lm_reqcheck_depth_ok(p, n, ADMIN_JSON_DEPTH)) {
        lm_admin_http_bad_request(req, NULL, "request JSON is nested too deeply");
        return NULL;
    }
    json_error_t je;
    /* NUL is allowed by the parser so that it is refused below with a
     * precise message instead of truncating a string silently. */
    json_t *root = json_loadb(p, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (root == NULL) {
        lm_admin_http_error(req, 400, "invalid_json", NULL,
                            "could not parse the JSON body (line %d, column %d)", je.line,
                            je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        lm_admin_http_bad_request(req, NULL, "request body must be a JSON object");
        return NULL;
    }
    return root;
}

/* ------------------------------------------------------------------------ */
/* requests                                                                  */

const char *lm_admin_http_header(lm_admin_http_req_t *req, const char *name)
{
    return evhtp_header_find(req->headers_in, name);
}

const struct sockaddr *lm_admin_http_peer(lm_admin_http_req_t *req)
{
    return req->conn ? req->conn->saddr : NULL;
}

const char *lm_admin_http_path(lm_admin_http_req_t *req)
{
    return (req->uri && req->uri->path && req->uri->path->full) ? req->uri->path->full : "";
}

int lm_admin_http_method_is(lm_admin_http_req_t *req, int method)
{
    static const htp_method map[] = {
        [LM_ADMIN_HTTP_GET] = htp_method_GET,       [LM_ADMIN_HTTP_POST] = htp_method_POST,
        [LM_ADMIN_HTTP_PUT] = htp_method_PUT,       [LM_ADMIN_HTTP_PATCH] = htp_method_PATCH,
        [LM_ADMIN_HTTP_DELETE] = htp_method_DELETE,
    };
    return evhtp_request_get_method(req) == map[method];
}

void lm_admin_http_text(lm_admin_http_req_t *req, const char *ctype, const char *txt, size_t len)
{
    lm_admin_http_add_header(req, "Content-Type", ctype);
    lm_admin_http_add_header(req, "Cache-Control", "no-store");
    evbuffer_add(req->buffer_out, txt, len);
    evhtp_send_reply(req, EVHTP_RES_OK);
}

/* The admin thread's open connections, so that the thread closes them
 * when it stops: left to evhtp_free they would outlive the thread's loop
 * (their gates and sockets leaked, their fini hooks never run). */
typedef struct admin_conn_s {
    evhtp_connection_t *conn;
    lm_gate_t *gate; /* owned */
    struct admin_conn_s **head, *prev, *next;
} admin_conn_t;

/* The admin listener's connections get the data plane's gate: the same
 * head limits, control-byte checks, readable 413 and pipelining. */
static evhtp_res admin_conn_fini(evhtp_connection_t *c, void *arg)
{
    admin_conn_t *n = arg;
    /* libevhtp runs this before the request's fini hook (Connection: close):
     * the hook finds the gate through this slot, so it must not see it freed. */
    if (c->hooks)
        c->hooks->on_connection_fini_arg = NULL;
    if (n->prev)
        n->prev->next = n->next;
    else if (n->head)
        *n->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    lm_gate_free(n->gate);
    free(n);
    return EVHTP_RES_OK;
}

static evhtp_res admin_req_fini(evhtp_request_t *req, void *arg)
{
    (void)arg;
    evhtp_connection_t *c = evhtp_request_get_connection(req);
    admin_conn_t *n = c && c->hooks ? c->hooks->on_connection_fini_arg : NULL;
    if (n)
        lm_gate_request_done(n->gate);
    return EVHTP_RES_OK;
}

static evhtp_res admin_accept(evhtp_connection_t *c, void *arg)
{
    lm_head_limits_t lim;
    (void)arg;
    lm_head_limits_default(&lim, ADMIN_BODY_MAX);
    admin_conn_t *n = calloc(1, sizeof(*n));
    lm_gate_t *g = n ? lm_gate_attach(c, &lim) : NULL;
    if (g == NULL) {
        free(n);
        return EVHTP_RES_ERROR;
    }
    n->conn = c;
    n->gate = g;
    n->head = c->thread ? evthr_get_aux(c->thread) : NULL;
    if (n->head) {
        n->next = *n->head;
        if (n->next)
            n->next->prev = n;
        *n->head = n;
    }
    evhtp_connection_set_hook(c, evhtp_hook_on_connection_fini,
                              (evhtp_hook)(void (*)(void))admin_conn_fini, n);
    evhtp_connection_set_hook(c, evhtp_hook_on_request_fini,
                              (evhtp_hook)(void (*)(void))admin_req_fini, NULL);
    return EVHTP_RES_OK;
}

void lm_admin_http_thread_init(struct evhtp *htp, struct evthr *thr, void *arg)
{
    (void)htp;
    (void)arg;
    evthr_set_aux(thr, calloc(1, sizeof(admin_conn_t *))); /* NULL: connections untracked */
}

void lm_admin_http_thread_exit(struct evhtp *htp, struct evthr *thr, void *arg)
{
    admin_conn_t **head = evthr_get_aux(thr);
    (void)htp;
    (void)arg;
    if (head == NULL)
        return;
    while (*head)
        evhtp_connection_free((*head)->conn); /* admin_conn_fini unlinks it */
    /* libevent frees a bufferevent from its loop (a finalizer): run the
     * loop once more, or the connections just closed would leak. */
    event_base_loop(evthr_get_base(thr), EVLOOP_NONBLOCK);
    evthr_set_aux(thr, NULL);
    free(head);
}

void lm_admin_http_serve(struct evhtp *htp, lm_admin_http_cb cb, void *arg)
{
    evhtp_set_max_body_size(htp, ADMIN_BODY_MAX);
    evhtp_set_post_accept_cb(htp, admin_accept, NULL);
    evhtp_set_gencb(htp, cb, arg);
}
