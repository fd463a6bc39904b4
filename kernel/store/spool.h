/*
 * spool.h - the usage spool (DB-4): an append-only local file that holds
 * the ledger rows of answered requests while the database cannot commit
 * them; the writer replays it into the ledger once it can (replay.c).
 *
 * Format: a sequence of records, each
 *     "LMS1" | u32 payload length | u32 CRC-32 of the payload | payload
 * and the payload (integers little-endian)
 *     12 x i64: attempt, key_id, prompt, completion, cached, reasoning
 *               tokens, cost, latency_ms, ttft_ms, status, flags
 *               (1: client_aborted, 2: cached; older records hold 0 or 1),
 *               created_ms
 *     6 strings: request_id, channel, model_asked, model_served,
 *                usage_json, api, each u32 length (0 = NULL) then that
 *                many bytes ending in a NUL. Records written before api
 *                existed end after usage_json; they read as api NULL.
 * A crash mid-append leaves a torn last record: the scan ignores it. A
 * damaged record elsewhere is skipped up to the next "LMS1" that starts a
 * valid record, so one bad sector never hides the rows after it. The
 * (request_id, attempt) key makes a replay idempotent.
 */
#ifndef LM_STORE_SPOOL_H
#define LM_STORE_SPOOL_H
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

#define LM_SPOOL_HEAD    12        /* magic, length, CRC */
#define LM_SPOOL_REC_MAX (1 << 20) /* payload bytes of one record */

/* Bytes the record of row takes (head included); 0 if row cannot be
 * spooled (no request_id, or larger than LM_SPOOL_REC_MAX). */
size_t lm_spool_size(const lm_usage_row_t *row);
/* Write the record of row into out (lm_spool_size(row) bytes). */
void lm_spool_put(const lm_usage_row_t *row, unsigned char *out);

typedef struct lm_spool_stats_s {
    size_t records; /* valid records passed to each */
    size_t skipped; /* bytes of damaged records skipped */
    size_t torn;    /* bytes of an incomplete last record ignored */
} lm_spool_stats_t;

/* Call each(arg, row) for every valid record of buf[0..len), in order; the
 * row's strings point into buf (borrowed for the call). each returns 0 to
 * go on, anything else to stop (returned). 0 when the whole buffer was
 * scanned. stats (may be NULL) is filled either way. Pure: any thread. */
int lm_spool_scan(const unsigned char *buf, size_t len,
                  int (*each)(void *arg, const lm_usage_row_t *row), void *arg,
                  lm_spool_stats_t *stats);

/* --- the file ------------------------------------------------------------ */
/* Append n records (buf, len bytes) to path, created 0600, and fsync the
 * file (and its directory when the file was new), so they survive a crash
 * or power loss once this returns 0. -1 with errno on failure (a short
 * write is cut back off the file when it can be). */
int lm_spool_append(const char *path, const unsigned char *buf, size_t len);
/* The whole file into *out (new, free()) and its size in *len; a missing
 * file reads as empty (*out NULL). 0, or -1 with errno. */
int lm_spool_read(const char *path, unsigned char **out, size_t *len);
/* Empty the file (its rows are committed) and fsync it. 0 or -1. */
int lm_spool_clear(const char *path);
#endif
