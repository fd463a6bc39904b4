/*
 * snapshot.c - the key snapshot (copy-on-write table swapped by the writer
 * thread, probed by any thread) and the per-key accounts. Lookups return a
 * reference the caller releases; accounts live until close.
 */
#include "store/internal.h"
#include "store/store.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

struct lm_store_keyset_s {
    size_t cap, n; /* cap: power of two, >= 2n */
    lm_key_t **slot;
};
typedef lm_store_keyset_t keyset_t;

/* ------------------------------------------------------------------------ */
/* key snapshot: copy-on-write open-addressing table keyed by the digest      */

static size_t ks_index(const unsigned char *h, size_t cap)
{
    uint64_t v;
    memcpy(&v, h, sizeof(v));
    return (size_t)(v & (cap - 1));
}

/* A new set of `keys` (each gets a reference). NULL on ENOMEM. */
static keyset_t *ks_build(lm_key_t **keys, size_t n)
{
    keyset_t *ks = calloc(1, sizeof(*ks));
    if (ks == NULL)
        return NULL;
    ks->cap = 16;
    while (ks->cap < 2 * n + 1)
        ks->cap *= 2;
    ks->slot = calloc(ks->cap, sizeof(*ks->slot));
    if (ks->slot == NULL) {
        free(ks);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        size_t j = ks_index(keys[i]->hash, ks->cap);
        while (ks->slot[j])
            j = (j + 1) & (ks->cap - 1);
        lm_key_ref(keys[i]);
        ks->slot[j] = keys[i];
        ks->n++;
    }
    return ks;
}

static void ks_free(keyset_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->cap; i++)
        if (ks->slot[i])
            lm_key_release(ks->slot[i]);
    free(ks->slot);
    free(ks);
}

int lm_store_snapshot_replace(lm_store_t *st, int64_t drop_id, lm_key_t *add)
{
    keyset_t *old = st->keys; /* only the writer swaps: reading it here is safe */
    size_t cap = (old ? old->n : 0) + 1;
    lm_key_t **list = calloc(cap, sizeof(*list));
    size_t n = 0;
    if (list == NULL)
        return -1;
    for (size_t i = 0; old && i < old->cap; i++) {
        lm_key_t *k = old->slot[i];
        if (k && k->id != drop_id && !(add && k->id == add->id))
            list[n++] = k;
    }
    if (add)
        list[n++] = add;
    keyset_t *ks = ks_build(list, n);
    free(list);
    if (ks == NULL)
        return -1;
    pthread_rwlock_wrlock(&st->snap_lock);
    st->keys = ks;
    pthread_rwlock_unlock(&st->snap_lock);
    ks_free(old);
    return 0;
}

lm_key_t *lm_store_key_find_hash(lm_store_t *st, const unsigned char digest[32])
{
    lm_key_t *found = NULL;
    pthread_rwlock_rdlock(&st->snap_lock);
    keyset_t *ks = st->keys;
    if (ks) {
        size_t j = ks_index(digest, ks->cap);
        for (; ks->slot[j]; j = (j + 1) & (ks->cap - 1)) {
            if (CRYPTO_memcmp(ks->slot[j]->hash, digest, 32) == 0) {
                found = ks->slot[j];
                lm_key_ref(found);
                break;
            }
        }
    }
    pthread_rwlock_unlock(&st->snap_lock);
    return found;
}

lm_key_t *lm_store_key_find(lm_store_t *st, const char *secret, size_t len)
{
    unsigned char digest[32];
    if (secret == NULL || len == 0 || len > 512)
        return NULL;
    SHA256((const unsigned char *)secret, len, digest);
    lm_key_t *k = lm_store_key_find_hash(st, digest);
    OPENSSL_cleanse(digest, sizeof(digest));
    return k;
}

/* ------------------------------------------------------------------------ */
/* accounts                                                                  */

lm_acct_t *lm_store_acct_find(lm_store_t *st, int64_t id)
{
    lm_acct_t *a = NULL;
    pthread_mutex_lock(&st->acct_mu);
    if (st->acct_cap) {
        size_t j = (size_t)((uint64_t)id * 0x9e3779b97f4a7c15ull) & (st->acct_cap - 1);
        for (; st->accts[j]; j = (j + 1) & (st->acct_cap - 1))
            if (st->accts[j]->id == id) {
                a = st->accts[j];
                break;
            }
    }
    pthread_mutex_unlock(&st->acct_mu);
    return a;
}

static void acct_put(lm_acct_t **tab, size_t cap, lm_acct_t *a)
{
    size_t j = (size_t)((uint64_t)a->id * 0x9e3779b97f4a7c15ull) & (cap - 1);
    while (tab[j])
        j = (j + 1) & (cap - 1);
    tab[j] = a;
}

/* The account of key k (created from k's quota and used if new). */
static lm_acct_t *acct_get(lm_store_t *st, const lm_key_t *k)
{
    lm_acct_t *a = lm_store_acct_find(st, k->id);
    if (a)
        return a;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    lm_rl_init(&a->rl);
    a->id = k->id;
    a->unlimited = k->unlimited;
    a->quota = k->quota;
    a->used = k->used;
    pthread_mutex_lock(&st->acct_mu);
    if (2 * (st->acct_n + 1) > st->acct_cap) {
        size_t cap = st->acct_cap ? st->acct_cap * 2 : 64;
        lm_acct_t **tab = calloc(cap, sizeof(*tab));
        if (tab == NULL) {
            pthread_mutex_unlock(&st->acct_mu);
            lm_rl_destroy(&a->rl);
            pthread_mutex_destroy(&a->mu);
            free(a);
            return NULL;
        }
        for (size_t i = 0; i < st->acct_cap; i++)
            if (st->accts[i])
                acct_put(tab, cap, st->accts[i]);
        free(st->accts);
        st->accts = tab;
        st->acct_cap = cap;
    }
    acct_put(st->accts, st->acct_cap, a);
    st->acct_n++;
    pthread_mutex_unlock(&st->acct_mu);
    return a;
}

void lm_store_acct_foreach(lm_store_t *st, void (*fn)(lm_acct_t *a, void *arg), void *arg)
{
    pthread_mutex_lock(&st->acct_mu);
    for (size_t i = 0; i < st->acct_cap; i++)
        if (st->accts[i])
            fn(st->accts[i], arg);
    pthread_mutex_unlock(&st->acct_mu);
}

lm_key_t *lm_store_key_attach(lm_store_t *st, lm_key_t *k)
{
    lm_acct_t *a = acct_get(st, k);
    if (a == NULL) {
        lm_store_key_free(k);
        return NULL;
    }
    pthread_mutex_lock(&a->mu);
    a->unlimited = k->unlimited;
    a->quota = k->quota;
    pthread_mutex_unlock(&a->mu);
    k->acct = a;
    return k;
}

/* ------------------------------------------------------------------------ */
/* load and free                                                             */

typedef struct load_s {
    lm_store_t *st;
    lm_key_t **v;
    size_t n, cap;
} load_t;

static int load_one(void *arg, lm_key_t *k)
{
    load_t *l = arg;
    if (l->n == l->cap) {
        lm_key_t **nv = realloc(l->v, l->cap * 2 * sizeof(*nv));
        if (nv == NULL) {
            lm_store_key_free(k);
            return -2;
        }
        l->v = nv;
        l->cap *= 2;
    }
    if ((k = lm_store_key_attach(l->st, k)) == NULL)
        return -1;
    l->v[l->n++] = k;
    return 0;
}

int lm_store_snapshot_load(lm_store_t *st, char *err, size_t errlen)
{
    load_t l = {st, calloc(64, sizeof(lm_key_t *)), 0, 64};
    int rc = -1;
    if (l.v != NULL && st->be->load_keys(st->db, load_one, &l, err, errlen) == 0) {
        st->keys = ks_build(l.v, l.n);
        rc = st->keys ? 0 : -1;
    }
    for (size_t i = 0; i < l.n; i++)
        lm_key_release(l.v[i]);
    free(l.v);
    if (rc != 0 && err && errlen && err[0] == '\0')
        lm_store_seterr(err, errlen, "store: out of memory loading keys");
    return rc;
}

/* load_one, and the account's used follows the database upwards: other
 * instances' committed spend (this one's is already in used or pending). */
static int reload_one(void *arg, lm_key_t *k)
{
    int64_t used = k->used;
    int rc = load_one(arg, k);
    if (rc == 0) {
        load_t *l = arg;
        lm_acct_t *a = l->v[l->n - 1]->acct;
        pthread_mutex_lock(&a->mu);
        if (used > a->used)
            a->used = used;
        pthread_mutex_unlock(&a->mu);
    }
    return rc;
}

int lm_store_snapshot_reload(lm_store_t *st)
{
    char err[256] = "";
    load_t l = {st, calloc(64, sizeof(lm_key_t *)), 0, 64};
    keyset_t *ks = NULL;
    if (l.v != NULL && st->be->load_keys(st->db, reload_one, &l, err, sizeof(err)) == 0)
        ks = ks_build(l.v, l.n);
    for (size_t i = 0; i < l.n; i++)
        lm_key_release(l.v[i]);
    free(l.v);
    if (ks == NULL) {
        lm_store_log(st, 0, "key snapshot not reloaded: %s", err[0] ? err : "out of memory");
        return -1;
    }
    keyset_t *old = st->keys; /* only the writer swaps */
    pthread_rwlock_wrlock(&st->snap_lock);
    st->keys = ks;
    pthread_rwlock_unlock(&st->snap_lock);
    ks_free(old);
    return 0;
}

void lm_store_snapshot_free(lm_store_t *st)
{
    ks_free(st->keys);
    st->keys = NULL;
    for (size_t i = 0; i < st->acct_cap; i++) {
        lm_acct_t *a = st->accts[i];
        if (a == NULL)
            continue;
        lm_rl_destroy(&a->rl);
        pthread_mutex_destroy(&a->mu);
        free(a);
    }
    free(st->accts);
    st->accts = NULL;
    st->acct_cap = st->acct_n = 0;
}
