/*
 * gen.c - script generations (lm_lua_gen_t): every script read from disk
 * at one time, copied, compiled and validated together in a fresh state.
 * Thread: any. A generation is reference counted (atomic); immutable once
 * loaded except its error counters.
 */
#include "lua/state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEF_INSTRUCTIONS 1000000u
#define DEF_DEADLINE_MS  10u
#define DEF_MEMORY       ((size_t)16 << 20)
#define MAX_SCRIPT_BYTES ((long)1 << 20)

static void gen_free(lm_lua_gen_t *gen)
{
    for (size_t i = 0; i < gen->n; i++) {
        lm_lua_gen_script_t *s = &gen->s[i];
        free(s->name);
        free(s->path);
        free(s->src);
        for (size_t j = 0; j < s->nmodels; j++)
            free(s->models[j]);
        for (size_t j = 0; j < s->nkeys; j++)
            free(s->keys[j]);
        free(s->models);
        free(s->keys);
        json_decref(s->args);
    }
    free(gen->s);
    free(gen);
}

static char **dup_list(const char *const *v, size_t n, int *oom)
{
    char **r;
    if (!n)
        return NULL;
    r = calloc(n, sizeof(*r));
    if (!r) {
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!(r[i] = lm_lua_dup_str(v[i])))
            *oom = 1;
    return r;
}

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    long n;
    char *p;

    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        fclose(f);
        return -1;
    }
    if (n > MAX_SCRIPT_BYTES) {
        snprintf(err, errlen, "%s: script larger than %ld bytes", path, MAX_SCRIPT_BYTES);
        fclose(f);
        return -1;
    }
    p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) {
        snprintf(err, errlen, "%s: cannot read: %s", path, p ? strerror(errno) : "out of memory");
        free(p);
        fclose(f);
        return -1;
    }
    fclose(f);
    p[n] = 0;
    *out = p;
    *len = (size_t)n;
    return 0;
}

lm_lua_gen_t *lm_lua_gen_load(const lm_lua_script_spec_t *specs, size_t n,
                              const lm_lua_limits_t *limits, lm_lua_shared_t *shared, char *err,
                              size_t errlen)
{
    lm_lua_gen_t *gen = calloc(1, sizeof(*gen));
    lm_lua_vm_t *vm;
    char dummy[8];
    int oom = 0;

    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = 0;
    if (!gen || (n && !(gen->s = calloc(n, sizeof(*gen->s))))) {
        free(gen);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&gen->refs, 1);
    gen->shared = shared;
    gen->lim.instructions =
        limits && limits->instructions ? limits->instructions : DEF_INSTRUCTIONS;
    gen->lim.deadline_ms = limits && limits->deadline_ms ? limits->deadline_ms : DEF_DEADLINE_MS;
    gen->lim.memory = limits && limits->memory ? limits->memory : DEF_MEMORY;
    gen->n = n;
    for (size_t i = 0; i < n; i++) {
        const lm_lua_script_spec_t *sp = &specs[i];
        lm_lua_gen_script_t *s = &gen->s[i];
        atomic_init(&s->errors, 0);
        atomic_init(&s->limits, 0);
        if (!sp->name || !*sp->name || !sp->path || !*sp->path) {
            snprintf(err, errlen, "script %zu: a name and a path are required", i + 1);
            goto fail;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(specs[j].name, sp->name) == 0) {
                snprintf(err, errlen, "%s: duplicate script name \"%s\"", sp->path, sp->name);
                goto fail;
            }
        s->name = lm_lua_dup_str(sp->name);
        s->path = lm_lua_dup_str(sp->path);
        s->models = dup_list(sp->models, sp->nmodels, &oom);
        s->nmodels = s->models ? sp->nmodels : 0;
        s->keys = dup_list(sp->keys, sp->nkeys, &oom);
        s->nkeys = s->keys ? sp->nkeys : 0;
        s->args = sp->args ? json_deep_copy(sp->args) : NULL;
        if (oom || !s->name || !s->path || (sp->args && !s->args)) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (read_file(sp->path, &s->src, &s->srclen, err, errlen))
            goto fail;
    }
    /* validate: compile and run everything in a fresh state */
    vm = lm_lua_vm_new(gen, err, errlen);
    if (!vm)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        gen->s[i].stages = vm->s[i].stages;
        gen->stages |= vm->s[i].stages;
    }
    lm_lua_vm_release(vm);
    return gen;
fail:
    gen_free(gen);
    return NULL;
}

lm_lua_gen_t *lm_lua_gen_acquire(lm_lua_gen_t *gen)
{
    if (gen)
        atomic_fetch_add(&gen->refs, 1);
    return gen;
}

void lm_lua_gen_release(lm_lua_gen_t *gen)
{
    if (gen && atomic_fetch_sub(&gen->refs, 1) == 1)
        gen_free(gen);
}

unsigned lm_lua_gen_stages(const lm_lua_gen_t *gen)
{
    return gen->stages;
}

size_t lm_lua_gen_nscripts(const lm_lua_gen_t *gen)
{
    return gen->n;
}

const char *lm_lua_gen_script_name(const lm_lua_gen_t *gen, size_t i)
{
    return i < gen->n ? gen->s[i].name : NULL;
}

void lm_lua_gen_stats(const lm_lua_gen_t *gen, size_t i, lm_lua_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (i < gen->n) {
        out->errors = atomic_load(&gen->s[i].errors);
        out->limits = atomic_load(&gen->s[i].limits);
    }
}
