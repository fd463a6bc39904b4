/* otel.c - the span exporter (otel.h): a bounded ring of record slots, one
 * thread, OTLP over HTTP. Serialisation happens here, on the exporter's
 * thread, into one buffer kept from batch to batch; a traced request pays
 * only for filling its slot.
 * The ring: `tail` counts reservations, `head` the slots the exporter has
 * finished with; a slot in [head, tail) is either being filled by a worker
 * (ready 0) or waiting for export (ready 1). Only the exporter moves head,
 * so the slots it reads stay put while the mutex is free.
 * Thread: workers call reserve/commit; everything else is the exporter's
 * own thread, or the control thread for new/free. */
#include "relay/otel.h"
#include "core/log.h"
#include "longmen.h"
#include "relay/otel_enc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LM_OTEL_BATCH    512  /* records per export request */
#define LM_OTEL_EVERY_MS 1000 /* a partial batch waits at most this long */

typedef struct slot_s {
    lm_otel_rec_t rec; /* first: a rec pointer is its slot's */
    atomic_int ready;
} slot_t;

struct lm_otel_s {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot_t *ring;
    uint64_t head, tail; /* under mu; head moves only on the exporter's thread */
    size_t cap;
    int stop;
    char *url, *service;
    int timeout_ms, protocol;
    CURL *curl;                                      /* the exporter thread's own */
    int failing;                                     /* the last export failed (log once) */
    lm_otel_buf_t body;                              /* the request body, reused */
    const lm_otel_rec_t *batch[LM_OTEL_BATCH];       /* the records being encoded */
    lm_metrics_series_t *dropped, *exported, *fails; /* counters, or NULL */
};

lm_otel_rec_t *lm_otel_reserve(lm_otel_t *o, int spans)
{
    pthread_mutex_lock(&o->mu);
    if (o->tail - o->head >= o->cap || o->stop) {
        pthread_mutex_unlock(&o->mu);
        lm_metrics_add(o->dropped, (uint64_t)spans);
        return NULL;
    }
    slot_t *s = &o->ring[o->tail++ % o->cap];
    pthread_mutex_unlock(&o->mu);
    return &s->rec;
}

void lm_otel_commit(lm_otel_t *o, lm_otel_rec_t *rec)
{
    slot_t *s = (slot_t *)(void *)rec;
    atomic_store_explicit(&s->ready, 1, memory_order_release);
    /* A full batch wakes the exporter early; else its timed wait picks the
     * slot up. Read without the mutex: a missed wake costs one period. */
    if ((size_t)(s - o->ring) % LM_OTEL_BATCH == LM_OTEL_BATCH - 1)
        pthread_cond_signal(&o->cv);
}

/* ---- the exporter thread ---- */

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

static int64_t clock_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The ready records from head on (at most a batch); call with mu held. */
static size_t ready_run(const lm_otel_t *o)
{
    size_t n = 0, queued = (size_t)(o->tail - o->head);
    while (n < queued && n < LM_OTEL_BATCH &&
           atomic_load_explicit(&o->ring[(o->head + n) % o->cap].ready, memory_order_acquire))
        n++;
    return n;
}

/* The n slots from head: encoded into o->body, then released to the
 * workers (the body no longer needs them). Returns their span count. */
static uint64_t encode_release(lm_otel_t *o, size_t n, int *ok)
{
    uint64_t spans = 0;
    for (size_t i = 0; i < n; i++) {
        const lm_otel_rec_t *r = &o->ring[(o->head + i) % o->cap].rec;
        o->batch[i] = r;
        spans += 1 + (uint64_t)r->nattempts;
    }
    lm_otel_batch_t meta = {o->service, clock_of(CLOCK_REALTIME) - clock_of(CLOCK_MONOTONIC)};
    *ok = (o->protocol == LM_OTEL_JSON ? lm_otel_encode_json
                                       : lm_otel_encode_pb)(&o->body, o->batch, n, &meta) == 0;
    for (size_t i = 0; i < n; i++) {
        slot_t *s = &o->ring[(o->head + i) % o->cap];
        free(s->rec.prompt);
        free(s->rec.completion);
        atomic_store_explicit(&s->ready, 0, memory_order_relaxed);
    }
    pthread_mutex_lock(&o->mu);
    o->head += n;
    pthread_mutex_unlock(&o->mu);
    return spans;
}

/* Encode and POST the n records from head; their spans are counted
 * exported or dropped. */
static void export_batch(lm_otel_t *o, size_t n)
{
    int ok;
    uint64_t spans = encode_release(o, n, &ok);
    long code = 0;
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    if (ok && o->curl) {
        curl_easy_setopt(o->curl, CURLOPT_POSTFIELDS, o->body.p + o->body.off);
        curl_easy_setopt(o->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(o->body.len - o->body.off));
        rc = curl_easy_perform(o->curl);
        curl_easy_getinfo(o->curl, CURLINFO_RESPONSE_CODE, &code);
    }
    if (rc == CURLE_OK && code >= 200 && code < 300) {
        lm_metrics_add(o->exported, spans);
        if (o->failing)
            lm_log(LM_LOG_INFO, "otel: the collector accepts spans again");
        o->failing = 0;
    } else {
        lm_metrics_add(o->dropped, spans);
        lm_metrics_add(o->fails, 1);
        if (!o->failing) /* once per outage, not once per batch */
            lm_log(LM_LOG_WARN,
                   "otel: export to the collector failed (%s, HTTP %ld); spans dropped",
                   curl_easy_strerror(rc), code);
        o->failing = 1;
    }
}

/* Stopping with a failing collector: drop the ready rest rather than wait
 * otel_timeout per batch. Call with mu held. */
static void drop_rest(lm_otel_t *o)
{
    size_t n;
    while ((n = ready_run(o)) > 0) {
        uint64_t spans = 0;
        for (size_t i = 0; i < n; i++) {
            slot_t *s = &o->ring[(o->head + i) % o->cap];
            spans += 1 + (uint64_t)s->rec.nattempts;
            free(s->rec.prompt);
            free(s->rec.completion);
            atomic_store_explicit(&s->ready, 0, memory_order_relaxed);
        }
        o->head += n;
        lm_metrics_add(o->dropped, spans);
    }
}

static void *exporter_main(void *arg)
{
    lm_otel_t *o = arg;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        size_t n = ready_run(o);
        if (!o->stop && n < LM_OTEL_BATCH) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += LM_OTEL_EVERY_MS / 1000;
            pthread_cond_timedwait(&o->cv, &o->mu, &until);
            n = ready_run(o);
        }
        int stop = o->stop;
        pthread_mutex_unlock(&o->mu);
        if (n)
            export_batch(o, n); /* the ring stays open meanwhile */
        pthread_mutex_lock(&o->mu);
        if (stop && o->failing)
            drop_rest(o);
        if (stop && ready_run(o) == 0) /* no worker is left to fill a slot */
            break;
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

lm_otel_t *lm_otel_new(const lm_obs_conf_t *oc, lm_metrics_t *m, char *err, size_t errlen)
{
    lm_otel_t *o = calloc(1, sizeof(*o));
    if (o == NULL || oc->otel_endpoint == NULL) {
        free(o);
        snprintf(err, errlen, "otel: %s", o ? "no endpoint" : "out of memory");
        return NULL;
    }
    o->cap = (size_t)oc->otel_queue;
    o->ring = calloc(o->cap, sizeof(*o->ring)); /* pages are touched as slots fill */
    o->timeout_ms = oc->otel_timeout_ms;
    o->protocol = oc->otel_protocol;
    o->url = strdup(oc->otel_endpoint);
    o->service = strdup(oc->otel_service_name ? oc->otel_service_name : "longmen");
    o->curl = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, o->protocol == LM_OTEL_JSON
                                                       ? "Content-Type: application/json"
                                                       : "Content-Type: application/x-protobuf");
    if (o->ring == NULL || o->url == NULL || o->service == NULL || o->curl == NULL || h == NULL) {
        curl_slist_free_all(h);
        lm_otel_free(o);
        snprintf(err, errlen, "otel: out of memory");
        return NULL;
    }
    curl_easy_setopt(o->curl, CURLOPT_URL, o->url);
    curl_easy_setopt(o->curl, CURLOPT_HTTPHEADER, h); /* freed with the handle, below */
    curl_easy_setopt(o->curl, CURLOPT_PRIVATE, h);
    curl_easy_setopt(o->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(o->curl, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(o->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(o->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(o->curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(o->curl, CURLOPT_PROXY, "");
    curl_easy_setopt(o->curl, CURLOPT_WRITEFUNCTION, discard);
    if (m) {
        lm_metrics_family_t *f[3] = {
            lm_metrics_counter(m, "longmen_otel_spans_dropped_total",
                               "Spans dropped: queue full, or the collector failed or was slow",
                               NULL, 0),
            lm_metrics_counter(m, "longmen_otel_spans_exported_total",
                               "Spans the collector accepted", NULL, 0),
            lm_metrics_counter(m, "longmen_otel_export_failures_total",
                               "Export requests that failed", NULL, 0)};
        o->dropped = f[0] ? lm_metrics_series(f[0], NULL) : NULL;
        o->exported = f[1] ? lm_metrics_series(f[1], NULL) : NULL;
        o->fails = f[2] ? lm_metrics_series(f[2], NULL) : NULL;
    }
    pthread_mutex_init(&o->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&o->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&o->thread, NULL, exporter_main, o) != 0) {
        pthread_mutex_destroy(&o->mu);
        pthread_cond_destroy(&o->cv);
        o->thread = 0;
        lm_otel_free(o);
        snprintf(err, errlen, "otel: cannot start the exporter thread");
        return NULL;
    }
    return o;
}

void lm_otel_free(lm_otel_t *o)
{
    if (o == NULL)
        return;
    if (o->thread) {
        pthread_mutex_lock(&o->mu);
        o->stop = 1;
        pthread_mutex_unlock(&o->mu);
        pthread_cond_signal(&o->cv);
        pthread_join(o->thread, NULL);
        pthread_mutex_destroy(&o->mu);
        pthread_cond_destroy(&o->cv);
    }
    if (o->curl) {
        struct curl_slist *h = NULL;
        curl_easy_getinfo(o->curl, CURLINFO_PRIVATE, (char **)&h);
        curl_easy_cleanup(o->curl);
        curl_slist_free_all(h);
    }
    free(o->ring);
    free(o->body.p);
    free(o->url);
    free(o->service);
    free(o);
}
