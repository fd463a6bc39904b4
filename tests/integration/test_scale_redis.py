"""Scale-out on Redis (docs/redis.md): two or three Longmen instances share
one real redis-server for per-key limits, quota holds, the brute-force
guard and channel holds. Each instance keeps its own SQLite store here;
the same keys are created in the same order on each, so they share ids
(with PostgreSQL they share the rows). Skipped only when redis-server is
missing."""
import json
import re
import signal
import sys
import tempfile
import threading
import time

from lib import Gateway, Mock, admin_call, check, chunk, free_port, json_reply, run, sse_reply, usage_chunk
from redis_server import RedisServer, available

if not available():
    print("SKIP test_scale_redis: redis-server not installed (make deps installs it)")
    sys.exit(0)

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
PLAIN = {"id": "c", "object": "chat.completion", "created": 1, "model": "up",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 10, "completion_tokens": 1000, "total_tokens": 1010}}
BODY = {"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "x"}]}
WORST = len(json.dumps(BODY)) // 4 + 1000  # micro-units at 1 per 1M tokens: the quota hold
COST = 1010                                 # what one answer costs

mock = Mock()
mock.routes["/v1/chat/completions"] = lambda h, b: json_reply(h, 200, PLAIN)
mock.routes["/bad/chat/completions"] = lambda h, b: json_reply(h, 500, {"error": {"message": "down"}})

CHANNELS = """
channel up {
    plugin openai
    base_url %s/v1
    models m
    price_input 1
    price_output 1
}
channel bad {
    plugin openai
    base_url %s/bad
    models e
    price_input 1
    price_output 1
}
channel good {
    plugin openai
    base_url %s/v1
    models e
    priority 1
    price_input 1
    price_output 1
}
""" % (mock.url, mock.url, mock.url)


class Node:
    """One Longmen instance on the shared Redis, with its own store."""

    def __init__(self, redis, policy="closed", data_dir=None, extra=""):
        self.dir = data_dir or tempfile.mkdtemp(prefix="lm-scale-")
        self.admin_port = free_port()
        self.gw = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\nredis %s\non_store_failure %s\n%s\n"
                                % (self.dir, self.admin_port, redis.url, policy, extra),
                          channels=CHANNELS)
        m = TOKEN_RE.search(self.gw.logtext())
        self.token = m.group(1) if m else None

    def new_key(self, **fields):
        body = {"name": "k", "quota": "unlimited"}
        body.update(fields)
        st, js = admin_call(self.admin_port, self.token, "POST", "/admin/keys", body)
        check(st == 201, "create key: %s %s" % (st, js))
        return js.get("secret") or js.get("key")

    def chat(self, secret, body=BODY):
        return self.gw.chat(body, key=secret, timeout=20)

    def stop(self):
        self.gw.stop()


def shutdown(redis, *ns):
    """Stop every node and Redis even when one stop fails (a sanitizer
    report), then raise the first failure."""
    first = None
    for x in ns:
        try:
            x.stop()
        except Exception as e:  # noqa: BLE001
            first = first or e
    redis.close()
    if first:
        raise first


def nodes(redis, n, **kw):
    return [Node(redis, **kw) for _ in range(n)]


def same_key(ns, **fields):
    """The same key (same id) on every node: one secret per node."""
    return [x.new_key(**fields) for x in ns]


def burst(ns, secrets, total):
    """total requests at once, spread over the nodes: the status codes."""
    barrier = threading.Barrier(total)
    codes = []
    lock = threading.Lock()

    def go(i):
        barrier.wait()
        try:
            st, js, raw, _ = ns[i % len(ns)].chat(secrets[i % len(ns)])
            code = st if st == 200 else "%d %s" % (st, (js or {}).get("error", {}).get("code"))
        except Exception as e:  # noqa: BLE001
            code = repr(e)
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(total)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return codes


def test_quota_exact_across_instances():
    redis = RedisServer()
    ns = nodes(redis, 3)
    try:
        k = 12
        secrets = same_key(ns, quota="%.6f" % (WORST * k / 1e6))
        codes = burst(ns, secrets, 3 * k)
        ok = codes.count(200)
        check(all(c in (200, "429 insufficient_quota") for c in codes), codes)
        check(ok == k, "admitted %d of a quota for exactly %d" % (ok, k))
        # afterwards, one at a time on every node: still refused
        for x, s in zip(ns, secrets):
            st, js, raw, _ = x.chat(s)
            check(st == 429 and js["error"]["code"] == "insufficient_quota", raw)
        print("FIGURE quota: %d requests at once on 3 instances, quota for %d, admitted %d"
              % (3 * k, k, ok), flush=True)
    finally:
        shutdown(redis, *ns)


def test_rpm_exact_across_instances():
    redis = RedisServer()
    ns = nodes(redis, 3)
    try:
        n = 7
        secrets = same_key(ns, rpm=n)
        codes = burst(ns, secrets, 4 * n)
        ok = codes.count(200)
        check(all(c in (200, "429 rate_limit_exceeded") for c in codes), codes)
        check(ok == n, "admitted %d with rpm %d" % (ok, n))
        print("FIGURE rpm: %d requests at once on 3 instances, rpm %d, admitted %d" % (4 * n, n, ok),
              flush=True)
    finally:
        shutdown(redis, *ns)


def bad_hits():
    with mock.lock:
        return sum(1 for r in mock.requests if r["path"].startswith("/bad/"))


def test_ejection_shared():
    redis = RedisServer()
    a, b = nodes(redis, 2)
    try:
        sa, sb = same_key([a, b])
        before = bad_hits()
        for _ in range(5):  # five failures in a row eject `bad` on A (fallback serves)
            st, js, raw, _ = a.chat(sa, {"model": "e", "messages": [{"role": "user", "content": "x"}]})
            check(st == 200, raw)
        check(bad_hits() - before == 5, "A tried bad %d times" % (bad_hits() - before))
        time.sleep(1.0)  # B polls the shared holds every 250 ms
        before = bad_hits()
        for _ in range(5):
            st, js, raw, _ = b.chat(sb, {"model": "e", "messages": [{"role": "user", "content": "x"}]})
            check(st == 200, raw)
        check(bad_hits() == before, "B still sent %d requests to the ejected channel"
              % (bad_hits() - before))
    finally:
        shutdown(redis, a, b)


def test_brute_force_guard_shared():
    redis = RedisServer()
    a, b = nodes(redis, 2, extra="auth_fail_limit 3")
    try:
        sa, sb = same_key([a, b])
        check(b.chat(sb)[0] == 200, "B before")
        for _ in range(3):
            check(a.chat("sk-wrong")[0] == 401, "a wrong key is refused")
        time.sleep(1.0)  # B polls the shared blocks every 250 ms
        st, js, raw, hdrs = b.chat(sb)
        check(st == 429 and js["error"]["code"] == "too_many_auth_failures", "B after: %s" % raw)
    finally:
        shutdown(redis, a, b)


def upstream_hits():
    with mock.lock:
        return len(mock.requests)


def test_redis_down_closed_and_open():
    redis = RedisServer()
    closed, opened = Node(redis, "closed"), Node(redis, "open")
    try:
        sc, so = same_key([closed, opened], quota="1")
        st, _, raw, _ = closed.chat(sc)
        check(st == 200, raw)
        redis.stop()
        before = upstream_hits()
        st, js, raw, hdrs = closed.chat(sc)
        check(st == 503 and js["error"]["code"] == "counters_unavailable"
              and js["error"]["type"] == "api_error" and js["error"]["message"], raw)
        check(upstream_hits() == before, "a refused request reached the provider")
        st, js, raw, _ = opened.chat(so)
        check(st == 200, "open policy: %s" % raw)
        redis.start()  # an empty Redis: the spend is seeded from each store
        deadline = time.time() + 5
        while time.time() < deadline:
            st, js, raw, _ = closed.chat(sc)
            if st == 200:
                break
            time.sleep(0.3)
        check(st == 200, "closed instance after Redis came back: %s" % raw)
    finally:
        shutdown(redis, closed, opened)


def test_partition_settlements_replayed():
    """Redis frozen (SIGSTOP: unreachable, not restarted) while an `open`
    instance serves: its spend is replayed into the same Redis, once."""
    redis = RedisServer()
    opened, closed = Node(redis, "open"), Node(redis, "closed")
    try:
        k = 10
        so, sc = same_key([opened, closed], quota="%.6f" % (WORST * k / 1e6))
        for _ in range(2):
            check(opened.chat(so)[0] == 200, "spend before")
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            for _ in range(3):
                st, js, raw, _ = opened.chat(so)
                check(st == 200, "open while Redis is frozen: %s" % raw)
            st, js, raw, _ = closed.chat(sc)
            check(st == 503 and js["error"]["code"] == "counters_unavailable", raw)
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        time.sleep(1.5)  # reconnect (every 500 ms) and replay
        check("replayed (same Redis)" in opened.gw.logtext(), "no replay logged")
        n = 5
        while n < 2 * k:
            st, js, raw, _ = closed.chat(sc)
            if st == 200:
                n += 1
            elif st == 429:
                break
            else:
                time.sleep(0.3)
        check(n == k, "spent %d in all with a quota for %d (the frozen spell's spend lost or doubled)"
              % (n, k))
    finally:
        shutdown(redis, opened, closed)


def test_restart_reseeds_exactly():
    redis = RedisServer()
    a, b = nodes(redis, 2)
    try:
        k = 10
        sa, sb = same_key([a, b], quota="%.6f" % (WORST * k / 1e6))
        for _ in range(3):
            check(a.chat(sa)[0] == 200, "A spends")
        for _ in range(2):
            check(b.chat(sb)[0] == 200, "B spends")
        # an instance restarts on its store: Redis keeps the shared spend, nothing is added twice
        data = a.dir
        a.stop()
        a = Node(redis, data_dir=data)
        spent = 5
        while spent < 2 * k:
            st = (a if spent % 2 else b).chat(sa if spent % 2 else sb)[0]
            if st != 200:
                break
            spent += 1
        check(spent == k, "after an instance restart: %d admitted in all, quota %d" % (spent, k))
        # Redis restarts empty: the spend is rebuilt from the store of the instance that asks
        k2 = 6
        [s2] = same_key([b], quota="%.6f" % (WORST * k2 / 1e6))
        for _ in range(4):
            check(b.chat(s2)[0] == 200, "spend before the Redis restart")
        time.sleep(0.5)  # the rows commit
        redis.stop()
        redis.start()
        n = 4
        deadline = time.time() + 10
        while time.time() < deadline and n < 2 * k2:
            st = b.chat(s2)[0]
            if st == 200:
                n += 1
            elif st == 429:
                break
            else:
                time.sleep(0.3)
        check(n == k2, "after a Redis restart: %d admitted in all, quota %d" % (n, k2))
        print("FIGURE restart: instance restart %d/%d admitted, Redis restart %d/%d" % (spent, k, n, k2),
              flush=True)
    finally:
        shutdown(redis, a, b)


run([test_quota_exact_across_instances, test_rpm_exact_across_instances, test_ejection_shared,
     test_brute_force_guard_shared,
     test_redis_down_closed_and_open, test_partition_settlements_replayed, test_restart_reseeds_exactly])
