/* oai_stream.c - the OpenAI-compatible base: stream events (lmoai.h).
 * Worker thread; per-request state in c->rstate (lmo_req). The kernel adds
 * the role, keeps one finish per choice and closes choices at LM_DONE, so
 * this only cleans chunks and reports usage. */
#include "lmoai.h"

#include <string.h>

static int closed(lm_err *e)
{
    return lm_err_set(e, LM_ERR, 500, "api_error", NULL, "the client stream is closed");
}

/* Arguments text of one stream fragment (new): objects serialised, missing
 * is "" (later fragments append to it). */
static json_t *frag_args(const json_t *a)
{
    if (json_is_string(a))
        return json_string(json_string_value(a));
    return a == NULL || json_is_null(a) ? json_string("") : lms_json_text(a);
}

/* One tool-call fragment: the first per index carries id, type and name
 * (an id is synthesised when missing); later ones only arguments. NULL
 * when there is nothing left to send. */
static json_t *fragment(lm_call *c, lmo_req *rs, const json_t *tc, size_t pos)
{
    const json_t *fn = json_object_get(tc, "function"), *ji = json_object_get(tc, "index");
    json_int_t idx = json_is_integer(ji) ? json_integer_value(ji) : (json_int_t)pos;
    uint64_t bit = idx >= 0 && idx < 64 ? (uint64_t)1 << idx : 0;
    const char *id = lms_jstr(tc, "id");
    json_t *args = frag_args(json_object_get(fn, "arguments"));
    if (bit && (rs->tc_seen & bit)) {
        if (json_string_length(args) == 0)
            return json_decref(args), NULL;
        return json_pack("{s:I,s:{s:o}}", "index", idx, "function", "arguments", args);
    }
    rs->tc_seen |= bit;
    return json_pack("{s:I,s:o,s:s,s:{s:s,s:o}}", "index", idx, "id",
                     lms_nonempty(id) ? json_string(id) : lms_tool_call_id(c, (size_t)idx), "type",
                     "function", "function", "name",
                     lms_jstr(fn, "name") ? lms_jstr(fn, "name") : "", "arguments", args);
}

/* A clean delta (new): content, reasoning and tool-call fragments only. */
static json_t *delta(lm_call *c, lmo_req *rs, const json_t *d)
{
    const json_t *ct = json_object_get(d, "content"), *tc;
    const char *rsn = lms_jstr(d, "reasoning_content");
    json_t *out = json_object(), *tcs = json_array();
    size_t i;
    if (json_is_string(ct) && json_string_length(ct) > 0)
        json_object_set(out, "content", (json_t *)ct);
    if (lms_nonempty(rsn))
        json_object_set_new(out, "reasoning_content", json_string(rsn));
    json_array_foreach (json_object_get(d, "tool_calls"), i, tc)
        lms_aadd(tcs, fragment(c, rs, tc, i));
    if (json_array_size(tcs) > 0)
        json_object_set(out, "tool_calls", tcs);
    json_decref(tcs);
    if (json_object_size(out) > 0)
        rs->emitted = 1;
    return out;
}

/* Replace every choice with {index, delta, finish_reason} in OpenAI words. */
static void clean_chunk(const lmo_inst *in, lm_call *c, lmo_req *rs, json_t *j)
{
    json_t *choices = json_object_get(j, "choices"), *ch;
    size_t i;
    json_array_foreach (choices, i, ch) {
        const json_t *ji = json_object_get(ch, "index");
        const char *fr = lmo_finish(in->q, lms_jstr(ch, "finish_reason"), 0);
        json_t *d = delta(c, rs, json_object_get(ch, "delta"));
        json_array_set_new(choices, i,
                           json_pack("{s:I,s:o,s:s?}", "index",
                                     json_is_integer(ji) ? json_integer_value(ji) : (json_int_t)i,
                                     "delta", d, "finish_reason", fr));
    }
    const char *keep[] = {"id", "object", "created", "model", "choices", "system_fingerprint"};
    json_t *out = json_object();
    for (size_t k = 0; out && k < sizeof(keep) / sizeof(keep[0]); k++)
        if (json_object_get(j, keep[k]))
            json_object_set(out, keep[k], json_object_get(j, keep[k]));
    json_object_clear(j);
    json_object_update(j, out);
    json_decref(out);
}

/* A provider code that, after content, ends the choice instead of failing. */
static const char *code_finish(const lmo_inst *in, const lmo_req *rs, const json_t *j)
{
    const json_t *v = in->q->code_key ? json_object_get(j, in->q->code_key) : NULL;
    if (!json_is_integer(v) || json_integer_value(v) == 0 || !rs->emitted)
        return NULL;
    for (const lmo_code *k = in->q->codes; k && k->status; k++)
        if (json_integer_value(v) >= k->lo && json_integer_value(v) <= k->hi)
            return k->finish;
    return NULL;
}

/* ABI 1.4: a base without event quirks (no LMO_CLEAN, fix or code_key; a
 * chat wire format) hands the event's bytes to the host, which forwards
 * them unchanged when the client may get them as they are: no parse, no
 * tree, no dump. LM_DECLINED (an older host, a quirk, or a chunk the host
 * must change, an error event or invalid JSON) takes the tree path below,
 * which answers exactly as before. */
static int raw(const lmo_inst *in, lm_call *c, const lm_event *ev, lm_emit *out)
{
    const lmo_quirks *q = in->q;
    if (!LM_HOST_HAS(in->h, emit_raw) || (q->flags & LMO_CLEAN) || q->fix || q->code_key ||
        lmo_wire_op(in, c) != LM_OP_CHAT)
        return LM_DECLINED;
    return in->h->emit_raw(out, ev->data);
}

int lmo_parse_event(void *istate, lm_call *c, const lm_event *ev, lm_emit *out, lm_err *e)
{
    lmo_inst *in = istate;
    lmo_req *rs = c->rstate;
    lm_usage us;
    if (lms_event_is_done(ev))
        return LM_DONE;
    if (ev->data.n == 0 || rs == NULL)
        return LM_OK;
    int rc = raw(in, c, ev, out);
    if (rc != LM_DECLINED)
        return rc == LM_OK ? LM_OK : closed(e);
    json_t *j = lms_parse_object(ev->data, "a stream event", e);
    if (j == NULL)
        return LM_EUPSTREAM;
    const char *fin = code_finish(in, rs, j);
    if (fin != NULL) {
        json_decref(j);
        rc = lms_emit_finish(in->h, out, 0, fin, e);
        return rc == LM_OK ? LM_DONE : rc;
    }
    if (lmo_error(in, j, 0, e))
        return json_decref(j), LM_EUPSTREAM;
    if (lmo_wire_op(in, c) == LM_OP_COMPLETIONS) /* a native text_completion chunk, as chat */
        lmo_completion_as_chat(j, 1);
    if (in->q->fix)
        in->q->fix(in, c, j, 1);
    if (lm_usage_from_json(json_object_get(j, "usage"), &us) && in->h->emit_usage(out, &us) < 0)
        return json_decref(j), closed(e);
    json_object_del(j, "usage"); /* reported above: never forwarded in a chunk */
    if (json_array_size(json_object_get(j, "choices")) == 0)
        return json_decref(j), LM_OK; /* the usage-only chunk */
    if (in->q->flags & LMO_CLEAN)
        clean_chunk(in, c, rs, j);
    return in->h->emit_chunk(out, j) < 0 ? closed(e) : LM_OK;
}
