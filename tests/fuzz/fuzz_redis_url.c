/* Fuzz the `redis` directive's URL parser (core/redis_url.h). */
#include "core/redis_url.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "redis_url";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    lm_redis_url_t u;
    char err[128];
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    if (lm_redis_url_parse(s, &u, err, sizeof(err)) == 0 && (u.port < 1 || u.port > 65535))
        abort();
    free(s);
    return 0;
}
