/* Fuzz the pass-through readers (proto/inbound_pt): the input is tried as
 * a body whose model is replaced (the result must be the input with one
 * string value swapped, so it parses when the input did), as a whole
 * answer, as a Messages body only Anthropic takes (its canonical
 * stand-in, and a completions body only a native upstream takes), and cut
 * into SSE events fed to every API's reader. Nothing may read out of
 * bounds; the counts stay sane. */
#include "proto/completions.h"
#include "proto/inbound.h"
#include "proto/inbound_pt.h"
#include "proto/msgs.h"
#include "proto/responses.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "inbound_pt";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void events(int api, const char *s, size_t size)
{
    lm_inpt_reader_t rd;
    lm_err e;
    lm_inpt_reader_init(&rd, api);
    size_t off = 0, len;
    while ((len = lm_inpt_event_len(s + off, size - off)) > 0) {
        if (off + len > size)
            abort();
        (void)lm_inpt_reader_event(&rd, s + off, len, &e);
        off += len;
    }
    lm_usage u = lm_inpt_reader_usage(&rd);
    if (u.total >= 0 && u.total != u.prompt + u.completion)
        abort();
    lm_inpt_reader_init(&rd, api);
    (void)lm_inpt_reader_whole(&rd, s, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    lm_buf_t out = {0};
    if (lm_inpt_set_model(s, size, "m\"x", &out) == 0) {
        json_t *in = json_loadb(s, size, 0, NULL), *got = json_loadb(out.p, out.len, 0, NULL);
        /* a parsable body stays parsable, with the new model */
        if (json_is_object(in) && json_is_string(json_object_get(in, "model")) &&
            (!json_is_object(got) ||
             strcmp(json_string_value(json_object_get(got, "model")), "m\"x") != 0))
            abort();
        json_decref(in);
        json_decref(got);
    }
    lm_buf_free(&out);
    lm_err e;
    json_decref(lm_msgs_request_native(s, size, &e)); /* the stand-ins of native-only bodies */
    json_decref(lm_resp_request_native(s, size, &e));
    json_decref(lm_cmpl_request_native(s, size, &e));
    events(LM_API_MESSAGES, s, size);
    events(LM_API_RESPONSES, s, size);
    events(LM_API_COMPLETIONS, s, size);
    return 0;
}
