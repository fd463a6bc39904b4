/*
 * relay_int.h - the relay's insides, shared by relay.c, attempt.c,
 * fanout.c, settle.c and output.c only: the request object and its limits.
 * Thread: the worker that accepted the request. Not for other folders.
 */
#ifndef LM_RELAY_INT_H
#define LM_RELAY_INT_H
#include "core/buf.h"
#include "gov/gov.h"
#include "http/http.h"
#include "proto/inbound.h"
#include "proto/stream.h"
#include "relay/relay_lua.h"
#include "relay/trace_state.h"
#include "relay/upstream.h"
#include "relay/worker.h"

#include <string.h>

#define LM_MAX_CANDIDATES 8
#define LM_MAX_ATTEMPTS   2 /* upstream attempts per request (FT-1 default) */

typedef struct lm_relay_s lm_relay_t;
typedef struct lm_passthru_s lm_passthru_t;

/* src into dst[cap] (cut to fit, always ended): what snprintf("%s") did on
 * the request path, at a tenth of its cost. */
static inline void lm_relay_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Where a request is; relay.c's opening comment has the transitions. */
typedef enum lm_relay_state_e {
    LM_RELAY_READING,   /* headers in, body arriving */
    LM_RELAY_ROUTING,   /* auth, checks, scripts, candidates, admission */
    LM_RELAY_SIDE_WAIT, /* parked until a side value (credential) is fetched */
    LM_RELAY_UPSTREAM,  /* a transfer is under way; the client has seen nothing */
    LM_RELAY_STREAMING, /* the stream's headers went out; events flow */
    LM_RELAY_SETTLING,  /* the end is decided; last bytes wait for the ledger commit */
    LM_RELAY_DONE,      /* the client's reply is complete (or the client is answered) */
} lm_relay_state_t;

struct lm_relay_s {
    lm_worker_t *w;
    lm_relay_state_t state;  /* changed only by lm_relay_to */
    lm_http_req_t *req;      /* NULL once the client is gone */
    int fini_seen;           /* the HTTP request object was freed */
    lm_rt_t *rt;             /* counted reference: the generation this request runs on */
    const lm_route_t *route; /* the current attempt's channel: &cands[cand] */
    lm_route_t cands[LM_MAX_CANDIDATES]; /* channels serving the model, in try order */
    size_t ncands, cand;
    int attempt;     /* 1-based upstream attempt number */
    int route_begun; /* lm_route_begin admitted this attempt: end it once */
    uint64_t attempt_start_ms;
    int64_t attempt_ttft_ms;
    lm_lua_call_t *lua; /* the scripts' view of this request, or NULL */
    lm_gov_t gov;       /* caller identity, limits, quota hold */
    int settling;       /* a ledger commit is in flight: holds the relay (not a state:
                         * a shutdown may answer the client meanwhile) */
    int settled;        /* this request's row was submitted */
    char *pending_body; /* non-stream reply held until its row is committed */
    size_t pending_len;
    struct event *settle_ev;
    struct event *shared_ev;    /* the Redis thread's admission answer arrived (gov/shared.h) */
    int shared_wait;            /* that answer is awaited: holds the relay */
    struct event *settle_timer; /* store_wait bound on a held reply (DB-4), or NULL */
    int64_t prompt_est;         /* request bytes / 4: used when no usage is reported */
    int64_t ttft_ms;
    int64_t charge; /* micro-units billed */
    char client_model[256];
    json_t *canon;
    lm_call call;
    int call_open;
    int op;
    const lm_inbound_t *api; /* the client's API (proto/inbound.h); chat is the identity */
    void *api_st;            /* its stream translator's state for this attempt, or NULL */
    int want_usage;
    int want_b64;      /* embeddings: the client asked encoding_format base64 */
    int canon_edited;  /* the kernel changed canon: the client's bytes no longer mean it */
    char clamped[160]; /* parameters clamped for the answering channel ("" when none) */
    char id[40];
    char upstream_model[256];
    lm_ureq_t ureq;
    lm_upstream_t *up;
    int status;
    int headers_sent; /* stream reply started (stays set once DONE) */
    int paused;
    int too_large;
    int whole_body;    /* the upstream answered with one body (JSON), not events */
    int st_fed;        /* this attempt fed stream bytes (the client may have seen none) */
    int lazy_failed;   /* the stream failed before a byte reached the client (FT-1) */
    lm_err lazy_err;   /* that failure, as the HTTP error it stands for */
    int client_status; /* what the client was answered (0: nothing yet) */
    int stream_error;  /* the stream ended with an error event */
    lm_usage usage;    /* non-stream usage (streams: st.emit.usage) */
    size_t discarded;  /* request bytes dropped past the limit */
    lm_buf_t body;     /* non-stream body or upstream error body */
    lm_stream_t st;
    int st_init;
    lm_buf_t out;        /* SSE bytes produced by one upstream read */
    struct event *timer; /* first-byte, then idle timeout */
    struct event *reap;
    uint64_t t_start_ms;
    lm_relay_t *next, *prev;
    /* Side values (ABI 1.1): the attempt waits for a credential fetch. */
    char side_name[LM_SIDE_NAME_MAX]; /* "" when not waiting */
    uint64_t side_seq;                /* the entry's fetch count when we looked */
    int side_waits;                   /* waits in this attempt (bounded) */
    int side_retried;                 /* a refused credential was refreshed once */
    int64_t up_retry_after;           /* the attempt's Retry-After in seconds (-1: none) */
    int overload;                     /* over the process-wide in-flight cap when it came */
    lm_relay_t *side_next, *side_prev;
    struct lm_fanout_s *fan; /* a split embeddings request's parts in flight (fanout.h), or NULL */
    struct lm_cache_req_s *cache; /* the response cache's view of this request (cache.h), or NULL */
    lm_passthru_t *pt;      /* this attempt passes the client's API through (passthru.h), or NULL */
    int native_only;        /* canon is a stand-in: only a pass-through attempt may serve it */
    lm_err native_err;      /* why the body has no canonical form (for the other channels) */
    lm_trace_t trace;       /* its trace and request-log facts (trace.h); inline */
    struct lm_poll_s *poll; /* an asynchronous task being polled (poll.h), or NULL */
    struct lm_audio_s *audio; /* an audio request's state (audio.h), or NULL */
    struct lm_modcall_s *mod; /* a script's moderation side call in flight (modcall.h), or NULL */
};

/* relay.c: move r to state `to`. An illegal move is logged (and aborts
 * with -DLM_DEBUG); DONE is never left. */
void lm_relay_to(lm_relay_t *r, lm_relay_state_t to);

/* relay.c: frees the relay once both sides are done (the upstream transfer
 * is released, the HTTP request object is gone, no ledger commit pending);
 * otherwise does nothing. r may be freed on return. */
void lm_relay_maybe_free(lm_relay_t *r);
/* relay.c: the pipeline after on_request (model, candidates, on_route,
 * admission); modcall.c continues there once a waiting script finished. */
int lm_relay_routed(lm_relay_t *r);
#endif
