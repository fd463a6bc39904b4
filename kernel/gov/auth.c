/* auth.c - configuration keys: SHA-256 of the presented bearer token,
 * compared in constant time with every configured hash (auth.h). Pure,
 * any thread; returns a key borrowed from the configuration. */
#include "gov/auth.h"
#include "core/bearer.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

int lm_auth_digest_eq(const unsigned char *a, const unsigned char *b)
{
    return CRYPTO_memcmp(a, b, 32) == 0;
}

const lm_key_conf_t *lm_auth_check_digest(const lm_conf_t *conf, const unsigned char digest[32])
{
    const lm_key_conf_t *match = NULL;
    /* Visit every key so the time does not depend on which one matched. */
    for (size_t i = 0; i < conf->nkeys; i++)
        if (lm_auth_digest_eq(digest, conf->keys[i].hash) && match == NULL)
            match = &conf->keys[i];
    return match;
}

const lm_key_conf_t *lm_auth_check(const lm_conf_t *conf, const char *authz)
{
    unsigned char digest[32];

    size_t n;
    const char *token = lm_bearer_token(authz, &n);
    if (token == NULL)
        return NULL;
    SHA256((const unsigned char *)token, n, digest);
    const lm_key_conf_t *match = lm_auth_check_digest(conf, digest);
    OPENSSL_cleanse(digest, sizeof(digest));
    return match;
}
