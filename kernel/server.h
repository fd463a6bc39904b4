/*
 * server.h - the process: listener, worker threads, signals, drain.
 */
#ifndef LM_SERVER_H
#define LM_SERVER_H
#include "rt.h"

typedef struct lm_server_s lm_server_t;

/* Run the gateway until SIGTERM/SIGINT and a drain. Takes ownership of rt.
 * Returns 0 on a clean stop, -1 with a message in err. */
int lm_server_run(lm_rt_t *rt, char *err, size_t errlen);
/* In-flight relay accounting (any thread). */
void lm_server_inflight_add(lm_server_t *s, int delta);
/* 1 once SIGTERM/SIGINT started the drain (any thread). */
int lm_server_draining(lm_server_t *s);
#endif
