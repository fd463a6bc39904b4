/*
 * priceunit.h - per-endpoint price units in `price` lines:
 *   price GLOB AMOUNT UNIT
 * bills AMOUNT money units per UNIT instead of per token:
 *   per_1k_searches  rerank: a search is a query over up to 100 documents
 *   per_image        image generation: each image asked for (n)
 *   per_second       audio transcriptions/translations: seconds the answer reports
 *   per_1m_chars     moderations, audio speech: characters of the input
 * Pure; any thread.
 */
#ifndef LM_PRICEUNIT_H
#define LM_PRICEUNIT_H
#include <stdint.h>

enum {
    LM_UNIT_TOKENS = 0, /* the default: per 1M tokens */
    LM_UNIT_1K_SEARCHES = 1,
    LM_UNIT_IMAGE = 2,
    LM_UNIT_SECOND = 3,
    LM_UNIT_1M_CHARS = 4
};

/* The unit a `price` line names (LM_UNIT_*), or -1 for another word. */
int lm_price_unit_parse(const char *word);
/* The word of unit (static), or NULL for LM_UNIT_TOKENS and others. */
const char *lm_price_unit_name(int unit);
/* How many units one money amount covers (1000 searches, 1 image, ...). */
int64_t lm_price_unit_divisor(int unit);
#endif
