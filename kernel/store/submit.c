/*
 * submit.c - the callers' side of every write: check, build an op, queue it;
 * usage rows without waiting (any thread), admin writes waiting for their
 * commit (admin/control threads). A queued heap op belongs to the writer.
 */
#include "core/b64.h"
#include "store/writer.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* ------------------------------------------------------------------------ */
/* usage rows                                                                */

static size_t slen(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static const char *scopy(char **p, const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*p, s, n);
    const char *r = *p;
    *p += n;
    return r;
}

static int64_t clamp0(int64_t v)
{
    return v < 0 ? 0 : v;
}

int lm_store_usage_submit_acct(lm_store_t *st, const lm_usage_row_t *row, lm_acct_t *acct,
                               int64_t pending, const lm_store_cb_t *cb)
{
    if (row == NULL || row->request_id == NULL || row->request_id[0] == '\0' ||
        strnlen(row->request_id, 257) > 256 || row->cost < 0 || row->attempt < 0)
        return LM_STORE_EINVAL;
    size_t extra = slen(row->request_id) + slen(row->channel) + slen(row->model_asked) +
                   slen(row->model_served) + slen(row->usage_json) + slen(row->api);
    op_t *op = calloc(1, sizeof(*op) + extra);
    if (op == NULL)
        return LM_STORE_ENOMEM;
    char *p = (char *)(op + 1);
    op->kind = OP_USAGE;
    op->row = *row;
    op->row.request_id = scopy(&p, row->request_id);
    op->row.channel = scopy(&p, row->channel);
    op->row.model_asked = scopy(&p, row->model_asked);
    op->row.model_served = scopy(&p, row->model_served);
    op->row.usage_json = scopy(&p, row->usage_json);
    op->row.api = scopy(&p, row->api);
    op->row.prompt_tokens = clamp0(row->prompt_tokens);
    op->row.completion_tokens = clamp0(row->completion_tokens);
    op->row.cached_tokens = clamp0(row->cached_tokens);
    op->row.reasoning_tokens = clamp0(row->reasoning_tokens);
    op->row.latency_ms = clamp0(row->latency_ms);
    op->row.ttft_ms = clamp0(row->ttft_ms);
    if (op->row.created_ms <= 0)
        op->row.created_ms = lm_store_now_ms();
    op->acct = acct;
    op->pending = acct ? pending : 0;
    if (cb)
        op->cb = *cb;
    int rc = lm_store_enqueue(st, op);
    if (rc != LM_STORE_OK)
        free(op);
    return rc;
}

int lm_store_usage_submit(lm_store_t *st, const lm_usage_row_t *row, const lm_store_cb_t *cb)
{
    return lm_store_usage_submit_acct(st, row, NULL, 0, cb);
}

/* ------------------------------------------------------------------------ */
/* admin writes                                                              */

/* A new secret: "sk-" + 192 random bits in base64url. 0 or -1. */
static int new_secret(char plain[LM_KEY_SECRET_SIZE])
{
    unsigned char rnd[24]; /* 192 bits */
    size_t got = 0;
    while (got < sizeof(rnd)) {
        ssize_t r = getrandom(rnd + got, sizeof(rnd) - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    memcpy(plain, "sk-", 3);
    lm_b64_encode(rnd, sizeof(rnd), plain + 3, 1); /* 32 chars */
    OPENSSL_cleanse(rnd, sizeof(rnd));
    return 0;
}

int lm_store_key_create(lm_store_t *st, const lm_key_spec_t *spec, char *secret, int64_t *id,
                        char *err, size_t errlen)
{
    lm_key_spec_t sp = *spec;
    sp.set = LM_KF_ALL;
    int rc = lm_store_key_spec_check(&sp, err, errlen);
    if (rc != LM_STORE_OK)
        return rc;
    char plain[LM_KEY_SECRET_SIZE];
    if (new_secret(plain) != 0) {
        lm_store_seterr(err, errlen, "getrandom failed");
        return LM_STORE_EDB;
    }

    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_KEY_CREATE;
    op.spec = &sp;
    SHA256((const unsigned char *)plain, strlen(plain), op.hash);
    memcpy(op.prefix, plain, LM_KEY_PREFIX_LEN);
    op.prefix[LM_KEY_PREFIX_LEN] = '\0';
    op.models_json = lm_store_list_encode(sp.models, sp.nmodels);
    op.cidrs_json = lm_store_list_encode(sp.cidrs, sp.ncidrs);
    op.err = err;
    op.errlen = errlen;
    if (op.models_json == NULL || op.cidrs_json == NULL)
        rc = LM_STORE_ENOMEM;
    else
        rc = lm_store_run_sync(st, &op);
    free(op.models_json);
    free(op.cidrs_json);
    if (rc == LM_STORE_OK) {
        memcpy(secret, plain, strlen(plain) + 1);
        if (id)
            *id = op.id;
    } else if (err && errlen && err[0] == '\0') {
        lm_store_seterr(err, errlen, "%s", lm_store_strerror(rc));
    }
    OPENSSL_cleanse(plain, sizeof(plain));
    return rc;
}

int lm_store_key_update(lm_store_t *st, int64_t id, const lm_key_spec_t *spec, char *err,
                        size_t errlen)
{
    int rc = lm_store_key_spec_check(spec, err, errlen);
    if (rc != LM_STORE_OK)
        return rc;
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_KEY_UPDATE;
    op.spec = spec;
    op.key_id = id;
    op.err = err;
    op.errlen = errlen;
    rc = lm_store_run_sync(st, &op);
    if (rc != LM_STORE_OK && err && errlen && err[0] == '\0')
        lm_store_seterr(err, errlen, "%s", lm_store_strerror(rc));
    return rc;
}

int lm_store_key_delete(lm_store_t *st, int64_t id)
{
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_KEY_DELETE;
    op.key_id = id;
    return lm_store_run_sync(st, &op);
}

int lm_store_admin_token_set(lm_store_t *st, int role, const unsigned char hash[32])
{
    if (role != LM_ADMIN_ROLE_FULL && role != LM_ADMIN_ROLE_READ)
        return LM_STORE_EINVAL;
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_ADMIN_TOKEN;
    op.admin_role = role;
    op.admin_clear = hash == NULL;
    if (hash)
        memcpy(op.hash, hash, 32);
    int rc = lm_store_run_sync(st, &op);
    OPENSSL_cleanse(op.hash, sizeof(op.hash));
    return rc;
}

/* Create or update: check, encode the JSON columns, run on the writer. */
static int chan_write(lm_store_t *st, int kind, const lm_chan_rec_t *c, int64_t *id, char *err,
                      size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    int rc = lm_store_chan_check(c, NULL, err, errlen);
    if (rc != LM_STORE_OK)
        return rc;
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = kind;
    op.chan = c;
    op.chan_models = lm_store_list_encode((const char *const *)c->models, c->nmodels);
    op.chan_settings = lm_store_chan_settings_encode(c);
    op.err = err;
    op.errlen = errlen;
    if (op.chan_models == NULL || op.chan_settings == NULL)
        rc = LM_STORE_ENOMEM;
    else
        rc = lm_store_run_sync(st, &op);
    free(op.chan_models);
    lm_store_wipe_free(op.chan_settings);
    if (rc == LM_STORE_OK && id)
        *id = op.id;
    if (rc != LM_STORE_OK && err && errlen && err[0] == '\0')
        lm_store_seterr(err, errlen, "%s", lm_store_strerror(rc));
    return rc;
}

int lm_store_chan_create(lm_store_t *st, const lm_chan_rec_t *c, int64_t *id, char *err,
                         size_t errlen)
{
    return chan_write(st, OP_CHAN_CREATE, c, id, err, errlen);
}

int lm_store_chan_update(lm_store_t *st, const lm_chan_rec_t *c, char *err, size_t errlen)
{
    return chan_write(st, OP_CHAN_UPDATE, c, NULL, err, errlen);
}

int lm_store_chan_delete(lm_store_t *st, const char *name)
{
    if (!lm_store_name_ok(name, 0))
        return LM_STORE_ENOTFOUND; /* no such name can be stored */
    op_t op;
    memset(&op, 0, sizeof(op));
    op.kind = OP_CHAN_DELETE;
    op.chan_name = name;
    return lm_store_run_sync(st, &op);
}
