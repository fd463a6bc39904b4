/*
 * b64.h - base64 (RFC 4648): the standard and the URL-safe alphabet.
 * Pure functions, any thread; the caller owns every buffer.
 */
#ifndef LM_B64_H
#define LM_B64_H
#include <stddef.h>

/* Characters lm_b64_encode writes for n bytes, without the NUL. */
#define LM_B64_LEN(n) ((((n) + 2) / 3) * 4)

/* Encode n bytes into out (LM_B64_LEN(n) + 1 bytes), NUL-terminated; url
 * selects the URL-safe alphabet ('-', '_') and no '=' padding. Returns the
 * length written. */
size_t lm_b64_encode(const unsigned char *in, size_t n, char *out, int url);
/* Decode n characters (either alphabet, padding optional, no whitespace)
 * into out (at least n / 4 * 3 + 3 bytes). Returns the byte count, or -1
 * on a character outside the alphabet or a bad length. */
long lm_b64_decode(const char *in, size_t n, unsigned char *out);
#endif
