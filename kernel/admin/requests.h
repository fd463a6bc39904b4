/*
 * requests.h - GET /admin/requests: the request log (docs/observability.md),
 * filtered and paged. Admin thread only; sends exactly one reply.
 */
#ifndef LM_ADMIN_REQUESTS_H
#define LM_ADMIN_REQUESTS_H
#include "admin/ctx.h"

void lm_admin_requests_list(lm_admin_ctx_t *a); /* GET /admin/requests */
#endif
