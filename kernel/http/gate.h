/*
 * gate.h - stands between a connection's socket and libevhtp's parser.
 * Bytes are read into the gate, which hands libevhtp one complete request
 * head at a time (so a head split over reads parses as if it came at once,
 * IN-12), then that request's body and nothing more (pipelined requests
 * wait for the previous answer). Heads over the limits, with control
 * bytes, or announcing a body over max_body_size are answered here (414,
 * 431, 400, 413 in the OpenAI error shape) and the connection lingers,
 * reading and discarding for a bounded time, so the client reads the
 * answer instead of a reset (IN-3, IN-4, IN-5). Thread: the connection's
 * worker; every call and callback runs there.
 */
#ifndef LM_GATE_H
#define LM_GATE_H
#include "http/head.h"

#include <evhtp/evhtp.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct lm_gate_s lm_gate_t;

/* Put a gate in front of c, just accepted (the post-accept hook). The
 * caller owns the gate and frees it with lm_gate_free when c is freed (its
 * connection-fini hook). NULL when out of memory: c then reads unguarded. */
lm_gate_t *lm_gate_attach(evhtp_connection_t *c, const lm_head_limits_t *lim);
/* Read max_body from live[0] and max_body_audio from live[1] before each
 * head (a reload may change them); the array must outlive the gate. */
void lm_gate_max_body_from(lm_gate_t *g, const _Atomic uint64_t *live);
/* The request in flight on the connection ended (request-fini hook): the
 * next buffered request may go in, from the event loop (not from inside the
 * hook, while libevhtp still resets its parser). */
void lm_gate_request_done(lm_gate_t *g);
/* The next bytes queued on the connection are a whole answer (headers and
 * body in one go): they are written from the loop in this pass rather than
 * after the socket is next seen writable (one epoll_wait and two epoll_ctl
 * less an answer). */
void lm_gate_reply_now(lm_gate_t *g);
/* Connection-fini: stop every timer and free what the gate holds. */
void lm_gate_free(lm_gate_t *g);
#endif
