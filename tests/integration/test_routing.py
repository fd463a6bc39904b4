"""Routing and resilience through the real binary: weights, round robin,
priority tiers, outlier ejection with one of three upstreams failing
(FT-7), per-channel concurrency caps (FT-8), the x-longmen-route header,
and the Prometheus metrics on the admin listener."""
import http.client
import json
import re
import tempfile
import threading
import time

from lib import Gateway, Mock, check, free_port, json_reply, run

mock = Mock()
hits = {}
lock = threading.Lock()


def upstream(name, status=200, delay=0.0):
    def fn(h, b):
        with lock:
            hits[name] = hits.get(name, 0) + 1
        if delay:
            time.sleep(delay)
        if status != 200:
            return json_reply(h, status, {"error": {"message": "%s down" % name}})
        json_reply(h, 200, {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {
            "role": "assistant", "content": name}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    return fn


for n in ("a", "b", "c"):
    mock.routes["/%s/chat/completions" % n] = upstream(n)
mock.routes["/bad/chat/completions"] = upstream("bad", status=500)
mock.routes["/slow/chat/completions"] = upstream("slow", delay=1.0)
seen_keys = []


def keyed(h, b):
    with lock:
        seen_keys.append(h.headers.get("Authorization", ""))
    upstream("keyed")(h, b)


mock.routes["/keyed/chat/completions"] = keyed
limited = {"retry_after": "2"}


def rate_limited(h, b):
    with lock:
        hits["limited"] = hits.get("limited", 0) + 1
    json_reply(h, 429, {"error": {"message": "slow down", "type": "rate_limit"}},
               headers={"Retry-After": limited["retry_after"]})


mock.routes["/limited/chat/completions"] = rate_limited
flaky = {"down": True}


def flaky_upstream(h, b):
    if flaky["down"]:
        return upstream("flaky", status=500)(h, b)
    upstream("flaky")(h, b)


mock.routes["/flaky/chat/completions"] = flaky_upstream


def redirecting(h, b):
    with lock:
        hits["moved"] = hits.get("moved", 0) + 1
    h.send_response(301)
    h.send_header("Location", "https://elsewhere.example/v1/chat/completions")
    h.send_header("Content-Length", "0")
    h.end_headers()


mock.routes["/moved/chat/completions"] = redirecting


def channels(spec):
    out = ""
    for name, path, model, extra in spec:
        out += "channel %s {\n plugin openai\n base_url %s/%s\n models %s\n%s}\n" % (
            name, mock.url, path, model, extra)
    return out


def ask(gw, model):
    st, js, raw, hdrs = gw.chat({"model": model, "messages": [{"role": "user", "content": "x"}]})
    return st, (js["choices"][0]["message"]["content"] if st == 200 else None), hdrs


def test_weights_and_tiers():
    gw = Gateway(channels=channels([("a", "a", "w", " weight 1\n"), ("b", "b", "w", " weight 3\n"),
                                    ("c", "c", "w", " priority 1\n")]))
    try:
        got = {}
        for _ in range(800):
            st, who, hdrs = ask(gw, "w")
            check(st == 200, "status %d" % st)
            got[who] = got.get(who, 0) + 1
        share_b = got.get("b", 0) / 800.0
        check(abs(share_b - 0.75) < 0.06, "weights 1:3 -> b share %.3f (%s)" % (share_b, got))
        check("c" not in got, "a lower tier is not used while the first serves: %s" % got)
        check(re.match(r"channel=[ab]; attempts=1", hdrs.get("X-Longmen-Route", "")), hdrs)
    finally:
        gw.stop()


def test_round_robin_exact():
    gw = Gateway(extra="route_strategy round_robin\n",
                 channels=channels([("a", "a", "r", ""), ("b", "b", "r", ""), ("c", "c", "r", "")]))
    try:
        seq = [ask(gw, "r")[1] for _ in range(30)]
        check(all(seq.count(x) == 10 for x in "abc"), "round robin: %s" % seq)
        check(all(seq[i] != seq[i + 1] for i in range(29)), "rotates: %s" % seq)
    finally:
        gw.stop()


def test_ft7_outlier_ejected_nothing_lost():
    admin_port = free_port()
    d = tempfile.mkdtemp(prefix="lm-route-")
    gw = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (d, admin_port),
                 channels=channels([("a", "a", "h", ""), ("b", "b", "h", ""), ("bad", "bad", "h", "")]))
    try:
        token = re.search(r"admin token \(shown once\): (\S+)", gw.logtext()).group(1)
        hits.clear()
        results = [ask(gw, "h") for _ in range(120)]
        check(all(st == 200 for st, _, _ in results), "no request lost: %s" %
              [st for st, _, _ in results if st != 200])
        check(hits.get("bad", 0) <= 6, "the failing upstream was ejected after 5 failures: %d hits" %
              hits.get("bad", 0))
        check("channel bad model h: ejected" in gw.logtext(), "ejection logged")
        retried = [h for _, _, h in results if "attempts=2" in h.get("X-Longmen-Route", "")]
        check(1 <= len(retried) <= 6, "fallbacks explained in the header: %d" % len(retried))
        c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
        c.request("GET", "/admin/metrics", headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        check(r.status == 200 and 'longmen_channel_healthy{channel="bad"} 0' in text and
              'longmen_channel_healthy{channel="a"} 1' in text, text[:1500])
        check(re.search(r'longmen_requests_total\{model="h",channel="[ab]",status="200"\} \d+', text), "requests")
        check('longmen_errors_total{model="h",channel="bad"' in text and "longmen_request_seconds_bucket" in text,
              "errors and latency histogram")
        check(token not in text, "no secret in metrics")
    finally:
        gw.stop()


def test_redirect_is_a_channel_failure():
    """A channel answering 3xx (redirects are not followed) failed: the next
    candidate serves the request, and the channel counts failures until it
    is ejected, as for a 5xx."""
    gw = Gateway(extra="route_strategy round_robin\n",
                 channels=channels([("a", "a", "mv", ""), ("moved", "moved", "mv",
                                    " eject_after 3\n eject_cooldown 60s\n")]))
    try:
        hits.clear()
        results = [ask(gw, "mv") for _ in range(12)]
        check(all(st == 200 and txt == "a" for st, txt, _ in results),
              "every request served by a: %s" % [r[:2] for r in results])
        check(hits.get("moved", 0) == 3, "ejected after 3 redirects: %d hits" % hits.get("moved", 0))
        check("channel moved model mv: ejected: consecutive failures" in gw.logtext(),
              "ejection logged")
    finally:
        gw.stop()


def test_ft7_recovers_after_cooldown_with_health_settings():
    """eject_after / eject_cooldown per channel: the failing one is ejected
    after 3 failures, one probe after the 1 s cool-down finds it healthy
    again, and it takes its share of traffic back."""
    flaky["down"] = True
    gw = Gateway(extra="route_strategy round_robin\n",
                 channels=channels([("a", "a", "fl", ""), ("flaky", "flaky", "fl",
                                    " eject_after 3\n eject_cooldown 1s\n")]))
    try:
        hits.clear()
        results = [ask(gw, "fl") for _ in range(30)]
        check(all(st == 200 for st, _, _ in results), "no request lost while it fails")
        # 3 failures eject it; a probe after each cool-down may add one more
        check(3 <= hits.get("flaky", 0) <= 5, "ejected after 3 failures: %d hits" % hits.get("flaky", 0))
        check("channel flaky model fl: ejected: consecutive failures" in gw.logtext(), "ejection logged")
        flaky["down"] = False
        time.sleep(2.2)  # past a second, doubled cool-down too
        seq = [ask(gw, "fl")[1] for _ in range(20)]
        check("channel flaky model fl: recovered" in gw.logtext(), "recovery logged")
        check(seq.count("flaky") >= 8, "back in rotation: %s" % seq)
    finally:
        gw.stop()
        flaky["down"] = True


def test_ft8_concurrency_cap_fast_503():
    gw = Gateway(channels=channels([("s", "slow", "cap", " max_inflight 2\n")]))
    try:
        res = []

        def go():
            res.append(ask(gw, "cap")[0])

        threads = [threading.Thread(target=go) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.time()
        st, _, hdrs = ask(gw, "cap")
        busy = all(t.is_alive() for t in threads)
        for t in threads:
            t.join(10)
        # fast: the 503 came while both admitted requests were still upstream
        check(st == 503 and busy, "excess answered 503 while the cap was full (status %d)" % st)
        check(res == [200, 200], "admitted ones finish: %s" % res)
    finally:
        gw.stop()


def test_wildcard_models_and_request_timeout():
    mock.routes["/trickle/chat/completions"] = trickle
    gw = Gateway(channels=channels([("a", "a", "gpt-* chat-default=fixed-up", ""),
                                    ("t", "trickle", "slowpoke", " request_timeout 1s\n idle_timeout 5s\n")]))
    try:
        st, who, hdrs = ask(gw, "gpt-4o-mini")
        check(st == 200 and json.loads(mock.requests[-1]["body"])["model"] == "gpt-4o-mini",
              "a glob forwards the requested name")
        st, who, hdrs = ask(gw, "chat-default")
        check(st == 200 and json.loads(mock.requests[-1]["body"])["model"] == "fixed-up", "alias")
        st, js, raw, _ = gw.request("GET", "/v1/models")
        ids = [m["id"] for m in js["data"]]
        check("gpt-*" not in ids and "chat-default" in ids, "globs are not listed: %s" % ids)
        st, js, raw, _ = gw.request("GET", "/v1/models/gpt-4o")
        check(st == 200 and js["id"] == "gpt-4o", raw)
        st, js, raw, _ = gw.chat({"model": "claude-x", "messages": [{"role": "user", "content": "x"}]})
        check(st == 404, "no match: %s" % raw)
        t = time.time()
        st, js, raw, _ = gw.chat({"model": "slowpoke", "messages": [{"role": "user", "content": "x"}]})
        took = time.time() - t
        # the trickle would end at 3 s; a 504 proves request_timeout (1 s) cut it
        check(st == 504 and js["error"]["code"] == "upstream_timeout" and took > 0.9,
              "request_timeout caps a trickling answer: %d in %.2fs %s" % (st, took, raw))
    finally:
        gw.stop()


def trickle(h, b):
    """A non-stream answer that keeps the connection busy (bytes every 0.3 s)
    without ever finishing within the request timeout."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    try:
        for _ in range(10):
            h.wfile.write(b"1\r\n \r\n")
            h.wfile.flush()
            time.sleep(0.3)
        h.wfile.write(b"0\r\n\r\n")
    except OSError:
        pass


def test_several_keys_rotate():
    keys = ["sk-rot-AAAA-1111", "sk-rot-BBBB-2222", "sk-rot-CCCC-3333"]
    env = {"LMT_ROT%d" % i: k for i, k in enumerate(keys)}
    gw = Gateway(channels=channels([("k", "keyed", "rot",
                                     " api_key env:LMT_ROT0 env:LMT_ROT1 env:LMT_ROT2\n")]), env=env)
    try:
        del seen_keys[:]
        for _ in range(9):
            check(ask(gw, "rot")[0] == 200, "status")
        got = [k[len("Bearer "):] for k in seen_keys]
        check(all(got.count(k) == 3 for k in keys), "each key 3 times: %s" % got)
        check(all(got[i] != got[i + 1] for i in range(8)), "rotates: %s" % got)
        log = gw.logtext()
        check(not any(k in log for k in keys), "a key is in the log")
    finally:
        gw.stop()


def test_retry_after_respected():
    limited["retry_after"] = "2"
    hits.clear()
    gw = Gateway(channels=channels([("lim", "limited", "ra", ""), ("b", "b", "ra", " priority 1\n")]))
    try:
        st, who, hdrs = ask(gw, "ra")
        check(st == 200 and who == "b", "fallback from the 429: %s %s" % (st, who))
        check("attempts=2" in hdrs.get("X-Longmen-Route", ""), hdrs)
        st, who, hdrs = ask(gw, "ra")
        check(st == 200 and who == "b" and "attempts=1" in hdrs.get("X-Longmen-Route", ""),
              "held channel skipped: %s %s" % (who, hdrs))
        check(hits.get("limited") == 1, "the limited upstream was asked again: %s" % hits)
        time.sleep(2.2)
        ask(gw, "ra")
        check(hits.get("limited") == 2, "tried again after Retry-After: %s" % hits)
    finally:
        gw.stop()
    limited["retry_after"] = "3"
    hits.clear()
    gw = Gateway(channels=channels([("lim", "limited", "only", "")]))
    try:
        st, js, raw, hdrs = gw.chat({"model": "only", "messages": [{"role": "user", "content": "x"}]})
        check(st == 429 and hdrs.get("Retry-After") == "3", "passed on: %s %s" % (st, hdrs))
        st, js, raw, hdrs = gw.chat({"model": "only", "messages": [{"role": "user", "content": "x"}]})
        check(st == 429 and js["error"]["code"] == "upstream_rate_limited", "held: %s %s" % (st, js))
        check(0 < int(hdrs.get("Retry-After", "0")) <= 3, "remaining: %s" % hdrs)
        check(hits.get("limited") == 1, "not sent while held: %s" % hits)
    finally:
        gw.stop()


def test_strategy_per_model_group():
    gw = Gateway(extra="route_strategy weighted\nroute_strategy round_robin rr-*\n",
                 channels=channels([("a", "a", "rr-x w2", ""), ("b", "b", "rr-x w2", " weight 1000\n")]))
    try:
        seq = [ask(gw, "rr-x")[1] for _ in range(20)]
        check(seq.count("a") == 10 and seq.count("b") == 10, "round robin for rr-*: %s" % seq)
        got = [ask(gw, "w2")[1] for _ in range(40)]
        check(got.count("b") >= 36, "weighted elsewhere: %s" % got)
    finally:
        gw.stop()


def test_global_inflight_cap_sheds_load():
    gw = Gateway(extra="max_inflight 2\n", channels=channels([("s", "slow", "gslow", "")]))
    try:
        out = []

        def one():
            t0 = time.time()
            st, js, raw, hdrs = gw.chat({"model": "gslow", "messages": [{"role": "user", "content": "x"}]})
            out.append((st, time.time() - t0, js, hdrs))
        ts = [threading.Thread(target=one) for _ in range(2)]
        for t in ts:
            t.start()
        time.sleep(0.3)  # both are upstream now
        one()
        for t in ts:
            t.join(10)
        shed = [o for o in out if o[0] == 503]
        check(len(shed) == 1 and shed[0][1] < 0.5, "one fast 503: %s" % [(o[0], round(o[1], 2)) for o in out])
        check(shed[0][2]["error"]["code"] == "overloaded" and shed[0][3].get("Retry-After") == "1", shed[0])
        check(sum(1 for o in out if o[0] == 200) == 2, "the two in flight finish")
        check(ask(gw, "gslow")[0] == 200, "capacity is back")
    finally:
        gw.stop()


run([test_redirect_is_a_channel_failure, test_ft7_recovers_after_cooldown_with_health_settings, test_global_inflight_cap_sheds_load, test_several_keys_rotate, test_retry_after_respected, test_strategy_per_model_group,
     test_weights_and_tiers, test_wildcard_models_and_request_timeout, test_round_robin_exact, test_ft7_outlier_ejected_nothing_lost,
     test_ft8_concurrency_cap_fast_503])
