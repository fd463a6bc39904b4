/*
 * ernie_auth.c - the OAuth access token as an ABI 1.1 side value, and the
 * v1 error bodies (which also say when the token was refused).
 *
 * The host fetches the token through eb1_side_request/eb1_side_parse,
 * caches it for the channel and hands it to build_request through side_get.
 * error_code 110/111 (token invalid/expired) invalidates the token the
 * request sent and returns LM_ERETRY: the host refetches and retries once.
 * Secrets (client_id, client_secret, tokens) never reach an error message
 * or a log line: messages copied from Baidu are scrubbed.
 */
#include "ernie.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int eb1_side_request(void *istate, const char *name, lm_ureq *u, lm_err *e)
{
    const eb1_inst *in = istate;
    if (!lms_streq(name, EB1_SIDE))
        return lms_bad_request(e, "ernie: unknown side value");
    int rc = in->h->ureq_set_method(u, "POST");
    if (rc == LM_OK)
        rc = in->h->ureq_set_url(u, lm_cstr(in->token_url));
    if (rc == LM_OK)
        rc = in->h->ureq_add_header(u, LM_STR("Accept"), LM_STR("application/json"));
    return rc == LM_OK ? LM_OK : lms_oom(e);
}

static void eb1_scrub(const eb1_inst *in, const eb1_req *rs, lm_err *e)
{
    const char *secrets[] = {in->client_sec, in->client_id, rs ? rs->token : NULL};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        lms_scrub(e->msg, secrets[i]);
        lms_scrub(e->code, secrets[i]);
    }
}

/* OAuth refusal: 401 with Baidu's own code and description, never the
 * credentials. A 5xx without an OAuth error body is an outage, not a bad
 * key pair: 502 (see sdk/notes/ernie.md). */
static int eb1_oauth_error(const eb1_inst *in, int status, const json_t *j, lm_err *e)
{
    const char *code = lms_jstr(j, "error");
    const char *desc = lms_jstr(j, "error_description");
    if (!lms_nonempty(code) && (status >= 500 || status == 0))
        lm_err_set(e, LM_EUPSTREAM, 502, "api_error", "oauth_unavailable",
                   "Baidu OAuth token endpoint failed (HTTP %d)", status);
    else
        lm_err_set(e, LM_EUPSTREAM, 401, "authentication_error",
                   lms_nonempty(code) ? code : "oauth_failed", "Baidu OAuth: %s",
                   lms_nonempty(desc)   ? desc
                   : lms_nonempty(code) ? code
                                        : "no access_token in the answer");
    eb1_scrub(in, NULL, e);
    if (LM_HOST_HAS(in->h, log))
        in->h->log(in->ictx, LM_LOG_WARN, "ernie: OAuth token request failed: HTTP %d, %s", status,
                   e->code);
    return LM_EUPSTREAM;
}

int eb1_side_parse(void *istate, const char *name, int status, lm_str body, char **value,
                   int64_t *ttl_s, lm_err *e)
{
    const eb1_inst *in = istate;
    if (!lms_streq(name, EB1_SIDE))
        return lms_bad_request(e, "ernie: unknown side value");
    json_t *j = json_loadb(body.p ? body.p : "", body.n, 0, NULL);
    const char *tok = lms_jstr(j, "access_token");
    int rc = LM_OK;
    if (status != 200 || !lms_nonempty(tok)) {
        rc = eb1_oauth_error(in, status, j, e);
    } else {
        size_t n = strlen(tok);
        const json_t *ttl = json_object_get(j, "expires_in");
        *value = in->h->alloc(n + 1); /* the host frees it */
        if (*value != NULL)
            memcpy(*value, tok, n + 1);
        *ttl_s = json_is_integer(ttl) && json_integer_value(ttl) > 0 ? json_integer_value(ttl) : 0;
        rc = *value ? LM_OK : lms_oom(e);
    }
    json_decref(j);
    return rc;
}

/* HTTP status for a v1 error_code (docs/wire-formats.md 2.1 and the Baidu
 * translation notes). Added: 3 -> 400, 15 (app not exist) -> 403, 336005
 * (API name not exist) -> 404. Anything else: 502. */
static int eb1_status_for_code(json_int_t c)
{
    static const struct {
        int code, status;
    } map[] = {{110, 401},    {111, 401},    {13, 401},     {14, 401},  {6, 403},
               {15, 403},     {336004, 403}, {4, 429},      {17, 429},  {18, 429},
               {19, 429},     {336501, 429}, {336502, 429}, {1, 503},   {2, 503},
               {336000, 503}, {336100, 503}, {3, 400},      {100, 400}, {336001, 400},
               {336002, 400}, {336003, 400}, {336005, 404}, {0, 0}};
    for (size_t i = 0; map[i].code; i++)
        if (map[i].code == c)
            return map[i].status;
    return 502;
}

/* The error code as text: a v1 number, or the code member of an OpenAI
 * error object (number or string). */
static void eb1_code_text(const json_t *v, char *buf, size_t cap)
{
    if (json_is_integer(v))
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
    else
        snprintf(buf, cap, "%s", json_is_string(v) ? json_string_value(v) : "");
}

json_int_t eb1_fill_error(const eb1_inst *in, const eb1_req *rs, const json_t *j, int http_status,
                          lm_err *e)
{
    const json_t *ec = json_object_get(j, "error_code"), *err = json_object_get(j, "error");
    const char *msg, *type = NULL;
    char code[48];
    int st = http_status >= 400 ? http_status : 502;
    json_int_t ret = -1;

    if (json_is_integer(ec) && json_integer_value(ec) != 0) {
        ret = json_integer_value(ec);
        eb1_code_text(ec, code, sizeof code);
        msg = lms_jstr(j, "error_msg");
        if (eb1_status_for_code(ret) != 502 || http_status < 400)
            st = eb1_status_for_code(ret);
    } else if (json_is_string(err)) { /* OAuth style */
        eb1_code_text(err, code, sizeof code);
        msg = lms_jstr(j, "error_description");
    } else if (json_is_object(err)) { /* OpenAI style, from a proxy */
        eb1_code_text(json_object_get(err, "code"), code, sizeof code);
        msg = lms_jstr(err, "message");
        type = lms_jstr(err, "type");
    } else {
        return 0;
    }
    lm_err_set(e, LM_EUPSTREAM, st, lms_nonempty(type) ? type : lm_err_type_for_status(st), code,
               "%s", lms_nonempty(msg) ? msg : "ERNIE (Qianfan v1) returned an error");
    eb1_scrub(in, rs, e);
    return ret;
}

/* 110 (invalid token) and 111 (expired token) are the refusals a fresh token
 * cures. 13/14 are failures of the key pair itself: a new token from the
 * same pair would be refused again, so they are not retried. */
int eb1_refusal(const eb1_inst *in, const eb1_req *rs, json_int_t code, int retry)
{
    if (code != 110 && code != 111)
        return LM_EUPSTREAM;
    if (rs == NULL || rs->token == NULL || !LM_HOST_HAS(in->h, side_invalidate))
        return LM_EUPSTREAM; /* we cannot name the token: a retry would resend it */
    in->h->side_invalidate(in->ictx, EB1_SIDE, lm_cstr(rs->token));
    return retry ? LM_ERETRY : LM_EUPSTREAM;
}
