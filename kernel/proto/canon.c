/* canon.c - capability checks and parameter clamping per channel
 * (canon.h). Pure; the caller owns canon and the prep. */
#include "proto/canon.h"

#include "plugin/endpoints.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* An operation the provider lacks is LM_ENOTSUP; a request it cannot
 * translate (tools, images, n) is LM_EINVAL, as plugins answered before. */
static int refuse(lm_err *e, const char *code, const char *msg)
{
    int op = !strcmp(code, "stream_unsupported") || !strcmp(code, "model_not_supported");
    return lm_err_set(e, op ? LM_ENOTSUP : LM_EINVAL, 400, "invalid_request_error", code, "%s",
                      msg);
}

/* The first image part of any message, named for the error: -1 if none. */
static int find_image(const json_t *canon, char *where, size_t n)
{
    size_t i, j;
    json_t *m, *part;
    json_array_foreach (json_object_get(canon, "messages"), i, m) {
        json_array_foreach (json_object_get(m, "content"), j, part) {
            const char *t = json_string_value(json_object_get(part, "type"));
            if (t &&
                (!strcmp(t, "image_url") || !strcmp(t, "input_image") || !strcmp(t, "image"))) {
                snprintf(where, n, "messages[%zu].content[%zu]", i, j);
                return 0;
            }
        }
    }
    return -1;
}

static int check_caps(const lm_provider *vt, int op, int stream, const json_t *canon, lm_err *e)
{
    char where[64], msg[160];
    if (stream && !(vt->caps & LM_CAP_STREAM))
        return refuse(e, "stream_unsupported", "this model does not support streaming");
    if (op != LM_OP_CHAT && op != LM_OP_EMBED) /* 1.3 endpoints: declared, or a 400 naming it */
        return lm_endpoint_check(vt, op, e);
    if (op == LM_OP_EMBED)
        return (vt->caps & LM_CAP_EMBED)
                   ? 0
                   : refuse(e, "model_not_supported", "this model does not support embeddings");
    if (!(vt->caps & LM_CAP_TOOLS) && (json_array_size(json_object_get(canon, "tools")) > 0 ||
                                       json_array_size(json_object_get(canon, "functions")) > 0))
        return refuse(e, "tools_unsupported", "tools: this model does not support tool calling");
    if (!(vt->caps & LM_CAP_VISION) && find_image(canon, where, sizeof(where)) == 0) {
        snprintf(msg, sizeof(msg), "%s: this model does not take images", where);
        return refuse(e, "vision_unsupported", msg);
    }
    json_t *n = json_object_get(canon, "n");
    /* a 1.0/1.1 table has no flags: those plugins decide for themselves */
    if (json_is_integer(n) && json_integer_value(n) > 1 && vt->hdr.minor >= 2 &&
        !(vt->flags & LM_PF_MULTI_CHOICE))
        return refuse(e, "n_unsupported", "n: this model returns one choice per request (n = 1)");
    return 0;
}

static void note_clamp(lm_canon_prep_t *out, const char *name, double from, double to)
{
    size_t len = strlen(out->clamped);
    if (len + 1 < sizeof(out->clamped))
        snprintf(out->clamped + len, sizeof(out->clamped) - len, "%s%s=%g->%g", len ? ", " : "",
                 name, from, to);
}

static int clamp(const lm_provider *vt, lm_canon_prep_t *out, lm_err *e)
{
    for (const lm_param_range *r = vt->param_ranges; r && r->name; r++) {
        json_t *v = json_object_get(out->canon, r->name);
        if (!json_is_number(v))
            continue;
        double d = json_number_value(v), to = d < r->min ? r->min : d > r->max ? r->max : d;
        if (to == d || !isfinite(to))
            continue;
        if (!out->own) { /* top-level values only change: a shallow copy is enough */
            out->canon = json_copy(out->canon);
            out->own = 1;
            if (out->canon == NULL)
                return lm_err_set(e, LM_ENOMEM, 500, "api_error", NULL, "out of memory");
        }
        /* an integer parameter (max_tokens, top_k) stays an integer */
        json_object_set_new(out->canon, r->name,
                            json_is_integer(v) && to == (double)(json_int_t)to
                                ? json_integer((json_int_t)to)
                                : json_real(to));
        note_clamp(out, r->name, d, to);
    }
    return 0;
}

int lm_canon_prepare(const lm_provider *vt, int op, int stream, json_t *canon, lm_canon_prep_t *out,
                     lm_err *e)
{
    memset(out, 0, sizeof(*out));
    out->canon = canon;
    int rc = check_caps(vt, op, stream, canon, e);
    if (rc == 0 && vt->hdr.minor >= 2)
        rc = clamp(vt, out, e);
    return rc;
}

void lm_canon_prep_free(lm_canon_prep_t *p)
{
    if (p->own)
        json_decref(p->canon);
    memset(p, 0, sizeof(*p));
}

int lm_canon_take_encoding(json_t *canon)
{
    const char *f = json_string_value(json_object_get(canon, "encoding_format"));
    int b64 = f && strcmp(f, "base64") == 0;
    json_object_del(canon, "encoding_format");
    return b64;
}
