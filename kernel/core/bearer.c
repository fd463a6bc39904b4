/* bearer.c - Authorization: Bearer parsing (bearer.h). Pure; any thread. */
#include "core/bearer.h"

#include <string.h>
#include <strings.h>

const char *lm_bearer_token(const char *authz, size_t *n)
{
    if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0)
        return NULL;
    authz += 7;
    while (*authz == ' ')
        authz++;
    *n = strlen(authz);
    return *n && *n <= LM_BEARER_MAX ? authz : NULL;
}
