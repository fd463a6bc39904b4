/*
 * head.h - the request head checks the HTTP front makes before libevhtp
 * parses anything: where a request head ends, its size limits (IN-4),
 * control bytes (IN-5), and its body framing (Content-Length or chunked),
 * so the front can hand libevhtp one complete request at a time (IN-12,
 * pipelining) and refuse an oversized body before reading it (IN-3).
 * Pure functions on caller-owned bytes; any thread.
 */
#ifndef LM_HEAD_H
#define LM_HEAD_H
#include <stddef.h>
#include <stdint.h>

typedef struct lm_head_limits_s {
    size_t max_line;   /* request line, CRLF excluded: over -> 414 */
    size_t max_field;  /* one header line: over -> 431 */
    size_t max_fields; /* header count: over -> 431 */
    size_t max_head;   /* the whole head: over -> 431 */
    uint64_t max_body; /* Content-Length or chunked data: over -> 413 */
    /* The same for a request whose target starts with /v1/audio/ (uploads
     * have their own cap, audio_max_bytes); the default is max_body. */
    uint64_t max_body_audio;
} lm_head_limits_t;

/* The defaults: 8 KiB line, 8 KiB field, 100 fields, 32 KiB head. */
void lm_head_limits_default(lm_head_limits_t *l, uint64_t max_body);

enum { LM_HEAD_MORE = 0, LM_HEAD_DONE = 1, LM_HEAD_BAD = -1 };
enum { LM_BODY_NONE = 0, LM_BODY_LENGTH, LM_BODY_CHUNKED };

typedef struct lm_head_s {
    size_t head_len;         /* DONE: bytes of the head, final blank line included */
    int body;                /* DONE: LM_BODY_* */
    uint64_t content_length; /* LM_BODY_LENGTH */
    int expect_continue;     /* Expect: 100-continue was sent */
    int audio;               /* the target starts with /v1/audio/ (max_body_audio applies) */
    int status;              /* BAD: 400, 413, 414 or 431 */
    const char *code;        /* BAD: OpenAI-style error code (static) */
    const char *message;     /* BAD: for the client (static, never echoes input) */
    size_t skip;             /* blank-line bytes before the request line (dropped) */
    /* Scan state: zero the struct before the first call, then call again
     * with the same (grown) bytes; work already done is not redone. */
    size_t pos, nfields;
    int started, cl_seen, te_seen;
} lm_head_t;

/* Look at the first n buffered bytes of a connection in "head" state.
 * MORE: the head is not complete and nothing is wrong yet (also when n is
 * 0); DONE: out describes the head; BAD: out->status and message say why.
 * Lines may end in CRLF or LF. A verdict never depends on how the bytes
 * were split into reads: the same prefix always gives the same answer. */
int lm_head_scan(const char *p, size_t n, const lm_head_limits_t *lim, lm_head_t *out);

/* Chunked body framing, fed incrementally: where the body ends. */
typedef struct lm_chunked_s {
    int state;      /* internal */
    uint64_t left;  /* data bytes left in the current chunk */
    uint64_t total; /* data bytes so far */
    size_t line;    /* length of the current size/trailer line */
    int digits, cr; /* internal */
} lm_chunked_t;

/* Feed n bytes; returns how many belong to this body (<= n) and sets *done
 * once the last chunk and trailers ended, or returns (size_t)-1 on bad
 * framing or when the data passes max_body (then *too_big is 1). */
size_t lm_chunked_feed(lm_chunked_t *c, const char *p, size_t n, uint64_t max_body, int *done,
                       int *too_big);
#endif
