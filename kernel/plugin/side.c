/* side.c - the per-channel cache of side values (side.h): pure bookkeeping
 * under one mutex, any thread; values handed out are copies the caller
 * owns. The fetch itself is the relay's (relay/side_fetch.c). */
#include "plugin/side.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LM_SIDE_FAIL_HOLD_MS 1000 /* a failed fetch answers for this long */

typedef struct side_entry_s {
    char name[LM_SIDE_NAME_MAX];
    char *value; /* NULL: none */
    size_t len;
    int64_t expires_ms; /* 0: no expiry */
    int64_t refresh_ms; /* background refresh from here (0: never) */
    int fetching;
    uint64_t seq; /* completed fetches */
    int last_ok;
    lm_err last_err;
    int64_t failed_ms; /* when the last fetch failed (0: it did not) */
} side_entry_t;

struct lm_side_s {
    pthread_mutex_t mu;
    side_entry_t ent[LM_SIDE_MAX];
    size_t n;
};

lm_side_t *lm_side_new(void)
{
    lm_side_t *s = calloc(1, sizeof(*s));
    if (s && pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void lm_side_free(lm_side_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->ent[i].value);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int valid_name(const char *name)
{
    size_t n = 0;
    for (; name[n]; n++)
        if (!((name[n] >= 'a' && name[n] <= 'z') || (name[n] >= '0' && name[n] <= '9') ||
              name[n] == '_'))
            return 0;
    return n > 0 && n < LM_SIDE_NAME_MAX;
}

/* The entry for name, created when missing; NULL when full. Under mu. */
static side_entry_t *entry(lm_side_t *s, const char *name, int create)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->ent[i].name, name) == 0)
            return &s->ent[i];
    if (!create || s->n == LM_SIDE_MAX)
        return NULL;
    side_entry_t *e = &s->ent[s->n++];
    memset(e, 0, sizeof(*e));
    strcpy(e->name, name);
    return e;
}

static void drop_value(side_entry_t *e)
{
    free(e->value);
    e->value = NULL;
    e->len = 0;
    e->expires_ms = e->refresh_ms = 0;
}

static int live(const side_entry_t *e, int64_t now_ms)
{
    return e->value != NULL && (e->expires_ms == 0 || now_ms < e->expires_ms);
}

int lm_side_get(lm_side_t *s, const char *name, int64_t now_ms, char **val, size_t *len,
                lm_side_need_t *need)
{
    int rc;
    memset(need, 0, sizeof(*need));
    *val = NULL;
    *len = 0;
    if (s == NULL || name == NULL || !valid_name(name))
        return LM_EINVAL;
    snprintf(need->name, sizeof(need->name), "%s", name);
    pthread_mutex_lock(&s->mu);
    side_entry_t *e = entry(s, name, 1);
    if (e == NULL) {
        rc = LM_EINVAL;
    } else if (live(e, now_ms)) {
        *val = malloc(e->len + 1);
        if (*val == NULL) {
            rc = LM_ENOMEM;
        } else {
            memcpy(*val, e->value, e->len + 1);
            *len = e->len;
            rc = LM_OK;
            int recent_fail = e->failed_ms && now_ms - e->failed_ms < LM_SIDE_FAIL_HOLD_MS;
            if (e->refresh_ms && now_ms >= e->refresh_ms && !e->fetching && !recent_fail)
                need->fetch = e->fetching = 1;
        }
    } else if (!e->fetching && e->failed_ms && now_ms - e->failed_ms < LM_SIDE_FAIL_HOLD_MS) {
        need->err = e->last_err;
        rc = LM_EUPSTREAM;
    } else {
        drop_value(e);
        need->wait = 1;
        need->seq = e->seq;
        if (!e->fetching)
            need->fetch = e->fetching = 1;
        rc = LM_AGAIN;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void lm_side_complete(lm_side_t *s, const char *name, int ok, char *value, int64_t ttl_s,
                      const lm_err *err, int64_t now_ms)
{
    pthread_mutex_lock(&s->mu);
    side_entry_t *e = valid_name(name) ? entry(s, name, 1) : NULL;
    if (e == NULL) {
        pthread_mutex_unlock(&s->mu);
        free(value);
        return;
    }
    e->fetching = 0;
    e->seq++;
    e->last_ok = ok && value != NULL;
    if (e->last_ok) {
        drop_value(e);
        e->value = value;
        e->len = strlen(value);
        e->failed_ms = 0;
        if (ttl_s > 0) {
            e->expires_ms = now_ms + ttl_s * 1000;
            e->refresh_ms = now_ms + ttl_s * 900; /* 90% of its life */
        }
    } else {
        free(value);
        e->failed_ms = now_ms > 0 ? now_ms : 1;
        if (err)
            e->last_err = *err;
        else
            lm_err_set(&e->last_err, LM_EUPSTREAM, 502, "api_error", "credential_fetch_failed",
                       "the provider credential could not be obtained");
    }
    pthread_mutex_unlock(&s->mu);
}

int lm_side_check(lm_side_t *s, const char *name, uint64_t seq, lm_err *err)
{
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    side_entry_t *e = entry(s, name, 0);
    if (e == NULL) {
        rc = -1;
        lm_err_set(err, LM_EUPSTREAM, 500, "api_error", NULL, "unknown side value");
    } else if (e->seq != seq) {
        rc = e->last_ok ? 1 : -1;
        if (rc < 0)
            *err = e->last_err;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void lm_side_invalidate(lm_side_t *s, const char *name, lm_str used)
{
    if (s == NULL || name == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    side_entry_t *e = entry(s, name, 0);
    if (e && e->value && e->len == used.n && memcmp(e->value, used.p, used.n) == 0) {
        drop_value(e);
        e->failed_ms = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

void lm_side_put(lm_side_t *s, const char *name, const char *val)
{
    if (s == NULL || !valid_name(name))
        return;
    pthread_mutex_lock(&s->mu);
    side_entry_t *e = entry(s, name, 1);
    if (e) {
        drop_value(e);
        if (val) {
            e->value = strdup(val);
            e->len = e->value ? strlen(val) : 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
}
