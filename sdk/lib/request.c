/* request.c - channel config, the upstream POST, merged turns and the
 * OpenAI tool fields as a provider reads them (lmsdk.h). */
#include "lmsdk.h"

#include <string.h>

static int cfg_err(lm_err *e, const char *key, const char *why)
{
    return lm_err_set(e, LM_EINVAL, 500, "api_error", NULL, "%s %s", key, why);
}

int lms_cfg_text(const lm_host_api *h, void *ictx, const char *key, const char *dflt, int required,
                 lm_str *out, lm_err *e)
{
    if (h->cfg_str(ictx, key, out) != LM_OK || out->n == 0)
        *out = lm_cstr(dflt ? dflt : "");
    if (out->n == 0 && required)
        return cfg_err(e, key, "is required");
    for (size_t i = 0; i < out->n; i++) {
        unsigned char ch = (unsigned char)out->p[i];
        if (ch < 0x20 || ch == 0x7f)
            return cfg_err(e, key, "contains control characters");
    }
    return LM_OK;
}

int lms_cfg_base_url(const lm_host_api *h, void *ictx, const char *dflt, lm_str *out, lm_err *e)
{
    lm_str s;
    int rc = lms_cfg_text(h, ictx, "base_url", dflt, 1, &s, e);
    if (rc != LM_OK)
        return rc;
    while (s.n > 0 && s.p[s.n - 1] == '/')
        s.n--;
    if (!((s.n > 7 && strncmp(s.p, "http://", 7) == 0) ||
          (s.n > 8 && strncmp(s.p, "https://", 8) == 0)) ||
        memchr(s.p, '?', s.n) != NULL)
        return cfg_err(e, "base_url", "must be an absolute http(s) URL without a query");
    *out = s;
    return LM_OK;
}

int lms_istate(const lm_host_api *h, const void *is, size_t n, void **istate, lm_err *e)
{
    void *p = h->alloc(n);
    if (p == NULL)
        return lms_oom(e);
    memcpy(p, is, n);
    *istate = p;
    return LM_OK;
}

void lms_fini(void *istate)
{
    const lm_host_api *h;
    if (istate == NULL)
        return;
    memcpy(&h, istate, sizeof(h)); /* the first member (lms_istate) */
    h->free(istate);
}

int lms_post_json(const lm_host_api *h, lm_ureq *u, lm_str base, const char *path,
                  const lms_header *hdrs, json_t *body, lm_err *e)
{
    lms_buf url = {0};
    lms_buf_add(&url, base.p, base.n);
    lms_buf_adds(&url, path);
    int rc = url.oom ? LM_ENOMEM : h->ureq_set_method(u, "POST");
    if (rc >= 0)
        rc = h->ureq_set_url(u, (lm_str){url.p, url.n});
    lms_buf_free(&url);
    for (; rc >= 0 && hdrs && hdrs->name; hdrs++)
        rc = h->ureq_add_header(u, lm_cstr(hdrs->name), hdrs->value);
    if (rc < 0) {
        json_decref(body);
        return lm_err_set(e, rc, 500, "api_error", NULL, "cannot build the upstream request");
    }
    rc = h->ureq_set_json_body(u, body);
    return rc < 0 ? lm_err_set(e, rc, 500, "api_error", NULL, "cannot set the upstream body")
                  : LM_OK;
}

int lms_post_json_auth(const lm_host_api *h, lm_ureq *u, lm_str base, const char *path,
                       const char *auth, json_t *body, lm_err *e)
{
    lms_header hdrs[2] = {{auth ? "Authorization" : NULL, lm_cstr(auth)}, {NULL, {NULL, 0}}};
    return lms_post_json(h, u, base, path, hdrs, body, e);
}

int lms_push_turn(json_t *turns, const char *role, const char *key, json_t *items, lm_err *e)
{
    size_t n = json_array_size(turns);
    json_t *last = n ? json_array_get(turns, n - 1) : NULL;
    int rc = 0;
    if (items == NULL)
        return lms_oom(e);
    if (json_array_size(items) == 0)
        json_decref(items);
    else if (last && lms_streq(lms_jstr(last, "role"), role)) {
        rc = json_array_extend(json_object_get(last, key), items);
        json_decref(items);
    } else
        rc = lms_aadd(turns, json_pack("{s:s,s:o}", "role", role, key, items));
    return rc ? lms_oom(e) : LM_OK;
}

json_t *lms_call_args(const json_t *function, lm_err *e)
{
    const json_t *a = json_object_get(function, "arguments");
    const char *name = lms_jstr(function, "name");
    json_t *o = NULL;
    if (json_is_object(a))
        o = json_deep_copy(a);
    else if (a == NULL || json_is_null(a) || json_is_string(a))
        o = lms_tool_args_object(json_string_value(a));
    if (o == NULL)
        lms_bad_request(e, "tool call '%s': function.arguments must be a JSON object",
                        name ? name : "");
    return o;
}

json_t *lms_functions(const json_t *tools, const char *params_key, lm_err *e)
{
    json_t *out = json_array(), *t;
    size_t i;
    if (out == NULL) {
        lms_oom(e);
        return NULL;
    }
    json_array_foreach (tools, i, t) {
        json_t *fn = json_object_get(t, "function"), *d;
        json_t *desc = json_object_get(fn, "description"),
               *params = json_object_get(fn, "parameters");
        if (!lms_streq(lms_jstr(t, "type"), "function"))
            continue;
        if (lms_jstr(fn, "name") == NULL) {
            json_decref(out);
            lms_bad_request(e, "tools[%zu].function.name is required", i);
            return NULL;
        }
        d = json_pack("{s:O}", "name", json_object_get(fn, "name"));
        if (d && json_is_string(desc))
            json_object_set(d, "description", desc);
        if (d && json_is_object(params))
            json_object_set(d, params_key, params);
        if (lms_aadd(out, d) < 0) {
            json_decref(out);
            lms_oom(e);
            return NULL;
        }
    }
    return out;
}

int lms_tool_choice(const json_t *tc, const char **name, lm_err *e)
{
    static const char *const modes[] = {"auto", "none", "required"};
    *name = NULL;
    if (tc == NULL || json_is_null(tc))
        return LMS_TC_UNSET;
    for (int i = 0; i < 3; i++)
        if (lms_streq(json_string_value(tc), modes[i]))
            return LMS_TC_AUTO + i;
    *name = lms_jstr(json_object_get(tc, "function"), "name");
    if (json_is_object(tc) && *name != NULL)
        return LMS_TC_FUNCTION;
    return lms_bad_request(e, "tool_choice must be auto, none, required or "
                              "{\"type\":\"function\",\"function\":{\"name\":...}}");
}
