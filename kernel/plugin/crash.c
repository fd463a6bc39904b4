/* crash.c - the in-process plugin crash policy (crash.h): fatal-signal
 * handler, crash journal, the supervisor process. Main thread at start;
 * the handler runs on whichever thread faulted and only write()s. */
#include "plugin/crash.h"

#include "plugin/plugin.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Set once at start (main thread), read by the signal handler. */
static int journal_fd = -1;
static volatile pid_t child_pid;
static volatile sig_atomic_t stop_requested;

static size_t put(char *buf, size_t at, size_t cap, const char *s)
{
    while (*s && at + 1 < cap)
        buf[at++] = *s++;
    return at;
}

static size_t put_num(char *buf, size_t at, size_t cap, long long v)
{
    char tmp[24];
    int n = 0;
    if (v < 0)
        v = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < 23);
    while (n && at + 1 < cap)
        buf[at++] = tmp[--n];
    return at;
}

/* Async-signal-safe: only write(2), no allocation, no stdio. */
static void on_fatal(int sig)
{
    const lm_plugin_t *p = lm_plugin_running;
    char msg[256];
    size_t n = put(msg, 0, sizeof(msg), "longmen: fatal signal ");
    n = put_num(msg, n, sizeof(msg), sig);
    if (p) {
        n = put(msg, n, sizeof(msg), " in plugin ");
        n = put(msg, n, sizeof(msg), p->name);
        n = put(msg, n, sizeof(msg), " (");
        n = put(msg, n, sizeof(msg), p->vt.version ? p->vt.version : "?");
        n = put(msg, n, sizeof(msg), ")");
    } else {
        n = put(msg, n, sizeof(msg), " in the kernel");
    }
    n = put(msg, n, sizeof(msg), "\n");
    if (write(STDERR_FILENO, msg, n) < 0) {
        /* nothing left to do */
    }
    if (p && journal_fd >= 0) {
        n = put_num(msg, 0, sizeof(msg), (long long)time(NULL));
        n = put(msg, n, sizeof(msg), " ");
        n = put(msg, n, sizeof(msg), p->name);
        n = put(msg, n, sizeof(msg), "\n");
        if (write(journal_fd, msg, n) < 0) {
            /* the crash is still reported on stderr */
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void lm_crash_install(const char *journal)
{
    const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    if (journal)
        journal_fd = open(journal, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_fatal;
        sa.sa_flags = SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

int lm_crash_disabled(const char *journal, const char *plugin)
{
    FILE *f = journal ? fopen(journal, "r") : NULL;
    char line[256], name[128];
    long long t;
    int hits = 0;
    time_t now = time(NULL);
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "%lld %127s", &t, name) == 2 && !strcmp(name, plugin) &&
            now - t <= LM_CRASH_WINDOW)
            hits++;
    fclose(f);
    return hits >= LM_CRASH_LIMIT;
}

/* SIGINT from a terminal already reaches the whole process group, so only
 * SIGTERM and SIGHUP are passed on (a second SIGINT would skip the drain). */
static void forward(int sig)
{
    if (sig == SIGTERM || sig == SIGINT)
        stop_requested = 1;
    if (child_pid > 0 && sig != SIGINT)
        kill(child_pid, sig);
}

int lm_crash_supervise(void)
{
    time_t starts[10] = {0};
    int nstart = 0;
    signal(SIGTERM, forward);
    signal(SIGINT, forward);
    signal(SIGHUP, forward);
    for (;;) {
        time_t now = time(NULL);
        if (starts[nstart % 10] && now - starts[nstart % 10] < 60) {
            fprintf(stderr, "longmen: supervisor: 10 restarts within a minute; giving up\n");
            exit(1);
        }
        starts[nstart++ % 10] = now;
        pid_t pid = fork();
        if (pid < 0) {
            perror("longmen: supervisor: fork");
            exit(1);
        }
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            signal(SIGHUP, SIG_DFL);
            return 0;
        }
        child_pid = pid;
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        child_pid = 0;
        if (!WIFSIGNALED(status) || stop_requested)
            exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
        fprintf(stderr, "longmen: supervisor: gateway died of signal %d; restarting\n",
                WTERMSIG(status));
        usleep(500 * 1000);
    }
}
