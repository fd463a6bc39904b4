"""Soak (LD-1, LD-4): SOAK_SECONDS (default 180, 45 under a sanitizer) of
modest mixed traffic through a gateway with a store, a virtual key and a Lua
rewrite: ~70% streams, ~5% clients that hang up mid-stream, ~2% upstream
errors (500 or a cut stream), ~1% Lua errors, the rest plain completions.
Afterwards every upstream attempt has exactly one ledger row, no row twice,
and the key's used amount is the sum of its rows; RssAnon and the open fds,
sampled after a warm-up, stay flat (not under a sanitizer: its quarantine
grows). SOAK_STORE=off runs the same traffic without data_dir (config key,
memory only) to compare the two."""
import json
import os
import random
import re
import socket
import tempfile
import threading
import time

from lib import admin_call, KEY, Gateway, Mock, check, chunk, content_of, free_port, json_reply, run, sse_reply, usage_chunk

SANITIZER = os.environ.get("LM_SANITIZER") == "1"
SECONDS = float(os.environ.get("SOAK_SECONDS") or (45 if SANITIZER else 180))
STORE = os.environ.get("SOAK_STORE", "on") != "off"
THREADS = 4
PAUSE = float(os.environ.get("SOAK_PAUSE") or 0.08)  # each client thread sleeps ~this long between requests
SAMPLE_EVERY = 2.0    # seconds between RssAnon / fd samples
WARMUP = 0.2          # share of the run before sampling counts
RSS_SLACK_KB = 512    # absolute slack for tiny values
FD_SLACK = 6
SQLITE_CACHE_KB = 2 * 2000
TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")

mock = Mock()
upstream_hits = {"n": 0}
hits_lock = threading.Lock()

PLAIN = {"id": "c", "object": "chat.completion", "created": 1, "model": "up",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}


def upstream(h, b):
    with hits_lock:
        upstream_hits["n"] += 1
    req = json.loads(b)
    text = json.dumps(req.get("messages"))
    if "Be brief." not in text:  # the Lua rewrite must have run
        return json_reply(h, 400, {"error": {"message": "no rewrite", "type": "x"}})
    if "UP500" in text:
        return json_reply(h, 500, {"error": {"message": "upstream down", "type": "server_error"}})
    if "UPCUT" in text:
        return sse_reply(h, [chunk("par", role="assistant"), chunk("tial")], close_after=True)
    if "SLOW" in text:  # the client hangs up after the first bytes
        return sse_reply(h, [chunk("t%02d " % i) for i in range(40)] + [chunk(finish="stop"), "[DONE]"],
                         delay=0.02)
    if req.get("stream"):
        return sse_reply(h, [chunk("hello", role="assistant"), chunk(" world"), chunk(finish="stop"),
                             usage_chunk(12, 5), "[DONE]"])
    return json_reply(h, 200, PLAIN)


mock.routes["/v1/chat/completions"] = upstream

SCRIPT = r'''
function on_request(req)
  local c = req.messages[1].content
  if type(c) == "string" and string.find(c, "LUAERR", 1, true) then error("soak marker") end
  table.insert(req.messages, 1, {role = "system", content = "Be brief."})
  req.params.temperature = 0.2
end
'''


def status_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def db_kb(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.startswith("longmen.db")) // 1024


def fds_of(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Soak:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="lm-soak-")
        self.admin_port = free_port()
        script = os.path.join(self.dir, "soak.lua")
        with open(script, "w") as f:
            f.write(SCRIPT)
        extra = "script soak %s\n" % script
        if STORE:
            extra += "data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (self.dir, self.admin_port)
        self.gw = Gateway(extra=extra, workers=2, channels="""
channel up {
    plugin openai
    base_url %s/v1
    models m
    price_input 1
    price_output 2
}
""" % mock.url)
        self.token = None
        self.secret = KEY
        self.kid = None
        if STORE:
            m = TOKEN_RE.search(self.gw.logtext())
            check(m, "admin token printed")
            self.token = m.group(1)
            st, js = self.admin("POST", "/admin/keys", {"name": "soak", "quota": "unlimited"})
            check(st == 201, "create key: %s %s" % (st, js))
            self.secret = js.get("secret") or js.get("key")
            self.kid = js["id"]

    def admin(self, method, path, body=None):
        return admin_call(self.admin_port, self.token, method, path, body, timeout=20)

    def rows(self):
        out, after = [], None
        for _ in range(1000):
            q = "/admin/usage/rows?limit=500" + ("&after=%d" % after if after else "")
            st, js = self.admin("GET", q)
            check(st == 200, "rows page: %s %s" % (st, js))
            out += js["data"]
            if not js["has_more"]:
                return out
            after = js["last_id"]
        raise AssertionError("paging did not end")


def body(content, stream):
    b = {"model": "m", "messages": [{"role": "user", "content": content}], "max_tokens": 50}
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    return b


def abort_mid_stream(port, secret, n):
    data = json.dumps(body("SLOW %d" % n, True)).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
                  % (secret.encode(), len(data), data))
        got = b""
        while b"data: " not in got:  # the upstream answered; hang up mid-stream
            part = s.recv(4096)
            if not part:
                return "eof before data: %r" % got[:200]
            got += part
        return "aborted"
    finally:
        s.close()


def pick(rng):
    x = rng.random()
    if x < 0.01:
        return "luaerr"
    if x < 0.02:
        return "up500"
    if x < 0.03:
        return "upcut"
    if x < 0.08:
        return "abort"
    if x < 0.78:
        return "stream"
    return "plain"


def client(s, seed, deadline, tally, problems):
    rng = random.Random(seed)
    n = 0
    while time.time() < deadline:
        kind = pick(rng)
        n += 1
        tag = "%d-%d" % (seed, n)
        try:
            if kind == "abort":
                res = abort_mid_stream(s.gw.port, s.secret, n)
                if res != "aborted":
                    problems.append("abort %s: %s" % (tag, res))
            elif kind == "luaerr":
                st, js, raw, _ = s.gw.chat(body("LUAERR " + tag, rng.random() < 0.5), key=s.secret)
                if st != 500 or (js or {}).get("error", {}).get("code") != "script_error":
                    problems.append("luaerr %s: %d %r" % (tag, st, raw[:200]))
            elif kind in ("up500", "upcut"):
                st, ev, raw, _ = s.gw.stream(body(kind.upper() + " " + tag, kind == "upcut"), key=s.secret)
                if kind == "up500" and st < 500:
                    problems.append("up500 %s: %d %r" % (tag, st, raw[:200]))
            elif kind == "stream":
                st, ev, raw, _ = s.gw.stream(body("hi " + tag, True), key=s.secret)
                if st != 200 or not ev or ev[-1] != "[DONE]" or content_of(ev) != "hello world":
                    problems.append("stream %s: %d %r" % (tag, st, raw[-200:]))
            else:
                st, js, raw, _ = s.gw.chat(body("hi " + tag, False), key=s.secret)
                if st != 200 or js["choices"][0]["message"]["content"] != "ok":
                    problems.append("plain %s: %d %r" % (tag, st, raw[:200]))
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            problems.append("%s %s: %r" % (kind, tag, e))
        with hits_lock:
            tally[kind] = tally.get(kind, 0) + 1
        time.sleep(PAUSE * (0.5 + rng.random()))


def flat(series, slack):
    """(ok, first-third average, last-third average) of the post-warm-up samples."""
    k = max(1, len(series) // 3)
    a = sum(series[:k]) / k
    b = sum(series[-k:]) / k
    return b <= a * 1.05 + slack, a, b


def test_soak_accounting_and_flat_memory():
    s = Soak()
    pid = s.gw.proc.pid
    samples = []  # (t, rss_kb, fds, db_kb)
    tally, problems = {}, []
    start = time.time()
    deadline = start + SECONDS
    try:
        threads = [threading.Thread(target=client, args=(s, i + 1, deadline, tally, problems), daemon=True)
                   for i in range(THREADS)]
        for t in threads:
            t.start()
        while time.time() < deadline:
            time.sleep(min(SAMPLE_EVERY, max(0.0, deadline - time.time())))
            check(s.gw.proc.poll() is None, "gateway exited: %s" % s.gw.logtext()[-2000:])
            samples.append((time.time() - start, status_of(pid), fds_of(pid), db_kb(s.dir)))
        for t in threads:
            t.join(60)
        check(not any(t.is_alive() for t in threads), "client threads finished")
        total = sum(tally.values())
        post = [x for x in samples if x[0] >= SECONDS * WARMUP]
        rss = [x[1] for x in post]
        fds = [x[2] for x in post]
        dbs = [x[3] for x in post]
        series = "rss_kb %s\n     fds %s\n     db_kb %s" % (rss, fds, dbs)
        print("     soak %.0fs store=%s: %d requests %s, %d upstream hits; RssAnon %d..%d kB, fds %d..%d"
              % (SECONDS, "on" if STORE else "off", total, json.dumps(tally, sort_keys=True),
                 upstream_hits["n"], min(rss or [0]), max(rss or [0]), min(fds or [0]), max(fds or [0])),
              flush=True)
        print("     " + series, flush=True)
        check(total >= 50, "some traffic went through: %d" % total)
        check(not problems, "%d client-side problems, first: %s" % (len(problems), problems[:5]))
        if STORE:
            # the writer thread commits asynchronously: wait until it caught up
            with hits_lock:
                hits = upstream_hits["n"]
            rows = []
            for _ in range(100):
                rows = s.rows()
                if len(rows) >= hits:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            rows = s.rows()
            ids = [r["id"] for r in rows]
            attempts = [(r["request_id"], r["attempt"]) for r in rows]
            check(len(set(ids)) == len(ids), "row ids unique")
            check(len(set(attempts)) == len(attempts), "no double row: %d rows, %d distinct attempts"
                  % (len(attempts), len(set(attempts))))
            check(len(rows) == hits, "ledger rows %d == upstream attempts %d (requests %d, lua errors %d)"
                  % (len(rows), hits, total, tally.get("luaerr", 0)))
            check(all(r["key_id"] == s.kid for r in rows), "every row on the virtual key")
            aborted = sum(1 for r in rows if r["client_aborted"])
            check(aborted >= 1 or tally.get("abort", 0) == 0, "aborted streams recorded as such")
            st, k = s.admin("GET", "/admin/keys/%d" % s.kid)
            cost = sum(r["cost_micro"] for r in rows)
            check(st == 200 and k["used_micro"] == cost, "key used %s == sum of rows %d"
                  % (k.get("used_micro"), cost))
            print("     ledger: %d rows (%d client_aborted), cost %d micro == key used" % (len(rows), aborted, cost),
                  flush=True)
        if not SANITIZER and len(post) >= 6:
            # SQLite's page cache (default 2000 KiB per connection, a writer
            # and a reader) fills as the ledger grows, then stays: allow the
            # store's growth between the thirds, up to that bound.
            _, da, db = flat(dbs, 0)
            cache = min(max(0.0, db - da), SQLITE_CACHE_KB) if STORE else 0
            ok_rss, a, b = flat(rss, RSS_SLACK_KB + cache)
            check(ok_rss, "RssAnon grew %.0f -> %.0f kB (> 5%% + %d kB store cache)\n     %s"
                  % (a, b, cache, series))
            ok_fd, a, b = flat(fds, FD_SLACK)
            check(ok_fd, "open fds grew %.1f -> %.1f (> 5%%)\n     %s" % (a, b, series))
    finally:
        s.gw.stop()


if __name__ == "__main__":
    try:
        run([test_soak_accounting_and_flat_memory])
    finally:
        mock.close()
