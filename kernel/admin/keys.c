/*
 * keys.c - /admin/keys: create, list, read, update and delete data-plane
 * keys in the store. Admin thread only; the secret is shown once, on create.
 */
#include "admin/keys.h"
#include "core/log.h"
#include "core/money.h"
#include "longmen.h" /* LM_LOG_* */

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 10^9 units of currency: far above any real quota, far below int64. */
#define LM_ADMIN_MONEY_MAX ((int64_t)1000000000 * LM_MICRO)
#define ADMIN_RPM_MAX      INT64_C(1000000000)
#define ADMIN_TPM_MAX      INT64_C(1000000000000)
#define ADMIN_CONC_MAX     INT64_C(1000000)

/* A key spec being read from JSON; strings borrow from the JSON document. */
typedef struct spec_in_s {
    lm_key_spec_t sp;
    const char **models, **cidrs;
    int have_rpm, have_tpm, have_conc;
} spec_in_t;

typedef struct field_err_s {
    const char *param;
    char msg[256];
} field_err_t;

static int ferr(field_err_t *fe, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ferr(field_err_t *fe, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fe->msg, sizeof(fe->msg), fmt, ap);
    va_end(ap);
    fe->param = param;
    return -1;
}

static int get_text(json_t *v, const char *k, size_t max, const char **out, field_err_t *fe)
{
    if (!json_is_string(v))
        return ferr(fe, k, "%s must be a string", k);
    if (!lm_store_text_ok(json_string_value(v), json_string_length(v), max))
        return ferr(fe, k, "%s must be valid UTF-8 without NUL, at most %zu bytes", k, max);
    *out = json_string_value(v);
    return 0;
}

static int get_int(json_t *v, const char *k, int64_t max, int64_t *out, field_err_t *fe)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return ferr(fe, k, "%s must be an integer from 0 to %lld", k, (long long)max);
    *out = json_integer_value(v);
    return 0;
}

/* quota: "12.5" (units), "unlimited" or null. */
static int get_quota(json_t *v, lm_key_spec_t *sp, field_err_t *fe)
{
    if (json_is_null(v)) {
        sp->unlimited = 1;
        sp->quota = 0;
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) > 32 ||
        strlen(json_string_value(v)) != json_string_length(v))
        return ferr(fe, "quota",
                    "quota must be a decimal string in units of currency (e.g. \"12.5\"), "
                    "\"unlimited\" or null; use quota_micro for integer micro-units");
    const char *s = json_string_value(v);
    if (strcmp(s, "unlimited") == 0) {
        sp->unlimited = 1;
        sp->quota = 0;
        return 0;
    }
    int64_t q;
    if (lm_money_parse(s, &q) != 0 || q > LM_ADMIN_MONEY_MAX)
        return ferr(fe, "quota",
                    "quota must be a non-negative decimal with at most 6 fraction digits and "
                    "at most 1000000000 units");
    sp->unlimited = 0;
    sp->quota = q;
    return 0;
}

static int get_list(json_t *v, const char *k, const char ***out, size_t *n, field_err_t *fe)
{
    if (!json_is_array(v))
        return ferr(fe, k, "%s must be an array of strings", k);
    size_t cnt = json_array_size(v);
    if (cnt > LM_STORE_LIST_MAX)
        return ferr(fe, k, "%s has more than %d entries", k, LM_STORE_LIST_MAX);
    const char **items = calloc(cnt ? cnt : 1, sizeof(*items));
    if (items == NULL)
        return ferr(fe, k, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        json_t *it = json_array_get(v, i);
        if (!json_is_string(it) || json_string_length(it) == 0 ||
            !lm_store_text_ok(json_string_value(it), json_string_length(it), LM_STORE_ITEM_MAX)) {
            free(items);
            return ferr(fe, k, "%s[%zu] must be a non-empty string of at most %d bytes", k, i,
                        LM_STORE_ITEM_MAX);
        }
        items[i] = json_string_value(it);
    }
    free((void *)*out);
    *out = items;
    *n = cnt;
    return 0;
}

/* The limit fields share one store flag; remember which ones were named. */
static int spec_limit(spec_in_t *in, const char *k, json_t *v, field_err_t *fe)
{
    lm_key_spec_t *sp = &in->sp;
    sp->set |= LM_KF_LIMITS;
    if (!strcmp(k, "rpm")) {
        in->have_rpm = 1;
        return get_int(v, k, ADMIN_RPM_MAX, &sp->rpm, fe);
    }
    if (!strcmp(k, "tpm")) {
        in->have_tpm = 1;
        return get_int(v, k, ADMIN_TPM_MAX, &sp->tpm, fe);
    }
    in->have_conc = 1;
    return get_int(v, k, ADMIN_CONC_MAX, &sp->max_concurrent, fe);
}

/* One field of a create or update body. */
static int spec_field(spec_in_t *in, const char *k, json_t *v, field_err_t *fe)
{
    static const struct {
        const char *name;
        unsigned flag;
        size_t off;
    } texts[] = {
        {"name", LM_KF_NAME, offsetof(lm_key_spec_t, name)},
        {"owner", LM_KF_OWNER, offsetof(lm_key_spec_t, owner)},
        {"group", LM_KF_GROUP, offsetof(lm_key_spec_t, group)},
    };
    lm_key_spec_t *sp = &in->sp;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if (!strcmp(k, texts[i].name)) {
            sp->set |= texts[i].flag;
            return get_text(v, k, LM_STORE_TEXT_MAX,
                            (const char **)(void *)((char *)sp + texts[i].off), fe);
        }
    if (!strcmp(k, "quota")) {
        sp->set |= LM_KF_QUOTA;
        return get_quota(v, sp, fe);
    }
    if (!strcmp(k, "quota_micro")) {
        sp->set |= LM_KF_QUOTA;
        sp->unlimited = 0;
        return get_int(v, k, LM_ADMIN_MONEY_MAX, &sp->quota, fe);
    }
    if (!strcmp(k, "expires_at")) {
        sp->set |= LM_KF_EXPIRES;
        sp->expires_at = 0;
        return json_is_null(v) ? 0 : get_int(v, k, ADMIN_TIME_MAX, &sp->expires_at, fe);
    }
    if (!strcmp(k, "models")) {
        sp->set |= LM_KF_MODELS;
        return get_list(v, k, &in->models, &sp->nmodels, fe);
    }
    if (!strcmp(k, "cidrs")) {
        sp->set |= LM_KF_CIDRS;
        return get_list(v, k, &in->cidrs, &sp->ncidrs, fe);
    }
    if (!strcmp(k, "rpm") || !strcmp(k, "tpm") || !strcmp(k, "max_concurrent"))
        return spec_limit(in, k, v, fe);
    if (!strcmp(k, "enabled")) {
        sp->set |= LM_KF_ENABLED;
        if (!json_is_boolean(v))
            return ferr(fe, k, "enabled must be true or false");
        sp->enabled = json_is_true(v);
        return 0;
    }
    /* everything else, including read-only fields (id, prefix, used, ...)
     * and privileges this API does not have (role, budget, routes) */
    return ferr(fe, k, "unknown or read-only field");
}

/* Read every field of body into in (zeroed by the caller). 0 or -1. */
static int spec_read(json_t *body, spec_in_t *in, field_err_t *fe)
{
    const char *k;
    json_t *v;
    json_object_foreach (body, k, v) {
        /* names are printed into error messages: keep them sane */
        if (strlen(k) > 64 || !lm_store_text_ok(k, strlen(k), 64))
            return ferr(fe, NULL, "unknown field");
        if (spec_field(in, k, v, fe) != 0)
            return -1;
    }
    if (json_object_get(body, "quota") && json_object_get(body, "quota_micro"))
        return ferr(fe, "quota", "give quota or quota_micro, not both");
    in->sp.models = in->models;
    in->sp.cidrs = in->cidrs;
    return 0;
}

static void spec_free(spec_in_t *in)
{
    free((void *)in->models);
    free((void *)in->cidrs);
}

static json_t *jlist(char **items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, lm_admin_jtext(items[i]));
    return a;
}

/* A key record: never the hash or the secret, only the display prefix. */
static json_t *key_json(const lm_key_t *k)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(k->id));
    json_object_set_new(o, "object", json_string("key"));
    json_object_set_new(o, "prefix", lm_admin_jtext(k->prefix));
    json_object_set_new(o, "name", lm_admin_jtext(k->name));
    json_object_set_new(o, "owner", lm_admin_jtext(k->owner));
    json_object_set_new(o, "group", lm_admin_jtext(k->group));
    json_object_set_new(o, "unlimited", json_boolean(k->unlimited));
    json_object_set_new(o, "quota", k->unlimited ? json_null() : lm_admin_jmoney(k->quota));
    json_object_set_new(o, "quota_micro", k->unlimited ? json_null() : json_integer(k->quota));
    json_object_set_new(o, "used", lm_admin_jmoney(k->used));
    json_object_set_new(o, "used_micro", json_integer(k->used));
    json_object_set_new(o, "expires_at", json_integer(k->expires_at));
    json_object_set_new(o, "models", jlist(k->models, k->nmodels));
    json_object_set_new(o, "cidrs", jlist(k->cidrs, k->ncidrs));
    json_object_set_new(o, "rpm", json_integer(k->rpm));
    json_object_set_new(o, "tpm", json_integer(k->tpm));
    json_object_set_new(o, "max_concurrent", json_integer(k->max_concurrent));
    json_object_set_new(o, "enabled", json_boolean(k->enabled));
    json_object_set_new(o, "created_at", json_integer(k->created_at));
    json_object_set_new(o, "updated_at", json_integer(k->updated_at));
    return o;
}

static void reply_key(lm_admin_ctx_t *a, int status, int64_t id, const char *secret)
{
    lm_key_t *k = NULL;
    int rc = lm_store_key_get(a->env->store, id, &k);
    if (rc != LM_STORE_OK) {
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    json_t *o = key_json(k);
    lm_key_release(k);
    if (secret)
        json_object_set_new(o, "secret", json_string(secret));
    lm_admin_http_json(a->req, status, o);
}

void lm_admin_keys_create(lm_admin_ctx_t *a)
{
    json_t *body = lm_admin_body(a);
    if (body == NULL)
        return;
    spec_in_t in;
    field_err_t fe = {0};
    memset(&in, 0, sizeof(in));
    in.sp.enabled = 1;
    if (spec_read(body, &in, &fe) != 0) {
        lm_admin_http_bad_request(a->req, fe.param, fe.msg);
    } else if (!(in.sp.set & LM_KF_QUOTA)) {
        lm_admin_http_bad_request(a->req, "quota",
                                  "quota is required: a decimal amount (\"12.5\"), quota_micro, or "
                                  "\"unlimited\"");
    } else {
        char secret[LM_KEY_SECRET_SIZE], err[256] = "";
        int64_t id = 0;
        int rc = lm_store_key_create(a->env->store, &in.sp, secret, &id, err, sizeof(err));
        if (rc == LM_STORE_OK) {
            lm_log(LM_LOG_INFO, "admin: key %lld created", (long long)id);
            reply_key(a, 201, id, secret);
        } else {
            lm_admin_store_error(a->req, rc, err);
        }
        OPENSSL_cleanse(secret, sizeof(secret));
    }
    spec_free(&in);
    json_decref(body);
}

/* lm_admin_page_item_fn over lm_key_t *. */
static json_t *key_item(const void *item, const void *arg)
{
    (void)arg;
    return key_json(*(lm_key_t *const *)item);
}

void lm_admin_keys_list(lm_admin_ctx_t *a)
{
    static const char *const params[] = {"after", "limit", NULL};
    lm_admin_http_query_t q;
    int64_t after, limit;
    if (lm_admin_http_query_parse(a->req, params, &q) != 0)
        return;
    if (lm_admin_page_query(a, &q, "after", 0, &after, &limit) != 0) {
        lm_admin_http_query_free(&q);
        return;
    }
    lm_admin_http_query_free(&q);
    lm_key_t **keys = NULL;
    size_t n = 0;
    int rc = lm_store_key_list(a->env->store, after, (size_t)limit + 1, &keys, &n);
    if (rc != LM_STORE_OK) {
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    int more;
    const void *last;
    json_t *o = lm_admin_page_json(keys, n, sizeof(*keys), limit, key_item, NULL, &last, &more);
    json_object_set_new(o, "last_id",
                        last ? json_integer((*(lm_key_t *const *)last)->id) : json_null());
    lm_store_key_list_free(keys, n);
    lm_admin_http_json(a->req, 200, o);
}

void lm_admin_keys_get(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a))
        return;
    reply_key(a, 200, a->id, NULL);
}

/* rpm, tpm and max_concurrent are one store field set: keep the current
 * values of the ones the body did not name. */
static int fill_limits(lm_admin_ctx_t *a, spec_in_t *in)
{
    if (!(in->sp.set & LM_KF_LIMITS) || (in->have_rpm && in->have_tpm && in->have_conc))
        return LM_STORE_OK;
    lm_key_t *k = NULL;
    int rc = lm_store_key_get(a->env->store, a->id, &k);
    if (rc != LM_STORE_OK)
        return rc;
    if (!in->have_rpm)
        in->sp.rpm = k->rpm;
    if (!in->have_tpm)
        in->sp.tpm = k->tpm;
    if (!in->have_conc)
        in->sp.max_concurrent = k->max_concurrent;
    lm_key_release(k);
    return LM_STORE_OK;
}

void lm_admin_keys_update(lm_admin_ctx_t *a)
{
    json_t *body = lm_admin_body(a);
    if (body == NULL)
        return;
    spec_in_t in;
    field_err_t fe = {0};
    memset(&in, 0, sizeof(in));
    if (spec_read(body, &in, &fe) != 0) {
        lm_admin_http_bad_request(a->req, fe.param, fe.msg);
    } else if (in.sp.set == 0) {
        lm_admin_http_bad_request(a->req, NULL, "nothing to update");
    } else {
        char err[256] = "";
        int rc = fill_limits(a, &in);
        if (rc == LM_STORE_OK)
            rc = lm_store_key_update(a->env->store, a->id, &in.sp, err, sizeof(err));
        if (rc == LM_STORE_OK) {
            lm_log(LM_LOG_INFO, "admin: key %lld updated", (long long)a->id);
            reply_key(a, 200, a->id, NULL);
        } else {
            lm_admin_store_error(a->req, rc, err);
        }
    }
    spec_free(&in);
    json_decref(body);
}

void lm_admin_keys_delete(lm_admin_ctx_t *a)
{
    if (!lm_admin_no_query(a))
        return;
    int rc = lm_store_key_delete(a->env->store, a->id);
    if (rc != LM_STORE_OK) {
        lm_admin_store_error(a->req, rc, NULL);
        return;
    }
    lm_log(LM_LOG_INFO, "admin: key %lld deleted", (long long)a->id);
    lm_admin_http_json(
        a->req, 200,
        json_pack("{s:I, s:s, s:b}", "id", (json_int_t)a->id, "object", "key", "deleted", 1));
}
