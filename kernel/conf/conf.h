/*
 * conf.h - plugins.conf: parsed into an immutable snapshot.
 *
 * Syntax: one directive per line, `name arg...`; `name arg {` opens a block
 * closed by a lone `}`; `#` starts a comment; "double quotes" keep spaces.
 * Errors are reported as "file:line: what is wrong". The snapshot is owned
 * by whoever loaded it and freed with lm_conf_free.
 */
#ifndef LM_CONF_H
#define LM_CONF_H
#include "conf/cacheconf.h"
#include "conf/obsconf.h"

#include "core/redis_url.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lm_kv_s {
    char *key;
    char *val; /* resolved: env:NAME already read */
    int line;
    int secret;  /* came from env: or names a key/secret: never logged */
    char **alts; /* further values of a rotating secret (api_key env:A env:B), resolved */
    size_t nalts;
} lm_kv_t;

typedef struct lm_model_s {
    char *name;     /* what clients ask for; may be a glob ("gpt-*") */
    char *upstream; /* what the channel is sent (same as name unless "a=b") */
    int pattern;    /* name has * ? or [: matched with fnmatch(3) */
    int mapped;     /* written as a=b: a pattern then maps to one fixed upstream */
} lm_model_t;

/* price GLOB INPUT OUTPUT [CACHED_INPUT [PER_REQUEST]]: the prices of the
 * upstream models matching GLOB, in micro-units per 1M tokens. */
typedef struct lm_model_price_s {
    char *pattern; /* fnmatch pattern on the upstream model id */
    int64_t input, output, cached_input, per_request;
    int has_cached; /* cached_input was given (else it is input) */
    /* `price GLOB AMOUNT UNIT` (conf/priceunit.h): a unit price instead of
     * token prices; unit 0 (LM_UNIT_TOKENS) for a token price line */
    int unit;
    int64_t per_unit; /* micro-units per unit */
} lm_model_price_t;

typedef struct lm_chan_conf_s {
    char *name;
    char *plugin;
    int line;
    lm_model_t *models;
    size_t nmodels;
    lm_kv_t *kv; /* plugin-specific settings */
    size_t nkv;
    size_t nkeys; /* values of its rotating secret (1 when none rotates) */
    /* Health (outlier ejection) per channel x model; 0 = the default. */
    int eject_after;       /* consecutive failures that eject (5) */
    int eject_cooldown_ms; /* first cool-down, times the ejection count (30 s) */
    int eject_max_ms;      /* cap on the cool-down (300 s) */
    int error_rate_pct;    /* failure percentage over the window that ejects (50) */
    int error_rate_min;    /* results in the window before the rate counts (20) */
    int connect_timeout_ms;
    int first_byte_timeout_ms;
    int idle_timeout_ms;
    int request_timeout_ms; /* whole non-stream attempt (streams: idle only); 600 s */
    int priority;           /* lower is tried first (strict tier); 0 */
    int weight;             /* share inside a tier; 1 */
    int max_inflight;       /* concurrent upstream attempts; excess gets 503 (FT-8); 1024 */
    /* Prices in micro-units per 1M tokens (config: price_input 2.5 means
     * 2.5 money units per 1M prompt tokens), per_request per attempt. */
    int64_t price_input, price_output, price_cached_input, price_per_request;
    int flat_price;           /* a price_* directive was given */
    lm_model_price_t *prices; /* per-model prices; first match wins */
    size_t nprices;
    /* Outbound policy (SS-7), set by chanconf.c for the channels stored
     * through the admin API; the file's channels keep 0 (local Ollama or
     * vLLM on loopback stay possible). */
    int from_admin;      /* defined through the admin API */
    int private_refused; /* its upstream may not be a loopback or private address */
    /* `passthrough responses`: the upstream serves /responses itself, so a
     * /v1/responses body goes there unchanged but for the model
     * (relay/passthru.h). The inbound API's name, or NULL. */
    char *passthrough;
} lm_chan_conf_t;

/* route_strategy with model patterns: that strategy for those models. */
typedef struct lm_model_strategy_s {
    char *pattern; /* fnmatch pattern on the requested (client) model */
    char *strategy;
} lm_model_strategy_t;

/* A Lua policy script (scripts/README.md). Runs in declaration order. */
typedef struct lm_script_conf_s {
    char *name;
    char *path;
    char **models; /* fnmatch patterns on the requested model; none = all */
    size_t nmodels;
    char **keys; /* fnmatch patterns on the client key name; none = all */
    size_t nkeys;
    char *args_json; /* JSON passed to the chunk as `...`, or NULL */
    int line;
} lm_script_conf_t;

typedef struct lm_key_conf_s {
    char *name;
    unsigned char hash[32]; /* SHA-256 of the secret */
    int line;
} lm_key_conf_t;

typedef struct lm_conf_s {
    char *path;
    char *listen_host;
    int listen_port;
    char *admin_host;
    int admin_port;
    int workers; /* 0 = number of cores */
    uint64_t max_body;
    uint64_t audio_max_bytes; /* /v1/audio/ uploads (default 25m, as OpenAI's) */
    char *plugin_dir;
    char *pid_file;        /* written at start, read by longmen -s; NULL = none */
    char *data_dir;        /* SQLite store (keys, ledger, admin); NULL = no store */
    int store_wait_ms;     /* DB-4: longest a billed reply waits for its ledger commit, and the
                              store stall beyond which billed admissions get 503; 2 s */
    char *store_spool;     /* DB-4: the usage spool file; NULL = data_dir/usage.spool */
    char *store_pg;        /* store postgres "conninfo": the shared store (docs/scale-out.md);
                              NULL = SQLite in data_dir; a password only as env:VAR */
    lm_redis_url_t *redis; /* `redis URL [env:VAR]`: shared counters (docs/redis.md); NULL =
                              per-instance counters only. The password is resolved (a secret) */
    bool store_fail_open;  /* on_store_failure: a shared store (PostgreSQL, Redis) unreachable ->
                              false (closed, default): billed requests get 503; true (open):
                              traffic passes on local counters and ledger rows are
                              spooled for replay */
    int supervise;         /* run under a restarting supervisor process (PL-1) */
    int client_header_timeout_ms; /* a connection must send complete request headers within this,
                                     at its start and between keep-alive requests; 30 s */
    int client_body_timeout_ms;   /* between two pieces of a request body; 60 s */
    int client_send_timeout_ms;   /* an answer the client reads none of for this is cut; 60 s */
    long max_inflight;            /* requests in flight process-wide before 503 overloaded; 10000 */
    int auth_fail_limit; /* failed authentications per address and minute before 429 (AU-4); 20, 0 =
                            off */
    int drain_timeout_ms;
    int log_level;
    size_t stream_high_water; /* bytes queued to a client before pausing upstream */
    lm_key_conf_t *keys;
    size_t nkeys;
    lm_chan_conf_t *chans;
    size_t nchans;
    lm_script_conf_t *scripts;
    size_t nscripts;
    uint64_t lua_instructions; /* per stage call; 0 = host default (1,000,000) */
    int lua_deadline_ms;       /* per stage call; 0 = host default (10 ms) */
    uint64_t lua_memory;       /* per Lua state; 0 = host default (16 MiB) */
    char *route_strategy;      /* weighted (default), round_robin, least_inflight, lowest_latency,
                                  lowest_cost */
    lm_model_price_t *prices;  /* top-level per-model prices, for every channel */
    size_t nprices;
    lm_model_strategy_t *model_strategies; /* route_strategy S glob...: first match wins */
    size_t nmodel_strategies;
    /* Limits on the channels stored through the admin API (conf/outbound.h). */
    char **admin_env_allow; /* admin_env_allow GLOB...: env:NAME usable there; none = no env: */
    size_t nadmin_env_allow;
    lm_cache_conf_t cache;       /* the response cache (conf/cacheconf.h) */
    lm_obs_conf_t obs;           /* traces and the request log (conf/obsconf.h) */
    int admin_private_upstreams; /* their upstreams may be loopback/private addresses; off */
} lm_conf_t;

/* Parse `text` (len bytes) named `path` for messages. On error returns -1
 * with "path:line: message" in err. *out is owned by the caller. */
int lm_conf_parse(const char *path, const char *text, size_t len, lm_conf_t **out, char *err,
                  size_t errlen);
/* Parse `text` (named `path` in messages) and append its channels to c, as
 * if the blocks followed c's own text: only `channel NAME { ... }` blocks
 * may appear, and a name c already has is refused. On error returns -1
 * with "path:line: message" in err, and c is unchanged. Used for the
 * channels stored through the admin API (chanconf.c). */
int lm_conf_parse_channels(lm_conf_t *c, const char *path, const char *text, size_t len, char *err,
                           size_t errlen);
/* The price of `model` (the upstream id) on channel ch: the channel's
 * `price` lines, then its price_* directives, then the top-level `price`
 * lines; 0 when none applies. Outputs micro-units per 1M tokens. */
void lm_conf_price(const lm_conf_t *c, const lm_chan_conf_t *ch, const char *model, int64_t *input,
                   int64_t *output, int64_t *cached_input, int64_t *per_request);
/* The unit price of `model` on ch (conf/priceunit.h), found as
 * lm_conf_price finds a price line: *unit LM_UNIT_* (0 = tokens) and
 * *per_unit micro-units per unit; 0 and 0 when no unit line matches. */
void lm_conf_price_unit(const lm_conf_t *c, const lm_chan_conf_t *ch, const char *model, int *unit,
                        int64_t *per_unit);
/* Read and parse a file. */
int lm_conf_load(const char *path, lm_conf_t **out, char *err, size_t errlen);
/* lm_conf_load with flags. LM_CONF_KEEP_ENV leaves every env:NAME value as
 * its text (kv->val is "env:NAME", still marked secret) without reading the
 * environment: for longmen -s, which needs only pid_file and is run from
 * shells that do not hold the provider keys. Such a snapshot must not serve. */
#define LM_CONF_KEEP_ENV 1
int lm_conf_load_ex(const char *path, int flags, lm_conf_t **out, char *err, size_t errlen);
void lm_conf_free(lm_conf_t *c);
/* The built-in default config text (mock channel, demo key): used when no
 * config file exists, so `make run` answers without network or keys. */
extern const char lm_conf_default_text[];
#define LM_DEMO_KEY "sk-longmen-demo"

/* Replace, in place, every occurrence of the channel's secret settings
 * (keys, tokens: anything from env: or whose name has key, secret or token) in a
 * NUL-terminated text with "***", so an upstream that echoes a key cannot
 * leak it into a client error or a log line (AU-8). */
void lm_conf_scrub(const lm_chan_conf_t *ch, char *text);

/* Plugin setting `key` of a channel, or NULL. Borrowed. */
const lm_kv_t *lm_conf_chan_kv(const lm_chan_conf_t *ch, const char *key);
#endif
