/* otel.c - the span exporter (otel.h): a bounded ring of record slots, one
 * thread, OTLP over HTTP. Serialisation happens here, on the exporter's
 * thread, into one buffer kept from batch to batch; a traced request pays
 * only for filling its slot.
 * The ring: `tail` counts reservations, `head` the slots the exporter has
 * finished with; a slot in [head, tail) is either being filled by a worker
 * (ready 0) or waiting for export (ready 1). Only the exporter moves head,
 * so the slots it reads stay put while the mutex is free.
 * A reload that changes otel_queue never moves a slot a worker may hold:
 * the exporter installs a second ring (`next`) that takes the new
 * reservations while the old one drains, and makes it the ring once the
 * old one is empty (every slot reserved in it committed and exported).
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
    size_t pos; /* its index in its ring, set at reservation (the commit's batch test) */
} slot_t;

/* Where and how batches go: what otel_endpoint, otel_protocol,
 * otel_header, otel_service_name and otel_timeout said. */
typedef struct target_s {
    char *url; /* NULL: tracing off, records that still come are dropped */
    char *service;
    int protocol, timeout_ms;
    struct curl_slist *headers; /* Content-Type and otel_header lines */
} target_t;

struct lm_otel_s {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot_t *ring;
    uint64_t head, tail; /* under mu; head moves only on the exporter's thread */
    size_t cap;
    size_t want_cap; /* under mu: the last otel_queue configured */
    slot_t *next;    /* under mu: the ring being switched to, or NULL */
    size_t next_cap;
    uint64_t next_tail; /* reservations in next (it starts at head 0) */
    int stop;
    target_t *cur;          /* the exporter thread's (the control thread's before it starts) */
    target_t *pending;      /* under mu: lm_otel_configure's, applied between batches */
    const target_t *latest; /* under mu: the last configured (pending, or the one
                             * the exporter runs or is switching to) */
    CURL *curl;             /* the exporter thread's own */
    int failing;            /* the last export failed (log once) */
    lm_otel_buf_t body;     /* the request body, reused */
    const lm_otel_rec_t *batch[LM_OTEL_BATCH];       /* the records being encoded */
    lm_metrics_series_t *dropped, *exported, *fails; /* counters, or NULL */
};

lm_otel_rec_t *lm_otel_reserve(lm_otel_t *o, int spans)
{
    slot_t *s = NULL;
    pthread_mutex_lock(&o->mu);
    if (o->stop) {
    } else if (o->next) { /* a resize: new records go to the next ring */
        if (o->next_tail < o->next_cap) {
            s = &o->next[o->next_tail];
            s->pos = (size_t)o->next_tail++;
        }
    } else if (o->tail - o->head < o->cap) {
        s = &o->ring[o->tail % o->cap];
        s->pos = (size_t)(o->tail++ % o->cap);
    }
    pthread_mutex_unlock(&o->mu);
    if (s == NULL) {
        lm_metrics_add(o->dropped, (uint64_t)spans);
        return NULL;
    }
    return &s->rec;
}

void lm_otel_commit(lm_otel_t *o, lm_otel_rec_t *rec)
{
    slot_t *s = (slot_t *)(void *)rec;
    int wake = s->pos % LM_OTEL_BATCH == LM_OTEL_BATCH - 1; /* before the slot is handed over */
    atomic_store_explicit(&s->ready, 1, memory_order_release);
    /* A full batch wakes the exporter early; else its timed wait picks the
     * slot up. */
    if (wake)
        pthread_cond_signal(&o->cv);
}

/* ---- targets ---- */

static void target_free(target_t *t)
{
    if (t == NULL)
        return;
    free(t->url);
    free(t->service);
    curl_slist_free_all(t->headers);
    free(t);
}

static target_t *target_new(const lm_obs_conf_t *oc)
{
    target_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->protocol = oc->otel_protocol;
    t->timeout_ms = oc->otel_timeout_ms;
    t->url = oc->otel_endpoint ? strdup(oc->otel_endpoint) : NULL;
    t->service = strdup(oc->otel_service_name ? oc->otel_service_name : "longmen");
    t->headers = curl_slist_append(NULL, t->protocol == LM_OTEL_JSON
                                             ? "Content-Type: application/json"
                                             : "Content-Type: application/x-protobuf");
    int ok = (t->url || !oc->otel_endpoint) && t->service && t->headers;
    for (size_t i = 0; ok && i < oc->notel_headers; i++) {
        struct curl_slist *l = curl_slist_append(t->headers, oc->otel_headers[i]);
        ok = l != NULL;
        if (l)
            t->headers = l;
    }
    if (!ok) {
        target_free(t);
        return NULL;
    }
    return t;
}

static int same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static int target_same(const target_t *a, const target_t *b)
{
    if (!same_str(a->url, b->url) || !same_str(a->service, b->service) ||
        a->protocol != b->protocol || a->timeout_ms != b->timeout_ms)
        return 0;
    const struct curl_slist *x = a->headers, *y = b->headers;
    for (; x && y; x = x->next, y = y->next)
        if (strcmp(x->data, y->data))
            return 0;
    return x == NULL && y == NULL;
}

/* Points the easy handle at t (the exporter's thread, or before it runs). */
static void target_apply(lm_otel_t *o, const target_t *t)
{
    curl_easy_setopt(o->curl, CURLOPT_URL, t->url ? t->url : "http://127.0.0.1:9/");
    curl_easy_setopt(o->curl, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(o->curl, CURLOPT_TIMEOUT_MS, (long)t->timeout_ms);
    curl_easy_setopt(o->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)t->timeout_ms);
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

/* The ready records from head on (at most a batch, none reserved at or
 * after upto); call with mu held. */
static size_t ready_run(const lm_otel_t *o, uint64_t upto)
{
    size_t n = 0, queued = upto > o->head ? (size_t)(upto - o->head) : 0;
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
        spans += LM_OTEL_SPANS(r);
    }
    lm_otel_batch_t meta = {o->cur->service, clock_of(CLOCK_REALTIME) - clock_of(CLOCK_MONOTONIC)};
    *ok = (o->cur->protocol == LM_OTEL_JSON ? lm_otel_encode_json
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
    if (o->cur->url == NULL) { /* tracing was turned off by a reload */
        lm_metrics_add(o->dropped, spans);
        return;
    }
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

/* Stopping or switching away from a failing collector: drop the ready
 * records reserved before upto rather than wait otel_timeout per batch.
 * Call with mu held. */
static void drop_upto(lm_otel_t *o, uint64_t upto)
{
    size_t n;
    while ((n = ready_run(o, upto)) > 0) {
        uint64_t spans = 0;
        for (size_t i = 0; i < n; i++) {
            slot_t *s = &o->ring[(o->head + i) % o->cap];
            spans += LM_OTEL_SPANS(&s->rec);
            free(s->rec.prompt);
            free(s->rec.completion);
            atomic_store_explicit(&s->ready, 0, memory_order_relaxed);
        }
        o->head += n;
        lm_metrics_add(o->dropped, spans);
    }
}

/* A reload's target: the records reserved before it are sent to the
 * current collector first (or dropped with the counter if it fails), then
 * the handle is pointed at the new one. Call without mu. */
static void switch_target(lm_otel_t *o, target_t *next)
{
    pthread_mutex_lock(&o->mu);
    uint64_t upto = o->tail;
    size_t n;
    while ((n = ready_run(o, upto)) > 0) {
        pthread_mutex_unlock(&o->mu);
        export_batch(o, n);
        pthread_mutex_lock(&o->mu);
        if (o->failing)
            drop_upto(o, upto);
    }
    pthread_mutex_unlock(&o->mu);
    target_apply(o, next);
    pthread_mutex_lock(&o->mu);
    target_t *old = o->cur;
    o->cur = next;
    pthread_mutex_unlock(&o->mu);
    target_free(old); /* not o->latest: that is next, or newer */
    o->failing = 0;
}

/* otel_queue changed: allocate the next ring (without mu), then install
 * it for new reservations. Exporter thread; call with mu held. */
static void resize_begin(lm_otel_t *o)
{
    size_t cap = o->want_cap;
    pthread_mutex_unlock(&o->mu);
    slot_t *ring = calloc(cap, sizeof(*ring)); /* pages are touched as slots fill */
    pthread_mutex_lock(&o->mu);
    if (ring == NULL) {
        lm_log(LM_LOG_ERROR, "otel: out of memory for otel_queue %zu; it stays %zu", cap, o->cap);
        o->want_cap = o->cap;
        return;
    }
    o->next = ring;
    o->next_cap = cap;
    o->next_tail = 0;
}

/* The old ring is empty (no worker holds a slot of it, nothing waits for
 * export): the next one takes its place. Call with mu held. */
static void resize_end(lm_otel_t *o)
{
    free(o->ring);
    lm_log(LM_LOG_INFO, "otel: the queue now holds %zu records (was %zu)", o->next_cap, o->cap);
    o->ring = o->next;
    o->cap = o->next_cap;
    o->head = 0;
    o->tail = o->next_tail;
    o->next = NULL;
}

static void *exporter_main(void *arg)
{
    lm_otel_t *o = arg;
    pthread_mutex_lock(&o->mu);
    for (;;) {
        if (o->next == NULL && o->want_cap != o->cap && !o->stop)
            resize_begin(o);
        if (o->next && o->head == o->tail)
            resize_end(o);
        size_t n = ready_run(o, o->tail);
        if (!o->stop && !o->pending && n < LM_OTEL_BATCH) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += LM_OTEL_EVERY_MS / 1000;
            pthread_cond_timedwait(&o->cv, &o->mu, &until);
            n = ready_run(o, o->tail);
        }
        int stop = o->stop;
        target_t *next = o->pending;
        o->pending = NULL;
        pthread_mutex_unlock(&o->mu);
        if (next)
            switch_target(o, next);
        else if (n)
            export_batch(o, n); /* the ring stays open meanwhile */
        pthread_mutex_lock(&o->mu);
        if (stop && o->failing)
            drop_upto(o, o->tail);
        if (o->next && o->head == o->tail)
            resize_end(o); /* before the test below: the next ring's records count */
        if (stop && !o->pending && ready_run(o, o->tail) == 0) /* no worker is left */
            break;
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

lm_otel_t *lm_otel_new(const lm_obs_conf_t *oc, lm_metrics_t *m, char *err, size_t errlen)
{
    lm_otel_t *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        snprintf(err, errlen, "otel: out of memory");
        return NULL;
    }
    o->cap = o->want_cap = (size_t)oc->otel_queue;
    o->ring = calloc(o->cap, sizeof(*o->ring)); /* pages are touched as slots fill */
    o->cur = target_new(oc);
    o->curl = curl_easy_init();
    if (o->ring == NULL || o->cur == NULL || o->curl == NULL) {
        lm_otel_free(o);
        snprintf(err, errlen, "otel: out of memory");
        return NULL;
    }
    target_apply(o, o->cur);
    o->latest = o->cur;
    curl_easy_setopt(o->curl, CURLOPT_NOSIGNAL, 1L);
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

int lm_otel_configure(lm_otel_t *o, const lm_obs_conf_t *oc, char *err, size_t errlen)
{
    target_t *t = target_new(oc);
    if (t == NULL) {
        snprintf(err, errlen, "otel: out of memory");
        return -1;
    }
    pthread_mutex_lock(&o->mu);
    int resize = o->want_cap != (size_t)oc->otel_queue;
    o->want_cap = (size_t)oc->otel_queue; /* the exporter switches rings (resize_begin) */
    int same = target_same(o->latest, t), was_on = o->latest->url != NULL;
    if (!same) {
        target_free(o->pending);
        o->pending = t;
        o->latest = t;
        t = NULL;
    }
    pthread_mutex_unlock(&o->mu);
    target_free(t);
    if (resize)
        pthread_cond_signal(&o->cv);
    if (same)
        return 0;
    pthread_cond_signal(&o->cv);
    if (oc->otel_endpoint)
        lm_log(LM_LOG_INFO, "otel: traces now go to %s (%s)", oc->otel_endpoint,
               oc->otel_protocol == LM_OTEL_JSON ? "http/json" : "http/protobuf");
    else if (was_on)
        lm_log(LM_LOG_INFO, "otel: tracing off; what was queued goes to the previous collector");
    return 0;
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
    if (o->curl)
        curl_easy_cleanup(o->curl);
    target_free(o->cur);
    target_free(o->pending);
    free(o->ring);
    free(o->next);
    free(o->body.p);
    free(o);
}
