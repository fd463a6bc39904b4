"""Billing and failover on every exit path, through the real binary:
an error event in a 200 stream before any output fails over like a 5xx
(FT-1); a 200 body that is not JSON is a 502 and fails over (IN-11); a
client that leaves a non-stream request is still billed what the provider
bills, once, with a client_aborted mark (QB-6)."""
import http.client
import json
import re
import socket
import tempfile
import threading
import time

from lib import (Gateway, Mock, check, chunk, content_of, free_port, json_reply, run, sse_json,
                 sse_reply, usage_chunk)

mock = Mock()
gw = None
hits = {}
lock = threading.Lock()


def counted(name, fn):
    def wrapped(h, b):
        with lock:
            hits[name] = hits.get(name, 0) + 1
        fn(h, b)
    mock.routes["/%s/chat/completions" % name] = wrapped


def good_stream(h, b):
    sse_reply(h, [chunk("served", role="assistant"), chunk(finish="stop"), usage_chunk(3, 1), "[DONE]"])


GZIP_SSE = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xabV\xcaLQ\xb2RP\xaa\xa8\xd4\x01\x00"


def lazy(err):
    return lambda h, b: sse_reply(h, [{"error": err}])


counted("good", good_stream)
counted("lazy5", lazy({"message": "overloaded", "type": "server_error"}))
counted("lazyrl", lazy({"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}))
counted("lazy4", lazy({"message": "context too long", "type": "invalid_request_error",
                       "code": "context_length_exceeded"}))
counted("lazy4b", lazy({"message": "bad field"}))  # no type or code: the plugin's defaults
counted("lazy4c", lazy({"message": "bad field", "type": "invalid_request_error"}))
counted("sse_gz", lambda h, b: sse_reply(h, None, raw=[GZIP_SSE]))
counted("late", lambda h, b: sse_reply(h, [chunk("part", role="assistant"),
                                           {"error": {"message": "overloaded", "type": "server_error"}}]))

GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xabV\xcaLQ\xb2RP\xaa\xa8\xd4\x01\x00"
NUL = b'{"id":"x",\x00"object":"chat.completion","choices":[]}'
counted("gzip", lambda h, b: json_reply(h, 200, GZIP))
counted("nul", lambda h, b: json_reply(h, 200, NUL))
counted("goodw", lambda h, b: json_reply(h, 200, {
    "id": "w", "object": "chat.completion", "created": 1, "model": "up",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}))

SLOW_DONE = threading.Event()


def slow_answer(h, b):
    time.sleep(1.0)  # the client leaves meanwhile
    json_reply(h, 200, {
        "id": "s", "object": "chat.completion", "created": 1, "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "late"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1234, "completion_tokens": 567, "total_tokens": 1801}})
    SLOW_DONE.set()


counted("slowbill", slow_answer)


def slow_fail(h, b):
    time.sleep(1.0)
    json_reply(h, 500, {"error": {"message": "down", "type": "server_error"}})
    SLOW_DONE.set()


counted("slowfail", slow_fail)


def channels():
    out = ""
    # model -> (first channel, second channel)
    for model, first in (("m5", "lazy5"), ("mrl", "lazyrl"), ("m4", "lazy4"), ("m4c", "lazy4c"),
                         ("m4b", "lazy4b"), ("msse", "sse_gz"), ("mlate", "late")):
        out += "channel %s_%s {\n plugin openai\n base_url %s/%s\n models %s\n}\n" % (
            model, first, mock.url, first, model)
        out += "channel %s_good {\n plugin openai\n base_url %s/good\n models %s\n priority 1\n}\n" % (
            model, mock.url, model)
    # IN-11: a lone garbage channel per model, and garbage then a good one
    for model, first in (("gz", "gzip"), ("nul", "nul")):
        out += "channel only_%s {\n plugin openai\n base_url %s/%s\n models %s\n}\n" % (
            first, mock.url, first, model)
        out += "channel fo_%s {\n plugin openai\n base_url %s/%s\n models fo-%s\n}\n" % (
            first, mock.url, first, model)
    out += "channel fo_goodw {\n plugin openai\n base_url %s/goodw\n models fo-gz fo-nul\n priority 1\n}\n" % (
        mock.url)
    return out


def setup():
    global gw
    gw = Gateway(channels=channels())


def body(model, stream=True):
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def reset():
    with lock:
        hits.clear()


def test_ft1_lazy_server_error_fails_over():
    for model, first in (("m5", "lazy5"), ("mrl", "lazyrl")):
        reset()
        st, ev, raw, hdrs = gw.stream(body(model))
        check(st == 200, raw)
        check(content_of(ev) == "served", "second channel served: %s" % raw)
        check(not any("error" in e for e in sse_json(ev)), "no error event reached the client: %s" % raw)
        check(hits.get(first) == 1 and hits.get("good") == 1, "both channels tried: %s" % hits)
        check("attempts=2" in hdrs.get("X-Longmen-Route", ""), hdrs)


def test_ft1_lazy_client_error_is_an_http_error():
    reset()
    st, js, raw, _ = gw.chat(body("m4"))
    check(st == 400, "a 4xx-like lazy error is answered as one: %s %s" % (st, raw))
    check(js["error"]["code"] == "context_length_exceeded", raw)
    check(hits.get("lazy4") == 1 and not hits.get("good"), "no failover for a 4xx-like error: %s" % hits)
    reset()
    st, js, raw, _ = gw.chat(body("m4c"))
    check(st == 400 and hits.get("lazy4c") == 1 and not hits.get("good"),
          "invalid_request_error without a code: %s %s %s" % (st, raw, hits))


def test_ft1_lazy_error_without_type_fails_over():
    # {"error":{"message":...}} alone says nothing of the request: treated as the
    # upstream's failure (the plugin's api_error/upstream_error defaults)
    reset()
    st, ev, raw, _ = gw.stream(body("m4b"))
    check(st == 200 and content_of(ev) == "served", raw)
    check(hits.get("lazy4b") == 1 and hits.get("good") == 1, hits)


def test_in11_non_sse_200_stream_fails_over():
    # gzip bytes labelled text/event-stream hold no event: a 502, nothing sent, failover
    reset()
    st, ev, raw, _ = gw.stream(body("msse"))
    check(st == 200 and content_of(ev) == "served", raw)
    check(hits.get("sse_gz") == 1 and hits.get("good") == 1, hits)


def test_ft1_error_after_content_ends_the_stream():
    reset()
    st, ev, raw, _ = gw.stream(body("mlate"))
    check(st == 200 and content_of(ev) == "part", raw)
    errs = [e for e in sse_json(ev) if "error" in e]
    check(len(errs) == 1 and ev[-1] == "[DONE]", "one error event then [DONE]: %s" % raw)
    check(not hits.get("good"), "no failover once content was streamed: %s" % hits)


def test_in11_non_json_200_is_502():
    for model in ("gz", "nul"):
        for stream in (False, True):
            st, js, raw, hdrs = gw.chat(body(model, stream=stream))
            check(st == 502, "%s stream=%s: %s %s" % (model, stream, st, raw))
            check(hdrs.get("Content-Type", "").startswith("application/json"), hdrs)
            check(js and js["error"]["code"] == "upstream_error" and js["error"]["message"],
                  "OpenAI error shape: %r" % raw)


def test_in11_non_json_200_fails_over():
    for model, first in (("fo-gz", "gzip"), ("fo-nul", "nul")):
        reset()
        st, js, raw, hdrs = gw.chat(body(model, stream=False))
        check(st == 200 and js["choices"][0]["message"]["content"] == "whole", raw)
        check(hits.get(first) == 1 and hits.get("goodw") == 1, "both channels tried: %s" % hits)
        check("attempts=2" in hdrs.get("X-Longmen-Route", ""), hdrs)


TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")


def test_qb6_client_gone_non_stream_billed_once():
    data_dir = tempfile.mkdtemp(prefix="lm-qb6-")
    admin_port = free_port()
    g = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (data_dir, admin_port), channels="""
channel slowbill {
    plugin openai
    base_url %s/slowbill
    models sb
    price_input 1
    price_output 1
    request_timeout 10s
}
channel other {
    plugin openai
    base_url %s/goodw
    models sb sbf
    priority 1
}
channel slowfail {
    plugin openai
    base_url %s/slowfail
    models sbf
    price_input 1
    price_output 1
}
""" % (mock.url, mock.url, mock.url))
    try:
        token = TOKEN_RE.search(g.logtext()).group(1)

        def admin(method, path, body=None):
            c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            c.close()
            return r.status, (json.loads(data) if data else None)

        # the hold is ~(prompt estimate + max_tokens) micro: 2000 holds one, and after the
        # 1801 billed only a released hold leaves room for the next request
        st, k = admin("POST", "/admin/keys", {"name": "qb6", "quota": "0.002"})
        check(st == 201, "key: %s %s" % (st, k))
        secret = k.get("secret") or k.get("key")

        def leave_early(model, upstream):
            """Send a request, close the socket once the upstream has it, wait for the
            upstream's answer, and return the ledger rows once they settle."""
            reset()
            SLOW_DONE.clear()
            req = json.dumps({"model": model, "max_tokens": 100,
                              "messages": [{"role": "user", "content": "hi"}]}).encode()
            s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
                      % (secret.encode(), len(req), req))
            deadline = time.time() + 5
            while not hits.get(upstream) and time.time() < deadline:
                time.sleep(0.02)
            s.close()  # the client leaves before the answer
            check(SLOW_DONE.wait(10), "the mock answered")
            deadline = time.time() + 10
            while time.time() < deadline:
                st, js = admin("GET", "/admin/usage/rows?limit=50")
                rows = [r for r in js["data"] if r["channel"] == upstream] if st == 200 else []
                if rows:
                    time.sleep(0.3)  # a second (double) row would land by now
                    st, js = admin("GET", "/admin/usage/rows?limit=50")
                    return [r for r in js["data"] if r["channel"] == upstream]
                time.sleep(0.05)
            return []

        # the upstream fails after the client left: a failed attempt's row, free
        rows = leave_early("sbf", "slowfail")
        check(len(rows) == 1 and rows[0]["status"] == 500 and rows[0]["cost_micro"] == 0 and
              rows[0]["client_aborted"] in (1, True), "one free failed row: %s" % rows)
        check(hits.get("slowfail") == 1 and not hits.get("goodw"), "no failover once gone: %s" % hits)
        st, kk = admin("GET", "/admin/keys/%s" % k["id"])
        check(kk["used_micro"] == 0, "nothing billed for a failure: %s" % kk)

        # the upstream answers after the client left: billed exactly once, marked
        rows = leave_early("sb", "slowbill")
        check(len(rows) == 1, "exactly one ledger row: %s" % rows)
        row = rows[0]
        check(row["prompt_tokens"] == 1234 and row["completion_tokens"] == 567, "provider's tokens: %s" % row)
        check(row["client_aborted"] in (1, True) and row["status"] == 200, "client_aborted row: %s" % row)
        check(row["cost_micro"] == 1234 + 567, "priced: %s" % row)
        st, kk = admin("GET", "/admin/keys/%s" % k["id"])
        check(st == 200 and kk["used_micro"] == row["cost_micro"], "key used %s vs row %s" % (kk, row))
        check(hits.get("slowbill") == 1 and not hits.get("goodw"), "no failover, no retry: %s" % hits)
        st, js, raw, _ = g.chat({"model": "sb", "max_tokens": 100,
                                 "messages": [{"role": "user", "content": "hi"}]}, key=secret)
        check(st == 200, "the quota hold was released: %s %s" % (st, raw))
    finally:
        g.stop()


def test_clean_shutdown():
    check(gw.stop() == 0, "clean exit")
    mock.close()


setup()
run([test_ft1_lazy_server_error_fails_over, test_ft1_lazy_client_error_is_an_http_error,
     test_ft1_lazy_error_without_type_fails_over, test_in11_non_sse_200_stream_fails_over,
     test_ft1_error_after_content_ends_the_stream, test_in11_non_json_200_is_502,
     test_in11_non_json_200_fails_over, test_qb6_client_gone_non_stream_billed_once,
     test_clean_shutdown])
