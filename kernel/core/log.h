/* log.h - process log to stderr. The level is process-wide (like nginx's
 * error_log), set once at start or reload; lines are written with one
 * write(2) so threads do not interleave. Never pass secrets. */
#ifndef LM_LOG_H
#define LM_LOG_H
#include <stdarg.h>

/* Levels are the SDK's LM_LOG_* values. */
void lm_log_set_level(int level);
int lm_log_level(void);
void lm_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lm_logv(int level, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Parse "error|warn|info|debug"; -1 if unknown. */
int lm_log_parse_level(const char *s);
#endif
