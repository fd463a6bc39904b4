/*
 * endpoint.h - the request checks and the answer finishing of the 1.3
 * endpoint operations (rerank, moderations, images; plugin/endpoints.h
 * names them). Chat and embeddings keep reqcheck.h and response.h. Pure.
 */
#ifndef LM_ENDPOINT_H
#define LM_ENDPOINT_H
#include "longmen.h"

#define LM_RERANK_MAX_DOCS 1000 /* documents in one rerank request */

/* Validate canon (the client's body, parsed) for op. A rerank document
 * given as an object is sent upstream as its "text" string. Returns 0
 * when canon is unchanged, 1 when it was rewritten (the client's bytes no
 * longer mean it), -1 with e filled (a 400 naming the field). */
int lm_endpoint_request(int op, json_t *canon, lm_err *e);
/* Finish op's translated answer `out` (borrowed, changed in place): a
 * rerank answer's results sorted by relevance_score (highest first, ties by
 * index), each document as {"text": ...}, and the usage object
 * {"prompt_tokens", "total_tokens"} from *u (read from out's "usage" when
 * unknown). Other ops are left as they are. 0, or -1 on no memory. */
int lm_endpoint_finish(json_t *out, int op, lm_usage *u);
/* How many price units (conf/priceunit.h LM_UNIT_*) request canon of op
 * counts: rerank searches (a query over up to 100 documents each), images
 * asked for (n, default 1), characters (UTF-8 code points) of a moderations
 * input; 0 when the unit does not apply to op. */
int64_t lm_endpoint_units(int op, const json_t *canon, int unit);
#endif
