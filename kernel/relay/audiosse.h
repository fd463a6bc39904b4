/*
 * audiosse.h - a streamed transcript (/v1/audio/transcriptions with
 * stream=true: OpenAI's SSE events transcript.text.delta ...
 * transcript.text.done) read as its bytes pass to the client unchanged:
 * the delta text delivered so far and the done event's usage, for the bill.
 * Pure (no relay): audio.c feeds it. Thread: the relay's worker.
 */
#ifndef LM_RELAY_AUDIOSSE_H
#define LM_RELAY_AUDIOSSE_H
#include "plugin/frame.h"

typedef struct lm_audiosse_s {
    lm_frame_t frame;
    int64_t chars;   /* code points of the delta text seen */
    int done;        /* transcript.text.done was seen */
    int64_t in, out; /* its usage in tokens (-1 unreported) */
    double seconds;  /* its usage in seconds (-1 unreported) */
    int broken;      /* an event over the splitter's cap: the rest is not read */
} lm_audiosse_t;

/* A fresh reader (the caller owns it: lm_audiosse_free), or NULL on no memory. */
lm_audiosse_t *lm_audiosse_new(void);
/* Read n more bytes of the stream (any split). Never fails: an event too
 * large or not JSON is skipped (the client still gets its bytes). */
void lm_audiosse_feed(lm_audiosse_t *s, const char *p, size_t n);
/* The body ended: an unterminated last event is read too. */
void lm_audiosse_finish(lm_audiosse_t *s);
/* What the stream bills so far: the done event's tokens when it reported
 * them, else no prompt (-1) and the delivered text's estimate (4 code
 * points a token) as completion; *seconds the reported duration or -1. */
void lm_audiosse_usage(const lm_audiosse_t *s, lm_usage *u, double *seconds);
void lm_audiosse_free(lm_audiosse_t *s);
#endif
