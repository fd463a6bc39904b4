/* content.c - message content flattening and data URLs (lmsdk.h). */
#include "lmsdk.h"

#include <string.h>

int lms_content_text(const json_t *content, int mode, const char *where, lms_buf *out, lm_err *e)
{
    size_t i, ntext = 0;
    json_t *part;
    const char *w = where ? where : "content";

    if (content == NULL || json_is_null(content))
        return LM_OK;
    if (json_is_string(content)) {
        lms_buf_add(out, json_string_value(content), json_string_length(content));
        return out->oom ? lms_oom(e) : LM_OK;
    }
    if (!json_is_array(content))
        return lms_bad_request(e, "%s must be a string or an array of content parts", w);
    json_array_foreach (content, i, part) {
        const char *type = lms_jstr(part, "type");
        const json_t *text = json_object_get(part, "text");
        if (lms_streq(type, "text") && json_is_string(text)) {
            if (ntext++)
                lms_buf_adds(out, LMS_TEXT_JOIN);
            lms_buf_add(out, json_string_value(text), json_string_length(text));
        } else if (lms_streq(type, "text")) {
            return lms_bad_request(e, "%s[%zu].text must be a string", w, i);
        } else if (mode == LMS_TEXT_ONLY) {
            return lms_unsupported(e, "%s[%zu]: this model takes text parts only, not \"%s\"", w, i,
                                   type ? type : "(no type)");
        }
    }
    return out->oom ? lms_oom(e) : LM_OK;
}

json_t *lms_content_string(const json_t *content, int mode, const char *where, lm_err *e)
{
    lms_buf b = {0};
    json_t *s = NULL;
    if (lms_content_text(content, mode, where, &b, e) == LM_OK) {
        s = lms_buf_json(&b);
        if (s == NULL)
            lms_oom(e);
    }
    lms_buf_free(&b);
    return s;
}

int lms_content_has_image(const json_t *content)
{
    size_t i;
    json_t *part;
    if (!json_is_array(content))
        return 0;
    json_array_foreach (content, i, part) {
        const char *type = lms_jstr(part, "type");
        if (lms_streq(type, "image_url") || lms_streq(type, "input_image") ||
            lms_streq(type, "image"))
            return 1;
    }
    return 0;
}

const char *lms_image_url(const json_t *part)
{
    const json_t *iu = json_object_get(part, "image_url");
    if (json_is_object(iu))
        iu = json_object_get(iu, "url");
    return json_is_string(iu) ? json_string_value(iu) : NULL;
}

int lms_data_url_parse(const char *url, lms_data_url *out)
{
    if (url == NULL || strncmp(url, "data:", 5) != 0)
        return -1;
    const char *type = url + 5, *comma = strchr(type, ',');
    if (comma == NULL)
        return -1;
    const char *semi = memchr(type, ';', (size_t)(comma - type));
    size_t tn = (size_t)((semi ? semi : comma) - type);
    out->media_type = (lm_str){type, tn};
    out->is_base64 =
        semi != NULL && (size_t)(comma - semi) >= 7 && memcmp(comma - 7, ";base64", 7) == 0;
    out->data = (lm_str){comma + 1, strlen(comma + 1)};
    if (tn == 0 || memchr(type, '/', tn) == NULL)
        return -1; /* a media type is type/subtype */
    return 0;
}
