/*
 * t.h - minimal unit test macros. Each test binary prints one line per
 * check group: "PASS name" or "FAIL name: reason"; tests/run.sh counts them.
 */
#ifndef LM_T_H
#define LM_T_H
#include <stdio.h>
#include <string.h>

static int t_failed_total;
static int t_cur_failed;
static const char *t_cur_name;

#define T_BEGIN(name) (t_cur_name = (name), t_cur_failed = 0)
#define T_END()                                                                                    \
    do {                                                                                           \
        if (!t_cur_failed)                                                                         \
            printf("PASS %s\n", t_cur_name);                                                       \
        else                                                                                       \
            t_failed_total++;                                                                      \
    } while (0)
#define T_CHECK(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            if (!t_cur_failed)                                                                     \
                printf("FAIL %s: %s:%d: ", t_cur_name, __FILE__, __LINE__);                        \
            else                                                                                   \
                printf("     %s: %s:%d: ", t_cur_name, __FILE__, __LINE__);                        \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            t_cur_failed = 1;                                                                      \
        }                                                                                          \
    } while (0)
#define T_STREQ(a, b)                                                                              \
    do {                                                                                           \
        const char *t_a_ = (a), *t_b_ = (b);                                                       \
        T_CHECK(t_a_ &&t_b_ &&strcmp(t_a_, t_b_) == 0, "%s: \"%s\" != \"%s\"", #a,                 \
                t_a_ ? t_a_ : "(null)", t_b_ ? t_b_ : "(null)");                                   \
    } while (0)
#define T_EXIT() return t_failed_total ? 1 : 0
#endif
