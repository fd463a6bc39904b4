/*
 * jparse.h - a client request body into a Jansson tree in one pass over the
 * bytes in place, on the JSON scanner (sdk/lmjscan.h), instead of Jansson's
 * character-at-a-time decoder (most of a pass-through request's
 * instructions). Pure, any thread.
 */
#ifndef LM_JPARSE_H
#define LM_JPARSE_H
#include "longmen.h"

/*
 * The object [p, p+n) as Jansson's json_loadb(JSON_REJECT_DUPLICATES)
 * would decode it: same values, member order, strings, integers and reals.
 * Returns a new reference, or NULL whenever the text is not an object the
 * fast path is sure of (invalid JSON, a repeated key, nesting deeper than
 * max_depth, a number out of range, no memory): the caller then runs
 * Jansson itself, which says why (the error text clients see).
 */
json_t *lm_jparse_object(const char *p, size_t n, int max_depth);
#endif
