/*
 * state.h - the host's objects inside kernel/lua: a generation and its
 * scripts, a vm and the stage call it is running, a request's call
 * (lua_host.h has their contract). Internal to kernel/lua.
 */
#ifndef LM_LUA_STATE_H
#define LM_LUA_STATE_H
#include "lua/lua_host.h"

#include <jansson.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct lm_lua_gen_script_s {
    char *name;
    char *path;
    char *src;
    size_t srclen;
    char **models;
    size_t nmodels;
    char **keys;
    size_t nkeys;
    json_t *args;
    unsigned stages;
    _Atomic uint64_t errors;
    _Atomic uint64_t limits;
} lm_lua_gen_script_t;

struct lm_lua_gen_s {
    atomic_long refs;
    lm_lua_limits_t lim;
    lm_lua_shared_t *shared;
    size_t n;
    lm_lua_gen_script_t *s;
    unsigned stages;
};

/* Free blocks a state keeps for reuse (limits.c): Lua allocates and frees
 * a few dozen objects per stage call, and a list pop is far cheaper than
 * malloc and free. Size classes of LM_LUA_POOL_STEP bytes up to 256, then
 * of LM_LUA_POOL_STEP2 bytes up to 2 KiB (stage inputs: an upstream body,
 * a response, an event). */
#define LM_LUA_POOL_STEP    16
#define LM_LUA_POOL_SMALL   16 /* classes of blocks up to 256 bytes */
#define LM_LUA_POOL_STEP2   64
#define LM_LUA_POOL_CLASSES (LM_LUA_POOL_SMALL + 28) /* blocks up to 2048 bytes */
typedef struct lm_lua_pool_s {
    void *head[LM_LUA_POOL_CLASSES];
    unsigned count[LM_LUA_POOL_CLASSES];
} lm_lua_pool_t;

typedef struct lm_lua_vm_script_s {
    int env;
    int fn[LM_LUA_NSTAGES];
    unsigned stages;
} lm_lua_vm_script_t;

struct lm_lua_vm_s {
    lua_State *L;
    lm_lua_gen_t *gen;
    int refs;
    lm_lua_vm_script_t *s;
    size_t mem; /* bytes the state asked for and holds (the pool not included) */
    size_t mem_cap;
    lm_lua_pool_t pool;
    /* the running stage call */
    int running;
    int stage;
    size_t script;
    int expired;
    uint64_t steps, budget;
    uint64_t pat_steps, pat_budget;
    int64_t deadline_ns;
    uint32_t deadline_ms;
    lm_lua_call_t *call;
    /* What lm.request and lm.response show during the run: two registry
     * slots made once per state (a ref per call would allocate and free a
     * registry entry on every stage call); false when unset. */
    int slot_req, slot_resp;
    int ref_lazy_mt, ref_anchor_mt; /* registry refs: metatables (lazy.c) */
    int has_req, has_resp;
    int req_set;   /* slot_req holds a view (kept between runs, see call.c) */
    uint64_t runs; /* stage calls entered (lm_lua_vm_runs) */
    /* decisions by lm.reject / lm.retry */
    int reject_status;
    char reject_code[64];
    char reject_msg[512];
    int retry;
    char retry_model[128];
    /* stages that may wait (park.c): a spare thread to run them in (a
     * registry ref, made on first use), the thread running a stage now and
     * that stage's run */
    int co_ref;
    lua_State *co_spare;
    lua_State *co_cur;
    struct lm_lua_run_s *co_run;
    int co_wait; /* the thread yielded in lm.moderate (not a stray yield) */
};

struct lm_lua_call_s {
    lm_lua_vm_t *vm;
    json_t *req;
    json_t *meta;
    char *key_name;
    char *key_group;
    const char *api; /* the inbound API's name (static), or NULL: "chat" */
    unsigned stages;
    unsigned char *applies;
    int *ctx;
    int anchor; /* registry ref: the anchor over req and meta (or LUA_NOREF) */
    struct lm_lua_anchor_s *anchor_p; /* that anchor (kept alive by the ref) */
    int req_changed;                  /* on_request rewrote req */
    lm_lua_side_fn side;              /* starts a side call (lm.moderate), or NULL */
    void *side_arg;
    struct lm_lua_park_s *park; /* on_request waiting on a side call (park.c), or NULL */
    int park_ref;               /* registry ref of the waiting stage's thread */
    int nside;                  /* side calls started for this request */
};

/* Stage names ("load", "request", ...) and the functions scripts define
 * for them (NULL, "on_request", ...), indexed by stage. */
extern const char *const lm_lua_stage_names[LM_LUA_NSTAGES];
extern const char *const lm_lua_stage_fns[LM_LUA_NSTAGES];

/* The vm a state belongs to: the allocator's user data. */
static inline lm_lua_vm_t *lm_lua_vm_of(lua_State *L)
{
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return ud;
}

/* Copies src (NULL = "") into dst[cap], truncated, NUL-terminated. */
void lm_lua_copy_str(char *dst, size_t cap, const char *src);
/* strdup that passes NULL through; the caller frees. */
char *lm_lua_dup_str(const char *s);
/* The running script's name (borrowed from the generation), or "?". */
const char *lm_lua_script_name(lm_lua_vm_t *vm);
/* The first line of msg (NULL = "") into dst[cap]. */
void lm_lua_first_line(char *dst, size_t cap, const char *msg);
#endif
