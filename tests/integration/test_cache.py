"""The exact-match response cache (docs/cache.md), through the real binary:
a miss then a hit that the upstream never sees, a stream replayed as SSE,
expiry, bypass and no-store, sampled requests left alone, a parameter that
changes the key, LRU eviction under a small cap, a hit billed 0 with the
cached flag, a revoked key refused though its answer is cached, errors not
stored, and the inbound API in the key."""
import http.client
import json
import os
import re
import subprocess
import tempfile
import threading
import time

from lib import (BUILD, Gateway, Mock, admin_call, check, chunk, content_of, free_port, json_reply, run,
                 sse_json, sse_reply, usage_chunk)

mock = Mock()
lock = threading.Lock()
hits = {}
TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")


def answer(h, b):
    req = json.loads(b)
    with lock:
        hits[req["model"]] = hits.get(req["model"], 0) + 1
        n = hits[req["model"]]
    text = "answer %d to %s" % (n, req["messages"][-1]["content"])
    if req["model"].startswith("err"):
        return json_reply(h, 500, {"error": {"message": "down", "type": "server_error"}})
    if req.get("stream"):
        return sse_reply(h, [chunk(text, role="assistant"), chunk(finish="stop"), usage_chunk(7, 3), "[DONE]"])
    json_reply(h, 200, {"id": "up-1", "object": "chat.completion", "created": 1, "model": req["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})


mock.routes["/v1/chat/completions"] = answer


def channel(models):
    return ("channel up {\n plugin openai\n base_url %s/v1\n models %s\n price_input 1\n"
            " price_output 1\n}\n" % (mock.url, models))


class Env:
    def __init__(self, extra, admin=False):
        self.data_dir = tempfile.mkdtemp(prefix="lm-cache-") if admin else None
        self.admin_port = free_port()
        if admin:
            extra += "data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (self.data_dir, self.admin_port)
        self.gw = Gateway(extra=extra, channels=channel("c-* x-* err-*"))
        m = TOKEN_RE.search(self.gw.logtext()) if admin else None
        self.token = m.group(1) if m else None

    def admin(self, method, path, body=None):
        return admin_call(self.admin_port, self.token, method, path, body)


main = None


def body(model, content="hi", **kw):
    b = {"model": model, "temperature": 0, "messages": [{"role": "user", "content": content}]}
    b.update(kw)
    return b


def count(model):
    with lock:
        return hits.get(model, 0)


def test_miss_then_hit():
    st, js, raw, h1 = main.gw.chat(body("c-1"))
    check(st == 200 and h1.get("X-Longmen-Cache") == "miss", "%s %s %s" % (st, raw, h1))
    st, js2, raw2, h2 = main.gw.chat(body("c-1"))
    check(st == 200 and h2.get("X-Longmen-Cache") == "hit", "%s %s %s" % (st, raw2, h2))
    check(count("c-1") == 1, "the upstream saw one request: %d" % count("c-1"))
    check(js2["choices"][0]["message"]["content"] == js["choices"][0]["message"]["content"],
          "the same answer: %s / %s" % (raw, raw2))
    check(js2["usage"]["prompt_tokens"] == 7, raw2)


def test_stream_hit_replayed_as_sse():
    b = body("c-stream", stream=True, stream_options={"include_usage": True})
    st, ev, raw, h1 = main.gw.stream(b)
    check(st == 200 and h1.get("X-Longmen-Cache") == "miss", "%s %s" % (raw, h1))
    st, ev2, raw2, h2 = main.gw.stream(b)
    check(st == 200 and h2.get("X-Longmen-Cache") == "hit", "%s %s" % (raw2, h2))
    check(h2.get("Content-Type", "").startswith("text/event-stream"), h2)
    check(content_of(ev2) == content_of(ev) == "answer 1 to hi", "%s / %s" % (raw, raw2))
    check(ev2[-1] == "[DONE]", raw2)
    fins = [c["finish_reason"] for e in sse_json(ev2) for c in e.get("choices", []) if c.get("finish_reason")]
    check(fins == ["stop"], "one finish: %s" % raw2)
    usage = [e["usage"] for e in sse_json(ev2) if e.get("usage")]
    check(usage and usage[-1]["prompt_tokens"] == 7 and usage[-1]["completion_tokens"] == 3, raw2)
    check(count("c-stream") == 1, "one upstream request: %d" % count("c-stream"))
    # without include_usage: no usage chunk in the replay
    st, ev3, raw3, h3 = main.gw.stream(body("c-stream", stream=True))
    check(h3.get("X-Longmen-Cache") == "hit" and not any(e.get("usage") for e in sse_json(ev3)), raw3)


def test_bypass_and_no_store():
    main.gw.chat(body("c-byp"))
    st, js, raw, h = main.gw.chat(body("c-byp"), headers={"Cache-Control": "no-cache"})
    check(st == 200 and h.get("X-Longmen-Cache") == "bypass", h)
    st, js, raw, h = main.gw.chat(body("c-byp"), headers={"X-Longmen-Cache": "bypass"})
    check(st == 200 and h.get("X-Longmen-Cache") == "bypass", h)
    check(count("c-byp") == 3, "bypassed requests went upstream: %d" % count("c-byp"))
    st, js, raw, h = main.gw.chat(body("c-byp"))
    check(h.get("X-Longmen-Cache") == "hit", h)
    # no-store: looked up (miss) but never stored
    for _ in range(2):
        st, js, raw, h = main.gw.chat(body("c-nostore"), headers={"Cache-Control": "no-store"})
        check(st == 200 and h.get("X-Longmen-Cache") == "miss", h)
    check(count("c-nostore") == 2, "no-store answers were not stored: %d" % count("c-nostore"))


def test_sampled_not_cached():
    for b in (body("c-temp", temperature=0.7), {"model": "c-temp", "messages": [{"role": "user", "content": "x"}]}):
        for _ in range(2):
            st, js, raw, h = main.gw.chat(b)
            check(st == 200 and h.get("X-Longmen-Cache") == "bypass", "%s %s" % (raw, h))
    check(count("c-temp") == 4, "every sampled request went upstream: %d" % count("c-temp"))


def test_parameter_changes_the_key():
    main.gw.chat(body("c-param", max_tokens=10))
    st, js, raw, h = main.gw.chat(body("c-param", max_tokens=11))
    check(h.get("X-Longmen-Cache") == "miss", h)
    st, js, raw, h = main.gw.chat(body("c-param", max_tokens=10, user="someone"))
    check(h.get("X-Longmen-Cache") == "hit", "user does not change the answer: %s" % h)
    st, js, raw, h = main.gw.chat(body("c-param", "other", max_tokens=10))
    check(h.get("X-Longmen-Cache") == "miss", h)
    check(count("c-param") == 3, count("c-param"))


def test_model_not_opted_in():
    for _ in range(2):
        st, js, raw, h = main.gw.chat(body("x-1"))
        check(st == 200 and "X-Longmen-Cache" not in h, h)
    check(count("x-1") == 2, count("x-1"))


def test_error_not_cached():
    for _ in range(2):
        st, js, raw, h = main.gw.chat(body("err-1"))
        check(st >= 500 and js["error"]["message"], raw)
    check(count("err-1") == 2, "an error is never replayed: %d" % count("err-1"))


def test_inbound_api_in_the_key():
    main.gw.chat(body("c-api", max_tokens=50))
    hdr = {"anthropic-version": "2023-06-01"}
    msg = {"model": "c-api", "max_tokens": 50, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    st, js, raw, h = main.gw.request("POST", "/v1/messages", msg, headers=hdr)
    check(st == 200 and h.get("X-Longmen-Cache") == "miss", "chat's answer is not replayed: %s %s" % (raw, h))
    st, js2, raw2, h = main.gw.request("POST", "/v1/messages", msg, headers=hdr)
    check(st == 200 and h.get("X-Longmen-Cache") == "hit" and js2["type"] == "message", "%s %s" % (raw2, h))
    check(js2["content"] == js["content"] and js2["usage"]["input_tokens"] == 7, raw2)
    check(count("c-api") == 2, count("c-api"))
    # a stream on /v1/messages: replayed in Anthropic's events
    msg["stream"] = True
    raws = []
    for want in ("miss", "hit"):
        st, js, raw, h = main.gw.request("POST", "/v1/messages", msg, headers=hdr)
        check(st == 200 and h.get("X-Longmen-Cache") == want, "%s %s" % (raw[:300], h))
        check(b"event: message_stop" in raw and b"answer 3 to hi" in raw, raw[:600])
        raws.append(raw)
    check(count("c-api") == 3, count("c-api"))


def ledger_rows(env, request_ids, want):
    deadline = time.time() + 10  # rows of unbilled requests may be committed after the reply
    rows = []
    while time.time() < deadline:
        st, js = env.admin("GET", "/admin/usage/rows?limit=100")
        rows = [r for r in (js or {}).get("data", []) if r["request_id"] in request_ids]
        if len(rows) >= want:
            return rows
        time.sleep(0.05)
    return rows


def secret_of(k):
    return k.get("secret") or k.get("key")


def test_hit_billed_zero_with_cached_flag():
    st, k = main.admin("POST", "/admin/keys", {"name": "cachebill", "quota": "unlimited"})
    check(st == 201, k)
    key = secret_of(k)
    st, js, raw, h1 = main.gw.chat(body("c-bill"), key=key)
    st, js, raw, h2 = main.gw.chat(body("c-bill"), key=key)
    check(h2.get("X-Longmen-Cache") == "hit", h2)
    ids = {h1.get("X-Request-Id"), h2.get("X-Request-Id")}
    check(None not in ids and len(ids) == 2, "request ids: %s %s" % (h1, h2))
    rows = ledger_rows(main, ids, 2)
    check(len(rows) == 2, "two rows: %s" % rows)
    by = {r["request_id"]: r for r in rows}
    miss, hit = by[h1["X-Request-Id"]], by[h2["X-Request-Id"]]
    check(miss["cached"] is False and miss["cost_micro"] > 0, miss)
    check(hit["cached"] is True and hit["cost_micro"] == 0 and hit["status"] == 200, hit)
    check(hit["prompt_tokens"] == 7 and hit["completion_tokens"] == 3 and hit["channel"] == "up", hit)
    c = http.client.HTTPConnection("127.0.0.1", main.admin_port, timeout=10)
    c.request("GET", "/admin/metrics", headers={"Authorization": "Bearer " + main.token})
    text = c.getresponse().read().decode()
    c.close()
    m = re.search(r'longmen_cache_hits_total\{model="c-bill"\} (\d+)', text)
    check(m and int(m.group(1)) == 1, "hit counted: %s" % [l for l in text.splitlines() if "cache" in l])
    check(re.search(r'longmen_cache_misses_total\{model="c-bill"\} 1', text), "miss counted")
    check(re.search(r"longmen_cache_bytes [1-9]", text), "bytes gauge")


def test_revoked_key_refused_though_cached():
    st, k = main.admin("POST", "/admin/keys", {"name": "cacherev", "quota": "unlimited"})
    key = secret_of(k)
    st, js, raw, h = main.gw.chat(body("c-rev"), key=key)
    st, js, raw, h = main.gw.chat(body("c-rev"), key=key)
    check(h.get("X-Longmen-Cache") == "hit", h)
    st, js = main.admin("PATCH", "/admin/keys/%s" % k["id"], {"enabled": False})
    check(st == 200, js)
    st, js, raw, h = main.gw.chat(body("c-rev"), key=key)
    check(st == 401 and h.get("X-Longmen-Cache") is None, "revoked key: %s %s" % (st, raw))
    check(count("c-rev") == 1, count("c-rev"))


def test_expiry():
    env = Env("cache on models c-*\ncache_ttl 1s\n")
    try:
        st, js, raw, h = env.gw.chat(body("c-ttl"))
        st, js, raw, h = env.gw.chat(body("c-ttl"))
        check(h.get("X-Longmen-Cache") == "hit", h)
        time.sleep(2.5)
        st, js, raw, h = env.gw.chat(body("c-ttl"))
        check(st == 200 and h.get("X-Longmen-Cache") == "miss", "expired: %s" % h)
        check(count("c-ttl") == 2, count("c-ttl"))
    finally:
        env.gw.stop()


def test_lru_eviction():
    env = Env("cache on models c-*\ncache_max_bytes 4k\n")
    try:
        for i in range(12):
            env.gw.chat(body("c-lru", "q%d" % i))
        before = count("c-lru")
        check(before == 12, before)
        st, js, raw, h = env.gw.chat(body("c-lru", "q11"))
        check(h.get("X-Longmen-Cache") == "hit", "the newest stays: %s" % h)
        st, js, raw, h = env.gw.chat(body("c-lru", "q0"))
        check(h.get("X-Longmen-Cache") == "miss", "the oldest was evicted: %s" % h)
        check(count("c-lru") == 13, count("c-lru"))
    finally:
        env.gw.stop()


def test_config_errors():
    for bad in ("cache maybe", "cache on models", "cache_ttl soon", "cache_max_bytes 1", "cache on x y"):
        d = tempfile.mkdtemp(prefix="lm-cache-conf-")
        p = os.path.join(d, "c.conf")
        with open(p, "w") as f:
            f.write("listen 127.0.0.1:1\n%s\n" % bad)
        r = subprocess.run([os.path.join(BUILD, "longmen"), "-t", "-c", p], capture_output=True, text=True,
                           timeout=20)
        check(r.returncode != 0 and "c.conf:2" in (r.stdout + r.stderr), "%r: %s" % (bad, r.stdout + r.stderr))


if __name__ == "__main__":
    main = Env("cache on models c-*\ncache off models x-*\ncache on models err-*\n", admin=True)
    try:
        run([test_miss_then_hit, test_stream_hit_replayed_as_sse, test_bypass_and_no_store,
             test_sampled_not_cached, test_parameter_changes_the_key, test_model_not_opted_in,
             test_error_not_cached, test_inbound_api_in_the_key, test_hit_billed_zero_with_cached_flag,
             test_revoked_key_refused_though_cached, test_expiry, test_lru_eviction, test_config_errors])
    finally:
        main.gw.stop()
        mock.close()
