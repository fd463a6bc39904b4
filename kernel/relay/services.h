/*
 * services.h - what the relay needs from the process, handed down so the
 * relay never reaches up into server/: the server fills one of these
 * before the workers start and every worker points to it (w->svc). Any
 * thread reads it; nothing in it changes after setup; the server owns all.
 */
#ifndef LM_RELAY_SERVICES_H
#define LM_RELAY_SERVICES_H
#include "gov/authguard.h"
#include "relay/rt.h"
#include "route/metrics.h"
#include "store/store.h"

#include <stdatomic.h>

typedef struct lm_relay_services_s {
    lm_store_t *store;          /* NULL without data_dir */
    lm_metrics_std_t *metrics;  /* standard metric families; NULL without a registry */
    lm_authguard_t *authguard;  /* failed authentications per address */
    struct lm_shared_s *shared; /* counters shared through Redis (gov/shared.h), or NULL */
    atomic_long *inflight;      /* requests in flight, process-wide */
    struct lm_otel_s *otel;     /* the span exporter (relay/otel.h), or NULL: tracing off */
    /* A counted reference to the current generation (any thread); the
     * caller releases it with lm_rt_unref. */
    lm_rt_t *(*acquire_rt)(void *arg);
    /* Tell every worker a side value changed (any thread). */
    void (*side_wake)(void *arg);
    void *arg; /* passed to acquire_rt and side_wake */
} lm_relay_services_t;

/* Add delta to the process-wide in-flight count; returns the new count. */
static inline long lm_relay_inflight_add(const lm_relay_services_t *svc, int delta)
{
    return atomic_fetch_add(svc->inflight, delta) + delta;
}
#endif
