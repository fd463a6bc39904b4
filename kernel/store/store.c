/*
 * store.c - the store's shared small pieces: status strings, the wall
 * clock, error text. Any thread; nothing returned is owned by the caller.
 */
#include "store/store.h"
#include "store/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

void lm_store_seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *lm_store_strerror(int status)
{
    switch (status) {
    case LM_STORE_OK: return "ok";
    case LM_STORE_DUP: return "already recorded";
    case LM_STORE_EINVAL: return "invalid argument";
    case LM_STORE_ENOTFOUND: return "not found";
    case LM_STORE_ECONFLICT: return "conflict";
    case LM_STORE_EFULL: return "write queue full";
    case LM_STORE_ECLOSED: return "store closed";
    case LM_STORE_EDB: return "database error";
    case LM_STORE_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

int64_t lm_store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
