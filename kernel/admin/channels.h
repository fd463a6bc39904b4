/*
 * channels.h - the /admin/channels handlers (docs/admin.md). Admin thread
 * only; each sends exactly one reply. Writes block until the reload that
 * applies them (at most 30 s).
 */
#ifndef LM_ADMIN_CHANNELS_H
#define LM_ADMIN_CHANNELS_H
#include "admin/ctx.h"

void lm_admin_channels_list(lm_admin_ctx_t *a);   /* GET /admin/channels */
void lm_admin_channels_create(lm_admin_ctx_t *a); /* POST /admin/channels */
void lm_admin_channels_get(lm_admin_ctx_t *a);    /* GET /admin/channels/{name} */
void lm_admin_channels_put(lm_admin_ctx_t *a);    /* PUT: replace */
void lm_admin_channels_patch(lm_admin_ctx_t *a);  /* PATCH: merge */
void lm_admin_channels_delete(lm_admin_ctx_t *a); /* DELETE */
#endif
