/*
 * sqlite_ckpt.h - WAL checkpoints of the SQLite ledger on a thread of their
 * own, so that a commit (and the answer waiting for it, DB-1) never waits
 * for a checkpoint's fsyncs. SQLite's automatic checkpoint runs inside the
 * COMMIT that crosses 1,000 WAL frames, on the committing thread: with the
 * WAL's dirty pages to flush, that is milliseconds for one request in a few
 * hundred.
 *
 * The write connection's commit hook wakes the checkpointer once enough
 * frames wait; it runs PASSIVE checkpoints on its own connection, which
 * never block the writer. The writer finishes a long WAL's short tail
 * itself so that the WAL starts over, and should the checkpointer fall far
 * behind (the disk slower than the writes) it checkpoints inline at a hard
 * cap, as SQLite would have, so the WAL stays bounded.
 */
#ifndef LM_STORE_SQLITE_CKPT_H
#define LM_STORE_SQLITE_CKPT_H
#include "store/store.h"

#include <sqlite3.h>

/* Frames waiting before the checkpointer is woken (SQLite's own default
 * for the automatic checkpoint). */
#define LM_CKPT_FRAMES 1000
/* The WAL starts over only when a write begins with every frame copied,
 * which under steady writes a checkpoint running beside them never leaves.
 * So once the WAL is this long and the checkpointer has copied all but a
 * short tail, the writer copies the tail itself (a few pages and two small
 * fsyncs, instead of a whole checkpoint). */
#define LM_CKPT_RESTART_FRAMES 4000
#define LM_CKPT_TAIL_FRAMES    256
/* Past this the writer checkpoints whatever is left, as SQLite would. */
#define LM_CKPT_HARD_FRAMES 8000

typedef struct lm_sqlite_ckpt_s lm_sqlite_ckpt_t;

/* Opens a connection to path for the checkpointer (settings as `w`:
 * synchronous FULL when sync_full, else NORMAL), starts its thread and
 * hooks w's commits (replacing the automatic checkpoint). w must not be
 * used by another thread during the call. NULL with a message in err.
 * Freed by lm_sqlite_ckpt_stop. */
lm_sqlite_ckpt_t *lm_sqlite_ckpt_start(lm_store_t *st, sqlite3 *w, const char *path, int sync_full,
                                       char *err, size_t errlen);
/* Stops and joins the thread, closes its connection and unhooks w. Call
 * before w is closed (the last connection to close checkpoints and removes
 * the WAL). NULL is a no-op. */
void lm_sqlite_ckpt_stop(lm_sqlite_ckpt_t *c);
/* Checkpoints run so far: by the checkpointer thread, and inline by the
 * writer (tails and the hard cap). Any thread. */
void lm_sqlite_ckpt_counts(const lm_sqlite_ckpt_t *c, int64_t *background, int64_t *inline_);
#endif
