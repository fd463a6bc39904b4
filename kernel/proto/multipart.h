/*
 * multipart.h - multipart/form-data (RFC 7578) read in place: the parts of
 * a buffered request body as borrowed slices of it, so an audio upload is
 * never copied to be routed. Only part heads are scanned byte by byte; a
 * part's data is skipped with memmem up to the next delimiter. Pure; any
 * thread; nothing is allocated.
 */
#ifndef LM_MULTIPART_H
#define LM_MULTIPART_H
#include "longmen.h"

#include <stddef.h>

#define LM_MP_BOUNDARY_MAX 70   /* RFC 2046: 1 to 70 characters */
#define LM_MP_HEAD_MAX     8192 /* one part's header block */
#define LM_MP_PARTS_MAX    64   /* parts in one form */

/* One part: slices of the body (borrowed; empty when absent). */
typedef struct lm_mp_part_s {
    lm_str name;     /* the Content-Disposition name, unquoted (escapes kept) */
    lm_str filename; /* its filename, when it has one */
    int has_filename;
    lm_str ctype; /* the part's Content-Type value */
    lm_str data;  /* the part's bytes */
} lm_mp_part_t;

/* The boundary of a Content-Type header value ("multipart/form-data;
 * boundary=xyz", quoted or not) into out (NUL-terminated). Returns its
 * length, or -1 when ctype is not multipart/form-data or has no valid
 * boundary. */
int lm_mp_boundary(const char *ctype, char *out, size_t outlen);

/* Called once per part in body order; return 0 to go on, non-zero to stop
 * (lm_mp_parse then returns that value). */
typedef int (*lm_mp_part_fn)(void *arg, const lm_mp_part_t *part);

/* Walk body's parts. Returns 0 after the closing delimiter, the callback's
 * non-zero value, or -1 with *why (static text for the client) when the
 * body is not a well-formed form: no opening delimiter, a part head over
 * LM_MP_HEAD_MAX or without its blank line, a part without a form-data
 * Content-Disposition name, more than LM_MP_PARTS_MAX parts, or no
 * closing delimiter. */
int lm_mp_parse(const char *body, size_t n, const char *boundary, lm_mp_part_fn fn, void *arg,
                const char **why);
#endif
