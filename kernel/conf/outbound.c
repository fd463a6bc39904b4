/* outbound.c - applies the admin_env_allow and admin_private_upstreams
 * directives (outbound.h): env: names, marks on stored channels. Any
 * thread; nothing allocated. */
#include "conf/outbound.h"

#include <fnmatch.h>
#include <string.h>

int lm_outbound_env_allowed(const lm_conf_t *c, const char *name)
{
    for (size_t i = 0; i < c->nadmin_env_allow; i++)
        if (fnmatch(c->admin_env_allow[i], name, 0) == 0)
            return 1;
    return 0;
}

void lm_outbound_mark_admin(lm_conf_t *c, size_t from)
{
    for (size_t i = from; i < c->nchans; i++) {
        c->chans[i].from_admin = 1;
        c->chans[i].private_refused = !c->admin_private_upstreams;
    }
}
