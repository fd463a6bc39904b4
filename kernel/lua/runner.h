/*
 * runner.h - one script's stage function run in a protected call, and the
 * helpers the stage files share (runner.c). Worker thread only.
 */
#ifndef LM_LUA_RUNNER_H
#define LM_LUA_RUNNER_H
#include "lua/state.h"

/* One stage call: push makes the arguments (sets nargs), collect reads the
 * results back into out[] (both run inside the protected call). */
typedef struct lm_lua_run_s lm_lua_run_t;
struct lm_lua_run_s {
    lm_lua_call_t *call;
    lm_lua_stage_t stage;
    json_t *in[3];    /* borrowed inputs */
    const char *text; /* borrowed input as JSON text (route, upstream, event, ...) */
    size_t tlen;
    const char *text2; /* a second one (usage: the price) */
    size_t tlen2;
    const lm_lua_input_t *input; /* instead of text: kept as bytes (lua_host.h) */
    int64_t charge;              /* usage: in and out */
    int started;                 /* error: bytes reached the client */
    int keep;                    /* event: send the input as it came (out[0] unused) */
    int changed;
    json_t *out[2]; /* new refs made by collect */
    json_t *tmp;    /* made by push for this call only; released after it */
    int nargs;
    void (*push)(lua_State *L, lm_lua_run_t *r);
    void (*collect)(lua_State *L, lm_lua_run_t *r, int args, int res, int nres);
};

/* Run script i's function for r->stage. On LM_LUA_OK the outputs are in
 * r->out (new refs, caller frees; NULL when the script left the data as it
 * was); on other codes r->out is empty. Errors are logged and counted. */
int lm_lua_run(lm_lua_vm_t *vm, size_t i, lm_lua_run_t *r, lm_lua_result_t *res);
/* The end of a stage call (lm_lua_run, or a thread's in park.c): st is
 * its status, m the error text when st is not LUA_OK. Fills res and
 * returns the code as lm_lua_run does; leaves the stack alone. */
int lm_lua_run_end(lm_lua_vm_t *vm, size_t i, lm_lua_run_t *r, lm_lua_result_t *res, int st,
                   const char *m);
/* 1 when script i applies to the call and defines stage st. */
int lm_lua_runs(lm_lua_call_t *call, size_t i, lm_lua_stage_t st);
void lm_lua_res_clear(lm_lua_result_t *res);
/* A host allocation failed: fills res as a 500 with an error id (not
 * counted against a script); returns LM_LUA_ERROR. */
int lm_lua_host_oom(lm_lua_result_t *res);
/* The table to read back: a returned table (res) replaces the argument
 * (arg); raises when neither is a table. */
int lm_lua_pick_table(lua_State *L, int arg, int res, int nres, const char *fn);
/* 1 when the table at t is the argument at arg and still pending. */
int lm_lua_untouched(lua_State *L, int t, int arg);
/* push for text inputs: r->text as a pending table. */
void lm_lua_push_text(lua_State *L, lm_lua_run_t *r);
/* Pushes r->in[0] as a pending table over a shallow copy (kept in r->tmp). */
void lm_lua_push_lazy_copy(lua_State *L, lm_lua_run_t *r);
/* First byte of s[0..n) that is not JSON white space (0 when none). */
char lm_lua_first_char(const char *s, size_t n);
/* collect for on_response, on_error and on_log: the argument (or a
 * returned table) back as an object in out[0]. */
void lm_lua_collect_object(lua_State *L, lm_lua_run_t *r, int args, int res, int nres);
#endif
