/*
 * otel_enc.h - span records (otel.h) as OTLP/JSON text: the body of one
 * ExportTraceServiceRequest. Written by hand into a buffer rather than
 * through a JSON tree: the exporter thread serialises every traced request,
 * and a tree of some 80 values per span cost ~20 times more. Pure; any
 * thread.
 */
#ifndef LM_OTEL_ENC_H
#define LM_OTEL_ENC_H
#include "relay/otel_rec.h"

/* recs (a NULL-terminated list by ->next) as one request body: malloc'd
 * text, the caller frees; NULL when out of memory. service_name NULL reads
 * as "longmen". Text fields that are not valid UTF-8 get U+FFFD. */
char *lm_otel_encode(const lm_otel_rec_t *recs, const char *service_name);
#endif
