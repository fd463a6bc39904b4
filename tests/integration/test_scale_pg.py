"""Several Longmen instances on one PostgreSQL (docs/scale-out.md), through
the real binary and a real `postgres` started for the test (pglib.py):

  - a key created through instance A works on B and C; revoked through A, B
    refuses it within the watcher's poll (500 ms; the time is printed);
    a channel created and disabled through A is served / dropped by B;
  - PostgreSQL stopped for OUTAGE seconds under traffic, then restarted:
    instances with on_store_failure open keep answering and spool their
    rows; every answered request has exactly one ledger row afterwards
    (counted: none lost, none duplicated) and the key's used is their sum;
    the instance with on_store_failure closed (the default) answers 503
    store_unavailable while it is down, and none of its refused requests
    reached the provider;
  - kill -9 of an instance under stream load: every request it answered
    completely has its row (the last byte waits for the commit), and the
    other instance serves on;
  - the request log (docs/observability.md) shared by two instances: GET
    /admin/requests on either lists both instances' rows, filters and
    cursor paging work across them, a body cut at 256 KiB inside a UTF-8
    character is still logged (repaired), and retention by row count and
    by age prunes the shared table.

Prints "SKIP ..." and passes when no PostgreSQL binaries are installed
(`make deps` installs them)."""
import http.client
import json
import os
import signal
import tempfile
import threading
import time

import pglib
from lib import (KEY, Gateway, Mock, admin_call, check, chunk, free_port, json_reply, request_log, run, sse_reply,
                 usage_chunk)

OUTAGE = float(os.environ.get("LM_PG_OUTAGE", "10"))
TOKEN = "lmadm-scale-test-token-0123456789abcdef"
# polling a key until it works is a burst of 401s: no brute-force guard here
OUTBOUND = "admin_private_upstreams on\nadmin_env_allow LM_TEST_*\nauth_fail_limit 0\n"

mock = Mock()


def answer(h, b):
    if json.loads(b).get("stream"):
        return sse_reply(h, [chunk("o", role="assistant"), chunk("k"), chunk(finish="stop"),
                             usage_chunk(3, 1), "[DONE]"], delay=0.05)
    json_reply(h, 200, {
        "id": "w", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


for p in ("/a", "/b", "/c", "/sh"):
    mock.routes[p + "/chat/completions"] = answer

CHANNEL = """
channel w {
    plugin openai
    base_url %s
    models m
    price_input 1
    price_output 1
}
"""

PG = None
_dbs = [0]


def new_db():
    _dbs[0] += 1
    name = "lm_scale_%d" % _dbs[0]
    PG.sql("CREATE DATABASE %s" % name)
    return name


class Node:
    """One Longmen instance on the shared database; own spool and admin port."""

    def __init__(self, db, path="/a", fail_open=False, conf=""):
        self.dir = tempfile.mkdtemp(prefix="lm-scale-")
        self.aport = free_port()
        self.spool = os.path.join(self.dir, "usage.spool")
        conninfo = PG.conninfo().replace("dbname=postgres", "dbname=" + db)
        extra = ('store postgres "%s"\nstore_spool %s\nadmin_listen 127.0.0.1:%d\nstore_wait 1s\n%s%s'
                 % (conninfo, self.spool, self.aport, OUTBOUND,
                    "on_store_failure open\n" if fail_open else "")) + conf
        env = dict(PG.env(), LONGMEN_ADMIN_TOKEN=TOKEN, LM_TEST_UP_KEY="up-key")
        self.gw = Gateway(channels=CHANNEL % (mock.url + path), extra=extra, env=env)
        self.answered = []  # request ids of complete 200 answers (any thread)

    def admin(self, method, path, body=None):
        return admin_call(self.aport, TOKEN, method, path, body)

    def ask(self, secret, model="m", stream=False, timeout=30):
        body = {"model": model, "stream": stream, "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}
        try:
            st, js, raw, hdrs = self.gw.chat(body, key=secret, timeout=timeout)
        except (OSError, http.client.HTTPException) as e:  # cut by a kill
            return -1, None, str(e).encode(), {}
        if st == 200 and (not stream or b"[DONE]" in raw):
            self.answered.append(hdrs.get("X-Request-Id"))
        return st, js, raw, hdrs

    def stop(self, sig=15):
        return self.gw.stop(sig)


def new_key(node, quota="1000"):
    st, k = node.admin("POST", "/admin/keys", {"name": "scale", "quota": quota})
    check(st == 201, "key created: %s %s" % (st, k))
    return k["secret"], k["id"]


def until(cond, secs, what):
    t0 = time.time()
    while not cond():
        check(time.time() - t0 < secs, what)
        time.sleep(0.01)
    return time.time() - t0


def figure(text):
    print("     figure: " + text, flush=True)


def ledger(db):
    rows = []
    q = PG.sql_db(db, "SELECT request_id, attempt, COALESCE(key_id, 0), cost FROM usage")
    for line in q.splitlines():
        rid, att, kid, cost = line.split("|")
        rows.append((rid, int(att), int(kid), int(cost)))
    return rows


# ---------------------------------------------------------------------------


def test_keys_channels_and_revocation_across_instances():
    db = new_db()
    nodes = [Node(db, "/a"), Node(db, "/b"), Node(db, "/c")]
    try:
        a, b, c = nodes
        secret, kid = new_key(a)
        check(a.ask(secret)[0] == 200, "the key works where it was made")
        t = max(until(lambda n=n: n.ask(secret)[0] == 200, 5, "key reaches %s" % n.gw.port)
                for n in (b, c))
        figure("key created on A usable on B and C after %.0f ms" % (t * 1000))
        st, js = a.admin("DELETE", "/admin/keys/%d" % kid)
        check(st == 200, "revoked: %s %s" % (st, js))
        t0 = time.time()
        until(lambda: b.ask(secret)[0] == 401, 5, "B refuses the revoked key")
        tb = time.time() - t0
        until(lambda: c.ask(secret)[0] == 401, 5, "C refuses the revoked key")
        figure("revocation through A refused by B after %.0f ms, by C after %.0f ms"
               % (tb * 1000, (time.time() - t0) * 1000))
        check(tb < 5, "revocation propagated: %.2f s" % tb)
        # a channel created through A serves on B; disabled through A, B drops it
        secret2, _ = new_key(a)
        ch = {"name": "shared", "plugin": "openai", "models": ["sh-1"],
              "settings": {"base_url": mock.url + "/sh", "api_key": "env:LM_TEST_UP_KEY"}}
        st, js = a.admin("POST", "/admin/channels", ch)
        check(st == 201, "channel created: %s %s" % (st, js))
        t = until(lambda: b.ask(secret2, model="sh-1")[0] == 200, 5, "B serves the new channel")
        figure("channel created on A served by B after %.0f ms" % (t * 1000))
        st, js = a.admin("PATCH", "/admin/channels/shared", {"enabled": False})
        check(st == 200, "channel disabled: %s %s" % (st, js))
        t = until(lambda: b.ask(secret2, model="sh-1")[0] == 404, 5, "B drops the disabled channel")
        figure("channel disabled on A dropped by B after %.0f ms" % (t * 1000))
    finally:
        for n in nodes:
            n.stop()


def test_quota_spent_through_two_instances():
    """Sequential spend alternating between A and B: each sees the other's
    committed spend within about a second; every answered request has its
    row even past the quota, and used is the sum of the rows."""
    db = new_db()
    a, b = Node(db, "/a"), Node(db, "/b")
    try:
        secret, kid = new_key(a, quota="0.0001")  # 100 micro-units; a request costs 4
        until(lambda: b.ask(secret)[0] == 200, 5, "key on B")
        codes, i = [], 0
        while i < 200:
            st, js, _, _ = (a, b)[i % 2].ask(secret)
            codes.append((st, (js or {}).get("error", {}).get("code") if st != 200 else None))
            i += 1
            if st != 200 and len(codes) > 2 and all(c[0] != 200 for c in codes[-2:]):
                break
        time.sleep(1.5)  # both have seen the other's spend by now
        late = [n.ask(secret) for n in (a, b)]
        check(all(r[0] == 429 and r[1]["error"]["code"] == "insufficient_quota" for r in late),
              "both refuse once the quota is spent: %s" % [r[:2] for r in late])
        answered = set(a.answered) | set(b.answered)
        rows = [r for r in ledger(db) if r[2] == kid]
        used = int(PG.sql_db(db, "SELECT used FROM keys WHERE id = %d" % kid))
        figure("quota 100 through A and B alternately: %d admitted (%d by cost), used %d, "
               "%d rows, refusals %s" % (len(answered), 100 // 4, used, len(rows),
                                         sorted(set(c[1] for c in codes if c[1]))))
        check({r[0] for r in rows} == answered and len(rows) == len(answered),
              "one row per answered request: %d rows, %d answered" % (len(rows), len(answered)))
        check(used == sum(r[3] for r in rows), "used %d = sum %d" % (used, sum(r[3] for r in rows)))
    finally:
        a.stop()
        b.stop()


class Load:
    """Threads sending billed requests to one node until stopped; records
    (status, request id, error code) of every answer."""

    def __init__(self, node, secret, threads=2, stream=False):
        self.node, self.secret, self.stream = node, secret, stream
        self.results, self.lock, self.go = [], threading.Lock(), True
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def loop(self):
        while self.go:
            st, js, raw, hdrs = self.node.ask(self.secret, stream=self.stream)
            code = (js or {}).get("error", {}).get("code") if isinstance(js, dict) else None
            complete = st == 200 and (not self.stream or b"[DONE]" in raw)
            with self.lock:
                self.results.append((st, hdrs.get("X-Request-Id"), code, complete, time.time()))
            if st != 200:
                time.sleep(0.05)

    def stop(self):
        self.go = False
        for t in self.threads:
            t.join(60)


def test_pg_outage_open_spools_closed_refuses():
    db = new_db()
    a, b = Node(db, "/a", fail_open=True), Node(db, "/b", fail_open=True)
    c = Node(db, "/c")  # on_store_failure closed (the default)
    nodes = [a, b, c]
    try:
        secret, kid = new_key(a)
        until(lambda: all(n.ask(secret)[0] == 200 for n in nodes), 5, "key on every node")
        loads = [Load(a, secret), Load(b, secret), Load(c, secret, threads=1)]
        time.sleep(2)
        c_up_before = sum(1 for r in mock.requests if r["path"].startswith("/c/"))
        PG.stop()
        t_down = time.time()
        time.sleep(OUTAGE)
        PG.start()
        t_up = time.time()
        time.sleep(3)
        for ld in loads:
            ld.stop()
        during = [r for ld in loads[:2] for r in ld.results if t_down + 2 < r[4] < t_up]
        check(during and all(r[0] == 200 for r in during),
              "open nodes answer during the outage: %s" % sorted(set(r[0] for r in during)))
        refused = [r for r in loads[2].results if t_down + 2 < r[4] < t_up]
        check(refused and all(r[0] == 503 and r[2] == "store_unavailable" for r in refused),
              "the closed node refuses with 503 store_unavailable: %s" % refused[:3])
        check(any(r[0] == 200 for r in loads[2].results if r[4] > t_up + 2.5) or
              c.ask(secret)[0] == 200, "the closed node serves again once postgres is back")
        answered = [rid for n in nodes for rid in n.answered]
        # spools replayed, then every answered request has exactly one row
        until(lambda: all(os.path.getsize(n.spool) == 0 for n in (a, b) if os.path.exists(n.spool)),
              60, "spools emptied")
        want = set(answered)

        def settled():
            rows = ledger(db)
            return want <= {r[0] for r in rows if r[2] == kid}
        until(settled, 30, "every answered request recorded")
        rows = [r for r in ledger(db) if r[2] == kid]
        ids = [r[0] for r in rows]
        dup = len(ids) - len(set(ids))
        lost = len(want - set(ids))
        extra = len(set(ids) - want)
        used = int(PG.sql_db(db, "SELECT used FROM keys WHERE id = %d" % kid))
        c_up = sum(1 for r in mock.requests if r["path"].startswith("/c/"))
        c_answered = sum(1 for r in loads[2].results if r[0] == 200)
        spooled = sum(g.gw.logtext().count("usage rows written to the spool") for g in (a, b))
        figure("outage %.0f s: %d answered (%d during it on open nodes, %d spool appends), "
               "%d rows, %d lost, %d duplicated, %d rows of unanswered requests; closed node "
               "refused %d" % (OUTAGE, len(want), len(during), spooled, len(ids), lost, dup, extra,
                               len(refused)))
        check(lost == 0 and dup == 0 and extra == 0,
              "lost %d, duplicated %d, unanswered %d" % (lost, dup, extra))
        check(used == sum(r[3] for r in rows), "used %d = sum of the rows %d"
              % (used, sum(r[3] for r in rows)))
        check(c_up - c_up_before <= c_answered, "no refused request of the closed node reached "
              "the provider: %d upstream calls, %d answered" % (c_up - c_up_before, c_answered))
    finally:
        for n in nodes:
            n.stop()


def test_kill9_keeps_committed_rows():
    db = new_db()
    a, b = Node(db, "/a"), Node(db, "/b")
    try:
        secret, kid = new_key(a)
        until(lambda: b.ask(secret)[0] == 200, 5, "key on B")
        load = Load(a, secret, threads=4, stream=True)
        time.sleep(2.5)
        a.gw.proc.send_signal(signal.SIGKILL)
        load.stop()
        a.stop()
        answered = set(a.answered)
        check(len(answered) > 5, "stream load ran: %d" % len(answered))
        ids = {r[0] for r in ledger(db) if r[2] == kid}
        lost = answered - ids
        figure("kill -9 under stream load: %d streams answered completely, %d rows missing"
               % (len(answered), len(lost)))
        check(not lost, "rows of completed streams missing: %s" % sorted(lost)[:5])
        st, _, raw, _ = b.ask(secret, stream=True)
        check(st == 200 and b"[DONE]" in raw, "B serves on: %s %s" % (st, raw[:200]))
    finally:
        b.stop()
        a.stop()


REQLOG = "request_log on\nrequest_log_bodies on models m\n"


def reqlog_rows(node, query="", want=None, timeout=10):
    return request_log(node.admin, query, want, timeout)


def test_request_log_shared_by_two_instances():
    db = new_db()
    a, b = Node(db, "/a", conf=REQLOG), None
    try:
        secret, kid = new_key(a, quota="unlimited")
        b = Node(db, "/b", conf=REQLOG)  # loads the key at start: no 401s while it polls
        ids = {"a": [], "b": []}
        for node, name, key, stream in ((b, "b", secret, False), (a, "a", secret, False), (a, "a", secret, True),
                                        (a, "a", None, False), (b, "b", None, True)):
            st, _, raw, hdrs = node.ask(key, stream=stream) if key else node.ask(
                KEY, stream=stream)
            check(st == 200, "request through %s: %s %s" % (name, st, raw[:200]))
            ids[name].append(hdrs.get("X-Request-Id"))
        st, _, _, hdrs = b.ask(secret, model="nope")
        check(st == 404, "unknown model: %s" % st)
        ids["b"].append(hdrs.get("X-Request-Id"))
        total = len(ids["a"]) + len(ids["b"])
        for node in (a, b):
            rows = reqlog_rows(node, want=total)["data"]
            got = {r["request_id"] for r in rows}
            check(len(rows) == total and set(ids["a"]) | set(ids["b"]) <= got,
                  "%d rows on one instance, want both instances' %d: %s"
                  % (len(rows), total, [(r["request_id"], r["status"]) for r in rows]))
        # filters, on B, over rows both wrote
        check(len(reqlog_rows(b, "key=scale")["data"]) == 4, "key filter")
        check(len(reqlog_rows(a, "key=test")["data"]) == 2, "config key filter")
        nf = reqlog_rows(a, "status=404")["data"]
        check(len(nf) == 1 and nf[0]["model_asked"] == "nope" and nf[0]["key_id"] == kid, nf)
        check(len(reqlog_rows(b, "model=nope")["data"]) == 1, "model filter")
        check(len(reqlog_rows(a, "channel=w&status=200")["data"]) == total - 1, "channel filter")
        streams = [r for r in reqlog_rows(b)["data"] if r["stream"]]
        check(len(streams) == 2 and all(r["completion_tokens"] == 1 for r in streams), streams)
        now = int(time.time() * 1000)
        check(not reqlog_rows(a, "since=%d" % (now + 60000))["data"], "since in the future")
        check(len(reqlog_rows(b, "since=%d&until=%d" % (now - 600000, now + 60000))["data"]) == total,
              "time range")
        seen, cursor, pages = [], None, 0
        while True:
            js = reqlog_rows(a if pages % 2 else b, "limit=2" + ("&cursor=%d" % cursor if cursor else ""))
            pages += 1
            seen += [r["id"] for r in js["data"]]
            if not js["has_more"]:
                check(js["next_cursor"] is None, js)
                break
            cursor = js["next_cursor"]
        check(pages == 3 and len(set(seen)) == total and seen == sorted(seen, reverse=True),
              "paging across both instances: %d pages %s" % (pages, seen))
        kept = [r for r in reqlog_rows(a, "bodies=1")["data"] if r.get("request_body")]
        check(len(kept) == total - 1 and all('"hi"' in r["request_body"] for r in kept),
              "bodies kept for model m: %d" % len(kept))
        check(secret not in json.dumps(reqlog_rows(a, "bodies=1")), "a secret in the request log")
        # bodies cut at 256 KiB: one of the two is cut inside a 2-byte character,
        # which PostgreSQL refuses unless repaired; both rows and ledger rows land
        cut = []
        for pad in ("", "x"):
            body = {"model": "m", "max_tokens": 10,
                    "messages": [{"role": "user", "content": pad + "\u00e9" * 140000}]}
            st, _, raw, hdrs = a.gw.chat(body, key=secret, timeout=30)
            check(st == 200, "long body: %s %s" % (st, raw[:200]))
            cut.append(hdrs.get("X-Request-Id"))
        until(lambda: set(cut) <= {r["request_id"] for r in reqlog_rows(b, "limit=2")["data"]}, 10,
              "long-body rows in the request log")
        rows = reqlog_rows(b, "bodies=1&limit=2")["data"]
        check(all(len(r["request_body"].encode()) <= 256 * 1024 for r in rows), "bodies cut")
        until(lambda: set(cut) <= {r[0] for r in ledger(db)}, 10, "ledger rows of the long bodies")
    finally:
        a.stop()
        if b:
            b.stop()


def test_request_log_retention_on_postgres():
    by_rows = new_db()
    conf = REQLOG + "request_log_max_rows 3\n"
    a, b = Node(by_rows, "/a", conf=conf), Node(by_rows, "/b", conf=conf)
    c = Node(new_db(), "/c", conf=REQLOG + "request_log_max_age 1s\n")
    try:
        for node in (a, b, a, b, a, c, c, c):
            check(node.ask(KEY)[0] == 200, "request")
        check(len(reqlog_rows(a, want=5)["data"]) == 5, "rows before pruning")
        check(len(reqlog_rows(c, want=3)["data"]) == 3, "rows before pruning by age")
        t0 = time.time()
        while time.time() - t0 < 25:  # the control thread prunes every 10 s
            if len(reqlog_rows(b)["data"]) == 3 and not reqlog_rows(c)["data"]:
                break
            time.sleep(0.5)
        newest = reqlog_rows(a)["data"]
        check(len(newest) == 3, "max_rows 3 kept %d" % len(newest))
        check(not reqlog_rows(c)["data"], "max_age 1s kept %d" % len(reqlog_rows(c)["data"]))
        figure("request log pruned on postgres within %.1f s (prune every 10 s)" % (time.time() - t0))
    finally:
        for n in (a, b, c):
            n.stop()


def main():
    global PG
    if pglib.pg_bin() is None:
        print("SKIP test_scale_pg: no PostgreSQL binaries (/usr/lib/postgresql/*/bin); "
              "`make deps` installs them", flush=True)
        return
    PG = pglib.Postgres()
    try:
        run([test_keys_channels_and_revocation_across_instances,
             test_quota_spent_through_two_instances,
             test_pg_outage_open_spools_closed_refuses,
             test_kill9_keeps_committed_rows,
             test_request_log_shared_by_two_instances,
             test_request_log_retention_on_postgres])
    finally:
        PG.close()
        mock.close()


if __name__ == "__main__":
    main()
