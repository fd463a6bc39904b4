/* Fuzz the HTTP front's head scanner and chunked framing (kernel/http/
 * head.c) with a property: the verdict for a request head never depends on
 * where the bytes were split into reads (IN-12). The first input byte picks
 * the split. */
#include "http/head.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "http_head";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int same(const lm_head_t *a, const lm_head_t *b)
{
    return a->status == b->status && a->head_len == b->head_len && a->body == b->body &&
           a->content_length == b->content_length && a->skip == b->skip;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lm_head_limits_t lim;
    lm_head_t once, split;
    if (size < 1)
        return 0;
    lm_head_limits_default(&lim, 1 << 20);
    const char *p = (const char *)data + 1;
    size_t n = size - 1, cut = n ? data[0] % (n + 1) : 0;
    memset(&once, 0, sizeof(once));
    memset(&split, 0, sizeof(split));
    int a = lm_head_scan(p, n, &lim, &once);
    int b = lm_head_scan(p, cut, &lim, &split);
    if (b == LM_HEAD_MORE)
        b = lm_head_scan(p, n, &lim, &split);
    if (a != b || !same(&once, &split))
        abort();
    if (a == LM_HEAD_DONE && once.body == LM_BODY_CHUNKED) {
        lm_chunked_t c1 = {0}, c2 = {0};
        int d1, d2, t1, t2;
        const char *body = p + once.head_len;
        size_t bn = n - once.head_len, bc = cut > once.head_len ? cut - once.head_len : 0;
        size_t u1 = lm_chunked_feed(&c1, body, bn, lim.max_body, &d1, &t1);
        size_t u2 = lm_chunked_feed(&c2, body, bc, lim.max_body, &d2, &t2);
        if (u2 != (size_t)-1 && !d2) {
            size_t more = lm_chunked_feed(&c2, body + bc, bn - bc, lim.max_body, &d2, &t2);
            u2 = more == (size_t)-1 ? more : u2 + more;
        }
        if (u1 != u2 || d1 != d2 || c1.total != c2.total)
            abort();
    }
    return 0;
}
