/*
 * mask.h - secret masking: the one loop that replaces a secret's every
 * occurrence in a message with "***" before the message is logged or sent
 * (errors, admin answers). Pure; any thread.
 */
#ifndef LM_MASK_H
#define LM_MASK_H

#define LM_MASK     "***"
#define LM_MASK_MIN 4 /* shorter values are not masked: they would garble text */

/* Replace every occurrence of secret (NUL-terminated) in text, in place.
 * NULL or secrets shorter than LM_MASK_MIN are left alone. */
void lm_mask_secret(char *text, const char *secret);
#endif
