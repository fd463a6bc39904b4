/* Fuzz the SSE and NDJSON splitter: arbitrary bytes in arbitrary pieces. */
#include "plugin/frame.h"

#include <stdint.h>

const char *lm_fuzz_name = "frame";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count(void *arg, const lm_event *ev)
{
    (*(size_t *)arg) += ev->data.n + ev->event.n + ev->id.n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int framing = LM_FRAME_SSE; framing <= LM_FRAME_NDJSON; framing++) {
        lm_frame_t f;
        size_t total = 0, off = 0, step = size ? (data[0] % 17) + 1 : 1;
        lm_frame_init(&f, framing, 4096);
        while (off < size) {
            size_t n = size - off < step ? size - off : step;
            if (lm_frame_feed(&f, (const char *)data + off, n, count, &total) != 0)
                break;
            off += n;
        }
        lm_frame_finish(&f, count, &total);
        lm_frame_free(&f);
    }
    return 0;
}
