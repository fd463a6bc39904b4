/* Fuzz the configuration parser: a whole file, and the same bytes as the
 * channel blocks the admin API stores (lm_conf_parse_channels). */
#include "conf/conf.h"

#include <stdint.h>

const char *lm_fuzz_name = "conf";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_conf_t *c = NULL;
    char err[512];
    if (lm_conf_parse("fuzz.conf", (const char *)data, size, &c, err, sizeof(err)) == 0)
        lm_conf_free(c);
    c = NULL;
    if (lm_conf_parse("base.conf", "listen 127.0.0.1:1\n", 19, &c, err, sizeof(err)) == 0) {
        lm_conf_parse_channels(c, "stored", (const char *)data, size, err, sizeof(err));
        lm_conf_free(c);
    }
    return 0;
}
