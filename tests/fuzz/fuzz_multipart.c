/* Fuzz the multipart/form-data reader (proto/multipart.h): the first line
 * of the input is a Content-Type value, the rest the body. Every part must
 * be a slice inside the body, parts come in order without overlap, and the
 * parse must end (0, -1 with a reason). */
#include "proto/multipart.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *lm_fuzz_name = "multipart";
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct walk_s {
    const char *body, *end, *last;
    int n;
} walk_t;

static void inside(const walk_t *w, lm_str s)
{
    if (s.n && (s.p < w->body || s.p + s.n > w->end))
        abort();
}

static int on_part(void *arg, const lm_mp_part_t *p)
{
    walk_t *w = arg;
    inside(w, p->name);
    inside(w, p->filename);
    inside(w, p->ctype);
    inside(w, p->data);
    if (p->data.p < w->last || ++w->n > LM_MP_PARTS_MAX)
        abort();
    w->last = p->data.p + p->data.n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *nl = memchr(s, '\n', size);
    size_t hn = nl ? (size_t)(nl - s) : size;
    char ctype[256], boundary[LM_MP_BOUNDARY_MAX + 1];
    if (hn >= sizeof(ctype))
        hn = sizeof(ctype) - 1;
    memcpy(ctype, s, hn);
    ctype[hn] = '\0';
    if (lm_mp_boundary(ctype, boundary, sizeof(boundary)) < 0)
        memcpy(boundary, "b", 2); /* the body is still walked */
    /* the body in its own allocation, so ASan sees any read past it */
    size_t bn = nl ? size - hn - 1 : 0;
    char *body = malloc(bn ? bn : 1);
    if (body == NULL)
        return 0;
    if (bn)
        memcpy(body, nl + 1, bn);
    walk_t w = {body, body + bn, body, 0};
    const char *why = NULL;
    int rc = lm_mp_parse(body, bn, boundary, on_part, &w, &why);
    if (rc != 0 && (rc != -1 || why == NULL))
        abort();
    free(body);
    return 0;
}
