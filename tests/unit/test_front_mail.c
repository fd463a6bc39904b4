/* Tasks posted to every worker (lm_http_front_each_thread: credential
 * wakes, drain cancels): a post never waits for a worker, even a wedged one,
 * and is never lost; posts of one task before it runs make one run, which
 * sees what was done before the last post. The old hand-off (a command on
 * libevhtp's socketpair) made the poster wait 100 ms per post once the pair
 * was full, then dropped the task. */
#include "http/front.h"
#include "t.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

enum { WORKERS = 2, POSTS = 100000, BOUND_S = 20 };

typedef struct {
    atomic_long seen; /* g_seq when the note task last ran here */
    atomic_long runs; /* note task runs */
    int wedged;       /* under g_mu */
} wstate_t;

static wstate_t g_w[WORKERS];
static atomic_int g_nw;
static atomic_long g_seq; /* bumped before every post of the note task */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_nwedged, g_release, g_timed_out;

static void *t_init(struct event_base *base, void *arg)
{
    (void)base;
    (void)arg;
    int i = atomic_fetch_add(&g_nw, 1);
    return i < WORKERS ? &g_w[i] : NULL;
}

static void t_exit(void *user, void *arg)
{
    (void)user;
    (void)arg;
}

static struct timespec deadline(int s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += s;
    return ts;
}

/* Holds the worker until the test releases it (or BOUND_S passes). */
static void run_wedge(void *user)
{
    wstate_t *w = user;
    pthread_mutex_lock(&g_mu);
    if (!w->wedged) {
        w->wedged = 1;
        g_nwedged++;
        pthread_cond_broadcast(&g_cv);
        struct timespec ts = deadline(BOUND_S);
        while (!g_release)
            if (pthread_cond_timedwait(&g_cv, &g_mu, &ts) != 0) {
                g_timed_out = 1;
                break;
            }
    }
    pthread_mutex_unlock(&g_mu);
}

static void run_note(void *user)
{
    wstate_t *w = user;
    atomic_fetch_add(&w->runs, 1);
    atomic_store(&w->seen, atomic_load(&g_seq));
}

static const lm_http_task_t wedge = {run_wedge}, note = {run_note};

/* Every worker wedged: posted again until each took it (a thread still
 * starting has no mailbox yet). 0, or -1 after BOUND_S. */
static int wedge_all(lm_http_front_t *f)
{
    for (int i = 0; i < BOUND_S * 100; i++) {
        lm_http_front_each_thread(f, &wedge);
        pthread_mutex_lock(&g_mu);
        int n = g_nwedged;
        pthread_mutex_unlock(&g_mu);
        if (n == WORKERS)
            return 0;
        usleep(10000);
    }
    return -1;
}

static void test_posts_never_wait_and_coalesce(void)
{
    T_BEGIN("front_posts_never_wait_never_lost_and_coalesce");
    evthread_use_pthreads();
    struct event_base *base = event_base_new();
    lm_http_calls_t calls = {.thread_init = t_init, .thread_exit = t_exit};
    lm_http_front_t *f = base ? lm_http_front_new(base, &calls, 10000, 10000, 10000) : NULL;
    char err[128] = "";
    if (f == NULL || lm_http_front_listen(f, WORKERS, "127.0.0.1", 0, err, sizeof(err)) != 0) {
        T_CHECK(0, "front: %s", err);
        T_END();
        return;
    }
    T_CHECK(wedge_all(f) == 0, "the workers never took the wedge task");
    for (int i = 0; i < POSTS; i++) {
        atomic_fetch_add(&g_seq, 1);
        lm_http_front_each_thread(f, &note);
    }
    pthread_mutex_lock(&g_mu);
    int late = g_timed_out; /* the posts outlasted the wedge: they waited for the workers */
    g_release = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    T_CHECK(!late, "%d posts waited for wedged workers", POSTS);
    long want = atomic_load(&g_seq);
    for (int i = 0; i < BOUND_S * 100; i++) {
        int done = 1;
        for (int k = 0; k < WORKERS; k++)
            done &= atomic_load(&g_w[k].seen) == want;
        if (done)
            break;
        usleep(10000);
    }
    for (int k = 0; k < WORKERS; k++) {
        long seen = atomic_load(&g_w[k].seen), runs = atomic_load(&g_w[k].runs);
        T_CHECK(seen == want, "worker %d: its last run saw post %ld of %ld", k, seen, want);
        T_CHECK(runs >= 1 && runs <= 2, "worker %d: %ld runs for %d posts while wedged", k, runs,
                POSTS);
    }
    lm_http_front_drain(f); /* frees the listener, as the server does */
    lm_http_front_free(f);
    event_base_free(base);
    T_END();
}

int main(void)
{
    test_posts_never_wait_and_coalesce();
    T_EXIT();
}
