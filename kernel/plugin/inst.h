/*
 * inst.h - the data of a loaded plugin and of its channel instances, shared
 * by the loader (plugin.c) and the host table (host.c) without either
 * including the other. Types only.
 */
#ifndef LM_INST_H
#define LM_INST_H
#include "conf/conf.h"
#include "longmen.h"
#include "plugin/side.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct lm_plugin_s {
    char name[64];  /* file name stem: plugins/<name>.so */
    void *dl;       /* dlopen handle; closed at the last unref */
    int memfd;      /* private copy; open while loaded */
    lm_provider vt; /* the plugin's table, zero-padded to our size */
    uint16_t abi_minor;
    atomic_int refs;
} lm_plugin_t;

/* One plugin instance = one channel (the ictx plugins get). */
typedef struct lm_inst_s {
    struct lm_plugin_s *plugin; /* counted reference */
    const lm_chan_conf_t *chan; /* borrowed from the config snapshot */
    void *istate;               /* plugin-owned */
    int inited;
    char logname[96];
    lm_side_t *side; /* side values (ABI 1.1), shared by every worker; owned */
    /* Key rotation: instance k of a channel whose secret lists several
     * values sees value k; the first instance owns the others. */
    int key_index;
    struct lm_inst_s *alts; /* keys 1..nalts (owned), or NULL */
    size_t nalts;
    atomic_uint rr; /* next key to use */
} lm_inst_t;
#endif
