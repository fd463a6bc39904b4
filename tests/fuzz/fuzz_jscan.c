/* Fuzz the zero-allocation JSON scanner (sdk/lmjscan.h) against Jansson:
 * what Jansson accepts the scanner accepts; what only the scanner accepts
 * is a number out of Jansson's range; and a member span found by the
 * scanner decodes to the value Jansson keeps for that key. */
#include "lmjscan.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "jscan";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Says which property broke and on what input, then aborts (a crash for libFuzzer). */
static void fail(const char *what, const char *p, size_t n)
{
    fprintf(stderr, "fuzz_jscan: %s on %zu bytes: ", what, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, (unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e ? "\\x%02x" : "%c",
                (unsigned char)p[i]);
    fputc('\n', stderr);
    abort();
}

static void check_members(const char *p, size_t n, json_t *doc)
{
    static const char *const keys[] = {"usage", "id", "model", "a"};
    lm_str v[4];
    if (lm_jscan_members(p, n, keys, 4, v) < 0)
        fail("members refused a valid object", p, n);
    for (int i = 0; i < 4; i++) {
        json_t *want = json_object_get(doc, keys[i]);
        if ((want == NULL) != (v[i].p == NULL))
            fail("member presence differs", p, n);
        if (want == NULL)
            continue;
        json_t *got = json_loadb(v[i].p, v[i].n, JSON_DECODE_ANY, NULL);
        if (got == NULL || !json_equal(got, want))
            fail("member value differs", p, n);
        json_decref(got);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    json_error_t err;
    json_t *doc = json_loadb(p, size, JSON_DECODE_ANY, &err);
    int ok = lm_jscan_valid(p, size);
    if (memchr(p, 0, size) != NULL) {
        /* Jansson's buffer reader ends the text at a NUL; the scanner,
         * which forwards the bytes as they are, refuses any NUL. */
        if (ok)
            fail("the scanner accepts a NUL", p, size);
        json_decref(doc);
        return 0;
    }
    if (doc != NULL && !ok)
        fail("Jansson accepts, the scanner refuses", p, size);
    if (doc == NULL && ok && strstr(err.text, "too big") == NULL &&
        strstr(err.text, "overflow") == NULL)
        fail("the scanner accepts, Jansson refuses", p, size);
    if (doc != NULL && json_is_object(doc)) {
        if (!lm_jscan_object(p, size))
            fail("object refused", p, size);
        check_members(p, size, doc);
    }
    json_decref(doc);
    return 0;
}
