/*
 * inbound_pt.h - what the kernel reads from a body it passes through
 * unchanged (relay/passthru.h): the client's body with only its model
 * replaced, and the usage, end and errors of the upstream's answer in the
 * inbound API's own terms (Anthropic Messages events, OpenAI Responses
 * events). Pure functions on bytes; no I/O. Thread: any (state is the
 * caller's).
 */
#ifndef LM_INBOUND_PT_H
#define LM_INBOUND_PT_H
#include "core/buf.h"
#include "longmen.h"

/* body (n bytes, a JSON object) with the value of its top-level "model"
 * key replaced by the JSON string of `model`; every other byte is kept.
 * 0 with out filled (appended), or -1 when the body is not an object with
 * a string "model" (or no memory). */
int lm_inpt_set_model(const char *body, size_t n, const char *model, lm_buf_t *out);

/* The length of the first complete SSE event at p (its lines and the blank
 * line that ends it, LF or CRLF), or 0 when the event is not complete. */
size_t lm_inpt_event_len(const char *p, size_t n);

/* What an answer said so far: the counts as reported (-1 unknown), the
 * bytes of text/arguments streamed (the estimate when the end's count never
 * came), whether the answer finished and whether the upstream's end marker
 * was seen. */
typedef struct lm_inpt_reader_s {
    int api; /* LM_API_MESSAGES, LM_API_RESPONSES or LM_API_COMPLETIONS (proto/inbound.h) */
    int64_t in, cache_create, cache_read, out, reasoning;
    uint64_t chars;
    int finished;
    int done;
} lm_inpt_reader_t;

void lm_inpt_reader_init(lm_inpt_reader_t *rd, int api);
/* One complete SSE event (as lm_inpt_event_len cut it). LM_OK, LM_DONE at
 * the upstream's end marker (message_stop; response.completed /
 * .incomplete; completions: data: [DONE]), or LM_EUPSTREAM with e filled
 * for the upstream's error event (error; response.failed; completions: an
 * {"error": ...} chunk). Unparsable data is skipped. */
int lm_inpt_reader_event(lm_inpt_reader_t *rd, const char *ev, size_t n, lm_err *e);
/* A whole (non-stream) 2xx answer: 0 with the counts read, -1 when it is
 * not a JSON object of the API's answer type. */
int lm_inpt_reader_whole(lm_inpt_reader_t *rd, const char *body, size_t n);
/* The counts as the ledger bills them, the same as the plugins' chat path:
 * Messages: prompt = input + cache creation + cache reads, cached = cache
 * reads; Responses: prompt = input_tokens, cached = its cached_tokens,
 * reasoning = reasoning_tokens; completions: prompt_tokens,
 * completion_tokens, prompt_tokens_details.cached_tokens. A count never
 * reported stays -1. */
lm_usage lm_inpt_reader_usage(const lm_inpt_reader_t *rd);
#endif
