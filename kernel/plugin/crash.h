/*
 * crash.h - the crash policy for in-process plugins (PL-1). Plugins are
 * trusted code; when one crashes the process, the fatal-signal handler
 * names it on stderr and appends "<unix seconds> <plugin>" to a journal.
 * A plugin with 3 crashes in 60 s is disabled at the next start. The
 * supervisor (supervise on) restarts a crashed gateway within ~1 s.
 */
#ifndef LM_CRASH_H
#define LM_CRASH_H
#include <stddef.h>

#define LM_CRASH_LIMIT  3
#define LM_CRASH_WINDOW 60 /* seconds */

/* Install the fatal-signal handlers; journal (may be NULL) is opened for
 * appending now, so the handler only write()s. Main thread, at start. */
void lm_crash_install(const char *journal);
/* 1 if `plugin` crashed LM_CRASH_LIMIT times within LM_CRASH_WINDOW seconds
 * before now according to the journal. */
int lm_crash_disabled(const char *journal, const char *plugin);
/* Run the gateway as a child and restart it when it dies of a signal;
 * forwards SIGTERM/SIGINT/SIGHUP. Returns in the child (0) so the caller
 * goes on starting; in the parent it never returns (exits with the child's
 * status once it stops normally or gives up after 10 restarts a minute). */
int lm_crash_supervise(void);
#endif
