/*
 * redis_url.h - the `redis` directive's URL:
 *   redis://[[user]:password@]host[:port][/db]
 * host is a name, an IPv4 address or [IPv6]; port 1..65535 (6379 when
 * absent); db 0..1000000 (0 when absent). A password in the URL is
 * accepted, but the configuration should name it with `env:VAR` instead
 * (conf.c). Pure; any thread.
 */
#ifndef LM_REDIS_URL_H
#define LM_REDIS_URL_H
#include <stddef.h>

#define LM_REDIS_HOST_MAX 256
#define LM_REDIS_CRED_MAX 256

typedef struct lm_redis_url_s {
    char host[LM_REDIS_HOST_MAX]; /* without IPv6 brackets */
    int port;
    int db;
    char user[LM_REDIS_CRED_MAX];     /* "" = none */
    char password[LM_REDIS_CRED_MAX]; /* "" = none (a secret: never log it) */
} lm_redis_url_t;

/* Parse s (NUL-terminated) into *out. 0, or -1 with a message in err
 * (never quoting the password). */
int lm_redis_url_parse(const char *s, lm_redis_url_t *out, char *err, size_t errlen);
#endif
