/*
 * lua_host.h - the Lua 5.4 script host: policy scripts hooked into the
 * request pipeline (routing, prompt rewriting, billing rules, guards).
 *
 * Objects and their owners
 *   lm_lua_gen_t     a *generation*: every script read from disk at one time,
 *                    compiled and validated together. Immutable once loaded
 *                    (except atomic counters). Reference counted (atomic);
 *                    shared by all workers. A reload builds a new generation
 *                    and swaps the lead's pointer; a failed load keeps the old.
 *   lm_lua_vm_t      one lua_State running one generation on one worker.
 *                    Never shared across threads. Reference counted (plain
 *                    int, worker only): the worker holds one reference, each
 *                    call holds one, so a worker can switch to a new
 *                    generation while requests on the old one finish.
 *   lm_lua_call_t    one client request's view of a vm: which scripts apply
 *                    (filters), the current request JSON, per-script lm.ctx
 *                    tables. Created at request start, ended at request end.
 *   lm_lua_shared_t  an optional process-wide counter dictionary (lm.shared)
 *                    owned by the lead; thread-safe (one mutex). It must
 *                    outlive every generation that points to it.
 *
 * Threads: lm_lua_gen_* may be called from any thread. lm_lua_vm_*,
 * lm_lua_call_* and the stage functions only on the worker that created
 * the vm. No function here keeps global mutable state.
 *
 * Stage functions return LM_LUA_OK (continue), LM_LUA_REJECT (the script
 * refused: answer res->status / res->message / res->code), LM_LUA_RETRY
 * (on_error only: try the next channel, optionally with res->model) or
 * LM_LUA_ERROR (a script error or a limit hit: answer 500 with res->errid;
 * the error is already logged and counted). Stages for which no applicable
 * script defines a function cost one bit test.
 *
 * JSON: values cross as Jansson json_t (or JSON text for events and
 * responses). "borrowed" means the caller keeps its reference; "in-out"
 * objects are updated in place (the caller's pointer stays valid); "new
 * ref" outputs are the caller's to json_decref.
 *
 * Cost: stage arguments are converted to Lua only when a script looks at
 * them, and converted back only when it changed them (see lua/lazy.h), so a
 * stage that leaves its data alone costs a function call, not a conversion:
 * the request keeps its JSON (and the caller its raw body), an event or a
 * response keeps its text, and inputs given as bytes (lm_lua_input_t) are
 * never written as JSON at all. Outputs then say "unchanged" (NULL, or the
 * input as it came) instead of an equal copy. What a call still allocates
 * (the argument table, its text) is collected young (generational GC) from
 * a per-state pool of small blocks; lm_lua_vm_runs counts the calls, and
 * tests/bench/lua_profile.py measures them in instructions.
 */
#ifndef LM_LUA_HOST_H
#define LM_LUA_HOST_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lm_lua_gen_s lm_lua_gen_t;
typedef struct lm_lua_vm_s lm_lua_vm_t;
typedef struct lm_lua_call_s lm_lua_call_t;
typedef struct lm_lua_shared_s lm_lua_shared_t;

enum {
    LM_LUA_OK = 0,
    LM_LUA_REJECT = 1,
    LM_LUA_RETRY = 2,
    LM_LUA_PENDING = 3, /* on_request waits on a side call (lm.moderate) */
    LM_LUA_ERROR = -1,
};

/* Stages, in pipeline order. LM_LUA_STAGE_LOAD is the top-level chunk. */
typedef enum {
    LM_LUA_STAGE_LOAD = 0,
    LM_LUA_STAGE_REQUEST,          /* on_request(req) */
    LM_LUA_STAGE_ROUTE,            /* on_route(req, candidates) */
    LM_LUA_STAGE_UPSTREAM_REQUEST, /* on_upstream_request(req, up) */
    LM_LUA_STAGE_EVENT,            /* on_event(ev) */
    LM_LUA_STAGE_RESPONSE,         /* on_response(body) */
    LM_LUA_STAGE_USAGE,            /* on_usage(usage, price, charge) */
    LM_LUA_STAGE_ERROR,            /* on_error(err) */
    LM_LUA_STAGE_LOG,              /* on_log(record) */
    LM_LUA_NSTAGES
} lm_lua_stage_t;
#define LM_LUA_BIT(stage) (1u << (stage))

/* Stage name without the "on_" prefix ("request", "route", ...). */
const char *lm_lua_stage_name(lm_lua_stage_t stage);

/* Per-call limits; zero fields take the defaults. */
typedef struct lm_lua_limits_s {
    uint64_t instructions; /* VM instructions per stage call (1,000,000) */
    uint32_t deadline_ms;  /* wall clock per stage call, CLOCK_MONOTONIC (10) */
    size_t memory;         /* bytes per lua_State (16 MiB) */
} lm_lua_limits_t;

/* One script as configured (plugins.conf). Strings are borrowed for the
 * duration of lm_lua_gen_load only (the generation copies them). */
typedef struct lm_lua_script_spec_s {
    const char *name;          /* for logs and stats; unique */
    const char *path;          /* file to read */
    const char *const *models; /* fnmatch(3) patterns on the requested model; */
    size_t nmodels;            /*   none = every model */
    const char *const *keys;   /* fnmatch(3) patterns on the key name; */
    size_t nkeys;              /*   none = every key */
    json_t *args;              /* borrowed, may be NULL: the chunk's `...` */
} lm_lua_script_spec_t;

/* Error counters of one script (summed over all workers). */
typedef struct lm_lua_stats_s {
    uint64_t errors; /* runtime errors, limit hits included */
    uint64_t limits; /* of which: instruction, time or memory limit */
} lm_lua_stats_t;

/* What a stage decided, beyond its return code. Fixed buffers: nothing to
 * free. Fields are "" when unused. */
typedef struct lm_lua_result_s {
    int status;        /* REJECT: HTTP status (400..599); ERROR: 500 */
    char code[64];     /* REJECT: OpenAI error code ("" = none) */
    char message[512]; /* REJECT: message for the client; ERROR: the script's
                          error "file:line: message" (log only, not for clients) */
    char errid[24];    /* ERROR: "lua-<16 hex>", for the client and the log */
    char script[64];   /* REJECT/RETRY/ERROR: the deciding script */
    char model[128];   /* RETRY: model for the next attempt ("" = same model) */
} lm_lua_result_t;

/* ---- generations (any thread) ---- */

/* Read and compile every script, run each top-level chunk in a fresh
 * sandboxed state, check its stage functions. On any failure return NULL
 * and write "file:line: message" to err. On success the generation has one
 * reference (the caller's). shared may be NULL (lm.shared then raises).
 * limits may be NULL (defaults). */
lm_lua_gen_t *lm_lua_gen_load(const lm_lua_script_spec_t *specs, size_t n,
                              const lm_lua_limits_t *limits, lm_lua_shared_t *shared, char *err,
                              size_t errlen);
/* Reference counting (atomic). Returns gen. release(NULL) is a no-op. */
lm_lua_gen_t *lm_lua_gen_acquire(lm_lua_gen_t *gen);
void lm_lua_gen_release(lm_lua_gen_t *gen);
/* Stages defined by at least one script (LM_LUA_BIT mask). */
unsigned lm_lua_gen_stages(const lm_lua_gen_t *gen);
size_t lm_lua_gen_nscripts(const lm_lua_gen_t *gen);
const char *lm_lua_gen_script_name(const lm_lua_gen_t *gen, size_t i); /* borrowed */
void lm_lua_gen_stats(const lm_lua_gen_t *gen, size_t i, lm_lua_stats_t *out);

/* ---- per-worker states (worker only) ---- */

/* A fresh state for gen (takes a generation reference): compiles the
 * scripts from the generation's copy of their text (never from disk, so
 * every worker runs the same code). NULL with err on failure. The vm has
 * one reference, the caller's. */
lm_lua_vm_t *lm_lua_vm_new(lm_lua_gen_t *gen, char *err, size_t errlen);
void lm_lua_vm_release(lm_lua_vm_t *vm);            /* closes the state at 0 */
lm_lua_gen_t *lm_lua_vm_gen(const lm_lua_vm_t *vm); /* borrowed */
/* Bytes currently allocated by the state, plus the JSON its lazy values
 * keep alive (for stats and tests). */
size_t lm_lua_vm_memory(const lm_lua_vm_t *vm);
/* Stage functions this vm has entered (one per script and stage call; a
 * stage no applicable script defines enters none). For stats and tests. */
uint64_t lm_lua_vm_runs(const lm_lua_vm_t *vm);
/* A full garbage collection (e.g. when the worker is idle); returns
 * lm_lua_vm_memory afterwards. Not while a stage runs. */
size_t lm_lua_vm_collect(lm_lua_vm_t *vm);

/* ---- per-request calls (worker only) ---- */

/* Start a request on vm (takes a vm reference). key_name and model select
 * the scripts that apply (each script's filters, evaluated once here with
 * the requested model); key_group may be NULL. req is the canonical request
 * body (borrowed; the call keeps its own reference and follows rewrites by
 * on_request). NULL when out of memory. */
lm_lua_call_t *lm_lua_call_begin(lm_lua_vm_t *vm, const char *key_name, const char *key_group,
                                 json_t *req);
/* The inbound API the request came in by ("chat", "messages"; static,
 * borrowed): scripts read it as req.api. Before the first stage. */
void lm_lua_call_set_api(lm_lua_call_t *call, const char *api);
/* Side calls (lm.moderate): a script's on_request asks the host for a
 * moderation verdict. fn starts it without blocking (text[0..len) and
 * model are borrowed for the call) and returns 0, or -1 with err filled
 * (the script then gets nil, err at once). A started call makes
 * lm_lua_on_request return LM_LUA_PENDING: the caller parks the request
 * and, when the answer came, calls lm_lua_on_request_resume. Without fn
 * lm.moderate answers nil, "...". At most LM_LUA_SIDE_MAX per request. */
#define LM_LUA_SIDE_MAX 4
typedef int (*lm_lua_side_fn)(void *arg, const char *model, const char *text, size_t len, char *err,
                              size_t errlen);
void lm_lua_call_set_side(lm_lua_call_t *call, lm_lua_side_fn fn, void *arg);
/* Side calls started for this request so far. */
int lm_lua_call_side_count(const lm_lua_call_t *call);
/* Releases the lm.ctx tables, a waiting stage (its thread; no resume) and
 * the vm reference. NULL is a no-op. */
void lm_lua_call_end(lm_lua_call_t *call);
/* Stages that some applicable script defines (LM_LUA_BIT mask): the lead
 * may skip building stage inputs (candidate figures, log records) that no
 * script will read. */
unsigned lm_lua_call_stages(const lm_lua_call_t *call);
/* The request metadata table scripts wrote (req.meta); borrowed, an object. */
json_t *lm_lua_call_meta(lm_lua_call_t *call);
/* 1 once on_request changed the request's model, messages or parameters
 * (meta does not count). While 0, req is exactly what the caller passed in,
 * so the client's original bytes still mean it (raw body passthrough). */
int lm_lua_call_request_changed(const lm_lua_call_t *call);

/* A stage input kept as bytes instead of JSON text: the host copies
 * data[0..n) (and raw[0..rn), see below) into the state in one allocation,
 * without escaping anything, and asks write for the JSON text (an object or
 * an array) only when a script looks at the input, maybe after the stage
 * call: write may read nothing but data (the caller's objects may be gone
 * by then) and returns malloc'd text (*len set), or NULL when out of
 * memory. part says which input of the stage (on_usage: 0 usage, 1 price).
 * raw, when not NULL, is one more member that travels as it is (the
 * upstream body: never escaped or decoded unless a script reads it). The
 * cost is one allocation and a copy, so a stage that never looks at its
 * input never writes it (scripts/README.md, "What a stage costs"). */
typedef char *(*lm_lua_write_fn)(const void *data, size_t n, int part, size_t *len);
typedef struct lm_lua_input_s {
    const void *data; /* borrowed for the call (copied) */
    size_t n;
    lm_lua_write_fn write;
    const char *raw; /* borrowed for the call (copied), or NULL */
    size_t rn;
} lm_lua_input_t;

/* ---- stages (worker only; res may not be NULL) ---- */

/* After auth, before admission. req (in-out, the same object given to
 * call_begin or a later one): model, messages and parameters as rewritten.
 * OK, REJECT, ERROR, or PENDING: a script waits on a side call (see
 * lm_lua_call_set_side), to be continued by lm_lua_on_request_resume. */
int lm_lua_on_request(lm_lua_call_t *call, json_t *req, lm_lua_result_t *res);

/* The side call on_request waits on ended: verdict (borrowed; the
 * moderation result object {flagged, categories, ...}) or NULL with why
 * (the script gets nil, why). The waiting script goes on, then the scripts
 * after it; the same returns as lm_lua_on_request (PENDING again when a
 * script waits again). req as given to lm_lua_on_request. */
int lm_lua_on_request_resume(lm_lua_call_t *call, json_t *req, json_t *verdict, const char *why,
                             lm_lua_result_t *res);

/* After the candidate list is built. candidates (borrowed): array of
 * objects, each with at least "name" (see scripts/README.md for the
 * figures). *order (new ref, NULL when unchanged or on error): the channel
 * names to try, in order; names not among the candidates are dropped; an
 * empty array means "no channel". OK, REJECT or ERROR. */
int lm_lua_on_route(lm_lua_call_t *call, json_t *candidates, json_t **order, lm_lua_result_t *res);
/* The same with the candidates as JSON text (an array, borrowed): the
 * caller can write it without building Jansson values, and scripts that do
 * not look at it never decode it. */
int lm_lua_on_route_text(lm_lua_call_t *call, const char *candidates, size_t len, json_t **order,
                         lm_lua_result_t *res);
/* The same with the candidates kept as bytes (part 0; see lm_lua_input_t). */
int lm_lua_on_route_input(lm_lua_call_t *call, const lm_lua_input_t *candidates, json_t **order,
                          lm_lua_result_t *res);

/* Per attempt, after plugin.build_request. up (in-out): {"channel", "model",
 * "attempt", "url", "headers": {name: value}, "body": "<string>"}; scripts may
 * change "headers" and "body" (other fields are informational); both are
 * replaced when a script changed either. OK, REJECT or ERROR. */
int lm_lua_on_upstream_request(lm_lua_call_t *call, json_t *up, lm_lua_result_t *res);
/* The same with up as JSON text without "body" (borrowed), and the body
 * separately as bytes (borrowed; scripts see it as up.body, and it is never
 * escaped or decoded unless they do). *headers and *new_body (new refs: an
 * object of strings and a string) are set only when a script changed them;
 * both NULL means "send the request as built". */
int lm_lua_on_upstream_text(lm_lua_call_t *call, const char *up, size_t len, const char *body,
                            size_t blen, json_t **headers, json_t **new_body, lm_lua_result_t *res);
/* The same with up kept as bytes (part 0) and the body as its raw member. */
int lm_lua_on_upstream_input(lm_lua_call_t *call, const lm_lua_input_t *up, json_t **headers,
                             json_t **new_body, lm_lua_result_t *res);

/* Receives one event to send, as compact JSON text (borrowed for the call). */
typedef void (*lm_lua_emit_fn)(void *arg, const char *json, size_t len);

/* Per stream event: json[0..len) is one OpenAI chunk object as text
 * (borrowed). emit is called once per event to send, in order: with the
 * same bytes when the scripts left the event alone (no decoding, no
 * re-encoding), with new text when they changed or added events, not at all
 * when they dropped it. Text that is not a JSON object passes unchanged.
 * ERROR (emit may have been called for events before the failing script
 * finished) ends the stream with an error event. */
int lm_lua_on_event_text(lm_lua_call_t *call, const char *json, size_t len, lm_lua_emit_fn emit,
                         void *arg, lm_lua_result_t *res);
/* The same for a Jansson chunk (borrowed). *out (new ref on OK): array of
 * the events to send instead (empty = dropped, or several when scripts add
 * events). */
int lm_lua_on_event(lm_lua_call_t *call, json_t *ev, json_t **out, lm_lua_result_t *res);

/* Non-stream response body as text (borrowed), before it is written. *out:
 * NULL when the scripts left it alone, else the new body (malloc'd, the
 * caller frees). Text that is not a JSON object is not shown to scripts.
 * OK, REJECT or ERROR (then *out is NULL). */
int lm_lua_on_response_text(lm_lua_call_t *call, const char *json, size_t len, char **out,
                            lm_lua_result_t *res);
/* The same for a Jansson body (in-out, OpenAI chat completion object). */
int lm_lua_on_response(lm_lua_call_t *call, json_t *body, lm_lua_result_t *res);

/* Settlement. usage (borrowed): the OpenAI usage object. price (borrowed):
 * {"input", "output", "cached_input"} in micro-units per 1M tokens.
 * *charge (in-out): the kernel's charge in micro-units; scripts may return
 * a new one (an integer >= 0). OK or ERROR (then *charge is unchanged and
 * the lead bills its own figure). */
int lm_lua_on_usage(lm_lua_call_t *call, json_t *usage, json_t *price, int64_t *charge,
                    lm_lua_result_t *res);
/* The same with usage and price as JSON text (borrowed; NULL: nil). */
int lm_lua_on_usage_text(lm_lua_call_t *call, const char *usage, size_t ulen, const char *price,
                         size_t plen, int64_t *charge, lm_lua_result_t *res);
/* The same with usage (part 0) and price (part 1) kept as bytes. */
int lm_lua_on_usage_input(lm_lua_call_t *call, const lm_lua_input_t *in, int64_t *charge,
                          lm_lua_result_t *res);

/* An attempt failed. err (in-out): {"status", "type", "code", "message",
 * "channel", "model", "attempt"}; scripts may map status/type/code/message.
 * started != 0 when bytes already reached the client (RETRY is then not
 * possible and is turned into OK with a warning). OK (answer err), RETRY
 * (next channel; res->model switches the model) or ERROR. */
int lm_lua_on_error(lm_lua_call_t *call, json_t *err, int started, lm_lua_result_t *res);

/* Always runs last. record (in-out): scripts may add fields (existing fields
 * never change). Errors are logged and counted, never returned. */
void lm_lua_on_log(lm_lua_call_t *call, json_t *record);

/* ---- lm.shared: process-wide counters (any thread) ---- */

/* max_entries 0 = 65536. NULL when out of memory. */
lm_lua_shared_t *lm_lua_shared_new(size_t max_entries);
void lm_lua_shared_free(lm_lua_shared_t *sh);
#endif
