/* Fuzz the usage spool's reader (DB-4): any bytes, as a file left by a
 * crash or a damaged disk would hold them. Every row it accepts must be
 * one the writer could have written: re-encoding it gives a record that
 * scans back to the same row. */
#include "store/spool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "spool";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(void *arg, const lm_usage_row_t *r)
{
    const lm_usage_row_t *want = arg;
    if (strcmp(r->request_id, want->request_id) != 0 || r->attempt != want->attempt ||
        r->cost != want->cost || (r->usage_json == NULL) != (want->usage_json == NULL))
        abort();
    return 0;
}

static int check_row(void *arg, const lm_usage_row_t *r)
{
    (void)arg;
    size_t n = lm_spool_size(r);
    if (n == 0 || r->request_id[0] == '\0' || r->attempt < 0 || r->cost < 0)
        abort();
    unsigned char *buf = malloc(n);
    lm_spool_put(r, buf);
    lm_spool_stats_t st;
    lm_spool_scan(buf, n, same, (void *)r, &st);
    if (st.records != 1 || st.skipped || st.torn)
        abort();
    free(buf);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_spool_stats_t st;
    lm_spool_scan(data, size, check_row, NULL, &st);
    if (st.skipped + st.torn > size)
        abort();
    return 0;
}
