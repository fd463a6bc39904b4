/*
 * lmsdk_p1.h - helpers added while porting qwen and ollama (to be folded
 * into lmsdk.h). Same rules as lmsdk.h: linked statically, no ABI.
 */
#ifndef LMSDK_P1_H
#define LMSDK_P1_H

#include "lmsdk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Describe the upstream call (only inside build_request): the URL is
 * base + path (base borrowed, any length), "Authorization: <auth>" is added
 * when auth is not NULL, and body becomes the JSON body (stolen, even on
 * failure). Other headers are the caller's, added before or after.
 * LM_OK or < 0 with e filled. */
int lms_p1_post_json(const lm_host_api *h, lm_ureq *u, lm_str base, const char *path,
                     const char *auth, json_t *body, lm_err *e);

#ifdef __cplusplus
}
#endif
#endif /* LMSDK_P1_H */
