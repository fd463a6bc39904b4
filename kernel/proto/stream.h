/*
 * stream.h - one streamed upstream response: frame splitting, the plugin's
 * parse_event, and the emit sink, glued together. Used by the relay and the
 * test kit alike. Thread: the request's worker.
 */
#ifndef LM_STREAM_H
#define LM_STREAM_H
#include "plugin/frame.h"
#include "plugin/host.h"

typedef struct lm_stream_s {
    lm_inst_t *inst; /* borrowed */
    lm_call *call;   /* borrowed */
    lm_frame_t frame;
    lm_emit_t emit;
    int done; /* plugin returned LM_DONE */
    int failed;
    lm_err err; /* set when failed */
} lm_stream_t;

void lm_stream_init(lm_stream_t *s, lm_inst_t *inst, lm_call *call, int64_t created,
                    lm_emit_sink_fn sink, void *arg);
/* Feed upstream bytes. Returns LM_OK, LM_DONE, or < 0 with s->err set
 * (oversized event, plugin error, sink failure). Bytes after LM_DONE are
 * ignored. */
int lm_stream_feed(lm_stream_t *s, const char *p, size_t n);
/* The upstream body ended: flush a trailing event. Same returns. */
int lm_stream_finish(lm_stream_t *s);
void lm_stream_free(lm_stream_t *s);
#endif
