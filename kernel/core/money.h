/*
 * money.h - money is int64 micro-units; arithmetic on it (and on token
 * counts) saturates at INT64_MIN / INT64_MAX instead of overflowing.
 * Pure functions, any thread; the caller owns every buffer.
 */
#ifndef LM_MONEY_H
#define LM_MONEY_H
#include <stddef.h>
#include <stdint.h>

#define LM_MICRO 1000000 /* micro-units per unit of currency, tokens per price unit */

int64_t lm_sat_add(int64_t a, int64_t b);
int64_t lm_sat_sub(int64_t a, int64_t b);
int64_t lm_sat_mul(int64_t a, int64_t b);

/* "12.5" / "0.000001" / "3" (units of currency) -> micro-units. 0 or -1 if
 * not a plain non-negative decimal with <= 6 fraction digits or too big. */
int lm_money_parse(const char *s, int64_t *out);
/* micro-units -> "12.500000" style text; returns buf. */
char *lm_money_format(int64_t micro, char *buf, size_t len);
#endif
