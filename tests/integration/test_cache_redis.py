"""The response cache's shared tier in Redis (docs/cache.md): two Longmen
instances share one real redis-server. A miss on A is a hit on B (the
upstream called once), a stream is replayed from Redis as SSE, an entry
expires with the writer's cache_ttl (SET ... PX), Cache-Control: no-cache
bypasses, a hit is billed 0 with the cached flag, a client leaving or a
reload while the lookup is parked is safe, and with Redis down requests are
still answered (misses, counted). Skipped only when redis-server is
missing."""
import http.client
import json
import re
import signal
import socket
import sys
import tempfile
import threading
import time

from lib import (Gateway, Mock, admin_call, check, chunk, content_of, free_port, json_reply, run, sse_json,
                 sse_reply, usage_chunk)
from redis_server import RedisServer, available

if not available():
    print("SKIP test_cache_redis: redis-server not installed (make deps installs it)")
    sys.exit(0)

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
mock = Mock()
lock = threading.Lock()
hits = {}


def answer(h, b):
    req = json.loads(b)
    with lock:
        hits[req["model"]] = hits.get(req["model"], 0) + 1
        n = hits[req["model"]]
    text = "answer %d to %s" % (n, req["messages"][-1]["content"])
    if req["model"] == "c-big":
        text += " " + "x" * 3000  # over cache_max_entry 2k
    if req.get("stream"):
        return sse_reply(h, [chunk(text, role="assistant"), chunk(finish="stop"), usage_chunk(7, 3), "[DONE]"])
    json_reply(h, 200, {"id": "up-1", "object": "chat.completion", "created": 1, "model": req["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})


mock.routes["/v1/chat/completions"] = answer
CHANNELS = ("channel up {\n plugin openai\n base_url %s/v1\n models c-*\n price_input 1\n"
            " price_output 1\n}\n" % mock.url)


class Node:
    """One instance on the shared Redis, its own store and admin API."""

    def __init__(self, redis, ttl):
        self.dir = tempfile.mkdtemp(prefix="lm-rcache-")
        self.admin_port = free_port()
        self.gw = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\nredis %s\non_store_failure open\n"
                                "cache on models c-*\ncache_ttl %s\ncache_max_entry 2k\n"
                                % (self.dir, self.admin_port, redis.url, ttl),
                          channels=CHANNELS)
        m = TOKEN_RE.search(self.gw.logtext())
        self.token = m.group(1) if m else None

    def admin(self, method, path, body=None):
        return admin_call(self.admin_port, self.token, method, path, body)

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        c.request("GET", "/admin/metrics", headers={"Authorization": "Bearer " + self.token})
        text = c.getresponse().read().decode()
        c.close()
        return text


redis = None
A = B = None  # A writes with a long TTL, B with a short one (the writer's TTL is the entry's)


def body(model, content="hi", **kw):
    b = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": content}]}
    b.update(kw)
    return b


def count(model):
    with lock:
        return hits.get(model, 0)


def redis_cmd(*args):
    """One command to the test's Redis: the raw reply."""
    return redis.cmd(*args)


def cache_keys():
    return re.findall(rb"lm:cache:1:[0-9a-f]{64}", redis_cmd("KEYS", "lm:cache:*"))


def test_miss_on_a_hit_on_b():
    st, js, raw, h1 = A.gw.chat(body("c-1"))
    check(st == 200 and h1.get("X-Longmen-Cache") == "miss", "%s %s %s" % (st, raw, h1))
    keys = []
    deadline = time.time() + 10  # the SET is fire and forget: it lands shortly after the reply
    while not keys and time.time() < deadline:
        keys = cache_keys()
        time.sleep(0.02)
    check(keys, "a record in Redis under the versioned prefix")
    st, js2, raw2, h2 = B.gw.chat(body("c-1"))
    check(st == 200 and h2.get("X-Longmen-Cache") == "hit", "%s %s %s" % (st, raw2, h2))
    check(count("c-1") == 1, "the upstream saw one request: %d" % count("c-1"))
    check(js2["choices"][0]["message"]["content"] == js["choices"][0]["message"]["content"] == "answer 1 to hi",
          "%s / %s" % (raw, raw2))
    check(js2["usage"]["prompt_tokens"] == 7 and "X-Longmen-Route" not in h2, "%s %s" % (raw2, h2))
    text = B.metrics()
    check(re.search(r'longmen_cache_hits_total\{model="c-1"\} 1', text), "hit counted on B")


def wait_stored(n_before):
    deadline = time.time() + 10
    while len(cache_keys()) <= n_before and time.time() < deadline:
        time.sleep(0.02)


def test_stream_replayed_from_redis():
    b = body("c-stream", stream=True, stream_options={"include_usage": True})
    n = len(cache_keys())
    st, ev, raw, h1 = A.gw.stream(b)
    check(st == 200 and h1.get("X-Longmen-Cache") == "miss", "%s %s" % (raw, h1))
    wait_stored(n)
    st, ev2, raw2, h2 = B.gw.stream(b)
    check(st == 200 and h2.get("X-Longmen-Cache") == "hit", "%s %s" % (raw2, h2))
    check(h2.get("Content-Type", "").startswith("text/event-stream"), h2)
    check(content_of(ev2) == content_of(ev) == "answer 1 to hi", "%s / %s" % (raw, raw2))
    check(ev2[-1] == "[DONE]", raw2)
    usage = [e["usage"] for e in sse_json(ev2) if e.get("usage")]
    check(usage and usage[-1]["prompt_tokens"] == 7 and usage[-1]["completion_tokens"] == 3, raw2)
    # the whole form is another entry: a non-stream request misses
    st, js, raw3, h3 = B.gw.chat(body("c-stream"))
    check(h3.get("X-Longmen-Cache") == "miss", h3)
    check(count("c-stream") == 2, "one upstream request per form: %d" % count("c-stream"))


def test_ttl_expiry():
    n = len(cache_keys())
    st, js, raw, h = B.gw.chat(body("c-ttl"))  # B writes with cache_ttl 1s
    check(h.get("X-Longmen-Cache") == "miss", h)
    wait_stored(n)
    ttls = [int(redis_cmd("PTTL", k.decode())[1:].split(b"\r")[0]) for k in cache_keys()]
    check(any(-2 <= t <= 1000 for t in ttls), "a 1 s PX on B's record: %s" % ttls)
    time.sleep(1.3)
    st, js, raw, h = A.gw.chat(body("c-ttl"))
    check(st == 200 and h.get("X-Longmen-Cache") == "miss", "expired in Redis: %s" % h)
    check(count("c-ttl") == 2, count("c-ttl"))


def test_bypass_no_cache():
    A.gw.chat(body("c-byp"))
    st, js, raw, h = B.gw.chat(body("c-byp"), headers={"Cache-Control": "no-cache"})
    check(st == 200 and h.get("X-Longmen-Cache") == "bypass", h)
    check(count("c-byp") == 2, "the bypass went upstream: %d" % count("c-byp"))


def test_hit_billed_zero_with_cached_flag():
    st, js, raw, h1 = A.gw.chat(body("c-bill"))
    time.sleep(0.2)  # the fire-and-forget SET
    st, js, raw, h2 = B.gw.chat(body("c-bill"))
    check(h2.get("X-Longmen-Cache") == "hit", h2)
    deadline, rows = time.time() + 10, []
    while not rows and time.time() < deadline:
        st, js = B.admin("GET", "/admin/usage/rows?limit=100")
        rows = [r for r in (js or {}).get("data", []) if r["request_id"] == h2.get("X-Request-Id")]
        time.sleep(0.05)
    check(len(rows) == 1, "one row on B: %s" % rows)
    hit = rows[0]
    check(hit["cached"] is True and hit["cost_micro"] == 0 and hit["status"] == 200, hit)
    check(hit["prompt_tokens"] == 7 and hit["completion_tokens"] == 3 and hit["channel"] == "up", hit)


def test_entry_cap():
    n = len(cache_keys())
    for gw in (A.gw, B.gw):
        st, js, raw, h = gw.chat(body("c-big"))
        check(st == 200 and h.get("X-Longmen-Cache") == "miss", h)
    check(count("c-big") == 2, "an answer over cache_max_entry is not stored: %d" % count("c-big"))
    time.sleep(0.2)
    check(len(cache_keys()) <= n, "nothing stored in Redis")  # B's 1 s records may expire meanwhile


def parked_request(gw, model, result):
    """A request whose Redis lookup is parked (Redis is stopped)."""
    try:
        result.append(gw.chat(body(model), timeout=20))
    except Exception as e:  # noqa: BLE001
        result.append(e)


def test_client_leaves_while_parked():
    redis.proc.send_signal(signal.SIGSTOP)  # the GET waits for its 500 ms command timeout
    try:
        for gw in (A.gw, B.gw):
            c = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            data = json.dumps(body("c-gone"))
            c.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                       "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                       % (__import__("lib").KEY, len(data), data)).encode())
            time.sleep(0.1)
            c.close()
        # a reload while a lookup is parked: the request finishes on its generation
        res = []
        t = threading.Thread(target=parked_request, args=(B.gw, "c-reload", res))
        t.start()
        time.sleep(0.1)
        B.gw.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    t.join(30)
    check(res and not isinstance(res[0], Exception) and res[0][0] == 200, "answered: %s" % res)
    st, js, raw, h = B.gw.chat(body("c-after"))
    check(st == 200, raw)


def test_redis_down_is_a_miss():
    redis.stop()
    try:
        for i in range(2):
            st, js, raw, h = B.gw.chat(body("c-down"))
            check(st == 200 and h.get("X-Longmen-Cache") in ("miss", "hit"), "%s %s %s" % (st, raw, h))
        st, js, raw, h = A.gw.stream(body("c-down2", stream=True))
        check(st == 200 and h.get("X-Longmen-Cache") == "miss", "%s %s" % (raw, h))
        m = re.search(r"longmen_cache_redis_errors_total (\d+)", B.metrics())
        check(m and int(m.group(1)) >= 1, "Redis errors counted")
    finally:
        redis.start()


def main():
    global redis, A, B
    redis = RedisServer()
    try:
        A = Node(redis, "60s")
        B = Node(redis, "1s")
        run([test_miss_on_a_hit_on_b, test_stream_replayed_from_redis, test_ttl_expiry, test_bypass_no_cache,
             test_hit_billed_zero_with_cached_flag, test_entry_cap, test_client_leaves_while_parked,
             test_redis_down_is_a_miss])
    finally:
        for n in (A, B):
            if n:
                n.gw.stop()
        redis.close()
        mock.stop() if hasattr(mock, "stop") else None


main()
