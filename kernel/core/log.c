/* log.c - the process log on stderr (log.h): one write(2) per line so
 * threads never interleave. Any thread; the level is set on the control
 * thread at start and reload. */
#include "core/log.h"

#include "longmen.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = LM_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void lm_log_set_level(int level)
{
    atomic_store(&log_level, level);
}

int lm_log_level(void)
{
    return atomic_load(&log_level);
}

int lm_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void lm_logv(int level, const char *prefix, const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    int n;

    if (level > atomic_load(&log_level) || level < 0 || level > 3)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %s%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, level_names[level], prefix ? prefix : "", prefix ? " " : "");
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    /* Control bytes never reach the log unescaped (IN-5). */
    for (int i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to report it */
    }
}

void lm_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lm_logv(level, NULL, fmt, ap);
    va_end(ap);
}
