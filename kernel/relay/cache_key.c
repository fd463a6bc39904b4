/* cache_key.c - the response cache's key: canonical request text and its
 * SHA-256 (cache_key.h). Threads: any. */
#include "relay/cache_key.h"

#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

/* Fields that change nothing in the answer's content: how it is carried
 * (stream, stream_options: a cached stream is replayed with or without the
 * usage chunk) and who the end user is. */
static const char *const ignored[] = {"stream", "stream_options", "user"};

char *lm_cache_key_text(const json_t *canon, const char *api, int stream)
{
    json_t *req = json_copy((json_t *)canon); /* shallow: children are shared, not changed */
    if (req == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
        json_object_del(req, ignored[i]);
    json_t *k = json_pack("{s:s,s:s,s:o}", "api", api ? api : "chat", "form",
                          stream ? "stream" : "whole", "request", req);
    if (k == NULL)
        return NULL;
    char *text = json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(k);
    return text;
}

int lm_cache_key(const json_t *canon, const char *api, int stream,
                 unsigned char out[LM_CACHE_KEY_LEN])
{
    char *text = lm_cache_key_text(canon, api, stream);
    if (text == NULL)
        return -1;
    SHA256((const unsigned char *)text, strlen(text), out);
    free(text);
    return 0;
}

int lm_cache_key_deterministic(const json_t *canon, int sampled)
{
    if (sampled)
        return 1;
    json_t *t = json_object_get(canon, "temperature");
    return json_is_number(t) && json_number_value(t) == 0.0;
}
