/*
 * lmjscan.h - a small zero-allocation JSON scanner (part of liblmsdk.a, and
 * linked into the gateway itself): validate a JSON text, skip a value, and
 * find the spans of top-level object members without building a tree;
 * and, when a tree is needed, build it from the bytes in place.
 *
 * Why: a body forwarded unchanged needs only a few facts (usage, id, model,
 * stream); parsing it into Jansson and dumping it again costs most of a
 * request's instructions. The scanner reads the bytes once, in place.
 *
 * What it accepts is RFC 8259 JSON as Jansson's decoder does, with one
 * difference: numbers are checked for grammar, not range (Jansson refuses an
 * integer beyond 64 bits; the scanner, which never converts, accepts it).
 * Strings must be valid UTF-8 with no raw control character; "\u0000", a lone
 * surrogate and nesting deeper than LM_JSCAN_MAX_DEPTH are refused.
 *
 * Spans are lm_str slices borrowed from the input (a string's span includes
 * its quotes). Nothing is allocated but lm_jparse_object's tree. Thread: pure.
 */
#ifndef LMJSCAN_H
#define LMJSCAN_H

#include "longmen.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LM_JSCAN_MAX_DEPTH 2048

/* Skip the one JSON value starting at p (leading whitespace allowed).
 * Returns the first byte after it (its trailing whitespace not skipped), or
 * NULL when the bytes before end are not one valid value. */
const char *lm_jscan_skip(const char *p, const char *end);

/* 1 when [p, p+n) is exactly one JSON value (whitespace around allowed),
 * else 0. lm_jscan_object: the same, and the value is an object. */
int lm_jscan_valid(const char *p, size_t n);
int lm_jscan_object(const char *p, size_t n);

/*
 * One pass over a JSON object [p, p+n): validates all of it, and for each
 * of the nkeys names in keys[] sets vals[i] to the span of that top-level
 * member's value (the last one when a name repeats, as Jansson keeps),
 * or {NULL, 0} when absent. Names are compared byte for byte with the raw
 * key text (an escaped key never matches). Returns 0 when the text is one
 * valid object, -1 otherwise (vals then undefined).
 */
int lm_jscan_members(const char *p, size_t n, const char *const *keys, size_t nkeys, lm_str *vals);

/* The value of member key in object span obj, as above; 1 found, 0 absent,
 * -1 invalid. */
int lm_jscan_get(lm_str obj, const char *key, lm_str *val);

/* A span that is a JSON integer (no fraction or exponent) fitting in long
 * long: 0 and *out set; else -1. */
int lm_jscan_int(lm_str v, long long *out);

/* 1 when span v is the JSON string whose raw (unescaped) text is s. */
int lm_jscan_str_is(lm_str v, const char *s);

/* 1 when span v is the literal true. */
int lm_jscan_true(lm_str v);

/* lm_usage_from_json (longmen.h) on a span: an OpenAI "usage" object read
 * into *out (unknown counts -1; a missing total or completion derived).
 * Returns 1 when any of the three counts was reported, 0 otherwise (a span
 * that is no object included). */
int lm_jscan_usage(lm_str u, lm_usage *out);

/*
 * The object [p, p+n) into a Jansson tree in one pass over the bytes in
 * place, instead of Jansson's character-at-a-time decoder (most of a
 * pass-through request's instructions): the same tree, member order,
 * strings, integers and reals as json_loadb(JSON_REJECT_DUPLICATES).
 * Returns a new reference, or NULL whenever the text is not an object the
 * fast path is sure of (invalid JSON, a repeated key, nesting deeper than
 * max_depth, a number out of Jansson's range, no memory): the caller then
 * runs Jansson itself, which decides and says why.
 */
json_t *lm_jparse_object(const char *p, size_t n, int max_depth);

/* v as compact JSON text, byte for byte what json_dumps(v, JSON_COMPACT)
 * writes (any value at the top), in one growing buffer instead of
 * Jansson's per-value callbacks. Returns a new NUL-terminated string
 * (free()) and *len its length, or NULL where Jansson would refuse too
 * (invalid UTF-8, NaN or infinity) or on no memory: ask Jansson then. */
char *lm_jdump(const json_t *v, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
