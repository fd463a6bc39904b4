/*
 * plugin.h - loading provider plugins and creating channel instances.
 *
 * A plugin is loaded from a private copy (memfd), so replacing the file on
 * disk never touches a mapped object. Thread: control thread only, except
 * lm_plugin_ref/unref which are atomic.
 */
#ifndef LM_PLUGIN_H
#define LM_PLUGIN_H
#include "plugin/host.h"
#include "plugin/inst.h"

#include <stdatomic.h>

/*
 * Load <dir>/<name>.so. Refuses (returning NULL with a message in err) a
 * name that is not [a-z0-9_-]+, a missing or world-writable file, no entry
 * point, a wrong ABI major, a table that is too small, missing callbacks.
 * The result has one reference, owned by the caller.
 */
lm_plugin_t *lm_plugin_load(const char *dir, const char *name, char *err, size_t errlen);
/* Same, from an explicit path (the test kit and `longmen plugin-test`). */
lm_plugin_t *lm_plugin_load_path(const char *path, char *err, size_t errlen);
void lm_plugin_ref(lm_plugin_t *p);
/* Drops a reference; the last one dlcloses. Control thread. */
void lm_plugin_unref(lm_plugin_t *p);

/* The plugin whose code this thread is running (NULL outside plugin
 * calls): the crash handler names it (PL-1). Set around every callback. */
extern _Thread_local const lm_plugin_t *lm_plugin_running;
static inline const lm_plugin_t *lm_plugin_enter(const lm_plugin_t *p)
{
    const lm_plugin_t *prev = lm_plugin_running;
    lm_plugin_running = p;
    return prev;
}
static inline void lm_plugin_leave(const lm_plugin_t *prev)
{
    lm_plugin_running = prev;
}

/* Check the channel's settings against the plugin's cfg_keys, then call
 * init. On failure returns -1 with "file:line: ..." in err. inst is
 * caller-owned storage; on success it holds a plugin reference. */
/* A channel whose secret lists several values gets one instance per value
 * (lm_inst_init_keys): lm_inst_pick rotates over them per request. */
int lm_inst_init_keys(lm_inst_t *inst, lm_plugin_t *p, const lm_chan_conf_t *ch,
                      const char *conf_path, char *err, size_t errlen);
lm_inst_t *lm_inst_pick(lm_inst_t *inst);
int lm_inst_init(lm_inst_t *inst, lm_plugin_t *p, const lm_chan_conf_t *ch, const char *conf_path,
                 char *err, size_t errlen);
/* fini + drop the plugin reference. Control thread. */
void lm_inst_fini(lm_inst_t *inst);
#endif
