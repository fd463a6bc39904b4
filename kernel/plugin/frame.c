/* frame.c - incremental SSE / NDJSON splitter (frame.h). Thread: the
 * request's worker; events passed to the callback are borrowed for the
 * call; the splitter owns its remainder buffer (lm_frame_free). */
#include "plugin/frame.h"

#include <string.h>

void lm_frame_init(lm_frame_t *f, int framing, size_t max_event)
{
    memset(f, 0, sizeof(*f));
    f->framing = framing;
    f->max_event = max_event ? max_event : LM_FRAME_MAX_EVENT;
}

void lm_frame_free(lm_frame_t *f)
{
    lm_buf_free(&f->line);
    lm_buf_free(&f->data);
    lm_buf_free(&f->event);
    lm_buf_free(&f->id);
}

size_t lm_frame_pending(const lm_frame_t *f)
{
    return f->line.len + f->data.len;
}

static int dispatch_sse(lm_frame_t *f, lm_frame_cb cb, void *arg)
{
    int rc = 0;
    if (f->has_data) {
        lm_event ev = {{lm_buf_cstr(&f->event), f->event.len},
                       {lm_buf_cstr(&f->data), f->data.len},
                       {lm_buf_cstr(&f->id), f->id.len}};
        rc = cb(arg, &ev);
    }
    f->has_data = 0;
    lm_buf_reset(&f->data);
    lm_buf_reset(&f->event);
    lm_buf_reset(&f->id);
    return rc;
}

/* Set `dst` to the field value: the text after ':' minus one leading space. */
static int field_value(lm_buf_t *dst, const char *v, size_t n, int append)
{
    if (n && v[0] == ' ') {
        v++;
        n--;
    }
    if (!append)
        lm_buf_reset(dst);
    return lm_buf_add(dst, v, n);
}

static int sse_line(lm_frame_t *f, const char *p, size_t n, lm_frame_cb cb, void *arg)
{
    if (n == 0)
        return dispatch_sse(f, cb, arg);
    if (p[0] == ':')
        return 0;
    const char *colon = memchr(p, ':', n);
    size_t nlen = colon ? (size_t)(colon - p) : n;
    const char *val = colon ? colon + 1 : p + n;
    size_t vlen = colon ? n - nlen - 1 : 0;

    if (nlen == 4 && memcmp(p, "data", 4) == 0) {
        if (f->has_data && lm_buf_add(&f->data, "\n", 1) < 0)
            return LM_ENOMEM;
        if (field_value(&f->data, val, vlen, 1) < 0)
            return LM_ENOMEM;
        f->has_data = 1;
        if (f->data.len > f->max_event)
            return LM_ERR;
    } else if (nlen == 5 && memcmp(p, "event", 5) == 0) {
        if (vlen > 256 || field_value(&f->event, val, vlen, 0) < 0)
            return LM_ERR;
    } else if (nlen == 2 && memcmp(p, "id", 2) == 0) {
        if (vlen > 256 || field_value(&f->id, val, vlen, 0) < 0)
            return LM_ERR;
    }
    /* "retry" and unknown fields are ignored, as the SSE spec says. */
    return 0;
}

static int ndjson_line(const char *p, size_t n, lm_frame_cb cb, void *arg)
{
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n == 0)
        return 0;
    lm_event ev = {{"", 0}, {p, n}, {"", 0}};
    return cb(arg, &ev);
}

static int on_line(lm_frame_t *f, const char *p, size_t n, lm_frame_cb cb, void *arg)
{
    if (f->framing == LM_FRAME_NDJSON)
        return ndjson_line(p, n, cb, arg);
    return sse_line(f, p, n, cb, arg);
}

/* The first CR or LF at or after p, or end: two memchr (vectorised) rather
 * than a test per byte, as most bytes of a stream are event text. */
static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p)), *stop = nl ? nl : end;
    const char *cr = memchr(p, '\r', (size_t)(stop - p));
    return cr ? cr : stop;
}

int lm_frame_feed(lm_frame_t *f, const char *p, size_t n, lm_frame_cb cb, void *arg)
{
    const char *end = p + n;
    int rc;

    while (p < end) {
        if (f->skip_lf) {
            f->skip_lf = 0;
            if (*p == '\n') {
                p++;
                continue;
            }
        }
        const char *q = line_end(p, end);
        if (q == end) { /* incomplete line: keep it */
            if (f->line.len + (size_t)(end - p) > f->max_event)
                return LM_ERR;
            if (lm_buf_add(&f->line, p, (size_t)(end - p)) < 0)
                return LM_ENOMEM;
            return 0;
        }
        if (*q == '\r')
            f->skip_lf = 1;
        if (f->line.len) {
            if (f->line.len + (size_t)(q - p) > f->max_event)
                return LM_ERR;
            if (lm_buf_add(&f->line, p, (size_t)(q - p)) < 0)
                return LM_ENOMEM;
            rc = on_line(f, f->line.p, f->line.len, cb, arg);
            lm_buf_reset(&f->line);
        } else {
            if ((size_t)(q - p) > f->max_event)
                return LM_ERR;
            rc = on_line(f, p, (size_t)(q - p), cb, arg);
        }
        if (rc != 0)
            return rc;
        p = q + 1;
    }
    return 0;
}

int lm_frame_finish(lm_frame_t *f, lm_frame_cb cb, void *arg)
{
    int rc = 0;
    if (f->line.len) {
        rc = on_line(f, f->line.p, f->line.len, cb, arg);
        lm_buf_reset(&f->line);
        if (rc != 0)
            return rc;
    }
    if (f->framing == LM_FRAME_SSE)
        rc = dispatch_sse(f, cb, arg);
    return rc;
}
