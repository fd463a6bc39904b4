/*
 * otel.h - the OpenTelemetry span exporter (docs/observability.md): span
 * records written by the workers straight into the slots of a bounded
 * ring, batched and sent over OTLP/HTTP by one background thread with its
 * own libcurl easy handle. A full ring, a slow or a dead collector drop
 * spans (longmen_otel_spans_dropped_total); a worker never waits for more
 * than the ring's mutex, and allocates nothing.
 * Threads: reserve/commit on any thread; new/configure/free on the control
 * thread.
 */
#ifndef LM_OTEL_H
#define LM_OTEL_H
#include "conf/obsconf.h"
#include "relay/otel_rec.h"
#include "route/metrics.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lm_otel_s lm_otel_t;

/* Start the exporter for oc (otel_endpoint NULL: idle until a reload sets
 * one); counters go to m (may be NULL).
 * NULL with a message in err. */
lm_otel_t *lm_otel_new(const lm_obs_conf_t *oc, lm_metrics_t *m, char *err, size_t errlen);
/* A reload: oc's endpoint, protocol, headers, service name and timeout
 * from the next batch on; a new otel_queue once the exporter has drained
 * the records queued before (new ones go to the new queue meanwhile). Records already queued go to
 * the previous collector first (dropped and counted if it fails). Nothing changes when they are the
 * same. 0, or -1 with a message (the old target stays). Control thread. */
int lm_otel_configure(lm_otel_t *o, const lm_obs_conf_t *oc, char *err, size_t errlen);
/* A free slot of the ring for one request's record, to be filled by the
 * caller (every field: the slot holds a previous record's bytes) and
 * handed back with lm_otel_commit, soon and on any path. NULL when the
 * ring is full or the exporter stops: `spans` spans are counted dropped. */
lm_otel_rec_t *lm_otel_reserve(lm_otel_t *o, int spans);
/* The slot is filled: the exporter may send it (ownership of the slot and
 * of rec->prompt/completion passes to the exporter). */
void lm_otel_commit(lm_otel_t *o, lm_otel_rec_t *rec);
/* Send what is queued (bounded by the export timeout), stop the thread
 * and free. Call only when no worker can reserve any more. NULL does
 * nothing. */
void lm_otel_free(lm_otel_t *o);
#endif
