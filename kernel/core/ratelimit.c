/* ratelimit.c - sliding 60 x 1 s window per limiter; see ratelimit.h. */
#include "core/ratelimit.h"
#include "core/money.h"

#include <string.h>

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static size_t slot_of(int64_t sec)
{
    int64_t m = sec % LM_RL_WINDOW;
    if (m < 0)
        m += LM_RL_WINDOW;
    return (size_t)m;
}

void lm_rl_init(lm_rl_t *rl)
{
    memset(rl, 0, sizeof(*rl));
    pthread_mutex_init(&rl->mu, NULL);
    for (size_t i = 0; i < LM_RL_WINDOW; i++)
        rl->sec[i] = INT64_MIN;
}

void lm_rl_destroy(lm_rl_t *rl)
{
    pthread_mutex_destroy(&rl->mu);
}

static int in_window(int64_t bucket_sec, int64_t now_sec)
{
    return bucket_sec != INT64_MIN && bucket_sec <= now_sec && bucket_sec > now_sec - LM_RL_WINDOW;
}

/* Sums over the window; caller holds the mutex. */
static void sums(const lm_rl_t *rl, int64_t now_sec, int64_t *reqs, int64_t *toks)
{
    int64_t r = 0, t = 0;
    for (size_t i = 0; i < LM_RL_WINDOW; i++)
        if (in_window(rl->sec[i], now_sec)) {
            r = lm_sat_add(r, rl->reqs[i]);
            t = lm_sat_add(t, rl->toks[i]);
        }
    *reqs = r;
    *toks = t;
}

/* Milliseconds until `need` units of the chosen counter have left the
 * window (oldest buckets leave first), rounded up to whole seconds. */
static int64_t wait_secs(const lm_rl_t *rl, int64_t now_ms, int64_t now_sec, int tokens,
                         int64_t need)
{
    int64_t freed = 0;
    for (int64_t s = now_sec - LM_RL_WINDOW + 1; s <= now_sec; s++) {
        size_t i = slot_of(s);
        if (rl->sec[i] != s)
            continue;
        freed = lm_sat_add(freed, tokens ? rl->toks[i] : rl->reqs[i]);
        if (freed >= need) {
            int64_t leave_ms = (s + LM_RL_WINDOW) * 1000; /* bucket s leaves here */
            int64_t ms = leave_ms - now_ms;
            int64_t secs = (ms + 999) / 1000;
            return secs < 1 ? 1 : secs;
        }
    }
    return LM_RL_WINDOW;
}

int64_t lm_rl_admit(lm_rl_t *rl, const lm_rl_limits_t *lim, int64_t now_ms, int64_t est_tokens,
                    lm_rl_ticket_t *ticket, int *why)
{
    int dummy;
    int64_t retry = 0;
    if (why == NULL)
        why = &dummy;
    *why = LM_RL_OK;
    if (est_tokens < 0)
        est_tokens = 0;
    if (ticket)
        memset(ticket, 0, sizeof(*ticket));

    int64_t now_sec = floor_div(now_ms, 1000);
    pthread_mutex_lock(&rl->mu);
    int64_t reqs, toks;
    sums(rl, now_sec, &reqs, &toks);

    if (lim->tpm > 0 && est_tokens > lim->tpm) {
        *why = LM_RL_TOO_LARGE;
        retry = LM_RL_WINDOW;
        goto out;
    }
    if (lim->max_concurrent > 0 && rl->inflight >= lim->max_concurrent) {
        *why = LM_RL_CONC;
        retry = 1;
    }
    if (lim->rpm > 0 && reqs >= lim->rpm) {
        int64_t w = wait_secs(rl, now_ms, now_sec, 0, reqs - lim->rpm + 1);
        if (w > retry) {
            retry = w;
            *why = LM_RL_RPM;
        }
    }
    if (lim->tpm > 0 && lm_sat_add(toks, est_tokens) > lim->tpm) {
        int64_t w = wait_secs(rl, now_ms, now_sec, 1, lm_sat_add(toks, est_tokens) - lim->tpm);
        if (w > retry) {
            retry = w;
            *why = LM_RL_TPM;
        }
    }
    if (retry > 0)
        goto out;

    size_t i = slot_of(now_sec);
    if (rl->sec[i] != now_sec) {
        rl->sec[i] = now_sec;
        rl->reqs[i] = 0;
        rl->toks[i] = 0;
    }
    rl->reqs[i]++;
    rl->toks[i] = lm_sat_add(rl->toks[i], est_tokens);
    rl->inflight++;
    if (ticket) {
        ticket->sec = now_sec;
        ticket->est_tokens = est_tokens;
        ticket->active = 1;
    }
out:
    pthread_mutex_unlock(&rl->mu);
    return retry;
}

void lm_rl_finish(lm_rl_t *rl, lm_rl_ticket_t *ticket, int64_t actual_tokens)
{
    if (ticket == NULL || !ticket->active)
        return;
    if (actual_tokens < 0)
        actual_tokens = 0;
    pthread_mutex_lock(&rl->mu);
    if (rl->inflight > 0)
        rl->inflight--;
    size_t i = slot_of(ticket->sec);
    if (rl->sec[i] == ticket->sec) { /* still the same bucket: correct it */
        int64_t t = lm_sat_add(rl->toks[i], lm_sat_add(actual_tokens, -ticket->est_tokens));
        rl->toks[i] = t < 0 ? 0 : t;
    }
    pthread_mutex_unlock(&rl->mu);
    ticket->active = 0;
}

void lm_rl_usage(lm_rl_t *rl, int64_t now_ms, int64_t *reqs, int64_t *toks, int64_t *inflight)
{
    int64_t r, t;
    pthread_mutex_lock(&rl->mu);
    sums(rl, floor_div(now_ms, 1000), &r, &t);
    if (inflight)
        *inflight = rl->inflight;
    pthread_mutex_unlock(&rl->mu);
    if (reqs)
        *reqs = r;
    if (toks)
        *toks = t;
}
