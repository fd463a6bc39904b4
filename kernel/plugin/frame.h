/*
 * frame.h - incremental SSE / NDJSON event splitter.
 *
 * Bytes arrive in arbitrary pieces; complete events are handed to a callback
 * as lm_event (borrowed for the call). Lines end in LF, CRLF or CR. SSE:
 * comment lines (":...") are dropped, "data:" lines are joined with '\n', an
 * event is dispatched at a blank line. NDJSON: one event per non-empty line.
 * An event (or a line) larger than `max_event` bytes is an error: the
 * splitter refuses to buffer it (hostile upstream, IN-11).
 */
#ifndef LM_FRAME_H
#define LM_FRAME_H
#include "core/buf.h"
#include "longmen.h"

#define LM_FRAME_MAX_EVENT (1024 * 1024)

/* Return 0 to go on; anything else stops lm_frame_feed, which returns it. */
typedef int (*lm_frame_cb)(void *arg, const lm_event *ev);

typedef struct lm_frame_s {
    int framing; /* LM_FRAME_SSE or LM_FRAME_NDJSON */
    size_t max_event;
    int skip_lf;    /* last byte seen was CR: a following LF is not a new line */
    int has_data;   /* SSE: a data: line was seen in this event */
    lm_buf_t line;  /* the incomplete current line */
    lm_buf_t data;  /* SSE: joined data lines of the current event */
    lm_buf_t event; /* SSE: event name */
    lm_buf_t id;    /* SSE: id */
} lm_frame_t;

void lm_frame_init(lm_frame_t *f, int framing, size_t max_event);
/* Feed bytes. Returns 0, the callback's non-zero return, or LM_ERR when an
 * event exceeds max_event. */
int lm_frame_feed(lm_frame_t *f, const char *p, size_t n, lm_frame_cb cb, void *arg);
/* End of body: dispatch a final unterminated NDJSON line or SSE event that
 * has data (lenient: some upstreams omit the last blank line). */
int lm_frame_finish(lm_frame_t *f, lm_frame_cb cb, void *arg);
/* Bytes currently buffered (for tests and stats). */
size_t lm_frame_pending(const lm_frame_t *f);
void lm_frame_free(lm_frame_t *f);
#endif
