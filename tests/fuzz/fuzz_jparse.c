/* Fuzz the in-place parser and the dumper (lmjscan.h) against Jansson: a
 * tree it builds is the one json_loadb(JSON_REJECT_DUPLICATES) builds, in
 * the same member order; an object Jansson accepts within the depth bound
 * it builds too (a NUL aside: Jansson's reader stops there); and lm_jdump
 * of any tree writes json_dumps' bytes. */
#include "lmjscan.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "jparse";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEPTH 8

static void fail(const char *what, size_t n)
{
    fprintf(stderr, "fuzz_jparse: %s (%zu bytes)\n", what, n);
    abort();
}

/* Deeper than DEPTH: Jansson has no such bound, so no comparison. */
static int too_deep(const json_t *v, int d)
{
    const char *k;
    json_t *x;
    size_t i;
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (d > DEPTH)
        return 1;
    if (json_is_object(v)) {
        json_object_foreach ((json_t *)v, k, x)
            if (too_deep(x, d + 1))
                return 1;
    } else {
        json_array_foreach (v, i, x)
            if (too_deep(x, d + 1))
                return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    json_t *fast = lm_jparse_object(p, size, DEPTH);
    json_t *ref = json_loadb(p, size, JSON_REJECT_DUPLICATES, NULL);
    int nul = memchr(p, 0, size) != NULL;
    if (fast != NULL) {
        if (nul || ref == NULL || !json_equal(fast, ref))
            fail("a tree Jansson does not build", size);
        char *a = json_dumps(fast, JSON_COMPACT), *b = json_dumps(ref, JSON_COMPACT);
        if (a == NULL || b == NULL || strcmp(a, b) != 0)
            fail("member order or text differs", size);
        free(a);
        free(b);
    } else if (ref != NULL && !nul && json_is_object(ref) && !too_deep(ref, 1)) {
        fail("Jansson builds an object the fast path refused", size);
    }
    if (ref != NULL) { /* the dumper writes Jansson's bytes */
        size_t n = 0;
        char *a = lm_jdump(ref, &n), *b = json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY);
        if ((a == NULL) != (b == NULL) || (a && (strlen(b) != n || memcmp(a, b, n) != 0)))
            fail("lm_jdump differs from json_dumps", size);
        free(a);
        free(b);
    }
    json_decref(fast);
    json_decref(ref);
    return 0;
}
