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
#include "route/metrics.h"

#include <stddef.h>
#include <stdint.h>

#define LM_OTEL_MAX_ATTEMPTS 4 /* child spans kept per request */

/* One upstream attempt: a CLIENT span under the request's span. */
typedef struct lm_otel_attempt_s {
    uint8_t span_id[8];
    int64_t start_ns, end_ns; /* unix nanoseconds */
    int status;               /* the upstream's HTTP status, 0: none */
    char channel[64], system[32], model[128];
} lm_otel_attempt_t;

/* One request: a SERVER span plus its attempts. Everything is copied in
 * (the generation that named the channels may be gone by export time). */
typedef struct lm_otel_rec_s {
    struct lm_otel_rec_s *next; /* the queue's link */
    uint8_t trace_id[16], span_id[8], parent_id[8];
    int has_parent;
    int64_t start_ns, end_ns; /* unix nanoseconds */
    char request_id[40], api[16], operation[16], key_name[64], channel[64], system[32];
    char model_req[128], model_resp[128], finish[32], error_code[48];
    int64_t key_id, input_tokens, output_tokens, cost, generation, ttft_ms;
    int status, stream, nattempts;
    lm_otel_attempt_t attempts[LM_OTEL_MAX_ATTEMPTS];
    char *prompt, *completion; /* owned; only with otel_capture_content on, else NULL */
} lm_otel_rec_t;

typedef struct lm_otel_s lm_otel_t;

/* Start the exporter for oc->otel_endpoint (which must be set); counters
 * go to m (may be NULL). NULL with a message in err. */
lm_otel_t *lm_otel_new(const lm_obs_conf_t *oc, lm_metrics_t *m, char *err, size_t errlen);
/* Queue rec (ownership passes, whatever happens: a full queue frees it
 * and counts its spans as dropped). Never blocks beyond a mutex. */
void lm_otel_submit(lm_otel_t *o, lm_otel_rec_t *rec);
/* Free a record and its content copies. */
void lm_otel_rec_free(lm_otel_rec_t *rec);
/* Serialise recs (a NULL-terminated list by ->next) as one OTLP/JSON
 * ExportTraceServiceRequest; malloc'd text, the caller frees; NULL when
 * out of memory. Exposed for the unit test. */
char *lm_otel_encode(const lm_otel_rec_t *recs, const char *service_name);
/* Send what is queued (bounded by the export timeout), stop the thread
 * and free. NULL does nothing. */
void lm_otel_free(lm_otel_t *o);
#endif
