/* money.c - saturating int64 arithmetic and money text (money.h). Pure. */
#include "core/money.h"

#include <stdio.h>

int64_t lm_sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

int64_t lm_sat_sub(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b < 0 ? INT64_MAX : INT64_MIN;
    return r;
}

int64_t lm_sat_mul(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return ((a < 0) != (b < 0)) ? INT64_MIN : INT64_MAX;
    return r;
}

int lm_money_parse(const char *s, int64_t *out)
{
    int64_t whole = 0, frac = 0;
    int nd = 0, nf = 0;
    if (s == NULL)
        return -1;
    for (; *s >= '0' && *s <= '9'; s++, nd++) {
        if (__builtin_mul_overflow(whole, 10, &whole) ||
            __builtin_add_overflow(whole, *s - '0', &whole))
            return -1;
    }
    if (*s == '.') {
        s++;
        for (; *s >= '0' && *s <= '9'; s++, nf++) {
            if (nf >= 6)
                return -1;
            frac = frac * 10 + (*s - '0');
        }
        if (nf == 0)
            return -1;
    }
    if (*s != '\0' || nd == 0)
        return -1;
    for (int i = nf; i < 6; i++)
        frac *= 10;
    int64_t v;
    if (__builtin_mul_overflow(whole, (int64_t)LM_MICRO, &v) || __builtin_add_overflow(v, frac, &v))
        return -1;
    *out = v;
    return 0;
}

char *lm_money_format(int64_t micro, char *buf, size_t len)
{
    /* careful with INT64_MIN: work on the unsigned magnitude */
    uint64_t mag = micro < 0 ? (uint64_t)0 - (uint64_t)micro : (uint64_t)micro;
    snprintf(buf, len, "%s%llu.%06llu", micro < 0 ? "-" : "", (unsigned long long)(mag / LM_MICRO),
             (unsigned long long)(mag % LM_MICRO));
    return buf;
}
