/*
 * console_assets.h - the web console's files (console/), embedded at
 * build time by scripts/embed_console.py into $(O)/gen/console_assets.c.
 */
#ifndef LM_CONSOLE_ASSETS_H
#define LM_CONSOLE_ASSETS_H
#include <stddef.h>

typedef struct lm_console_asset_s {
    const char *name;  /* file name under console/, e.g. "app.js" */
    const char *ctype; /* Content-Type */
    const unsigned char *data;
    size_t len;
} lm_console_asset_t;

/* Static, read-only; lm_console_nassets entries. */
extern const lm_console_asset_t lm_console_assets[];
extern const size_t lm_console_nassets;
#endif
