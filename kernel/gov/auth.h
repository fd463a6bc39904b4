/* auth.h - client keys: SHA-256 of the presented key, compared in constant
 * time against every configured hash (no early exit, no length leak). */
#ifndef LM_AUTH_H
#define LM_AUTH_H
#include "conf/conf.h"

#include <stddef.h>

/* Constant-time equality of two 32-byte digests. */
int lm_auth_digest_eq(const unsigned char *a, const unsigned char *b);
/* The key matching "Bearer <secret>" in `authz` (may be NULL), or NULL.
 * Borrowed from conf. */
const lm_key_conf_t *lm_auth_check(const lm_conf_t *conf, const char *authz);
/* The same for a token's SHA-256 already computed (one hash serves the
 * configuration keys and the store's snapshot). Borrowed from conf. */
const lm_key_conf_t *lm_auth_check_digest(const lm_conf_t *conf, const unsigned char digest[32]);
#endif
