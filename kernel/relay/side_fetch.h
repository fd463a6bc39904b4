/*
 * side_fetch.h - a worker runs the HTTP call that obtains a side value
 * (lm_provider.side_request/side_parse), stores the result in the
 * channel's cache and wakes every worker so requests waiting on it go on.
 * Thread: the worker that starts the fetch.
 */
#ifndef LM_SIDE_FETCH_H
#define LM_SIDE_FETCH_H
#include "plugin/host.h"
#include "relay/worker.h"

#define LM_SIDE_TIMEOUT_MS 30000 /* cap on one fetch, connect included */

/* Fetch `name` for `inst` (which lives in `rt`; the fetch holds a
 * reference). Returns 0, or -1 with e filled when it cannot start; the
 * cache entry is then completed as failed (and waiters woken) already. */
int lm_side_fetch_start(lm_worker_t *w, lm_rt_t *rt, lm_inst_t *inst, const char *name, lm_err *e);
/* Thread exit: abort this worker's fetches; their entries fail. */
void lm_side_fetch_cancel_all(lm_worker_t *w);
#endif
