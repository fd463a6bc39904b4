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
    other instance serves on.

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
from lib import Gateway, Mock, admin_call, check, chunk, free_port, json_reply, run, sse_reply, usage_chunk

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

    def __init__(self, db, path="/a", fail_open=False):
        self.dir = tempfile.mkdtemp(prefix="lm-scale-")
        self.aport = free_port()
        self.spool = os.path.join(self.dir, "usage.spool")
        conninfo = PG.conninfo().replace("dbname=postgres", "dbname=" + db)
        extra = ('store postgres "%s"\nstore_spool %s\nadmin_listen 127.0.0.1:%d\nstore_wait 1s\n%s%s'
                 % (conninfo, self.spool, self.aport, OUTBOUND,
                    "on_store_failure open\n" if fail_open else ""))
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
             test_kill9_keeps_committed_rows])
    finally:
        PG.close()
        mock.close()


if __name__ == "__main__":
    main()
