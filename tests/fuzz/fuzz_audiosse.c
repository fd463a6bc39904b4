/* Fuzz a streamed transcript's reader (relay/audiosse.h): arbitrary bytes
 * in arbitrary pieces. */
#include "relay/audiosse.h"

#include <stdint.h>

const char *lm_fuzz_name = "audiosse";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_audiosse_t *s = lm_audiosse_new();
    if (s == NULL)
        return 0;
    size_t off = 0, step = size ? (data[0] % 23) + 1 : 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        lm_audiosse_feed(s, (const char *)data + off, n);
        off += n;
    }
    lm_audiosse_finish(s);
    lm_usage u;
    double secs;
    lm_audiosse_usage(s, &u, &secs);
    lm_audiosse_free(s);
    return 0;
}
