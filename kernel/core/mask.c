/* mask.c - secret masking in text (mask.h). Pure; any thread. */
#include "core/mask.h"

#include <string.h>

void lm_mask_secret(char *text, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    char *hit;
    if (n < LM_MASK_MIN)
        return;
    while ((hit = strstr(text, secret)) != NULL) {
        memcpy(hit, LM_MASK, 3);
        memmove(hit + 3, hit + n, strlen(hit + n) + 1);
    }
}
