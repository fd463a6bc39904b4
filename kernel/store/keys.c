/*
 * keys.c - virtual key records and their checks: reference counting, the
 * model and address rules, text and CIDR validation, the JSON list columns.
 * Any thread (records are immutable once published); see store.h for ownership.
 */
#include "store/internal.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int lm_store_text_ok(const char *s, size_t len, size_t max)
{
    if (s == NULL || len > max)
        return 0;
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if ((size_t)(end - p) < n)
            return 0;
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        p += n;
    }
    return 1;
}

int lm_store_cstr_ok(const char *s, size_t max)
{
    if (s == NULL)
        return 1; /* "" */
    size_t n = strnlen(s, max + 1);
    return lm_store_text_ok(s, n, max);
}

/* "a.b.c.d[/n]" or "x:y::z[/n]". */
int lm_store_cidr_parse(const char *s, lm_cidr_t *out)
{
    char buf[LM_STORE_ITEM_MAX + 1];
    const char *slash = strchr(s, '/');
    size_t alen = slash ? (size_t)(slash - s) : strlen(s);
    if (alen == 0 || alen >= sizeof(buf))
        return -1;
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    memset(out, 0, sizeof(*out));
    int max;
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = 4, max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = 6, max = 128;
    } else {
        return -1;
    }
    int bits = max;
    if (slash) {
        const char *p = slash + 1;
        if (*p == '\0' || strlen(p) > 3)
            return -1;
        bits = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            bits = bits * 10 + (*p - '0');
        }
        if (bits > max)
            return -1;
    }
    out->bits = (unsigned char)bits;
    /* clear host bits so matching is a plain prefix compare */
    for (int i = 0; i < 16; i++) {
        int keep = bits - i * 8;
        if (keep >= 8)
            continue;
        out->addr[i] &= keep <= 0 ? 0 : (unsigned char)(0xff << (8 - keep));
    }
    return 0;
}

static int cidr_match(const lm_cidr_t *c, int family, const unsigned char *addr)
{
    if (c->family != family)
        return 0;
    int bits = c->bits;
    for (int i = 0; bits > 0; i++, bits -= 8) {
        unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
        if ((addr[i] & mask) != c->addr[i])
            return 0;
    }
    return 1;
}

void lm_key_ref(lm_key_t *k)
{
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
}

void lm_store_key_free(lm_key_t *k)
{
    free(k->name);
    free(k->owner);
    free(k->group);
    for (size_t i = 0; i < k->nmodels; i++)
        free(k->models[i]);
    free(k->models);
    for (size_t i = 0; i < k->ncidrs; i++)
        free(k->cidrs[i]);
    free(k->cidrs);
    free(k->nets);
    free(k);
}

void lm_key_release(lm_key_t *k)
{
    if (k && atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1)
        lm_store_key_free(k);
}

int lm_key_usable(const lm_key_t *k, int64_t now)
{
    if (!k->enabled)
        return LM_KEY_DISABLED;
    if (k->expires_at > 0 && now >= k->expires_at)
        return LM_KEY_EXPIRED;
    return LM_KEY_OK;
}

int lm_key_model_allowed(const lm_key_t *k, const char *model)
{
    if (k->nmodels == 0)
        return 1;
    if (model == NULL)
        return 0;
    for (size_t i = 0; i < k->nmodels; i++) {
        const char *m = k->models[i];
        size_t n = strlen(m);
        if (n > 0 && m[n - 1] == '*') {
            if (strncmp(model, m, n - 1) == 0)
                return 1;
        } else if (strcmp(model, m) == 0) {
            return 1;
        }
    }
    return 0;
}

int lm_key_addr_allowed(const lm_key_t *k, const struct sockaddr *sa)
{
    if (k->ncidrs == 0)
        return 1;
    if (sa == NULL)
        return 0;
    unsigned char addr[16];
    int family;
    if (sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        family = 4;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            memcpy(addr, a6->s6_addr + 12, 4);
            family = 4;
        } else {
            memcpy(addr, a6->s6_addr, 16);
            family = 6;
        }
    } else {
        return 0;
    }
    for (size_t i = 0; i < k->ncidrs; i++)
        if (cidr_match(&k->nets[i], family, addr))
            return 1;
    return 0;
}

/* JSON text array of strings -> vector. -1 on bad data. */
int lm_store_list_decode(const char *text, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    json_t *a = json_loads(text ? text : "[]", 0, NULL);
    if (a == NULL || !json_is_array(a)) {
        json_decref(a);
        return -1;
    }
    size_t cnt = json_array_size(a);
    char **v = calloc(cnt ? cnt : 1, sizeof(*v));
    if (v == NULL) {
        json_decref(a);
        return -1;
    }
    for (size_t i = 0; i < cnt; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        v[i] = strdup(s ? s : "");
        if (v[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                free(v[j]);
            free(v);
            json_decref(a);
            return -1;
        }
    }
    json_decref(a);
    *out = v;
    *n = cnt;
    return 0;
}

char *lm_store_list_encode(const char *const *items, size_t n)
{
    json_t *a = json_array();
    if (a == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_string(items[i]);
        if (s == NULL || json_array_append_new(a, s) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    char *t = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return t;
}

int lm_store_key_spec_check(const lm_key_spec_t *sp, char *err, size_t errlen)
{
    unsigned set = sp->set;
    if ((set & LM_KF_NAME) && !lm_store_cstr_ok(sp->name, LM_STORE_TEXT_MAX)) {
        lm_store_seterr(err, errlen, "name must be valid UTF-8 of at most %d bytes",
                        LM_STORE_TEXT_MAX);
        return LM_STORE_EINVAL;
    }
    if ((set & LM_KF_OWNER) && !lm_store_cstr_ok(sp->owner, LM_STORE_TEXT_MAX)) {
        lm_store_seterr(err, errlen, "owner must be valid UTF-8 of at most %d bytes",
                        LM_STORE_TEXT_MAX);
        return LM_STORE_EINVAL;
    }
    if ((set & LM_KF_GROUP) && !lm_store_cstr_ok(sp->group, LM_STORE_TEXT_MAX)) {
        lm_store_seterr(err, errlen, "group must be valid UTF-8 of at most %d bytes",
                        LM_STORE_TEXT_MAX);
        return LM_STORE_EINVAL;
    }
    if ((set & LM_KF_QUOTA) && !sp->unlimited && sp->quota < 0) {
        lm_store_seterr(err, errlen, "quota must be >= 0");
        return LM_STORE_EINVAL;
    }
    if ((set & LM_KF_EXPIRES) && sp->expires_at < 0) {
        lm_store_seterr(err, errlen, "expires_at must be >= 0");
        return LM_STORE_EINVAL;
    }
    if ((set & LM_KF_LIMITS) && (sp->rpm < 0 || sp->tpm < 0 || sp->max_concurrent < 0)) {
        lm_store_seterr(err, errlen, "rpm, tpm and max_concurrent must be >= 0");
        return LM_STORE_EINVAL;
    }
    if ((set & LM_KF_ENABLED) && sp->enabled != 0 && sp->enabled != 1) {
        lm_store_seterr(err, errlen, "enabled must be 0 or 1");
        return LM_STORE_EINVAL;
    }
    if (set & LM_KF_MODELS) {
        if (sp->nmodels > LM_STORE_LIST_MAX || (sp->nmodels && sp->models == NULL)) {
            lm_store_seterr(err, errlen, "at most %d models", LM_STORE_LIST_MAX);
            return LM_STORE_EINVAL;
        }
        for (size_t i = 0; i < sp->nmodels; i++)
            if (sp->models[i] == NULL || sp->models[i][0] == '\0' ||
                !lm_store_cstr_ok(sp->models[i], LM_STORE_ITEM_MAX)) {
                lm_store_seterr(err, errlen,
                                "model %zu must be non-empty UTF-8 of at most %d bytes", i,
                                LM_STORE_ITEM_MAX);
                return LM_STORE_EINVAL;
            }
    }
    if (set & LM_KF_CIDRS) {
        if (sp->ncidrs > LM_STORE_LIST_MAX || (sp->ncidrs && sp->cidrs == NULL)) {
            lm_store_seterr(err, errlen, "at most %d address ranges", LM_STORE_LIST_MAX);
            return LM_STORE_EINVAL;
        }
        for (size_t i = 0; i < sp->ncidrs; i++) {
            lm_cidr_t c;
            if (sp->cidrs[i] == NULL ||
                strnlen(sp->cidrs[i], LM_STORE_ITEM_MAX + 1) > LM_STORE_ITEM_MAX ||
                lm_store_cidr_parse(sp->cidrs[i], &c) != 0) {
                lm_store_seterr(err, errlen, "address range %zu is not an IPv4/IPv6 CIDR", i);
                return LM_STORE_EINVAL;
            }
        }
    }
    return LM_STORE_OK;
}
