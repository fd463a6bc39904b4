/* shared.c - the shared counters' calls: argument lists for the Redis
 * scripts (redis_lua.c) and the 250 ms poll of shared blocks and channel
 * holds (shared.h). Thread: callers queue; the poll runs on the Redis
 * thread. */
#include "gov/shared.h"
#include "core/clock.h"
#include "core/log.h"
#include "longmen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define HOLD_MS (15 * 60 * 1000) /* as gov.c's quota holds */

struct lm_shared_s {
    lm_redis_t *rd;
    int fail_open;
    lm_authguard_t *guard;
    int auth_fail_limit;
    lm_shared_hold_fn on_hold;
    void *hold_arg;
    char node[24]; /* this process among the instances: request ids repeat across them */
};

/* Wall-clock ms: every instance must agree on the window's seconds. */
static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

typedef struct {
    char b[5][48];
} keys_t;

static void key_names(int64_t id, keys_t *k)
{
    static const char *const sfx[5] = {"rl", "conc", "q", "holds", "hamt"};
    for (int i = 0; i < 5; i++)
        snprintf(k->b[i], sizeof(k->b[i]), "lm:k:%lld:%s", (long long)id, sfx[i]);
}

/* Redis thread: apply the blocks and holds every instance published. */
static void on_sync(void *arg, const lm_redis_ans_t *a)
{
    lm_shared_t *sh = arg;
    if (!a->ok || a->nints < 2)
        return;
    int64_t now_wall = wall_ms(), now = lm_clock_ms();
    size_t nag = (size_t)a->ints[0], nch = (size_t)a->ints[1];
    if (nag + nch > a->nstrs)
        return;
    for (size_t i = 0; i + 1 < nag; i += 2)
        lm_authguard_block_hex(sh->guard, a->strs[i],
                               now + (strtoll(a->strs[i + 1], NULL, 10) - now_wall));
    for (size_t i = nag; i + 1 < nag + nch; i += 2)
        if (sh->on_hold)
            sh->on_hold(sh->hold_arg, a->strs[i],
                        now + (strtoll(a->strs[i + 1], NULL, 10) - now_wall));
}

static void tick(void *arg, lm_redis_t *rd)
{
    char now[24];
    snprintf(now, sizeof(now), "%lld", (long long)wall_ms());
    const char *argv[] = {"lm:agblock", "lm:chhold", now};
    lm_redis_call_now(rd, LM_RS_SYNC, 2, 3, argv, on_sync, arg);
}

lm_shared_t *lm_shared_new(const lm_redis_url_t *u, int fail_open, lm_authguard_t *guard,
                           int auth_fail_limit, lm_shared_hold_fn on_hold, void *hold_arg,
                           char *err, size_t errlen)
{
    lm_shared_t *sh = calloc(1, sizeof(*sh));
    if (sh == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sh->fail_open = fail_open;
    sh->guard = guard;
    sh->auth_fail_limit = auth_fail_limit;
    sh->on_hold = on_hold;
    sh->hold_arg = hold_arg;
    unsigned char rnd[8] = {0};
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(rnd, 1, sizeof(rnd), f) != sizeof(rnd))
            memset(rnd, 0, sizeof(rnd));
        fclose(f);
    }
    uint64_t v = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32);
    for (int i = 0; i < 8; i++)
        v ^= (uint64_t)rnd[i] << (8 * i);
    snprintf(sh->node, sizeof(sh->node), "%016llx", (unsigned long long)v);
    if ((sh->rd = lm_redis_start(u, tick, sh, err, errlen)) == NULL) {
        free(sh);
        return NULL;
    }
    return sh;
}

void lm_shared_stop(lm_shared_t *sh)
{
    if (sh)
        lm_redis_stop(sh->rd);
}

void lm_shared_free(lm_shared_t *sh)
{
    if (sh == NULL)
        return;
    lm_redis_free(sh->rd);
    free(sh);
}

lm_redis_t *lm_shared_redis(lm_shared_t *sh)
{
    return sh ? sh->rd : NULL;
}

int lm_shared_fail_open(const lm_shared_t *sh)
{
    return sh && sh->fail_open;
}

int lm_shared_admit(lm_shared_t *sh, const lm_key_t *key, const char *req_id, int64_t est,
                    int64_t worst, int64_t seed_used, lm_shared_ticket_t *t, lm_redis_done_fn done,
                    void *arg)
{
    keys_t k;
    char v[11][32];
    int64_t now = wall_ms();
    memset(t, 0, sizeof(*t));
    t->key_id = key->id;
    t->sec = now / 1000;
    t->est = est;
    snprintf(t->req_id, sizeof(t->req_id), "%s:%.40s", sh->node, req_id);
    key_names(key->id, &k);
    const int64_t n[] = {
        now,   key->rpm, key->tpm, key->max_concurrent, est, key->unlimited, key->quota, seed_used,
        worst, 0,        HOLD_MS};
    for (int i = 0; i < 11; i++)
        snprintf(v[i], sizeof(v[i]), "%lld", (long long)n[i]);
    const char *argv[] = {k.b[0], k.b[1], k.b[2], k.b[3], k.b[4], v[0], v[1],      v[2],
                          v[3],   v[4],   v[5],   v[6],   v[7],   v[8], t->req_id, v[10]};
    return lm_redis_call(sh->rd, LM_RS_ADMIT, 5, 16, argv, done, arg);
}

void lm_shared_settle(lm_shared_t *sh, lm_shared_ticket_t *t, int64_t cost, int64_t seed_used)
{
    keys_t k;
    char c[24], s[24], once[96];
    if (sh == NULL || !t->active || !t->held)
        return;
    t->held = 0;
    key_names(t->key_id, &k);
    snprintf(c, sizeof(c), "%lld", (long long)(cost < 0 ? 0 : cost));
    snprintf(s, sizeof(s), "%lld", (long long)seed_used);
    snprintf(once, sizeof(once), "lm:s:%s", t->req_id);
    const char *argv[] = {k.b[2], k.b[3], k.b[4], once, t->req_id, c, s};
    if (lm_redis_call(sh->rd, LM_RS_SETTLE, 4, 7, argv, NULL, NULL) < 0)
        lm_log(LM_LOG_ERROR, "%s: shared spend of %lld not queued", t->req_id, (long long)cost);
}

void lm_shared_charge(lm_shared_t *sh, int64_t key_id, const char *req_id, int64_t cost,
                      int64_t seed_used)
{
    lm_shared_ticket_t t;
    if (sh == NULL || cost <= 0)
        return;
    memset(&t, 0, sizeof(t));
    t.key_id = key_id;
    t.active = t.held = 1; /* no hold in Redis: the settle script's drops are no-ops */
    /* the whole id: a side call's "-modN" suffix must not be cut off, or two
     * charges of one request would share a once-key and the second be lost */
    snprintf(t.req_id, sizeof(t.req_id), "%s:%s", sh->node, req_id);
    lm_shared_settle(sh, &t, cost, seed_used);
}

void lm_shared_finish(lm_shared_t *sh, lm_shared_ticket_t *t, int64_t actual_tokens)
{
    keys_t k;
    char sec[24], est[24], act[24];
    if (sh == NULL || !t->active)
        return;
    t->active = 0;
    key_names(t->key_id, &k);
    snprintf(sec, sizeof(sec), "%lld", (long long)t->sec);
    snprintf(est, sizeof(est), "%lld", (long long)t->est);
    snprintf(act, sizeof(act), "%lld", (long long)(actual_tokens < 0 ? 0 : actual_tokens));
    const char *argv[] = {k.b[0], k.b[1], k.b[3], k.b[4], t->req_id, sec, est, act};
    (void)lm_redis_call(sh->rd, LM_RS_FINISH, 4, 8, argv, NULL, NULL);
}

void lm_shared_auth_fail(lm_shared_t *sh, const struct sockaddr *peer)
{
    char hex[33], key[48], lim[16], now[24];
    if (sh == NULL || sh->auth_fail_limit <= 0 || lm_authguard_addr_hex(peer, hex) < 0)
        return;
    snprintf(key, sizeof(key), "lm:ag:%s", hex);
    snprintf(lim, sizeof(lim), "%d", sh->auth_fail_limit);
    snprintf(now, sizeof(now), "%lld", (long long)wall_ms());
    const char *argv[] = {key, "lm:agblock", hex, lim, now};
    (void)lm_redis_call(sh->rd, LM_RS_AUTHFAIL, 2, 5, argv, NULL, NULL);
}

void lm_shared_hold(lm_shared_t *sh, const char *channel, int64_t until_ms)
{
    char until[24];
    if (sh == NULL || channel == NULL)
        return;
    snprintf(until, sizeof(until), "%lld", (long long)(wall_ms() + (until_ms - lm_clock_ms())));
    const char *argv[] = {"lm:chhold", channel, until};
    (void)lm_redis_call(sh->rd, LM_RS_HOLD, 1, 3, argv, NULL, NULL);
}
