/* Fuzz the client request path: depth pre-scan, strict parse, validation. */
#include "proto/reqcheck.h"

#include <stdint.h>

const char *lm_fuzz_name = "reqcheck";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_err e;
    json_t *req = lm_reqcheck_parse((const char *)data, size, &e);
    if (req) {
        lm_reqcheck_chat(req, &e);
        lm_reqcheck_embed(req, &e);
        json_decref(req);
    }
    return 0;
}
