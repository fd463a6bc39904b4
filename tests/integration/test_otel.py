"""OpenTelemetry traces (docs/observability.md), through the real binary and
a mock OTLP/HTTP collector on loopback: a request span with the GenAI
attributes and a child span per upstream attempt, an incoming traceparent
honoured and propagated to the upstream on each attempt, a stream's finish
reason, content exported only with otel_capture_content on, and a dead or a
slow collector that changes nothing for clients while the drop counter
counts."""
import http.client
import json
import os
import re
import signal
import sys
import socket
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import otlp_pb  # noqa: E402  the protobuf decoder
from lib import Gateway, Mock, check, chunk, free_port, json_reply, run, sse_reply, usage_chunk

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
TP_IN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

up = Mock()
collector = Mock()
spans_lock = threading.Lock()
batches = []
slow = Mock()


def answer(h, b):
    req = json.loads(b)
    if req.get("stream"):
        return sse_reply(h, [chunk("streamed words", role="assistant"), chunk(finish="length"),
                             usage_chunk(5, 2), "[DONE]"])
    json_reply(h, 200, {"id": "up-1", "object": "chat.completion", "created": 1, "model": req["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "the answer"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})


def refuse(h, b):
    json_reply(h, 500, {"error": {"message": "down", "type": "server_error"}})


content_types = []


def collect(h, b):
    ctype = h.headers.get("Content-Type")
    doc = otlp_pb.export_request(b) if ctype == "application/x-protobuf" else json.loads(b)
    with spans_lock:
        content_types.append(ctype)
        batches.append(doc)
    json_reply(h, 200, {})


def slow_collect(h, b):
    time.sleep(1.5)
    json_reply(h, 200, {})


up.routes["/v1/chat/completions"] = answer
up.routes["/bad/v1/chat/completions"] = refuse
collector.routes["/v1/traces"] = collect
slow.routes["/v1/traces"] = slow_collect

CHANNELS = ("channel bad {\n plugin openai\n base_url %s/bad/v1\n models fo-*\n priority 0\n}\n"
            "channel good {\n plugin openai\n base_url %s/v1\n models m-* fo-*\n priority 1\n"
            " price_input 1\n price_output 1\n}\n" % (up.url, up.url))


class Env:
    def __init__(self, extra):
        d = tempfile.mkdtemp(prefix="lm-otel-")
        self.admin_port = free_port()
        self.gw = Gateway(extra=extra + "data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (d, self.admin_port),
                          channels=CHANNELS)
        m = TOKEN_RE.search(self.gw.logtext())
        self.token = m.group(1) if m else None

    def metric(self, name):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        c.request("GET", "/admin/metrics", headers={"Authorization": "Bearer " + self.token})
        text = c.getresponse().read().decode()
        c.close()
        m = re.search(r"^%s(?:\{\})? (\d+)" % name, text, re.M)
        return int(m.group(1)) if m else 0


def all_spans():
    out = []
    with spans_lock:
        for b in batches:
            for rs in b["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    out.extend(ss["spans"])
    return out


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        v = a["value"]
        if "stringValue" in v:
            out[a["key"]] = v["stringValue"]
        elif "intValue" in v:
            out[a["key"]] = int(v["intValue"])
        elif "arrayValue" in v:
            out[a["key"]] = [x.get("stringValue") for x in v["arrayValue"]["values"]]
    return out


def wait_request_span(rid, timeout=8):
    """The request span with longmen.request_id rid, and its children."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        sp = all_spans()
        for s in sp:
            if attrs(s).get("longmen.request_id") == rid:
                kids = [k for k in sp if k.get("parentSpanId") == s["spanId"]]
                return s, sorted(kids, key=lambda k: attrs(k)["longmen.attempt"])
        time.sleep(0.1)
    raise AssertionError("no span for request %s" % rid)


def body(model, **kw):
    b = {"model": model, "messages": [{"role": "user", "content": "secret prompt text"}]}
    b.update(kw)
    return b


def upstream_traceparents(n_before):
    with up.lock:
        return [r["headers"].get("traceparent") for r in up.requests[n_before:]]


main = None


def test_request_and_attempt_spans():
    n = len(up.requests)
    st, js, raw, h = main.gw.chat(body("m-1"))
    check(st == 200, "%s %s" % (st, raw))
    s, kids = wait_request_span(find_rid(h, js))
    a = attrs(s)
    check(s["kind"] == 2 and s["name"] == "chat m-1", s)
    check("parentSpanId" not in s, "a root span: %s" % s)
    for k, v in {"gen_ai.system": "openai", "gen_ai.request.model": "m-1", "gen_ai.response.model": "m-1",
                 "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 3,
                 "gen_ai.response.finish_reasons": ["stop"], "longmen.channel": "good",
                 "longmen.key.name": "test", "longmen.attempts": 1, "http.response.status_code": 200,
                 "gen_ai.operation.name": "chat", "longmen.api": "chat"}.items():
        check(a.get(k) == v, "%s = %r, want %r" % (k, a.get(k), v))
    check(a.get("longmen.cost_micros", -1) >= 0 and "longmen.generation" in a, a)
    check("gen_ai.prompt" not in a and "gen_ai.completion" not in a, "content exported: %s" % a)
    check(len(kids) == 1 and kids[0]["kind"] == 3 and kids[0]["traceId"] == s["traceId"], kids)
    ka = attrs(kids[0])
    check(ka["longmen.channel"] == "good" and ka["http.response.status_code"] == 200, ka)
    tps = upstream_traceparents(n)
    check(tps == ["00-%s-%s-01" % (s["traceId"], kids[0]["spanId"])], "upstream saw %s" % tps)
    check(int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 1.6e18, s)
    check("sk-" not in json.dumps(s), "a secret in the span")
    with spans_lock:
        check(content_types and set(content_types) == {"application/x-protobuf"},
              "by default protobuf: %s" % content_types)
        svc = batches[-1]["resourceSpans"][0]["resource"]["attributes"]
    check(svc == [{"key": "service.name", "value": {"stringValue": "lm-test"}}], svc)


def find_rid(raw_headers, js):
    return raw_headers.get("X-Request-Id") or raw_headers.get("x-request-id")


def test_traceparent_honoured_over_failover():
    n = len(up.requests)
    st, js, raw, h = main.gw.chat(body("fo-1"), headers={"traceparent": TP_IN})
    check(st == 200, "%s %s" % (st, raw))
    s, kids = wait_request_span(find_rid(h, js))
    check(s["traceId"] == TP_IN[3:35] and s.get("parentSpanId") == TP_IN[36:52], s)
    check([attrs(k)["longmen.channel"] for k in kids] == ["bad", "good"], [attrs(k) for k in kids])
    check([attrs(k).get("http.response.status_code") for k in kids] == [500, 200], [attrs(k) for k in kids])
    check(attrs(s)["longmen.attempts"] == 2, attrs(s))
    tps = upstream_traceparents(n)
    want = ["00-%s-%s-01" % (TP_IN[3:35], k["spanId"]) for k in kids]
    check(tps == want, "upstream saw %s, want %s" % (tps, want))


def test_unsampled_parent_not_exported():
    n = len(up.requests)
    tp = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    st, js, raw, h = main.gw.chat(body("m-1"), headers={"traceparent": tp})
    check(st == 200, raw)
    tps = upstream_traceparents(n)
    check(len(tps) == 1 and tps[0].startswith(tp[:36]) and tps[0].endswith("-00"), tps)
    time.sleep(1.5)
    check(not [s for s in all_spans() if s["traceId"] == tp[3:35]], "an unsampled trace was exported")


def test_stream_span():
    c = http.client.HTTPConnection("127.0.0.1", main.gw.port, timeout=10)
    c.request("POST", "/v1/chat/completions", body=json.dumps(body("m-1", stream=True)),
              headers={"Authorization": "Bearer " + KEY_, "Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    rid = r.getheader("X-Request-Id")
    c.close()
    check(r.status == 200, r.status)
    s, kids = wait_request_span(rid)
    a = attrs(s)
    check(a.get("gen_ai.response.finish_reasons") == ["length"] and a.get("longmen.stream") == 1, a)
    check(a.get("gen_ai.usage.output_tokens") == 2 and len(kids) == 1, a)


def test_json_protocol():
    """otel_protocol http/json: the same span, as OTLP/JSON."""
    env = Env("otel_endpoint %s/v1/traces\notel_protocol http/json\n" % collector.url)
    try:
        n = len(content_types)
        st, js, raw, h = env.gw.chat(body("m-1"))
        check(st == 200, raw)
        s, kids = wait_request_span(find_rid(h, js))
        a = attrs(s)
        for k, v in {"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 7,
                     "gen_ai.response.finish_reasons": ["stop"], "longmen.channel": "good",
                     "http.response.status_code": 200, "longmen.attempts": 1}.items():
            check(a.get(k) == v, "%s = %r, want %r" % (k, a.get(k), v))
        check(s["kind"] == 2 and len(kids) == 1 and kids[0]["kind"] == 3, s)
        with spans_lock:
            check("application/json" in content_types[n:], content_types[n:])
    finally:
        env.gw.stop()


def test_content_capture_on():
    env = Env("otel_endpoint %s/v1/traces\notel_capture_content on\n" % collector.url)
    try:
        st, js, raw, h = env.gw.chat(body("m-1"))
        check(st == 200, raw)
        s, _ = wait_request_span(find_rid(h, js))
        a = attrs(s)
        check("secret prompt text" in a.get("gen_ai.prompt", ""), a)
        check(a.get("gen_ai.completion") == "the answer", a)
    finally:
        env.gw.stop()


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: connections are refused
    return port


def answered_while(env, n):
    ok = 0
    for i in range(n):
        st, js, raw, h = env.gw.chat(body("m-1"))
        ok += st == 200
    return ok


def test_dead_collector():
    env = Env("otel_endpoint http://127.0.0.1:%d/v1/traces\notel_timeout 200ms\n" % closed_port())
    try:
        check(answered_while(env, 20) == 20, "a request failed")
        deadline = time.time() + 8
        while time.time() < deadline and env.metric("longmen_otel_spans_dropped_total") < 40:
            time.sleep(0.2)
        check(env.metric("longmen_otel_spans_dropped_total") >= 40, "drops not counted")
        check(env.metric("longmen_otel_spans_exported_total") == 0, "exported to nothing?")
    finally:
        check(env.gw.stop() == 0, "unclean stop")


def test_slow_collector():
    env = Env("otel_endpoint %s/v1/traces\notel_timeout 100ms\notel_queue 4\n" % slow.url)
    try:
        t0 = time.time()
        check(answered_while(env, 40) == 40, "a request failed")
        took = time.time() - t0
        check(took < 20, "40 requests took %.1fs" % took)  # far above normal; a stall would be 1.5s each
        deadline = time.time() + 8
        while time.time() < deadline and env.metric("longmen_otel_spans_dropped_total") < 40:
            time.sleep(0.2)
        check(env.metric("longmen_otel_spans_dropped_total") >= 40, "drops not counted")
    finally:
        check(env.gw.stop() == 0, "unclean stop")


def test_queue_follows_reload():
    """otel_queue changes on a reload: a queue of 1 behind a slow collector
    drops; once reloaded to 1000 the same traffic queues without a drop."""
    env = Env("otel_endpoint %s/v1/traces\notel_timeout 5s\notel_queue 1\n" % slow.url)
    try:
        check(answered_while(env, 10) == 10, "a request failed")
        check(env.metric("longmen_otel_spans_dropped_total") > 0, "a queue of 1 drops")
        with open(env.gw.conf) as f:
            conf = f.read()
        with open(env.gw.conf, "w") as f:
            f.write(conf.replace("otel_queue 1\n", "otel_queue 1000\n"))
        env.gw.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15  # the old queue drains first (one slow export)
        while time.time() < deadline and "queue now holds 1000" not in env.gw.logtext():
            time.sleep(0.1)
        check("queue now holds 1000" in env.gw.logtext(), "resized: %s" % env.gw.logtext()[-600:])
        dropped, exported = env.metric("longmen_otel_spans_dropped_total"), env.metric(
            "longmen_otel_spans_exported_total")
        check(answered_while(env, 20) == 20, "a request failed")
        deadline = time.time() + 20
        while time.time() < deadline and env.metric("longmen_otel_spans_exported_total") < exported + 40:
            time.sleep(0.2)
        check(env.metric("longmen_otel_spans_exported_total") >= exported + 40, "all exported")
        check(env.metric("longmen_otel_spans_dropped_total") == dropped, "none dropped after the reload")
    finally:
        check(env.gw.stop() == 0, "unclean stop")


if __name__ == "__main__":
    from lib import KEY as KEY_
    main = Env("otel_endpoint %s/v1/traces\notel_service_name lm-test\n" % collector.url)
    try:
        run([test_request_and_attempt_spans, test_traceparent_honoured_over_failover,
             test_unsampled_parent_not_exported, test_stream_span, test_json_protocol,
             test_content_capture_on,
             test_dead_collector, test_slow_collector, test_queue_follows_reload])
    finally:
        main.gw.stop()
        up.close()
        collector.close()
