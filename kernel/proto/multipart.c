/* multipart.c - multipart/form-data read in place (multipart.h). Pure. */
#include "proto/multipart.h"

#include <string.h>
#include <strings.h>

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* One parameter value at s (quoted-string or token) up to end: its slice
 * (quotes dropped, escapes kept) and where parsing goes on. */
static const char *param_value(const char *s, const char *end, lm_str *v)
{
    if (s < end && *s == '"') {
        const char *b = ++s;
        while (s < end && *s != '"')
            s += (*s == '\\' && s + 1 < end) ? 2 : 1;
        *v = (lm_str){b, (size_t)((s < end ? s : end) - b)};
        return s < end ? s + 1 : end;
    }
    const char *b = s;
    while (s < end && *s != ';' && !is_ws(*s))
        s++;
    *v = (lm_str){b, (size_t)(s - b)};
    return s;
}

/* The parameter `want` of a header value's "; a=b; c=d" list. */
static int param(const char *s, const char *end, const char *want, lm_str *out)
{
    size_t wn = strlen(want);
    while (s < end) {
        while (s < end && (is_ws(*s) || *s == ';'))
            s++;
        const char *k = s;
        while (s < end && *s != '=' && *s != ';')
            s++;
        const char *ke = s;
        while (ke > k && is_ws(ke[-1]))
            ke--;
        if (s >= end || *s == ';')
            continue;
        s++; /* '=' */
        while (s < end && is_ws(*s))
            s++;
        lm_str v;
        s = param_value(s, end, &v);
        if ((size_t)(ke - k) == wn && strncasecmp(k, want, wn) == 0) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* s..end starts with the media type or disposition `kind`, then ws, ';' or the end. */
static const char *starts_kind(const char *s, const char *end, const char *kind)
{
    size_t k = strlen(kind);
    while (s < end && is_ws(*s))
        s++;
    if ((size_t)(end - s) < k || strncasecmp(s, kind, k) != 0)
        return NULL;
    s += k;
    return s == end || is_ws(*s) || *s == ';' ? s : NULL;
}

int lm_mp_boundary(const char *ctype, char *out, size_t outlen)
{
    if (ctype == NULL)
        return -1;
    const char *end = ctype + strlen(ctype);
    const char *s = starts_kind(ctype, end, "multipart/form-data");
    lm_str b;
    if (s == NULL || !param(s, end, "boundary", &b) || b.n == 0 || b.n > LM_MP_BOUNDARY_MAX ||
        b.n + 1 > outlen)
        return -1;
    for (size_t i = 0; i < b.n; i++)
        if ((unsigned char)b.p[i] < 0x20 || (unsigned char)b.p[i] > 0x7e)
            return -1;
    memcpy(out, b.p, b.n);
    out[b.n] = '\0';
    return (int)b.n;
}

/* The part head [h, he): Content-Disposition (form-data, name, filename)
 * and Content-Type. 0, or -1 without a form-data name. */
static int part_head(const char *h, const char *he, lm_mp_part_t *p)
{
    int named = 0;
    while (h < he) {
        const char *eol = memmem(h, (size_t)(he - h), "\r\n", 2);
        const char *le = eol ? eol : he, *colon = memchr(h, ':', (size_t)(le - h));
        if (colon) {
            size_t kn = (size_t)(colon - h);
            const char *v = colon + 1;
            if (kn == 19 && strncasecmp(h, "Content-Disposition", kn) == 0) {
                const char *s = starts_kind(v, le, "form-data");
                if (s && param(s, le, "name", &p->name))
                    named = 1;
                if (s)
                    p->has_filename = param(s, le, "filename", &p->filename);
            } else if (kn == 12 && strncasecmp(h, "Content-Type", kn) == 0) {
                while (v < le && is_ws(*v))
                    v++;
                p->ctype = (lm_str){v, (size_t)(le - v)};
            }
        }
        h = eol ? eol + 2 : he;
    }
    return named ? 0 : -1;
}

/* A delimiter ends a line: "--" (the close) or padding then CRLF follow. */
static int delim_ends(const char *p, const char *end)
{
    if (end - p >= 2 && p[0] == '-' && p[1] == '-')
        return 1;
    while (p < end && is_ws(*p))
        p++;
    return end - p >= 2 && p[0] == '\r' && p[1] == '\n';
}

/* The next delimiter at or after p, or NULL. "\r\n--boundary" followed by
 * anything else is data (a file may hold it; RFC 2046 forbids it, clients
 * differ). */
static const char *next_delim(const char *p, const char *end, const char *delim, size_t dn)
{
    while (p < end) {
        const char *d = memmem(p, (size_t)(end - p), delim, dn);
        if (d == NULL || delim_ends(d + dn, end))
            return d;
        p = d + 1;
    }
    return NULL;
}

static int fail(const char **why, const char *msg)
{
    *why = msg;
    return -1;
}

int lm_mp_parse(const char *body, size_t n, const char *boundary, lm_mp_part_fn fn, void *arg,
                const char **why)
{
    char delim[LM_MP_BOUNDARY_MAX + 5] = "\r\n--";
    size_t bn = strlen(boundary), dn = bn + 4;
    if (bn == 0 || bn > LM_MP_BOUNDARY_MAX)
        return fail(why, "the multipart boundary is invalid");
    memcpy(delim + 4, boundary, bn);
    const char *end = body + n, *pos;
    if (n >= dn - 2 && memcmp(body, delim + 2, dn - 2) == 0) {
        pos = body + dn - 2;
    } else { /* a preamble before the first delimiter */
        const char *d = next_delim(body, end, delim, dn);
        if (d == NULL)
            return fail(why, "the body is not multipart/form-data with the declared boundary");
        pos = d + dn;
    }
    for (int nparts = 0;; nparts++) {
        if (end - pos >= 2 && pos[0] == '-' && pos[1] == '-')
            return 0; /* the closing delimiter; an epilogue is ignored */
        if (nparts == LM_MP_PARTS_MAX)
            return fail(why, "the form has too many parts");
        while (pos < end && is_ws(*pos))
            pos++; /* transport padding */
        if (end - pos < 2 || pos[0] != '\r' || pos[1] != '\n')
            return fail(why, "a multipart delimiter is not followed by a line end");
        const char *h = pos + 2, *he, *data;
        size_t look =
            (size_t)(end - h) < LM_MP_HEAD_MAX + 4 ? (size_t)(end - h) : LM_MP_HEAD_MAX + 4;
        if (look >= 2 && h[0] == '\r' && h[1] == '\n') {
            he = h; /* a part without headers */
            data = h + 2;
        } else {
            const char *blank = look >= 4 ? memmem(h, look, "\r\n\r\n", 4) : NULL;
            if (blank == NULL)
                return fail(why, "a form part's headers are too long or do not end");
            he = blank;
            data = blank + 4;
        }
        lm_mp_part_t part = {{"", 0}, {"", 0}, 0, {"", 0}, {"", 0}};
        if (part_head(h, he, &part) < 0)
            return fail(why, "a form part has no Content-Disposition: form-data name");
        const char *de = next_delim(data, end, delim, dn);
        if (de == NULL)
            return fail(why, "the form has no closing delimiter");
        part.data = (lm_str){data, (size_t)(de - data)};
        int rc = fn(arg, &part);
        if (rc != 0)
            return rc;
        pos = de + dn;
    }
}
