/*
 * spool.c - the usage spool's record format and its file (spool.h). The
 * format functions are pure (any thread); the file functions are called by
 * the writer thread, or by open before it starts. Buffers returned are new
 * and the caller's.
 */
#include "store/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NINTS     12
#define NSTRS     6
#define OLD_STRS  5                          /* records written before the api string */
#define PAY_MIN   (NINTS * 8 + OLD_STRS * 4) /* the smallest payload decode takes */
#define PAY_BASE  (NINTS * 8 + NSTRS * 4)    /* what put writes before the strings */
#define REQID_MAX 256

static const unsigned char magic[4] = {'L', 'M', 'S', '1'};

/* CRC-32 (IEEE, reflected), bitwise: records are small and rare. */
static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(unsigned char *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(u >> (8 * i));
}

static int64_t get64(const unsigned char *p)
{
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--)
        u = u << 8 | p[i];
    return (int64_t)u;
}

/* The row's strings in record order. */
static void strs_of(const lm_usage_row_t *r, const char *s[NSTRS])
{
    s[0] = r->request_id;
    s[1] = r->channel;
    s[2] = r->model_asked;
    s[3] = r->model_served;
    s[4] = r->usage_json;
    s[5] = r->api;
}

size_t lm_spool_size(const lm_usage_row_t *row)
{
    const char *s[NSTRS];
    strs_of(row, s);
    if (s[0] == NULL || s[0][0] == '\0' || strlen(s[0]) > REQID_MAX)
        return 0;
    size_t n = PAY_BASE;
    for (int i = 0; i < NSTRS; i++) {
        if (s[i] && (n += strlen(s[i]) + 1) > LM_SPOOL_REC_MAX)
            return 0;
    }
    return LM_SPOOL_HEAD + n;
}

void lm_spool_put(const lm_usage_row_t *row, unsigned char *out)
{
    const int64_t ints[NINTS] = {row->attempt,
                                 row->key_id,
                                 row->prompt_tokens,
                                 row->completion_tokens,
                                 row->cached_tokens,
                                 row->reasoning_tokens,
                                 row->cost,
                                 row->latency_ms,
                                 row->ttft_ms,
                                 row->status,
                                 (row->client_aborted ? 1 : 0) | (row->cached ? 2 : 0),
                                 row->created_ms};
    const char *s[NSTRS];
    strs_of(row, s);
    unsigned char *pay = out + LM_SPOOL_HEAD, *p = pay;
    for (int i = 0; i < NINTS; i++, p += 8)
        put64(p, ints[i]);
    for (int i = 0; i < NSTRS; i++) {
        size_t n = s[i] ? strlen(s[i]) + 1 : 0;
        put32(p, (uint32_t)n);
        memcpy(p + 4, s[i] ? s[i] : "", n);
        p += 4 + n;
    }
    size_t plen = (size_t)(p - pay);
    memcpy(out, magic, 4);
    put32(out + 4, (uint32_t)plen);
    put32(out + 8, crc32_of(pay, plen));
}

/* ------------------------------------------------------------------------ */
/* scan                                                                      */

/* Decode one payload whose CRC matched; 0, or -1 if it is not a row. */
static int decode(const unsigned char *p, size_t n, lm_usage_row_t *r)
{
    int64_t v[NINTS];
    const char *s[NSTRS];
    if (n < PAY_MIN)
        return -1;
    for (int i = 0; i < NINTS; i++)
        v[i] = get64(p + 8 * i);
    size_t off = NINTS * 8;
    for (int i = 0; i < NSTRS; i++) {
        s[i] = NULL;
        if (i == OLD_STRS && off == n)
            break; /* an older record: no api string (chat) */
        if (n - off < 4)
            return -1;
        size_t len = get32(p + off);
        off += 4;
        if (len > n - off || (len && p[off + len - 1] != '\0'))
            return -1;
        s[i] = len ? (const char *)p + off : NULL;
        off += len;
    }
    if (off != n || s[0] == NULL || s[0][0] == '\0' || strlen(s[0]) > REQID_MAX || v[0] < 0 ||
        v[6] < 0)
        return -1;
    *r = (lm_usage_row_t){.request_id = s[0],
                          .attempt = v[0],
                          .key_id = v[1],
                          .channel = s[1],
                          .model_asked = s[2],
                          .model_served = s[3],
                          .prompt_tokens = v[2],
                          .completion_tokens = v[3],
                          .cached_tokens = v[4],
                          .reasoning_tokens = v[5],
                          .cost = v[6],
                          .latency_ms = v[7],
                          .ttft_ms = v[8],
                          .status = v[9],
                          .client_aborted = (v[10] & 1) != 0,
                          .cached = (v[10] & 2) != 0,
                          .usage_json = s[4],
                          .api = s[5],
                          .created_ms = v[11]};
    return 0;
}

/* The offset of the next magic at or after from, or len. */
static size_t next_magic(const unsigned char *buf, size_t len, size_t from)
{
    if (from >= len)
        return len;
    const unsigned char *m = memmem(buf + from, len - from, magic, sizeof(magic));
    return m ? (size_t)(m - buf) : len;
}

int lm_spool_scan(const unsigned char *buf, size_t len,
                  int (*each)(void *arg, const lm_usage_row_t *row), void *arg,
                  lm_spool_stats_t *stats)
{
    lm_spool_stats_t st = {0, 0, 0};
    size_t off = 0;
    int rc = 0;
    while (off < len) {
        size_t at = next_magic(buf, len, off);
        if (at == len && len - off < sizeof(magic) && !memcmp(buf + off, magic, len - off)) {
            st.torn += len - off; /* the start of a magic: a torn head */
            break;
        }
        st.skipped += at - off;
        if ((off = at) == len)
            break;
        if (len - off < LM_SPOOL_HEAD) {
            st.torn += len - off;
            break;
        }
        size_t plen = get32(buf + off + 4);
        if (plen > LM_SPOOL_REC_MAX || plen < PAY_MIN) {
            st.skipped += 1; /* not a record head: look for the next one */
            off += 1;
            continue;
        }
        if (plen > len - off - LM_SPOOL_HEAD) {
            /* incomplete: the torn last append, unless a record follows */
            size_t nx = next_magic(buf, len, off + 1);
            if (nx == len) {
                st.torn += len - off;
                break;
            }
            st.skipped += nx - off;
            off = nx;
            continue;
        }
        const unsigned char *pay = buf + off + LM_SPOOL_HEAD;
        lm_usage_row_t row;
        if (crc32_of(pay, plen) != get32(buf + off + 8) || decode(pay, plen, &row) != 0) {
            st.skipped += 1;
            off += 1;
            continue;
        }
        off += LM_SPOOL_HEAD + plen;
        st.records++;
        if ((rc = each(arg, &row)) != 0)
            break;
    }
    if (stats)
        *stats = st;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the file                                                                  */

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL)
        return -1;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int lm_spool_append(const char *path, const unsigned char *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    struct stat sb;
    off_t was = fstat(fd, &sb) == 0 ? sb.st_size : -1;
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, buf + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            if (was >= 0 && ftruncate(fd, was) == 0) /* no torn record left behind */
                (void)fsync(fd);
            close(fd);
            errno = e;
            return -1;
        }
        done += (size_t)w;
    }
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc == 0 && was == 0)
        rc = fsync_dir_of(path); /* a new file: its directory entry must last too */
    errno = e;
    return rc == 0 ? 0 : -1;
}

int lm_spool_read(const char *path, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || sb.st_size < 0) {
        close(fd);
        return -1;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    unsigned char *buf = malloc(n ? n : 1);
    if (buf == NULL) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* shorter than fstat said: scan what is there */
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = got;
    return 0;
}

int lm_spool_clear(const char *path)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    int rc = ftruncate(fd, 0) == 0 && fsync(fd) == 0 ? 0 : -1;
    close(fd);
    return rc;
}
