/*
 * routes.h - the data-plane routes on the HTTP front: chat and embeddings
 * through the relay, /v1/models, /healthz, the default 404.
 * Thread: the connection's worker for every handler.
 */
#ifndef LM_ROUTES_H
#define LM_ROUTES_H
#include "http/front.h"

struct lm_relay_services_s;

/* The relay's per-request calls of c (begin ... writable); the caller sets
 * the thread calls. */
void lm_routes_relay_calls(lm_http_calls_t *c);
/* Register every route on f; svc (borrowed: the store, the brute-force
 * guard, the current generation) outlives f. 0, or -1. */
int lm_routes_add(lm_http_front_t *f, const struct lm_relay_services_s *svc);
#endif
