/*
 * keys.h - the /admin/keys handlers (docs/admin.md). Admin thread only;
 * each sends exactly one reply.
 */
#ifndef LM_ADMIN_KEYS_H
#define LM_ADMIN_KEYS_H
#include "admin/ctx.h"

void lm_admin_keys_list(lm_admin_ctx_t *a);   /* GET /admin/keys */
void lm_admin_keys_create(lm_admin_ctx_t *a); /* POST /admin/keys (shows the secret once) */
void lm_admin_keys_get(lm_admin_ctx_t *a);    /* GET /admin/keys/{id} */
void lm_admin_keys_update(lm_admin_ctx_t *a); /* PATCH /admin/keys/{id} */
void lm_admin_keys_delete(lm_admin_ctx_t *a); /* DELETE /admin/keys/{id} */
#endif
