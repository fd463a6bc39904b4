/* Fuzz the configuration parser. */
#include "../../kernel/conf.h"

#include <stdint.h>

const char *lm_fuzz_name = "conf";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_conf_t *c = NULL;
    char err[512];
    if (lm_conf_parse("fuzz.conf", (const char *)data, size, &c, err, sizeof(err)) == 0)
        lm_conf_free(c);
    return 0;
}
