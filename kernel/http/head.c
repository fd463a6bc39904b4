/* head.c - request head limits, control bytes and body framing, checked
 * before libevhtp sees a request (head.h). Pure: any thread, caller-owned
 * bytes, nothing allocated. */
#include "http/head.h"

#include <string.h>
#include <strings.h>

void lm_head_limits_default(lm_head_limits_t *l, uint64_t max_body)
{
    l->max_line = 8192;
    l->max_field = 8192;
    l->max_fields = 100;
    l->max_head = 32768;
    l->max_body = max_body;
    l->max_body_audio = max_body;
}

static int bad(lm_head_t *h, int status, const char *code, const char *msg)
{
    h->status = status;
    h->code = code;
    h->message = msg;
    return LM_HEAD_BAD;
}

/* NUL and control characters other than tab, and DEL. */
static int is_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int is_tchar(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* The value of a field line, without surrounding blanks. */
static void field_value(const char *line, size_t len, size_t colon, const char **v, size_t *vn)
{
    size_t a = colon + 1, b = len;
    while (a < b && (line[a] == ' ' || line[a] == '\t'))
        a++;
    while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t'))
        b--;
    *v = line + a;
    *vn = b - a;
}

static int parse_length(lm_head_t *h, const char *v, size_t vn)
{
    uint64_t x = 0;
    if (vn == 0)
        return bad(h, 400, "invalid_content_length", "Content-Length is not a number");
    for (size_t i = 0; i < vn; i++) {
        if (v[i] < '0' || v[i] > '9')
            return bad(h, 400, "invalid_content_length", "Content-Length is not a number");
        if (x > (UINT64_MAX - 9) / 10)
            return bad(h, 413, "request_too_large", "request body is larger than max_body_size");
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (h->cl_seen && h->content_length != x)
        return bad(h, 400, "ambiguous_framing", "conflicting Content-Length headers");
    h->cl_seen = 1;
    h->content_length = x;
    return LM_HEAD_MORE;
}

/* One header field line (CR/LF stripped). */
static int field(lm_head_t *h, const char *line, size_t len)
{
    if (line[0] == ' ' || line[0] == '\t')
        return bad(h, 400, "invalid_header", "folded header lines are not accepted");
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line)
        return bad(h, 400, "invalid_header", "a header line has no name");
    size_t nl = (size_t)(colon - line);
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)line[i]))
            return bad(h, 400, "invalid_header", "a header name holds an invalid character");
    for (size_t i = nl + 1; i < len; i++)
        if (is_ctl((unsigned char)line[i]))
            return bad(h, 400, "invalid_header", "a header value holds a control character");
    const char *v;
    size_t vn;
    field_value(line, len, nl, &v, &vn);
    if (nl == 14 && !strncasecmp(line, "Content-Length", 14))
        return parse_length(h, v, vn);
    if (nl == 17 && !strncasecmp(line, "Transfer-Encoding", 17)) {
        if (h->te_seen || vn != 7 || strncasecmp(v, "chunked", 7))
            return bad(h, 400, "unsupported_transfer_encoding",
                       "only Transfer-Encoding: chunked is accepted");
        h->te_seen = 1;
    } else if (nl == 6 && !strncasecmp(line, "Expect", 6)) {
        h->expect_continue = vn == 12 && !strncasecmp(v, "100-continue", 12);
    }
    return LM_HEAD_MORE;
}

static int request_line(lm_head_t *h, const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (is_ctl((unsigned char)line[i]) || line[i] == '\t')
            return bad(h, 400, "invalid_request_line",
                       "the request line holds a control character");
    if (len == 0 || memchr(line, ' ', len) == NULL)
        return bad(h, 400, "invalid_request_line", "malformed request line");
    const char *sp = memchr(line, ' ', len);
    size_t rest = len - (size_t)(sp + 1 - line);
    h->audio = rest >= 10 && memcmp(sp + 1, "/v1/audio/", 10) == 0;
    return LM_HEAD_MORE;
}

static int finish(lm_head_t *h, const lm_head_limits_t *lim)
{
    if (h->te_seen && h->cl_seen)
        return bad(h, 400, "ambiguous_framing",
                   "Content-Length and Transfer-Encoding must not be combined");
    h->body = h->te_seen ? LM_BODY_CHUNKED : h->cl_seen ? LM_BODY_LENGTH : LM_BODY_NONE;
    if (h->body == LM_BODY_LENGTH && h->audio && h->content_length > lim->max_body_audio)
        return bad(h, 413, "request_too_large", "the audio upload is larger than audio_max_bytes");
    if (h->body == LM_BODY_LENGTH && !h->audio && h->content_length > lim->max_body)
        return bad(h, 413, "request_too_large", "request body is larger than max_body_size");
    return LM_HEAD_DONE;
}

int lm_head_scan(const char *p, size_t n, const lm_head_limits_t *lim, lm_head_t *h)
{
    /* Blank lines before a request line are ignored (RFC 9112 2.2). */
    while (!h->started && h->pos < n && (p[h->pos] == '\r' || p[h->pos] == '\n'))
        if (++h->pos > lim->max_head)
            return bad(h, 431, "header_too_large", "the request headers are too large");
    h->skip = h->started ? h->skip : h->pos;
    while (h->pos < n) {
        const char *line = p + h->pos;
        const char *lf = memchr(line, '\n', n - h->pos);
        size_t cap = h->started ? lim->max_field : lim->max_line;
        size_t avail = lf ? (size_t)(lf - line) : n - h->pos;
        size_t len = avail && line[avail - 1] == '\r' ? avail - 1 : avail;
        if (len > cap)
            return h->started ? bad(h, 431, "header_too_large", "a request header is too large")
                              : bad(h, 414, "uri_too_long", "the request line is too long");
        if (h->pos + avail > lim->max_head)
            return bad(h, 431, "header_too_large", "the request headers are too large");
        if (lf == NULL)
            return LM_HEAD_MORE;
        int rc;
        if (!h->started) {
            rc = request_line(h, line, len);
            h->started = 1;
        } else if (len == 0) {
            h->head_len = h->pos + avail + 1;
            return finish(h, lim);
        } else if (++h->nfields > lim->max_fields) {
            return bad(h, 431, "header_too_large", "too many request headers");
        } else {
            rc = field(h, line, len);
        }
        if (rc != LM_HEAD_MORE)
            return rc;
        h->pos += avail + 1;
    }
    return LM_HEAD_MORE;
}

/* ------------------------------------------------------------------------ */
/* chunked bodies                                                            */

enum { CH_SIZE, CH_EXT, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };
#define CH_LINE_MAX 4096

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A size-line byte; 0 goes on, -1 is bad framing. */
static int size_byte(lm_chunked_t *c, char b)
{
    if (++c->line > CH_LINE_MAX)
        return -1;
    if (b == '\n') {
        if (c->digits == 0)
            return -1;
        c->state = c->left ? CH_DATA : CH_TRAILER;
        c->line = 0;
        c->digits = 0;
        return 0;
    }
    if (c->state == CH_EXT || b == '\r')
        return 0;
    if (b == ';' || b == ' ' || b == '\t') {
        c->state = CH_EXT;
        return 0;
    }
    int v = hexval(b);
    if (v < 0 || c->left > (UINT64_MAX >> 4))
        return -1;
    c->left = (c->left << 4) | (uint64_t)v;
    c->digits++;
    return 0;
}

size_t lm_chunked_feed(lm_chunked_t *c, const char *p, size_t n, uint64_t max_body, int *done,
                       int *too_big)
{
    size_t i = 0;
    *done = 0;
    *too_big = 0;
    while (i < n && c->state != CH_DONE) {
        switch (c->state) {
        case CH_SIZE:
        case CH_EXT:
            if (size_byte(c, p[i++]) < 0)
                return (size_t)-1;
            if (c->state == CH_DATA && c->total + c->left > max_body) {
                *too_big = 1;
                return (size_t)-1;
            }
            break;
        case CH_DATA: {
            size_t k = n - i < c->left ? n - i : (size_t)c->left;
            c->left -= k;
            c->total += k;
            i += k;
            if (c->left == 0)
                c->state = CH_DATA_END;
            break;
        }
        case CH_DATA_END:
            if (p[i] == '\r' && c->line == 0) {
                c->line = 1;
            } else if (p[i] == '\n') {
                c->state = CH_SIZE;
                c->line = 0;
            } else {
                return (size_t)-1;
            }
            i++;
            break;
        default: /* CH_TRAILER: lines until an empty one */
            if (p[i] == '\n') {
                if (c->line == 0 || (c->line == 1 && c->cr))
                    c->state = CH_DONE;
                c->line = 0;
                c->cr = 0;
            } else if (++c->line > CH_LINE_MAX) {
                return (size_t)-1;
            } else {
                c->cr = p[i] == '\r';
            }
            i++;
        }
    }
    *done = c->state == CH_DONE;
    return i;
}
