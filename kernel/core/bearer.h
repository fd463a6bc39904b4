/*
 * bearer.h - the token of an "Authorization: Bearer <token>" value, the
 * one parser every listener uses. Pure; any thread.
 */
#ifndef LM_BEARER_H
#define LM_BEARER_H
#include <stddef.h>

#define LM_BEARER_MAX 512 /* longer tokens are refused, not truncated */

/* The token inside authz (borrowed, *n bytes), or NULL when authz is NULL,
 * is not "Bearer " (any case) followed by a token, or the token is empty or
 * longer than LM_BEARER_MAX. Spaces after "Bearer" are skipped. */
const char *lm_bearer_token(const char *authz, size_t *n);
#endif
