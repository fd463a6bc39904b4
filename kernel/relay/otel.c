/* otel.c - the span exporter (otel.h): a bounded queue, one thread, OTLP
 * over HTTP with JSON bodies. Serialisation happens here, on the
 * exporter's thread, so a traced request pays only for copying its record.
 * Thread: workers call lm_otel_submit; everything else is the exporter's
 * own thread, or the control thread for new/free. */
#include "relay/otel.h"
#include "core/log.h"
#include "longmen.h"
#include "relay/otel_enc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LM_OTEL_BATCH    512  /* records per export request */
#define LM_OTEL_EVERY_MS 1000 /* a partial batch waits at most this long */

struct lm_otel_s {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lm_otel_rec_t *head, *tail; /* queued records, oldest first */
    int queued, cap, stop;
    char *url, *service;
    int timeout_ms;
    CURL *curl;                                      /* the exporter thread's own */
    int failing;                                     /* the last export failed (log once) */
    lm_metrics_series_t *dropped, *exported, *fails; /* counters, or NULL */
};

void lm_otel_rec_free(lm_otel_rec_t *rec)
{
    if (rec == NULL)
        return;
    free(rec->prompt);
    free(rec->completion);
    free(rec);
}

static uint64_t rec_spans(const lm_otel_rec_t *rec)
{
    return 1 + (uint64_t)rec->nattempts;
}

void lm_otel_submit(lm_otel_t *o, lm_otel_rec_t *rec)
{
    rec->next = NULL;
    pthread_mutex_lock(&o->mu);
    if (o->queued >= o->cap || o->stop) {
        pthread_mutex_unlock(&o->mu);
        lm_metrics_add(o->dropped, rec_spans(rec));
        lm_otel_rec_free(rec);
        return;
    }
    if (o->tail)
        o->tail->next = rec;
    else
        o->head = rec;
    o->tail = rec;
    int wake = ++o->queued == LM_OTEL_BATCH; /* else the timed wait picks it up */
    pthread_mutex_unlock(&o->mu);
    if (wake)
        pthread_cond_signal(&o->cv);
}

/* ---- the exporter thread ---- */

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

/* POST one batch; its spans are counted exported or dropped. */
static void export_batch(lm_otel_t *o, lm_otel_rec_t *batch)
{
    uint64_t spans = 0;
    for (const lm_otel_rec_t *r = batch; r; r = r->next)
        spans += rec_spans(r);
    char *body = lm_otel_encode(batch, o->service);
    long code = 0;
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    if (body && o->curl) {
        curl_easy_setopt(o->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(o->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        rc = curl_easy_perform(o->curl);
        curl_easy_getinfo(o->curl, CURLINFO_RESPONSE_CODE, &code);
    }
    free(body);
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
    while (batch) {
        lm_otel_rec_t *next = batch->next;
        lm_otel_rec_free(batch);
        batch = next;
    }
}

/* Up to LM_OTEL_BATCH records off the queue; call with the mutex held. */
static lm_otel_rec_t *take(lm_otel_t *o)
{
    lm_otel_rec_t *first = o->head, *last = NULL;
    int n = 0;
    for (lm_otel_rec_t *r = o->head; r && n < LM_OTEL_BATCH; r = r->next, n++)
        last = r;
    if (last == NULL)
        return NULL;
    o->head = last->next;
    if (o->head == NULL)
        o->tail = NULL;
    last->next = NULL;
    o->queued -= n;
    return first;
}

static void *exporter_main(void *arg)
{
    lm_otel_t *o = arg;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        if (!o->stop && o->queued < LM_OTEL_BATCH) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += LM_OTEL_EVERY_MS / 1000;
            pthread_cond_timedwait(&o->cv, &o->mu, &until);
        }
        lm_otel_rec_t *batch = take(o);
        int stop = o->stop;
        pthread_mutex_unlock(&o->mu);
        if (batch)
            export_batch(o, batch); /* the queue stays open meanwhile */
        pthread_mutex_lock(&o->mu);
        if (stop && o->failing && o->head) { /* stopping, and the collector fails: drop the
                                              * rest rather than wait otel_timeout per batch */
            lm_otel_rec_t *rest = o->head;
            o->head = o->tail = NULL;
            o->queued = 0;
            pthread_mutex_unlock(&o->mu);
            while (rest) {
                lm_otel_rec_t *next = rest->next;
                lm_metrics_add(o->dropped, rec_spans(rest));
                lm_otel_rec_free(rest);
                rest = next;
            }
            pthread_mutex_lock(&o->mu);
        }
        if (stop && o->head == NULL)
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
    o->cap = oc->otel_queue;
    o->timeout_ms = oc->otel_timeout_ms;
    o->url = strdup(oc->otel_endpoint);
    o->service = strdup(oc->otel_service_name ? oc->otel_service_name : "longmen");
    o->curl = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (o->url == NULL || o->service == NULL || o->curl == NULL || h == NULL) {
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
    free(o->url);
    free(o->service);
    free(o);
}
