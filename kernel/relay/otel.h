/*
 * otel.h - the OpenTelemetry span exporter (docs/observability.md): span
 * records queued by the workers, batched and sent as OTLP/HTTP JSON by one
 * background thread with its own libcurl easy handle. A full queue, a slow
 * or a dead collector drop spans (longmen_otel_spans_dropped_total); a
 * worker never waits for more than the queue's mutex.
 * Threads: lm_otel_submit on any thread; new/free on the control thread.
 */
#ifndef LM_OTEL_H
#define LM_OTEL_H
#include "conf/obsconf.h"
#include "relay/otel_rec.h"
#include "route/metrics.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lm_otel_s lm_otel_t;

/* Start the exporter for oc->otel_endpoint (which must be set); counters
 * go to m (may be NULL). NULL with a message in err. */
lm_otel_t *lm_otel_new(const lm_obs_conf_t *oc, lm_metrics_t *m, char *err, size_t errlen);
/* Queue rec (ownership passes, whatever happens: a full queue frees it
 * and counts its spans as dropped). Never blocks beyond a mutex. */
void lm_otel_submit(lm_otel_t *o, lm_otel_rec_t *rec);
/* Free a record and its content copies. */
void lm_otel_rec_free(lm_otel_rec_t *rec);
/* Send what is queued (bounded by the export timeout), stop the thread
 * and free. NULL does nothing. */
void lm_otel_free(lm_otel_t *o);
#endif
