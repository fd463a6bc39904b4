/*
 * front.h - the data-plane front's relay routes (libevhtp hooks).
 * Thread: the connection's worker.
 */
#ifndef LM_HTTP_FRONT_H
#define LM_HTTP_FRONT_H
#include <evhtp/evhtp.h>

/* on_headers hook of a relay route (arg: the op). */
evhtp_res lm_http_front_relay_headers(evhtp_request_t *req, evhtp_headers_t *hdrs, void *arg);
/* The route callback of a relay route: the request is complete. */
void lm_http_front_relay_route(evhtp_request_t *req, void *arg);
#endif
