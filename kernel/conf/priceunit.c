/* priceunit.c - per-endpoint price units (priceunit.h). Pure. */
#include "conf/priceunit.h"

#include <string.h>

static const struct {
    const char *word;
    int unit;
    int64_t divisor;
} units[] = {{"per_1k_searches", LM_UNIT_1K_SEARCHES, 1000},
             {"per_image", LM_UNIT_IMAGE, 1},
             {"per_second", LM_UNIT_SECOND, 1},
             {"per_1m_chars", LM_UNIT_1M_CHARS, 1000000}};
#define NUNITS (sizeof(units) / sizeof(units[0]))

int lm_price_unit_parse(const char *word)
{
    for (size_t i = 0; word && i < NUNITS; i++)
        if (strcmp(word, units[i].word) == 0)
            return units[i].unit;
    return -1;
}

const char *lm_price_unit_name(int unit)
{
    for (size_t i = 0; i < NUNITS; i++)
        if (units[i].unit == unit)
            return units[i].word;
    return NULL;
}

int64_t lm_price_unit_divisor(int unit)
{
    for (size_t i = 0; i < NUNITS; i++)
        if (units[i].unit == unit)
            return units[i].divisor;
    return 1;
}
