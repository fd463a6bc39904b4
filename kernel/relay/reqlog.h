/*
 * reqlog.h - the relay's side of the request log (store/reqlog.h): one row
 * per request, built from what the relay and its trace state hold when it
 * ends. Thread: the relay's worker; the row is queued, never waited for.
 */
#ifndef LM_RELAY_REQLOG_H
#define LM_RELAY_REQLOG_H

struct lm_relay_s;

/* Queue r's row (called by lm_trace_end when r->trace.logged). */
void lm_reqlog_record(struct lm_relay_s *r);
#endif
