/* Fuzz the console's two header parsers (kernel/admin/console.c,
 * session.c): Accept-Language and the Cookie header. Properties: a cookie
 * value found lies inside the header and is followed by ';' or the end;
 * the language choice is 0 or 1. */
#include "admin/console.h"
#include "admin/session.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "console";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int zh = lm_admin_console_wants_zh(s);
    if (zh != 0 && zh != 1)
        abort();
    size_t n = 0, len = strlen(s);
    const char *v = lm_admin_cookie_value(s, LM_ADMIN_SESSION_COOKIE, &n);
    if (v && (v < s || v + n > s + len || (v[n] != ';' && v[n] != '\0')))
        abort();
    free(s);
    return 0;
}
