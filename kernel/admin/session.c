/*
 * session.c - the console's session table (session.h). Admin thread only.
 */
#include "admin/session.h"
#include "core/b64.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <string.h>
#include <sys/random.h>

static int random_text(char *out)
{
    unsigned char rnd[32];
    size_t got = 0;
    while (got < sizeof(rnd)) {
        ssize_t r = getrandom(rnd + got, sizeof(rnd) - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    out[lm_b64_encode(rnd, sizeof(rnd), out, 1)] = '\0';
    OPENSSL_cleanse(rnd, sizeof(rnd));
    return 0;
}

lm_admin_session_t *lm_admin_session_new(lm_admin_sessions_t *t, int role, int64_t now_ms, char *id)
{
    lm_admin_session_t *slot = &t->s[0];
    for (size_t i = 0; i < LM_ADMIN_SESSIONS; i++) {
        lm_admin_session_t *s = &t->s[i];
        if (s->expires_ms <= now_ms) {
            slot = s;
            break;
        }
        if (s->expires_ms < slot->expires_ms)
            slot = s;
    }
    lm_admin_session_drop(slot);
    if (random_text(id) != 0 || random_text(slot->csrf) != 0)
        return NULL;
    SHA256((const unsigned char *)id, strlen(id), slot->id_hash);
    slot->role = role;
    slot->expires_ms = now_ms + (t->ttl_ms > 0 ? t->ttl_ms : LM_ADMIN_SESSION_TTL_MS);
    return slot;
}

const char *lm_admin_cookie_value(const char *hdr, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    while (hdr && *hdr) {
        while (*hdr == ' ' || *hdr == '\t')
            hdr++;
        size_t pair = strcspn(hdr, ";");
        if (pair > nl && strncmp(hdr, name, nl) == 0 && hdr[nl] == '=') {
            *len = pair - nl - 1;
            return hdr + nl + 1;
        }
        hdr += pair;
        if (*hdr == ';')
            hdr++;
    }
    return NULL;
}

lm_admin_session_t *lm_admin_session_find(lm_admin_sessions_t *t, const char *cookie_hdr,
                                          int64_t now_ms)
{
    size_t n = 0;
    const char *v = lm_admin_cookie_value(cookie_hdr, LM_ADMIN_SESSION_COOKIE, &n);
    if (v == NULL || n != LM_ADMIN_SESSION_IDLEN)
        return NULL;
    unsigned char d[32];
    SHA256((const unsigned char *)v, n, d);
    lm_admin_session_t *hit = NULL;
    /* every slot is compared, so the time taken does not depend on which */
    for (size_t i = 0; i < LM_ADMIN_SESSIONS; i++) {
        lm_admin_session_t *s = &t->s[i];
        if (s->expires_ms == 0)
            continue;
        if (s->expires_ms <= now_ms) {
            lm_admin_session_drop(s);
            continue;
        }
        if (CRYPTO_memcmp(d, s->id_hash, sizeof(d)) == 0)
            hit = s;
    }
    return hit;
}

void lm_admin_session_drop(lm_admin_session_t *s)
{
    OPENSSL_cleanse(s, sizeof(*s));
    s->expires_ms = 0;
}

int lm_admin_session_csrf_ok(const lm_admin_session_t *s, const char *hdr)
{
    size_t n = strlen(s->csrf);
    return hdr && strlen(hdr) == n && n > 0 && CRYPTO_memcmp(hdr, s->csrf, n) == 0;
}
