/*
 * state.c - small helpers on the host's objects (state.h): stage names,
 * bounded string copies, the running script's name.
 * Thread: any (pure); strings from lm_lua_dup_str are the caller's to free.
 */
#include "lua/state.h"

#include <stdlib.h>
#include <string.h>

const char *const lm_lua_stage_names[LM_LUA_NSTAGES] = {
    "load", "request", "route", "upstream_request", "event", "response", "usage", "error", "log",
};

const char *const lm_lua_stage_fns[LM_LUA_NSTAGES] = {
    NULL,       "on_request", "on_route", "on_upstream_request", "on_event", "on_response",
    "on_usage", "on_error",   "on_log",
};

void lm_lua_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = 0;
}

char *lm_lua_dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

const char *lm_lua_stage_name(lm_lua_stage_t stage)
{
    return (unsigned)stage < LM_LUA_NSTAGES ? lm_lua_stage_names[stage] : "?";
}

const char *lm_lua_script_name(lm_lua_vm_t *vm)
{
    return vm->script < vm->gen->n ? vm->gen->s[vm->script].name : "?";
}

/* First line of msg into dst. */
void lm_lua_first_line(char *dst, size_t cap, const char *msg)
{
    size_t n = strcspn(msg ? msg : "", "\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, msg ? msg : "", n);
    dst[n] = 0;
}
