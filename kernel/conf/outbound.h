/*
 * outbound.h - the configuration file's limits on channels stored through
 * the admin API (SS-2, SS-7). An admin token must not turn the gateway into
 * a way to read its environment or to reach its private network:
 *
 *   admin_env_allow GLOB...      env:NAME usable in such a channel only when
 *                                NAME matches one of the globs (fnmatch);
 *                                may repeat; none by default
 *   admin_private_upstreams on   their upstreams may be loopback or private
 *                                addresses; off by default
 *
 * The file's own channels are not limited. conf.c parses the directives
 * into lm_conf_t; this module applies them. Threads: any (pure functions
 * on a snapshot the caller holds).
 */
#ifndef LM_OUTBOUND_H
#define LM_OUTBOUND_H
#include "conf/conf.h"

#include <stddef.h>

/* 1 if env:name may be used by a channel stored through the admin API. */
int lm_outbound_env_allowed(const lm_conf_t *c, const char *name);

/* Mark channels [from, c->nchans) of c as stored through the admin API:
 * from_admin, and private_refused unless admin_private_upstreams is on. */
void lm_outbound_mark_admin(lm_conf_t *c, size_t from);
#endif
