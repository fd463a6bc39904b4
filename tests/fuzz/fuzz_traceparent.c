/* Fuzz the traceparent parser (core/traceparent.h) with a property: a
 * value it accepts formats back (as version 00) to a value it accepts with
 * the same ids and flags, and a refused value leaves the output zeroed. */
#include "core/traceparent.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "traceparent";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_traceparent_t a, b;
    char out[LM_TRACEPARENT_LEN + 1];
    char *copy = malloc(size ? size : 1); /* exact size: ASan sees any overread */
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    int rc = lm_traceparent_parse(copy, size, &a);
    free(copy);
    if (rc < 0) {
        static const lm_traceparent_t zero;
        if (memcmp(&a, &zero, sizeof(a)) != 0)
            abort();
        return 0;
    }
    lm_traceparent_format(a.trace_id, a.span_id, a.flags, out);
    if (lm_traceparent_parse(out, strlen(out), &b) != 0 || memcmp(&a, &b, sizeof(a)) != 0)
        abort();
    return 0;
}
