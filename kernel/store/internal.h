/*
 * internal.h - what the store's own files share and nothing else includes.
 * Record types appear by their struct tags so this header stays below
 * store.h (store.c includes both; see tests/layers/check_layers.py).
 */
#ifndef LM_STORE_INTERNAL_H
#define LM_STORE_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

struct lm_key_s;
struct lm_cidr_s;
struct lm_chan_rec_s;

/* --- store.c -------------------------------------------------------------- */
/* Format into err (if err and errlen): the admin-facing failure text. */
void lm_store_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- keys.c --------------------------------------------------------------- */
/* s (NULL = "") is UTF-8 without NUL of at most max bytes. */
int lm_store_cstr_ok(const char *s, size_t max);
/* "a.b.c.d[/n]" or "x:y::z[/n]" into *out (host bits cleared); 0 or -1. */
int lm_store_cidr_parse(const char *s, struct lm_cidr_s *out);
/* Free a record regardless of its reference count (it was never shared). */
void lm_store_key_free(struct lm_key_s *k);
/* JSON text array of strings -> new vector of new strings (caller frees
 * each and the vector). NULL text = "[]". 0, or -1 on bad data/ENOMEM. */
int lm_store_list_decode(const char *text, char ***out, size_t *n);
/* The inverse: new JSON text (caller frees), NULL on ENOMEM. */
char *lm_store_list_encode(const char *const *items, size_t n);

/* --- chans.c -------------------------------------------------------------- */
/* Overwrite s (a secret may be in it), then free it. NULL is fine. */
void lm_store_wipe_free(char *s);
/* A channel's settings as {"key": "value" | ["v1", ...]}: new text the
 * caller wipes (lm_store_wipe_free); NULL on ENOMEM. */
char *lm_store_chan_settings_encode(const struct lm_chan_rec_s *c);
/* The inverse, into c->settings/c->nsettings (freed with the record);
 * 0, or -1 on bad data or ENOMEM. */
int lm_store_chan_settings_decode(const char *text, struct lm_chan_rec_s *c);
/* A channel name ([A-Za-z0-9_.-]+, not "." or "..") or, if plugin, a
 * plugin or setting name ([a-z0-9_-]+); at most LM_CHAN_NAME_MAX bytes. */
int lm_store_name_ok(const char *s, int plugin);
#endif
