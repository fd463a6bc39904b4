/*
 * status.h - what the console's overview shows: the generation, plugins,
 * scripts and channel health (GET /admin/status), the ledger bucketed in
 * time (GET /admin/usage/series), and a configuration check
 * (POST /admin/check). Admin thread only.
 */
#ifndef LM_ADMIN_STATUS_H
#define LM_ADMIN_STATUS_H
#include "admin/ctx.h"

void lm_admin_status(lm_admin_ctx_t *a);
void lm_admin_usage_series(lm_admin_ctx_t *a);
void lm_admin_check(lm_admin_ctx_t *a);
#endif
