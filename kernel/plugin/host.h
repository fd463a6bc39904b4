/*
 * host.h - the kernel side of the plugin ABI: the host table, the upstream
 * request builder (lm_ureq) and the stream sink (lm_emit). Independent of
 * the HTTP front and of libcurl, so the test kit uses the same code.
 */
#ifndef LM_HOST_H
#define LM_HOST_H
#include "conf/conf.h"
#include "core/buf.h"
#include "longmen.h"
#include "plugin/inst.h"
#include "plugin/side.h"

#include <stdatomic.h>

struct lm_ureq {
    char method[8];
    lm_buf_t url;
    char **headers; /* "Name: value", owned */
    size_t nheaders;
    lm_buf_t body;
    int has_body;
    int json_body;
    int local_status; /* > 0: answered locally by the plugin, body is the answer */
    /* Side values: the channel side_get reads (set by the caller before
     * build_request; NULL refuses side_get), what it asked the caller to do
     * next, and the copies handed to the plugin (owned, freed with u). */
    const lm_inst_t *inst; /* borrowed from the generation the caller holds */
    lm_side_need_t side;
    char *side_vals[LM_SIDE_MAX];
    size_t nside_vals;
    /* The channel whose outbound address policy applies (SS-7), set by the
     * caller before lm_upstream_start; NULL gets the strictest policy.
     * Borrowed from the generation the caller holds. */
    const lm_chan_conf_t *chan;
    /* Kernel only, never set by a plugin: a body lent by the caller, sent
     * as these pieces in order when has_body is 0 (an audio upload: the
     * client's bytes, not copied). They must outlive the transfer. */
    lm_str lent[3];
    size_t nlent;
};
typedef struct lm_ureq lm_ureq_t;

void lm_ureq_init(lm_ureq_t *u);
void lm_ureq_free(lm_ureq_t *u);

/* Receives each serialized chunk (JSON text, no "data: " framing). Return
 * 0, or non-zero to make the emit_* call fail (client gone). */
typedef int (*lm_emit_sink_fn)(void *arg, const char *json, size_t len);

struct lm_emit {
    lm_emit_sink_fn sink;
    void *arg;
    char id[64];
    int64_t created;
    char model[128];
    int usage_mode;
    lm_usage usage;
    int usage_seen;
    unsigned nchunks;  /* chunks delivered to the sink */
    unsigned ncontent; /* chunks that carried content or tool calls */
    int ids_adopted;
    int finish_seen;        /* a chunk with a finish_reason reached the sink */
    uint64_t content_chars; /* bytes of content/arguments sent: a token estimate when the provider
                               reports none */
    /* The client protocol the kernel keeps for every plugin (ABI 1.2), per
     * choice index < 32: the role went out on the first delta, the one
     * finish_reason went out, the choice called tools. */
    uint32_t role_sent, finished, tools_seen;
    /* ABI 1.4 emit_raw: set by the caller when the sink may get the
     * upstream's own bytes (0 after lm_emit_init: emit_raw declines, as
     * when nothing downstream must see the tree path's chunks, e.g. a Lua
     * on_event); nraw counts the chunks that went out so. */
    int raw_ok;
    unsigned nraw;
};
typedef struct lm_emit lm_emit_t;

void lm_emit_init(lm_emit_t *e, int usage_mode, const char *request_id, const char *model,
                  int64_t created, lm_emit_sink_fn sink, void *arg);
/* The upstream said the stream is complete: every choice that began and
 * has no finish_reason gets one ("tool_calls" after tool calls, else
 * "stop"). Returns LM_OK or the sink's failure. */
int lm_emit_close(lm_emit_t *e);
/* emit_raw (ABI 1.4, emit_raw.c): chunk's bytes to the sink as they are
 * when the bookkeeping above needs no change to them but cutting out a
 * "usage" member; else LM_DECLINED and nothing done. chunk is borrowed. */
int lm_emit_raw(lm_emit *e, lm_str chunk);
/* The final usage chunk as JSON text (new, free()), or NULL when no usage was
 * reported. */
char *lm_emit_usage_chunk(lm_emit_t *e);

/* Usage merge (exported for the unit tests and the non-stream path). */
void lm_usage_merge(lm_usage *acc, const lm_usage *u, int mode);
/* Read an OpenAI "usage" object into u (fields left -1 when absent). */
void lm_usage_from_openai(const json_t *obj, lm_usage *u);
/* Build an OpenAI "usage" object (new reference). */
json_t *lm_usage_to_openai(const lm_usage *u);

/* The host table handed to every plugin. */
extern const lm_host_api lm_host_table;
#endif
