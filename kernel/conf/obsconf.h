/*
 * obsconf.h - the observability part of plugins.conf (docs/observability.md):
 * OpenTelemetry traces and the request log.
 *
 *   otel_endpoint URL            OTLP/HTTP traces endpoint, e.g.
 *                                http://127.0.0.1:4318/v1/traces (none: off)
 *   otel_protocol P              http/protobuf (default) or http/json
 *   otel_header NAME VALUE...    sent with every export (repeatable)
 *   otel_service_name NAME       resource service.name (longmen)
 *   otel_sample_ratio R          0..1: share of requests without an incoming
 *                                traceparent that are traced (1)
 *   otel_capture_content on|off  export prompt and completion text (off)
 *   otel_queue N                 spans waiting for export; past it dropped (4096)
 *   otel_timeout D               one export's bound (2s)
 *   request_log on|off           one row per request in the store (off)
 *   request_log_max_age D        rows older are pruned (7d)
 *   request_log_max_rows N       rows beyond the newest N are pruned (1000000)
 *   request_log_bodies on|off [models GLOB...] [keys GLOB...]
 *                                a rule; the first matching decides whether
 *                                the request and answer bodies are kept (off)
 *
 * conf.c hands the directive lines here; the settings live in lm_conf_t.
 * Threads: any (parsing on the control thread; lookups read a snapshot).
 */
#ifndef LM_OBSCONF_H
#define LM_OBSCONF_H
#include <stddef.h>
#include <stdint.h>

typedef struct lm_obs_rule_s {
    int on;
    char **models, **keys; /* fnmatch patterns; owned */
    size_t nmodels, nkeys;
} lm_obs_rule_t;

enum { LM_OTEL_PROTOBUF = 0, LM_OTEL_JSON = 1 }; /* otel_protocol */

typedef struct lm_obs_conf_s {
    char *otel_endpoint; /* owned; NULL: tracing off */
    int otel_protocol;   /* LM_OTEL_PROTOBUF or LM_OTEL_JSON */
    char **otel_headers; /* "Name: value" lines; owned */
    size_t notel_headers;
    char *otel_service_name; /* owned; NULL reads as "longmen" */
    double otel_sample_ratio;
    int otel_capture_content;
    int otel_queue;
    int otel_timeout_ms;
    int request_log;
    int64_t request_log_max_age_s;
    int64_t request_log_max_rows;
    lm_obs_rule_t *body_rules; /* request_log_bodies, in file order; owned */
    size_t nbody_rules;
} lm_obs_conf_t;

/* Defaults into oc (nothing allocated). */
void lm_obsconf_init(lm_obs_conf_t *oc);
/* One directive line: 0, 1 when w[0] is not an observability directive,
 * or -1 with a message in err. */
int lm_obsconf_directive(lm_obs_conf_t *oc, char **w, int nw, char *err, size_t errlen);
/* 1 when the first matching request_log_bodies rule keeps bodies for this
 * model (asked) and key name (NULL matches only rules without keys). */
int lm_obsconf_bodies(const lm_obs_conf_t *oc, const char *model, const char *key);
/* Frees what oc owns (oc itself is the caller's). */
void lm_obsconf_free(lm_obs_conf_t *oc);
#endif
