/*
 * canon.h - the canonical request as one channel gets it (ABI 1.2): the
 * capability checks every plugin relied on doing itself, and the clamping
 * of numeric parameters into the ranges a plugin declares. Pure functions;
 * the relay and the test kit call the same code.
 */
#ifndef LM_CANON_H
#define LM_CANON_H
#include "longmen.h"

typedef struct lm_canon_prep_s {
    json_t *canon;     /* what build_request gets: the caller's, or a clamped copy */
    int own;           /* canon is a copy this struct owns */
    char clamped[160]; /* "temperature=1.5->1" pairs, ", "-separated; "" when none */
} lm_canon_prep_t;

/*
 * Check `canon` (op LM_OP_CHAT or LM_OP_EMBED, stream as the call has it)
 * against the channel's provider table: stream, embeddings, tools, image
 * parts and n > 1 the provider cannot take are 400s naming the field, before
 * any upstream call. Then clamp the parameters of vt->param_ranges; when
 * one moves, out->canon is a shallow copy (owned) and out->clamped says
 * what moved. Returns 0, or < 0 with e filled (a 400 either way:
 * LM_ENOTSUP for an operation the provider lacks, streaming or embeddings;
 * LM_EINVAL for a request it cannot translate: tools, images, n).
 * Free with lm_canon_prep_free.
 */
int lm_canon_prepare(const lm_provider *vt, int op, int stream, json_t *canon, lm_canon_prep_t *out,
                     lm_err *e);
void lm_canon_prep_free(lm_canon_prep_t *p);

/* Remove encoding_format from an embeddings request: the kernel applies it
 * to the plugin's float arrays (lm_response_translate). Returns 1 when the
 * client asked for base64. */
int lm_canon_take_encoding(json_t *canon);
#endif
