/*
 * admin_http.h - the admin listener's HTTP toolkit (libevhtp stays in
 * http/): JSON replies, errors in the OpenAI shape, strict query strings
 * and JSON bodies. Admin thread only. Every reply call sends the reply:
 * call exactly one per request.
 */
#ifndef LM_ADMIN_HTTP_H
#define LM_ADMIN_HTTP_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct evhtp;
struct evthr;
struct sockaddr;
struct evhtp_request;
/* An admin request (opaque outside http/); borrowed by every call. */
typedef struct evhtp_request lm_admin_http_req_t;
typedef void (*lm_admin_http_cb)(lm_admin_http_req_t *req, void *arg);

/* Serve every request of htp with cb(req, arg), bodies capped at 1 MiB.
 * Control thread, before the admin thread starts; arg outlives htp. */
void lm_admin_http_serve(struct evhtp *htp, lm_admin_http_cb cb, void *arg);

/* The admin thread's init and exit (evhtp_use_threads_wexit, arg unused):
 * the thread keeps a list of its open connections, and its exit closes
 * them (their fini hooks run there) and frees the list. Admin thread. */
void lm_admin_http_thread_init(struct evhtp *htp, struct evthr *thr, void *arg);
void lm_admin_http_thread_exit(struct evhtp *htp, struct evthr *thr, void *arg);

/* ---- requests (results borrowed from req) ---- */
/* Request header value, or NULL. */
const char *lm_admin_http_header(lm_admin_http_req_t *req, const char *name);
/* The peer's address (borrowed), or NULL. */
const struct sockaddr *lm_admin_http_peer(lm_admin_http_req_t *req);
/* The decoded path ("" when absent). */
const char *lm_admin_http_path(lm_admin_http_req_t *req);
enum {
    LM_ADMIN_HTTP_GET,
    LM_ADMIN_HTTP_POST,
    LM_ADMIN_HTTP_PUT,
    LM_ADMIN_HTTP_PATCH,
    LM_ADMIN_HTTP_DELETE
};
/* 1 if the request's method is `method` (LM_ADMIN_HTTP_*). */
int lm_admin_http_method_is(lm_admin_http_req_t *req, int method);

/* ---- replies ---- */
/* Add a response header before the reply (copied). */
void lm_admin_http_add_header(lm_admin_http_req_t *req, const char *k, const char *v);
/* Send `body` (stolen, may be NULL for 204) as JSON. The headers keep
 * browsers from sniffing or running anything that a stored name might
 * contain (AU-9). The text is wiped after sending (it may hold a secret). */
void lm_admin_http_json(lm_admin_http_req_t *req, int status, json_t *body);
/* The OpenAI error shape; code and param may be NULL. */
void lm_admin_http_error(lm_admin_http_req_t *req, int status, const char *code, const char *param,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* 400 invalid_value with msg. */
void lm_admin_http_bad_request(lm_admin_http_req_t *req, const char *param, const char *msg);
/* 200 with txt[0..len) (copied) as ctype, not cached. */
void lm_admin_http_text(lm_admin_http_req_t *req, const char *ctype, const char *txt, size_t len);

/* ---- query strings ---- */
#define LM_ADMIN_HTTP_QUERY_MAX 8 /* distinct query parameters */
typedef struct lm_admin_http_qparam_s {
    char *k, *v;
} lm_admin_http_qparam_t;
typedef struct lm_admin_http_query_s {
    lm_admin_http_qparam_t p[LM_ADMIN_HTTP_QUERY_MAX];
    size_t n;
} lm_admin_http_query_t;
/* Parse the raw query into q; only names in `allowed` (NULL-terminated),
 * each at most once, percent-decoded to UTF-8 without NUL. 0 (free q with
 * lm_admin_http_query_free), or -1 after replying 400 (q is empty). */
int lm_admin_http_query_parse(lm_admin_http_req_t *req, const char *const *allowed,
                              lm_admin_http_query_t *q);
void lm_admin_http_query_free(lm_admin_http_query_t *q);
/* The value of k (borrowed from q), or NULL. */
const char *lm_admin_http_query_get(const lm_admin_http_query_t *q, const char *k);
/* An integer parameter in [lo, hi], `def` when absent. 0, or -1 after
 * replying 400. */
int lm_admin_http_query_int(lm_admin_http_req_t *req, const lm_admin_http_query_t *q, const char *k,
                            int64_t lo, int64_t hi, int64_t def, int64_t *out);
/* Strict non-negative decimal (no sign, no spaces), <= max: 0 or -1. */
int lm_admin_http_parse_uint(const char *s, int64_t max, int64_t *out);

/* ---- bodies ---- */
/* The body as a JSON object (new reference, the caller decrefs), or NULL
 * after replying 4xx: it must be declared application/json, parse
 * strictly (no duplicate keys) and nest at most 8 deep. */
json_t *lm_admin_http_body_object(lm_admin_http_req_t *req);
#endif
