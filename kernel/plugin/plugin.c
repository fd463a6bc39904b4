/* plugin.c - dlopen of a private (memfd) copy of a plugin, ABI checks and
 * channel instances (plugin.h). Control thread, except the atomic
 * ref/unref; a loaded plugin is freed when its last reference drops. */
#include "plugin/plugin.h"

#include "core/log.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The smallest table a v1.0 plugin can have: through req_close. */
#define LM_PROVIDER_V1_0_SIZE (offsetof(lm_provider, req_close) + sizeof(void (*)(void)))

_Thread_local const lm_plugin_t *lm_plugin_running;

static int valid_name(const char *s)
{
    if (*s == '\0' || strlen(s) >= 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* Copy the file into a memfd so that a later rename/overwrite of the .so on
 * disk cannot affect the mapping, and so that reloading the same path gives
 * a fresh handle (glibc returns the existing one for a known path). */
static int private_copy(const char *path, char *dlpath, size_t dlpathlen, int *memfd, char *err,
                        size_t errlen)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (in < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(in, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(in);
        return -1;
    }
    if (st.st_mode & S_IWOTH) {
        snprintf(err, errlen, "%s: refusing a world-writable plugin", path);
        close(in);
        return -1;
    }
    int fd = memfd_create("longmen-plugin", MFD_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: memfd_create: %s", path, strerror(errno));
        close(in);
        return -1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        if (write(fd, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    }
    close(in);
    if (n < 0) {
        snprintf(err, errlen, "%s: copy failed: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    snprintf(dlpath, dlpathlen, "/proc/self/fd/%d", fd);
    *memfd = fd;
    return 0;
}

static int validate(const lm_provider *vt, const char *path, char *err, size_t errlen)
{
    if (vt->hdr.major != LM_ABI_MAJOR) {
        snprintf(err, errlen, "%s: plugin built for ABI %u.%u, host is %d.%d", path, vt->hdr.major,
                 vt->hdr.minor, LM_ABI_MAJOR, LM_ABI_MINOR);
        return -1;
    }
    if (vt->hdr.size < LM_PROVIDER_V1_0_SIZE) {
        snprintf(err, errlen, "%s: provider table too small (%u bytes, ABI 1.0 needs %zu)", path,
                 vt->hdr.size, (size_t)LM_PROVIDER_V1_0_SIZE);
        return -1;
    }
    return 0;
}

static int validate_callbacks(const lm_provider *vt, const char *path, char *err, size_t errlen)
{
    const char *missing = NULL;
    if (vt->name == NULL || !valid_name(vt->name))
        missing = "a valid name";
    else if (vt->init == NULL)
        missing = "init";
    else if (vt->build_request == NULL)
        missing = "build_request";
    else if (vt->parse_response == NULL)
        missing = "parse_response";
    else if ((vt->caps & LM_CAP_STREAM) && vt->parse_event == NULL)
        missing = "parse_event (caps has LM_CAP_STREAM)";
    else if (vt->side_request != NULL && vt->side_parse == NULL)
        missing = "side_parse (side_request is set)";
    else if (vt->side_parse != NULL && vt->side_request == NULL)
        missing = "side_request (side_parse is set)";
    else if (vt->poll_request != NULL && vt->poll_parse == NULL) /* 1.4 */
        missing = "poll_parse (poll_request is set)";
    else if (vt->poll_parse != NULL && vt->poll_request == NULL)
        missing = "poll_request (poll_parse is set)";
    if (missing) {
        snprintf(err, errlen, "%s: provider table lacks %s", path, missing);
        return -1;
    }
    if (vt->framing != LM_FRAME_SSE && vt->framing != LM_FRAME_NDJSON) {
        snprintf(err, errlen, "%s: unsupported framing %d", path, vt->framing);
        return -1;
    }
    return 0;
}

lm_plugin_t *lm_plugin_load_path(const char *path, char *err, size_t errlen)
{
    char dlpath[64];
    int memfd = -1;

    if (private_copy(path, dlpath, sizeof(dlpath), &memfd, err, errlen) < 0)
        return NULL;
    /* The memfd stays open while the plugin is loaded: glibc matches
     * already-loaded objects by path, and a reused fd number would make
     * /proc/self/fd/N name a different plugin. */
    void *dl = dlopen(dlpath, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        close(memfd);
        const char *why = dlerror();
        snprintf(err, errlen, "%s: cannot load: %s", path, why ? why : "dlopen failed");
        return NULL;
    }
    lm_plugin_entry_fn entry;
    *(void **)&entry = dlsym(dl, LM_PLUGIN_ENTRY);
    if (entry == NULL) {
        snprintf(err, errlen, "%s: no entry point (%s)", path, LM_PLUGIN_ENTRY);
        goto fail;
    }
    const lm_provider *vt = entry();
    if (vt == NULL) {
        snprintf(err, errlen, "%s: %s returned NULL", path, LM_PLUGIN_ENTRY);
        goto fail;
    }
    if (validate(vt, path, err, errlen) < 0)
        goto fail;
    lm_plugin_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    /* Fields beyond the plugin's table size stay zero (= NULL). */
    memcpy(&p->vt, vt, vt->hdr.size < sizeof(p->vt) ? vt->hdr.size : sizeof(p->vt));
    if (validate_callbacks(&p->vt, path, err, errlen) < 0) {
        free(p);
        goto fail;
    }
    p->dl = dl;
    p->memfd = memfd;
    p->abi_minor = vt->hdr.minor;
    atomic_init(&p->refs, 1);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(p->name, sizeof(p->name), "%.*s", (int)strcspn(base, "."), base);
    return p;
fail:
    dlclose(dl);
    close(memfd);
    return NULL;
}

lm_plugin_t *lm_plugin_load(const char *dir, const char *name, char *err, size_t errlen)
{
    char path[4096];
    if (!valid_name(name)) {
        snprintf(err, errlen,
                 "plugin name \"%s\" must match [a-z0-9_-]+ (plugins load only from "
                 "the plugin directory)",
                 name);
        return NULL;
    }
    snprintf(path, sizeof(path), "%s/%s.so", dir, name);
    return lm_plugin_load_path(path, err, errlen);
}

void lm_plugin_ref(lm_plugin_t *p)
{
    atomic_fetch_add(&p->refs, 1);
}

void lm_plugin_unref(lm_plugin_t *p)
{
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
        dlclose(p->dl);
        close(p->memfd);
        free(p);
    }
}

static int check_cfg_keys(const lm_plugin_t *p, const lm_chan_conf_t *ch, const char *conf_path,
                          char *err, size_t errlen)
{
    const lm_cfg_key *keys = p->vt.cfg_keys;
    for (size_t i = 0; i < ch->nkv; i++) {
        const lm_cfg_key *k = keys;
        while (k && k->name && strcmp(k->name, ch->kv[i].key) != 0)
            k++;
        if (k == NULL || k->name == NULL) {
            snprintf(err, errlen, "%s:%d: unknown setting \"%s\" for plugin %s in channel %s",
                     conf_path, ch->kv[i].line, ch->kv[i].key, p->vt.name, ch->name);
            return -1;
        }
    }
    for (const lm_cfg_key *k = keys; k && k->name; k++) {
        if (k->required && k->dflt == NULL && lm_conf_chan_kv(ch, k->name) == NULL) {
            snprintf(err, errlen, "%s:%d: channel %s: plugin %s requires \"%s\" (%s)", conf_path,
                     ch->line, ch->name, p->vt.name, k->name, k->help ? k->help : "");
            return -1;
        }
    }
    return 0;
}

static int inst_init_at(lm_inst_t *inst, lm_plugin_t *p, const lm_chan_conf_t *ch, int key_index,
                        const char *conf_path, char *err, size_t errlen)
{
    lm_err e;

    memset(inst, 0, sizeof(*inst));
    inst->key_index = key_index;
    if (check_cfg_keys(p, ch, conf_path, err, errlen) < 0)
        return -1;
    inst->plugin = p;
    inst->chan = ch;
    if (p->vt.side_request && (inst->side = lm_side_new()) == NULL) {
        snprintf(err, errlen, "%s:%d: channel %s: out of memory", conf_path, ch->line, ch->name);
        inst->plugin = NULL;
        return -1;
    }
    snprintf(inst->logname, sizeof(inst->logname), "[%s/%s]", ch->name, p->vt.name);
    memset(&e, 0, sizeof(e));
    const lm_plugin_t *prev = lm_plugin_enter(p);
    int rc = p->vt.init(&lm_host_table, inst, &inst->istate, &e);
    lm_plugin_leave(prev);
    if (rc < 0) {
        snprintf(err, errlen, "%s:%d: channel %s: plugin %s init failed: %s", conf_path, ch->line,
                 ch->name, p->vt.name, e.msg[0] ? e.msg : "(no message)");
        lm_side_free(inst->side);
        inst->side = NULL;
        inst->plugin = NULL;
        return -1;
    }
    lm_plugin_ref(p);
    inst->inited = 1;
    return 0;
}

int lm_inst_init(lm_inst_t *inst, lm_plugin_t *p, const lm_chan_conf_t *ch, const char *conf_path,
                 char *err, size_t errlen)
{
    return inst_init_at(inst, p, ch, 0, conf_path, err, errlen);
}

int lm_inst_init_keys(lm_inst_t *inst, lm_plugin_t *p, const lm_chan_conf_t *ch,
                      const char *conf_path, char *err, size_t errlen)
{
    if (lm_inst_init(inst, p, ch, conf_path, err, errlen) < 0)
        return -1;
    if (ch->nkeys < 2)
        return 0;
    inst->alts = calloc(ch->nkeys - 1, sizeof(*inst->alts));
    if (inst->alts == NULL) {
        snprintf(err, errlen, "%s:%d: channel %s: out of memory", conf_path, ch->line, ch->name);
        lm_inst_fini(inst);
        return -1;
    }
    for (size_t k = 1; k < ch->nkeys; k++) {
        if (inst_init_at(&inst->alts[k - 1], p, ch, (int)k, conf_path, err, errlen) < 0) {
            lm_inst_fini(inst);
            return -1;
        }
        inst->nalts++;
    }
    return 0;
}

lm_inst_t *lm_inst_pick(lm_inst_t *inst)
{
    if (inst->nalts == 0)
        return inst;
    unsigned k =
        atomic_fetch_add_explicit(&inst->rr, 1, memory_order_relaxed) % (unsigned)(inst->nalts + 1);
    return k == 0 ? inst : &inst->alts[k - 1];
}

void lm_inst_fini(lm_inst_t *inst)
{
    for (size_t k = 0; k < inst->nalts; k++)
        lm_inst_fini(&inst->alts[k]);
    free(inst->alts);
    if (inst->inited && inst->plugin->vt.fini) {
        const lm_plugin_t *prev = lm_plugin_enter(inst->plugin);
        inst->plugin->vt.fini(inst->istate);
        lm_plugin_leave(prev);
    }
    if (inst->plugin)
        lm_plugin_unref(inst->plugin);
    lm_side_free(inst->side);
    memset(inst, 0, sizeof(*inst));
}
