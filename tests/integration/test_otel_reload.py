"""otel_endpoint, otel_protocol and otel_header take effect on reload
(docs/observability.md): the exporter is re-pointed between batches, what
was queued before the reload goes to the previous collector (or is dropped
and counted when it fails), tracing turns on and off without a restart,
and an otel_header value never reaches the log."""
import http.client
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import otlp_pb  # noqa: E402
from lib import Gateway, Mock, check, free_port, json_reply, run  # noqa: E402

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
SECRET = "tok-otel-hdr-5f2e9a"

up = Mock()
lock = threading.Lock()
got = []  # (collector, content type, token header, span dict)


def answer(h, b):
    req = json.loads(b)
    json_reply(h, 200, {"id": "up-1", "object": "chat.completion", "created": 1, "model": req["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


def collector(name):
    m = Mock()

    def collect(h, b):
        ctype = h.headers.get("Content-Type")
        doc = otlp_pb.export_request(b) if ctype == "application/x-protobuf" else json.loads(b)
        with lock:
            for rs in doc["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for s in ss["spans"]:
                        got.append((name, ctype, h.headers.get("X-Collector-Token"), s))
        json_reply(h, 200, {})

    m.routes["/v1/traces"] = collect
    return m


up.routes["/v1/chat/completions"] = answer
col_a, col_b = collector("a"), collector("b")
CHANNELS = "channel good {\n plugin openai\n base_url %s/v1\n models m-*\n}\n" % up.url


def rid_of(span):
    for a in span.get("attributes", []):
        if a["key"] == "longmen.request_id":
            return a["value"]["stringValue"]
    return None


def spans_for(rid):
    with lock:
        return [(n, c, t) for n, c, t, s in got if rid_of(s) == rid]


def wait_spans(rid, timeout=8):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = spans_for(rid)
        if r:
            return r
        time.sleep(0.1)
    return []


class Env:
    def __init__(self, otel):
        d = tempfile.mkdtemp(prefix="lm-otelr-")
        self.admin_port = free_port()
        self.base = "data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (d, self.admin_port)
        self.gw = Gateway(extra=self.base + otel, channels=CHANNELS)
        m = TOKEN_RE.search(self.gw.logtext())
        self.token = m.group(1) if m else None
        self.gen = 1

    def chat(self):
        st, js, raw, h = self.gw.chat({"model": "m-1", "messages": [{"role": "user", "content": "x"}]})
        check(st == 200, raw)
        return h.get("X-Request-Id") or h.get("x-request-id")

    def reload(self, otel):
        with open(self.gw.conf) as f:
            text = f.read()
        text = "\n".join(l for l in text.split("\n") if not l.startswith("otel_")) + "\n" + otel
        with open(self.gw.conf, "w") as f:
            f.write(text)
        self.gen += 1
        self.gw.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and "reloaded: generation %d" % self.gen not in self.gw.logtext():
            time.sleep(0.05)
        check("reloaded: generation %d" % self.gen in self.gw.logtext(), "no reload")

    def metric(self, name):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        c.request("GET", "/admin/metrics", headers={"Authorization": "Bearer " + self.token})
        text = c.getresponse().read().decode()
        c.close()
        m = re.search(r"^%s(?:\{\})? (\d+)" % name, text, re.M)
        return int(m.group(1)) if m else 0


def test_reload_repoints_endpoint_protocol_headers():
    env = Env("otel_endpoint %s/v1/traces\n" % col_a.url)
    try:
        r1 = env.chat()
        time.sleep(0.2)  # its record is queued (the exporter flushes each second)
        env.reload("otel_endpoint %s/v1/traces\notel_protocol http/json\notel_header X-Collector-Token %s\n"
                   % (col_b.url, SECRET))
        r2 = env.chat()
        s1, s2 = wait_spans(r1), wait_spans(r2)
        check(s1 and {n for n, _, _ in s1} == {"a"}, "before the reload: %s" % s1)
        check(s1[0][1] == "application/x-protobuf" and s1[0][2] is None, s1)
        check(s2 and {n for n, _, _ in s2} == {"b"}, "after the reload: %s" % s2)
        check(s2[0][1] == "application/json" and s2[0][2] == SECRET, s2)
        time.sleep(1.2)
        check({n for n, _, _ in spans_for(r2)} == {"b"}, "a span went to both")
        check(SECRET not in env.gw.logtext(), "the header's value is in the log")
    finally:
        check(env.gw.stop() == 0, "unclean stop")


def test_reload_turns_tracing_on_and_off():
    env = Env("")
    try:
        r0 = env.chat()
        env.reload("otel_endpoint %s/v1/traces\n" % col_a.url)
        r1 = env.chat()
        check({n for n, _, _ in wait_spans(r1)} == {"a"}, "turned on by reload")
        env.reload("")
        r2 = env.chat()
        time.sleep(1.5)
        check(spans_for(r0) == [] and spans_for(r2) == [], "traced while off")
        check("otel: tracing off" in env.gw.logtext(), "no log line for off")
    finally:
        check(env.gw.stop() == 0, "unclean stop")


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_queued_for_dead_collector_dropped_and_counted():
    env = Env("otel_endpoint http://127.0.0.1:%d/v1/traces\notel_timeout 200ms\n" % closed_port())
    try:
        old = [env.chat() for _ in range(5)]
        env.reload("otel_endpoint %s/v1/traces\n" % col_b.url)
        new = env.chat()
        check({n for n, _, _ in wait_spans(new)} == {"b"}, "the new collector gets new spans")
        deadline = time.time() + 8
        while time.time() < deadline and env.metric("longmen_otel_spans_dropped_total") < 10:
            time.sleep(0.1)
        check(env.metric("longmen_otel_spans_dropped_total") >= 10, "old spans not counted dropped")
        check(all(spans_for(r) == [] for r in old), "old spans re-sent to the new collector")
    finally:
        check(env.gw.stop() == 0, "unclean stop")


if __name__ == "__main__":
    try:
        run([test_reload_repoints_endpoint_protocol_headers, test_reload_turns_tracing_on_and_off,
             test_queued_for_dead_collector_dropped_and_counted])
    finally:
        up.close()
        col_a.close()
        col_b.close()
