/*
 * clock.h - the kernel's one monotonic clock. Any thread; never blocks.
 */
#ifndef LM_CLOCK_H
#define LM_CLOCK_H
#include <stdint.h>

/* Milliseconds since an arbitrary start (CLOCK_MONOTONIC). */
int64_t lm_clock_ms(void);
/* Nanoseconds since the same start. */
int64_t lm_clock_ns(void);
#endif
