/*
 * ctx.h - one admin request as every resource handler sees it, and the
 * replies and JSON values they share. Admin thread only.
 */
#ifndef LM_ADMIN_CTX_H
#define LM_ADMIN_CTX_H
#include "admin/env.h"
#include "http/admin_http.h"
#include "store/store.h"

#include <jansson.h>
#include <stdint.h>

#define ADMIN_PAGE_DEFAULT 100
#define ADMIN_PAGE_MAX     500
#define ADMIN_TIME_MAX     INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

/* The request being served; lives on the admin thread's stack for the
 * request, env and req borrowed. */
typedef struct lm_admin_ctx_s {
    lm_admin_env_t *env;
    lm_admin_http_req_t *req;
    int64_t id;                      /* {id} routes */
    char name[LM_CHAN_NAME_MAX + 1]; /* {name} routes */
    int role;                        /* LM_ADMIN_ROLE_* */
    lm_admin_session_t *session;     /* the console session, NULL for a bearer token */
} lm_admin_ctx_t;

/* A handler: sends exactly one reply. */
typedef void (*lm_admin_handler_t)(lm_admin_ctx_t *a);

/* The allowed-list of a route that takes no query parameter. */
extern const char *const lm_admin_no_params[];

/* 1 if the request has no query parameter; 0 after answering 400. */
int lm_admin_no_query(lm_admin_ctx_t *a);
/* The request's JSON object body when it has no query parameter: a new
 * reference, or NULL after answering 400. */
json_t *lm_admin_body(lm_admin_ctx_t *a);

/* Reply for a store status (LM_STORE_*). msg (may be NULL or empty) is the
 * store's validation text, built from fixed strings; database errors get a
 * fixed message (the SQLite text is only logged, by the store). */
void lm_admin_store_error(lm_admin_http_req_t *req, int rc, const char *msg);
/* A JSON string of s ("" for NULL or invalid UTF-8): new reference. */
json_t *lm_admin_jtext(const char *s);
/* Micro-units as a decimal string of currency units: new reference. */
json_t *lm_admin_jmoney(int64_t micro);

/* The paging parameters of a list: `cursor` in [cursor_min, INT64_MAX]
 * (absent: 0) and limit in [1, ADMIN_PAGE_MAX] (absent:
 * ADMIN_PAGE_DEFAULT). 0, or -1 after replying 400. */
int lm_admin_page_query(lm_admin_ctx_t *a, const lm_admin_http_query_t *q, const char *cursor,
                        int64_t cursor_min, int64_t *after, int64_t *limit);
/* One listed item as JSON (new reference); item points into the page's array. */
typedef json_t *(*lm_admin_page_item_fn)(const void *item, const void *arg);
/* A page read as limit + 1 items (the one more says a next page exists):
 * {"object":"list","data":[the first min(n, limit) of the n items of v,
 * each `size` bytes],"has_more":...}, a new reference. *last is the last
 * item listed (borrowed from v) or NULL, *more whether there was one more. */
json_t *lm_admin_page_json(const void *v, size_t n, size_t size, int64_t limit,
                           lm_admin_page_item_fn item, const void *arg, const void **last,
                           int *more);
#endif
