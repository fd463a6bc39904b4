/* Fuzz the response cache's record check (relay/cache_rec.h): what a
 * record read from Redis must pass before it is replayed. A record it
 * accepts is walked as the replay walks it, which must stay in bounds. */
#include "relay/cache_rec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "cache_rec";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p = malloc(size ? size : 1); /* exact size: ASan sees any overread */
    if (p == NULL)
        return 0;
    memcpy(p, data, size);
    if (lm_cache_rec_valid(p, size)) {
        lm_cache_hdr_t h;
        memcpy(&h, p, sizeof(h));
        if (strlen(h.channel) >= sizeof(h.channel) || strlen(h.model) >= sizeof(h.model))
            abort();
        size_t off = sizeof(h), sum = 0;
        while (h.form == LM_CACHE_STREAM && size - off >= 4) {
            uint32_t len;
            memcpy(&len, p + off, 4);
            off += 4;
            if (len > size - off)
                abort(); /* accepted a chunk that overruns the record */
            for (uint32_t i = 0; i < len; i++)
                sum += p[off + i];
            off += len;
        }
        if (h.form == LM_CACHE_STREAM && off != size)
            abort();
        (void)sum;
    }
    free(p);
    return 0;
}
