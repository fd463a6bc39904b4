/* Fuzz emit_raw (ABI 1.4, kernel/plugin/emit_raw.c) against the tree path:
 * the input is a stream of chunks separated by 0x01. Each goes through
 * emit_raw on one sink and through the tree path of a quirk-free OpenAI
 * plugin (parse, usage to emit_usage, emit_chunk) on another. A declined
 * chunk must leave no trace (then the tree path runs on both); a taken one
 * must reach the sink as the same JSON the tree path sends, and both
 * stream states must stay equal. The one allowed difference: a number out
 * of Jansson's range (the scanner does not convert), which ends the input. */
#include "plugin/host.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "emit_raw";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    char *last;
    unsigned count;
} sink_t;

static int sink(void *arg, const char *json, size_t len)
{
    sink_t *s = arg;
    free(s->last);
    s->last = strndup(json, len);
    s->count++;
    return 0;
}

static void fail(const char *what, const char *p, size_t n)
{
    fprintf(stderr, "fuzz_emit_raw: %s on: %.*s\n", what, (int)n, p);
    abort();
}

static int tree(lm_emit_t *e, const char *p, size_t n)
{
    json_t *j = json_loadb(p, n, 0, NULL);
    lm_usage u;
    if (!json_is_object(j))
        return json_decref(j), LM_EUPSTREAM;
    json_t *err = json_object_get(j, "error");
    if (json_is_object(err) || json_is_string(err))
        return json_decref(j), LM_EUPSTREAM;
    if (lm_usage_from_json(json_object_get(j, "usage"), &u))
        lm_host_table.emit_usage(e, &u);
    json_object_del(j, "usage");
    if (json_array_size(json_object_get(j, "choices")) == 0)
        return json_decref(j), LM_OK;
    return lm_host_table.emit_chunk(e, j);
}

static int same(const lm_emit_t *a, const lm_emit_t *b)
{
    return !strcmp(a->id, b->id) && !strcmp(a->model, b->model) && a->created == b->created &&
           !memcmp(&a->usage, &b->usage, sizeof(a->usage)) && a->usage_seen == b->usage_seen &&
           a->nchunks == b->nchunks && a->ncontent == b->ncontent &&
           a->ids_adopted == b->ids_adopted && a->finish_seen == b->finish_seen &&
           a->content_chars == b->content_chars && a->role_sent == b->role_sent &&
           a->finished == b->finished && a->tools_seen == b->tools_seen;
}

static int equal_json(const char *a, const char *b)
{
    json_t *x = json_loads(a, 0, NULL), *y = json_loads(b, 0, NULL);
    int eq = x && y && json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return eq;
}

/* One chunk both ways; 0 to go on, 1 to stop (an out-of-range number). */
static int step(lm_emit_t *raw, sink_t *rs, lm_emit_t *ref, sink_t *ts, const char *p, size_t n)
{
    lm_emit_t before = *raw;
    unsigned r0 = rs->count, t0 = ts->count;
    int rc = lm_host_table.emit_raw(raw, (lm_str){p, n});
    if (rc == LM_DECLINED) {
        if (rs->count != r0 || !same(&before, raw))
            fail("declined but acted", p, n);
        if (tree(raw, p, n) != tree(ref, p, n))
            fail("tree paths differ", p, n);
    } else {
        if (rc != LM_OK)
            fail("emit_raw failed", p, n);
        if (tree(ref, p, n) != LM_OK) {
            json_t *j = json_loadb(p, n, 0, NULL);
            if (j != NULL)
                fail("raw took what the tree path refused", p, n);
            return 1;
        }
        if (rs->count - r0 != ts->count - t0)
            fail("chunk counts differ", p, n);
        if (rs->count > r0 && !equal_json(rs->last, ts->last))
            fail("raw and tree chunks differ", p, n);
        if (rs->count > r0 && memchr(rs->last, '\n', strlen(rs->last)))
            fail("a line break reached the sink", p, n);
    }
    if (!same(raw, ref))
        fail("states differ", p, n);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sink_t rs = {0}, ts = {0};
    lm_emit_t raw, ref;
    const char *p = (const char *)data, *end = p + size;
    lm_emit_init(&raw, LM_USAGE_CUMULATIVE, "r", "m", 1, sink, &rs);
    lm_emit_init(&ref, LM_USAGE_CUMULATIVE, "r", "m", 1, sink, &ts);
    raw.raw_ok = 1;
    for (int i = 0; i < 32 && p < end; i++) {
        const char *sep = memchr(p, 1, (size_t)(end - p)), *stop = sep ? sep : end;
        if (step(&raw, &rs, &ref, &ts, p, (size_t)(stop - p)))
            break;
        p = sep ? sep + 1 : end;
    }
    free(rs.last);
    free(ts.last);
    return 0;
}
