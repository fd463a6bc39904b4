/*
 * settle.h - what a request costs and leaves behind: the ledger row, the
 * quota settlement, the access log line and request metrics. Thread: the
 * relay's worker (lm_settle's commit comes back to it as an event).
 */
#ifndef LM_RELAY_SETTLE_H
#define LM_RELAY_SETTLE_H
#include "relay/relay_int.h"

#include <event2/event.h>

/* The usage to bill (a value): the provider's report or an estimate. */
lm_usage lm_settle_usage(const lm_relay_t *r);
/* Record the request's row and release its quota hold, once. With wait and
 * a billed row, the caller holds its last bytes until the row is committed
 * or store_wait passed (returns 1; lm_settle_committed or the timeout
 * continues); aborted requests and rows that bill nothing (config keys,
 * cost 0) never wait (DB-4). */
int lm_settle(lm_relay_t *r, int aborted, int wait);
/* r->settle_ev's callback (arg: the relay): the row is durable; send the
 * held reply or end the stream, then free the relay if it is done. */
void lm_settle_committed(evutil_socket_t fd, short what, void *arg);
/* A stream that ended well: its usage chunk and [DONE] follow the commit. */
void lm_settle_stream_ok(lm_relay_t *r);
/* The access-log line (and the scripts' log stage) for a finished request. */
void lm_settle_access_log(lm_relay_t *r);
/* Request-level metrics (names only: model, channel, status). */
void lm_settle_metrics(lm_relay_t *r);
#endif
