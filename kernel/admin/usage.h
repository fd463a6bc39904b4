/*
 * usage.h - the /admin/usage handlers (docs/admin.md). Admin thread only;
 * each sends exactly one reply.
 */
#ifndef LM_ADMIN_USAGE_H
#define LM_ADMIN_USAGE_H
#include "admin/ctx.h"

void lm_admin_usage_totals(lm_admin_ctx_t *a); /* GET /admin/usage */
void lm_admin_usage_rows(lm_admin_ctx_t *a);   /* GET /admin/usage/rows */
#endif
