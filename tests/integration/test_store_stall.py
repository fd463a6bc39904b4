"""A store that never stalls traffic (DB-4), through the real binary.

Another process holds the SQLite write lock (BEGIN IMMEDIATE) for
LM_STALL_HOLD seconds (default 20; it lets go only when the test says so,
so "answered while the lock is held" is a fact, not a timing):
  (a) config-key requests, which bill nothing, are answered while it holds;
  (b) a billed request admitted before the stall waits store_wait, then is
      answered; billed requests after that get 503 store_unavailable;
  (c) the rows of every request answered during the stall are in the ledger
      exactly once after the lock is released (spooled, then replayed);
  (d) a gateway killed with rows in the spool replays them at the next
      start, and a replay of the same spool again (a crash between the
      commit and emptying the file) adds nothing.
"""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

from lib import KEY, Gateway, Mock, admin_call, check, free_port, json_reply, run, sse_reply, chunk, usage_chunk

HOLD = float(os.environ.get("LM_STALL_HOLD", "20"))
TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")

mock = Mock()
mock.routes["/w/chat/completions"] = lambda h, b: (
    sse_reply(h, [chunk("ok", role="assistant"), chunk(finish="stop"), usage_chunk(3, 1), "[DONE]"])
    if json.loads(b).get("stream") else
    json_reply(h, 200, {
        "id": "w", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}))

HOLDER = r"""
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
open(sys.argv[2], "w").close()          # held
deadline = time.time() + 120            # a safety net only: the test lets go
while not os.path.exists(sys.argv[3]) and time.time() < deadline:
    time.sleep(0.02)
db.execute("COMMIT")
db.close()
"""


class Holder:
    """Another process with the database's write lock until release()."""

    def __init__(self, db):
        self.tmp = tempfile.mkdtemp(prefix="lm-holder-")
        self.held = os.path.join(self.tmp, "held")
        self.go = os.path.join(self.tmp, "release")
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, db, self.held, self.go])
        deadline = time.time() + 30
        while not os.path.exists(self.held):
            check(self.proc.poll() is None and time.time() < deadline, "the holder took the lock")
            time.sleep(0.02)

    def holding(self):
        return self.proc.poll() is None and not os.path.exists(self.go)

    def release(self):
        open(self.go, "w").close()
        self.proc.wait(30)
        shutil.rmtree(self.tmp, ignore_errors=True)


CHANNEL = """
channel w {
    plugin openai
    base_url %s/w
    models m
    price_input 1
    price_output 1
}
"""


def start(data_dir, admin_port):
    return Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\nstore_wait 1s\n" % (data_dir, admin_port),
                   channels=CHANNEL % mock.url)


def body(stream=False):
    return {"model": "m", "stream": stream, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def ledger(db):
    c = sqlite3.connect(db, timeout=30)
    try:
        rows = c.execute("SELECT request_id, attempt, key_id, cost FROM usage").fetchall()
        used = dict(c.execute("SELECT id, used FROM keys").fetchall())
    finally:
        c.close()
    return rows, used


def spooled(g):
    return sum(int(n) for n in re.findall(r"(\d+) usage rows written to the spool", g.logtext()))


def wait_for(cond, what, secs=60):
    deadline = time.time() + secs
    while not cond():
        check(time.time() < deadline, what)
        time.sleep(0.05)


def test_db4_stall_then_restart():
    data_dir = tempfile.mkdtemp(prefix="lm-db4-")
    db = os.path.join(data_dir, "longmen.db")
    spool = os.path.join(data_dir, "usage.spool")
    admin_port = free_port()
    g = start(data_dir, admin_port)
    try:
        token = TOKEN_RE.search(g.logtext()).group(1)
        st, k = admin_call(admin_port, token, "POST", "/admin/keys", {"name": "billed", "quota": "100"})
        check(st == 201, "key: %s %s" % (st, k))
        secret, key_id = k.get("secret") or k.get("key"), k["id"]
        st, _, raw, _ = g.chat(body(), key=secret)
        check(st == 200, "billed request before the stall: %s" % raw)
        before, _ = ledger(db)

        holder = Holder(db)
        t0 = time.time()
        # (b) admitted while the store is idle: its reply waits store_wait (1 s), no longer
        st, _, raw, hdrs = g.chat(body(), key=secret, timeout=30)
        check(st == 200, "billed request admitted before the stall is answered: %s %s" % (st, raw))
        check(holder.holding(), "answered while the lock is held")
        billed_id = hdrs.get("X-Request-Id")
        check(("%s: usage row not committed within 1000 ms" % billed_id) in g.logtext(),
              "the bounded wait was logged")
        # (a) config keys bill nothing: answered at once, lock still held
        answered = [billed_id]
        for stream in (False, True):
            st, _, raw, hdrs = g.chat(body(stream), key=KEY, timeout=30)
            check(st == 200 and b"ok" in raw, "config-key request during the stall: %s %s" % (st, raw))
            answered.append(hdrs.get("X-Request-Id"))
        check(holder.holding(), "config-key requests answered while the lock is held")
        # (b) the store has not committed for store_wait: billed admissions are refused
        for stream in (False, True):
            st, js, raw, hdrs = g.chat(body(stream), key=secret, timeout=30)
            check(st == 503 and js["error"]["code"] == "store_unavailable"
                  and js["error"]["type"] == "api_error", "billed request during the stall: %s %s" % (st, raw))
            check(hdrs.get("Retry-After") == "1", hdrs)
        check(holder.holding(), "refused while the lock is held")
        # the writer gives up on the lock after busy_timeout and spools the answered rows
        wait_for(lambda: spooled(g) >= len(answered), "answered rows spooled: %s" % g.logtext()[-2000:])
        check(os.path.getsize(spool) > 0, "the spool holds them")
        time.sleep(max(0.0, HOLD - (time.time() - t0)))
        check(holder.holding(), "the lock was held throughout")
        holder.release()

        # (c) replayed once the database is writable again
        def replayed():
            rows, _ = ledger(db)
            return len(rows) == len(before) + len(answered)
        wait_for(replayed, "rows replayed after the lock was released")
        rows, used = ledger(db)
        ids = [r[0] for r in rows]
        for rid in answered:
            check(ids.count(rid) == 1, "row %s exactly once: %s" % (rid, ids))
        check(used[key_id] == sum(r[3] for r in rows if r[2] == key_id),
              "the key's used is the sum of its rows: %s vs %s" % (used, rows))
        check(os.path.getsize(spool) == 0, "spool emptied after the replay")
        # billed requests are admitted again once the store commits
        wait_for(lambda: g.chat(body(), key=secret)[0] == 200, "billed requests admitted again", 30)

        # (d) killed with rows in the spool
        n_before = len(ledger(db)[0])
        holder = Holder(db)
        spooled0 = spooled(g)
        killed = []
        for stream in (False, True):
            st, _, raw, hdrs = g.chat(body(stream), key=KEY, timeout=30)
            check(st == 200, raw)
            killed.append(hdrs.get("X-Request-Id"))
        wait_for(lambda: spooled(g) >= spooled0 + len(killed), "rows spooled before the kill")
        g.proc.kill()
        g.stop()
        kept = spool + ".copy"
        shutil.copyfile(spool, kept)
        holder.release()
        g = start(data_dir, admin_port)
        rows, used = ledger(db)
        ids = [r[0] for r in rows]
        check(len(rows) == n_before + len(killed) and all(ids.count(i) == 1 for i in killed),
              "replayed at start, once: %s" % ids)
        check(os.path.getsize(spool) == 0, "spool emptied at start")
        g.stop()
        # a crash after the replay's commit but before the file was emptied
        shutil.copyfile(kept, spool)
        g = start(data_dir, admin_port)
        check(len(ledger(db)[0]) == n_before + len(killed), "the same spool again adds nothing")
        check("%d already recorded" % len(killed) in g.logtext(), "replay saw duplicates")
        g.stop()
        g = start(data_dir, admin_port)
        check(len(ledger(db)[0]) == n_before + len(killed), "a second restart adds nothing")
    finally:
        g.stop()


def main():
    try:
        run([test_db4_stall_then_restart])
    finally:
        mock.close()


if __name__ == "__main__":
    main()
