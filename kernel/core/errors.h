/* errors.h - the OpenAI error shape and the default upstream error map. */
#ifndef LM_ERRORS_H
#define LM_ERRORS_H
#include "longmen.h"

/* Fill e for a gateway-side failure. Returns rc for tail calls. */
int lm_error_set(lm_err *e, int rc, int status, const char *type, const char *code,
                 const char *msg);
/* Default mapping of a non-2xx upstream answer: 429 stays 429, 5xx becomes
 * 502, other 4xx keep their status; an OpenAI-shaped error body keeps its
 * message, type and code. */
void lm_error_map_default(int status, lm_str body, lm_err *e);
/* {"error":{"message","type","param":null,"code"}} as compact JSON text
 * (new, free()). Never NULL: falls back to a static-shaped message. */
char *lm_error_body(const lm_err *e);
/* Type for a status when none was given. */
const char *lm_error_type_for(int status);
#endif
