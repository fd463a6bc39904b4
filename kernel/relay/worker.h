/*
 * worker.h - per-worker-thread state. Everything here is touched only by
 * the thread that owns it (its event base, its curl multi, its requests).
 */
#ifndef LM_WORKER_H
#define LM_WORKER_H
#include "relay/rt.h"
#include "relay/services.h"

#include <stdatomic.h>
#include <stdint.h>

struct event_base;
struct lm_upstream_pool_s;
struct lm_relay_s;
struct lm_server_s;
struct lm_lua_vm_s;

typedef struct lm_worker_s {
    int index;
    struct event_base *base;        /* this thread's loop (never the main base) */
    struct lm_upstream_pool_s *up;  /* curl multi driven by `base` */
    struct lm_server_s *srv;        /* server.c's own back pointer; the relay uses svc */
    const lm_relay_services_t *svc; /* borrowed; lives longer than workers */
    const lm_rt_t *rt;              /* borrowed runtime snapshot */
    uint64_t next_id;               /* request id counter */
    struct lm_relay_s *inflight;    /* list of live relays (for shutdown) */
    uint64_t rng;                   /* selection randomness (xorshift state, worker only) */
    struct lm_lua_vm_s *vm;         /* Lua state of the newest generation seen (one reference) */
    struct lm_side_fetch_s *side_fetches; /* side-value fetches this worker runs */
    struct lm_relay_s *side_waiters;      /* relays waiting for a side value */
    struct lm_relay_s *spare;             /* one freed relay for the next request (relay.c) */
} lm_worker_t;
#endif
