/* authguard.c - brute-force guard: a fixed table of failing addresses
 * under one mutex (authguard.h). Any thread; owns nothing it returns. */
#include "gov/authguard.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SLOTS     4096
#define WINDOW_MS 60000
#define BLOCK_MS  60000

typedef struct slot_s {
    unsigned char addr[16];
    int used;
    int fails;
    int64_t window_start, blocked_until;
} slot_t;

struct lm_authguard_s {
    pthread_mutex_t mu;
    int limit;
    slot_t slots[SLOTS];
};

lm_authguard_t *lm_authguard_new(int limit)
{
    lm_authguard_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    pthread_mutex_init(&g->mu, NULL);
    g->limit = limit;
    return g;
}

void lm_authguard_free(lm_authguard_t *g)
{
    if (g == NULL)
        return;
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* The address as 16 bytes (IPv4 mapped); -1 for another family. */
static int addr_key(const struct sockaddr *sa, unsigned char key[16])
{
    memset(key, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    } else {
        return -1;
    }
    return 0;
}

/* The slot of a 16-byte address key. */
static slot_t *slot_of_key(lm_authguard_t *g, const unsigned char key[16])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return &g->slots[h % SLOTS];
}

/* The address as 16 bytes, and its slot. */
static slot_t *slot_of(lm_authguard_t *g, const struct sockaddr *sa, unsigned char key[16])
{
    return addr_key(sa, key) < 0 ? NULL : slot_of_key(g, key);
}

int64_t lm_authguard_blocked(lm_authguard_t *g, const struct sockaddr *peer, int64_t now_ms)
{
    unsigned char key[16];
    int64_t wait = 0;
    if (g == NULL || g->limit <= 0)
        return 0;
    pthread_mutex_lock(&g->mu);
    slot_t *s = slot_of(g, peer, key);
    if (s && s->used && !memcmp(s->addr, key, 16) && s->blocked_until > now_ms)
        wait = (s->blocked_until - now_ms + 999) / 1000;
    pthread_mutex_unlock(&g->mu);
    return wait;
}

void lm_authguard_fail(lm_authguard_t *g, const struct sockaddr *peer, int64_t now_ms)
{
    unsigned char key[16];
    if (g == NULL || g->limit <= 0)
        return;
    pthread_mutex_lock(&g->mu);
    slot_t *s = slot_of(g, peer, key);
    if (s) {
        if (!s->used || memcmp(s->addr, key, 16) || now_ms - s->window_start > WINDOW_MS) {
            int64_t blocked = s->used && !memcmp(s->addr, key, 16) ? s->blocked_until : 0;
            memset(s, 0, sizeof(*s));
            memcpy(s->addr, key, 16);
            s->used = 1;
            s->window_start = now_ms;
            s->blocked_until = blocked;
        }
        if (++s->fails >= g->limit)
            s->blocked_until = now_ms + BLOCK_MS;
    }
    pthread_mutex_unlock(&g->mu);
}

int lm_authguard_addr_hex(const struct sockaddr *peer, char hex[33])
{
    unsigned char key[16];
    if (addr_key(peer, key) < 0)
        return -1;
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    return 0;
}

void lm_authguard_block_hex(lm_authguard_t *g, const char *hex, int64_t until_ms)
{
    unsigned char key[16];
    if (g == NULL || g->limit <= 0 || hex == NULL || strlen(hex) != 32)
        return;
    for (int i = 0; i < 16; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return;
        key[i] = (unsigned char)v;
    }
    pthread_mutex_lock(&g->mu);
    slot_t *s = slot_of_key(g, key);
    if (!s->used || memcmp(s->addr, key, 16)) {
        memset(s, 0, sizeof(*s));
        memcpy(s->addr, key, 16);
        s->used = 1;
    }
    if (s->blocked_until < until_ms)
        s->blocked_until = until_ms;
    pthread_mutex_unlock(&g->mu);
}
