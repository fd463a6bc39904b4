/*
 * conn.h - connection tracking per worker (shutdown, slow senders).
 * Thread: the worker that owns the connection.
 */
#ifndef LM_HTTP_CONN_H
#define LM_HTTP_CONN_H
#include "relay/worker.h"

#include <evhtp/evhtp.h>

/* Headers complete: the request runs, no header deadline. */
void lm_http_conn_busy(evhtp_request_t *req);
/* A body piece arrived (body_done: the whole body is in). */
void lm_http_conn_body(evhtp_request_t *req, int body_done);
/* A request ended: a keep-alive connection waits for the next one. */
void lm_http_conn_idle(evhtp_request_t *req);
/* Post-accept callback: track the connection on its worker. */
evhtp_res lm_http_conn_accept(evhtp_connection_t *conn, void *arg);
/* Timer (arg: the worker): close connections past their deadlines. */
void lm_http_conn_sweep(evutil_socket_t fd, short what, void *arg);
/* Close every connection of the worker. */
void lm_http_conn_close_all(lm_worker_t *w);
#endif
