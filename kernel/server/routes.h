/*
 * routes.h - data-plane routes answered without a relay.
 * Thread: the connection's worker.
 */
#ifndef LM_ROUTES_H
#define LM_ROUTES_H
#include <evhtp/evhtp.h>

/* GET /v1/models and /v1/models/<id> (arg: the server). */
void lm_routes_models(evhtp_request_t *req, void *arg);
void lm_routes_health(evhtp_request_t *req, void *arg);
void lm_routes_default(evhtp_request_t *req, void *arg);
#endif
