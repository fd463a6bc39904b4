/* p1_ureq.c - the upstream request of a JSON API (lmsdk_p1.h). */
#include "lmsdk_p1.h"

int lms_p1_post_json(const lm_host_api *h, lm_ureq *u, lm_str base, const char *path,
                     const char *auth, json_t *body, lm_err *e)
{
    lms_buf url = {0};
    lms_buf_addf(&url, "%.*s%s", (int)base.n, base.p, path);
    int rc = url.oom ? LM_ENOMEM : h->ureq_set_url(u, (lm_str){url.p, url.n});
    lms_buf_free(&url);
    if (rc >= 0 && auth != NULL)
        rc = h->ureq_add_header(u, LM_STR("Authorization"), lm_cstr(auth));
    if (rc >= 0)
        return h->ureq_set_json_body(u, body) < 0 ? lms_oom(e) : LM_OK;
    json_decref(body);
    return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "the upstream request cannot be built");
}
