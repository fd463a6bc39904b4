"""The relay against a mock OpenAI-compatible upstream: plain, stream,
include_usage, tools, upstream errors and timeouts, bad input, disconnects."""
import json
import socket
import time

from lib import (KEY, Gateway, Mock, check, chunk, content_of, json_reply, run, sse_json,
                 sse_reply, usage_chunk)

mock = Mock()
gw = None

PLAIN = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "up-model",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"},
                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}


def G1(model="gpt-x", **kw):
    b = {"model": model, "messages": [{"role": "system", "content": "You are terse."},
                                      {"role": "user", "content": "Say hi"}],
         "max_tokens": 16, "temperature": 0.2}
    b.update(kw)
    return b


def setup():
    global gw
    gw = Gateway(channels="""
channel up {
    plugin openai
    base_url %s/v1
    api_key env:LM_TEST_UPSTREAM_KEY
    models gpt-x alias=real-model
    first_byte_timeout 1s
    idle_timeout 1s
}
channel dead {
    plugin openai
    base_url http://127.0.0.1:9/v1
    models dead-model
    connect_timeout 1s
}
channel offline {
    plugin mock
    models mock-1 mock-tools
}
""" % mock.url, extra="max_body_size 256k\n", env={"LM_TEST_UPSTREAM_KEY": "sk-upstream-secret"})


def route(fn):
    mock.routes["/v1/chat/completions"] = fn


def test_plain():
    route(lambda h, b: json_reply(h, 200, PLAIN))
    st, js, raw, hdrs = gw.chat(G1())
    check(st == 200, "status %d %s" % (st, raw))
    check(js["choices"][0]["message"]["content"] == "Hi!", raw)
    check(js["usage"] == {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}, raw)
    up = mock.requests[-1]
    check(up["headers"].get("Authorization") == "Bearer sk-upstream-secret", "upstream auth header")
    body = json.loads(up["body"])
    check(body["model"] == "gpt-x" and body["max_tokens"] == 16 and "stream_options" not in body,
          body)
    check(hdrs.get("X-Request-Id"), "request id header")


def test_model_alias_maps_upstream_id():
    route(lambda h, b: json_reply(h, 200, PLAIN))
    st, js, raw, _ = gw.chat(G1("alias"))
    check(st == 200, raw)
    check(mock.last_json()["model"] == "real-model", mock.last_json())


def stream_events():
    return [chunk(role="assistant", content=""), chunk("Hi"), chunk("!"), chunk(finish="stop"),
            usage_chunk(12, 2), "[DONE]"]


def test_stream_with_usage():
    route(lambda h, b: sse_reply(h, stream_events()))
    st, ev, raw, hdrs = gw.stream(G1(stream=True, stream_options={"include_usage": True}))
    check(st == 200 and hdrs.get("Content-Type") == "text/event-stream", raw)
    check(mock.last_json()["stream_options"] == {"include_usage": True}, "usage asked upstream")
    check(content_of(ev) == "Hi!", raw)
    check(ev.count("[DONE]") == 1 and ev[-1] == "[DONE]", "exactly one [DONE] at the end")
    js = sse_json(ev)
    check(js[-1]["choices"] == [] and js[-1]["usage"]["total_tokens"] == 14, js[-1])
    check(sum(1 for e in js if e.get("choices") and e["choices"][0].get("finish_reason") == "stop") == 1,
          "one stop chunk")
    check(len({e["id"] for e in js}) == 1, "one id for all chunks: %s" % {e["id"] for e in js})


def test_stream_without_usage_drops_usage_chunk():
    route(lambda h, b: sse_reply(h, stream_events()))
    st, ev, raw, _ = gw.stream(G1(stream=True))
    check(st == 200, raw)
    check(mock.last_json()["stream_options"] == {"include_usage": True}, "usage still asked upstream")
    js = sse_json(ev)
    check(all("usage" not in e for e in js), "no usage for a client that did not ask: %s" % raw)
    check(all(e["choices"] for e in js), "no empty-choices chunk")
    check(content_of(ev) == "Hi!" and ev[-1] == "[DONE]" and ev.count("[DONE]") == 1, raw)


def test_stream_usage_false_still_asked_upstream():
    route(lambda h, b: sse_reply(h, stream_events()))
    st, ev, raw, _ = gw.stream(G1(stream=True, stream_options={"include_usage": False}))
    check(st == 200 and mock.last_json()["stream_options"] == {"include_usage": True}, raw)
    check(all("usage" not in e for e in sse_json(ev)) and content_of(ev) == "Hi!", raw)
    # the pass-through path keeps every client field byte for byte
    body = b'{"model":"gpt-x","messages":[{"role":"user","content":"caf\\u00e9"}],"stream":true, "seed": 7 }\n'
    st, js, raw, _ = gw.chat(body)
    up = mock.requests[-1]["body"]
    check(json.loads(up) == dict(json.loads(body), stream_options={"include_usage": True}), up)


def test_stream_upstream_without_done_marker():
    route(lambda h, b: sse_reply(h, [chunk("a"), chunk(finish="stop")]))
    st, ev, raw, _ = gw.stream(G1(stream=True))
    check(st == 200 and content_of(ev) == "a" and ev[-1] == "[DONE]", raw)


def test_tool_call_passthrough():
    tc = [{"index": 0, "id": "call_abc", "type": "function",
           "function": {"name": "get_weather", "arguments": ""}}]
    tc2 = [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]
    route(lambda h, b: sse_reply(h, [chunk(role="assistant", tool_calls=tc), chunk(tool_calls=tc2),
                                     chunk(finish="tool_calls"), usage_chunk(30, 10), "[DONE]"]))
    body = {"model": "gpt-x", "stream": True, "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
            "tool_choice": "auto"}
    st, ev, raw, _ = gw.stream(body)
    check(st == 200, raw)
    check(mock.last_json()["tools"] == body["tools"] and mock.last_json()["tool_choice"] == "auto",
          "tools forwarded")
    js = sse_json(ev)
    args = "".join(c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {})
                   .get("arguments", "") for c in js if c["choices"])
    check(json.loads(args) == {"city": "Paris"}, args)
    check(js[-1]["choices"][0]["finish_reason"] == "tool_calls", js[-1])


def test_upstream_errors_mapped():
    for up, want in ((429, 429), (500, 502), (503, 502), (400, 400), (404, 404)):
        route(lambda h, b, s=up: json_reply(h, s, {"error": {"message": "upstream says %d" % s,
                                                             "type": "t", "code": "c%d" % s}}))
        st, js, raw, _ = gw.chat(G1())
        check(st == want, "upstream %d -> %d, want %d" % (up, st, want))
        check(js and "error" in js and js["error"]["message"], raw)
        check("sk-upstream-secret" not in raw.decode(), "no secret in errors")
    route(lambda h, b: json_reply(h, 502, b"<html>bad gateway</html>"))
    st, js, raw, _ = gw.chat(G1())
    check(st == 502 and js["error"]["type"] == "api_error", raw)


def test_upstream_redirect_named():
    """Redirects are not followed: the client gets a 502 naming the real
    status (not "HTTP 0"), and the log shows it."""
    def redirect(h, b, status, body):
        h.send_response(status)
        h.send_header("Location", "http://127.0.0.1:9/elsewhere")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    for status, body, stream in ((302, b"", False), (302, b"", True),
                                 (301, b"<html>moved</html>", False), (307, b"", True)):
        route(lambda h, b, s=status, d=body: redirect(h, b, s, d))
        st, js, raw, _ = gw.chat(G1(stream=stream))
        want = "upstream answered HTTP %d (redirects are not followed)" % status
        check(st == 502 and js and js["error"]["code"] == "upstream_error"
              and js["error"]["message"] == want, "%d stream=%s: %s %r" % (status, stream, st, raw))
        check("HTTP 0" not in raw.decode(), raw)
        log = gw.logtext()
        check("upstream %d -> 502" % status in log, "log lacks the status: " + log[-800:])


def test_upstream_error_before_stream():
    route(lambda h, b: json_reply(h, 429, {"error": {"message": "slow", "type": "requests"}}))
    st, js, raw, _ = gw.chat(G1(stream=True))
    check(st == 429 and js["error"]["message"] == "slow", raw)


def test_upstream_timeout_504():
    def hang(h, b):
        time.sleep(2.5)
        json_reply(h, 200, PLAIN)
    route(hang)
    t = time.time()
    st, js, raw, _ = gw.chat(G1())
    check(st == 504 and js["error"]["code"] == "upstream_timeout", raw)
    # the mock answers 200 after 2.5 s: a 504 proves the 1 s timeout fired first
    check(time.time() - t >= 0.9, "first-byte timeout did not fire early")


def test_upstream_refused_502():
    st, js, raw, _ = gw.chat(G1("dead-model"))
    check(st == 502 and js["error"]["type"] == "api_error", raw)


def test_stream_cut_midway_gets_error_event():
    route(lambda h, b: sse_reply(h, [chunk("part")], close_after=True))
    st, ev, raw, _ = gw.stream(G1(stream=True))
    check(st == 200, raw)
    check(content_of(ev) == "part", raw)
    errs = [json.loads(e) for e in ev if e != "[DONE]" and "error" in json.loads(e)]
    check(len(errs) == 1 and ev[-1] == "[DONE]", "one error event then [DONE]: %s" % raw)


def test_stream_idle_timeout():
    def slow(h, b):
        sse_reply(h, None, raw=["data: %s\n\n" % json.dumps(chunk("a"))] + [": wait\n\n"] * 0 +
                  ["data: %s\n\n" % json.dumps(chunk("b"))], delay=2.0)
    route(slow)
    st, ev, raw, _ = gw.stream(G1(stream=True), timeout=10)
    check(st == 200 and content_of(ev) == "a", raw)
    check("upstream_timeout" in raw.decode() and ev[-1] == "[DONE]", raw)


def test_bad_input():
    cases = [(b"{not json", 400), (b"", 400), (b"[1,2]", 400), (b'{"model":1,"messages":[]}', 400),
             (b'{"model":"gpt-x"}', 400), (b'{"model":"gpt-x","messages":"hi"}', 400),
             (b'{"model":"gpt-x","messages":[{"role":"user","content":"x"}],"stream":"yes"}', 400),
             (b'{"model":"gpt-x","model":"other","messages":[{"role":"user","content":"x"}]}', 400),
             (b'{"model":"gpt-x","messages":[{"role":"user","content":"x"}],"max_tokens":-1}', 400),
             (b'{"model":"gpt-x","messages":[{"role":"user","content":"x"}],"temperature":9}', 400),
             (b'{"model":"gpt-x","messages":[{"role":"user","content":"\\u0000"}]}', 400),
             (b'{"model":"gpt-x","messages":[{"role":"user","content":"\xff\xfe"}]}', 400)]
    n = len(mock.requests)
    for body, want in cases:
        st, js, raw, _ = gw.chat(body)
        check(st == want, "%r -> %d %s" % (body, st, raw))
        check(js and set(js["error"]) >= {"message", "type", "code"}, raw)
    check(len(mock.requests) == n, "nothing reached the upstream")


def test_truncated_at_every_offset():
    body = json.dumps(G1()).encode()
    for i in range(len(body)):
        st, js, raw, _ = gw.chat(body[:i])
        check(st == 400 and js["error"]["type"] == "invalid_request_error", "offset %d: %d" % (i, st))


def test_deep_nesting():
    for depth in (65, 2049, 100000):
        body = b'{"model":"gpt-x","messages":[{"role":"user","content":"x"}],"x":' + b"[" * depth + b"]" * depth + b"}"
        t = time.time()
        st, js, raw, _ = gw.chat(body)
        check(st == 400 and "deeper than 64" in js["error"]["message"], raw[:200])
        check(time.time() - t < 5, "rejected without parsing the whole depth (hang detector)")
    st, js, raw, _ = gw.chat(b'{"model":"gpt-x","messages":[{"role":"user","content":"x"}],"x":' + b"[" * 60 + b"]" * 60 + b"}")
    check(st != 400 or "deeper" not in raw.decode(), "depth 61 is fine")


def test_body_limit_413():
    big = {"model": "gpt-x", "messages": [{"role": "user", "content": "x" * 300000}]}
    try:
        st, js, raw, _ = gw.chat(big)
    except (ConnectionError, OSError) as e:
        raise AssertionError("connection dropped instead of 413: %s" % e)
    check(st == 413 and js["error"]["code"] == "request_too_large", raw[:200])


def test_unknown_model_404():
    st, js, raw, _ = gw.chat(G1("no-such-model"))
    check(st == 404 and js["error"]["code"] == "model_not_found", raw)


def access_line(rid):
    deadline = time.time() + 3
    while time.time() < deadline:
        for l in gw.logtext().splitlines():
            if "access id=%s " % rid in l:
                return l
        time.sleep(0.05)
    raise AssertionError("no access line for %s" % rid)


def test_unknown_model_logged_by_name():
    """The access log names the model asked for, not "-", as one safe word."""
    for asked, want in (("no-such-model", "no-such-model"),
                        ("bad name\nkey=admin\x01\u00e9", "bad?name?key=admin???"),
                        ("m" * 200, "m" * 64 + "...")):
        st, js, raw, hdrs = gw.chat(G1(asked))
        check(st == 404 and js["error"]["code"] == "model_not_found", raw)
        rid = {k.lower(): v for k, v in hdrs.items()}.get("x-request-id")
        check(rid, "no x-request-id: %s" % hdrs)
        line = access_line(rid)
        check(" model=%s channel=- " % want in line, "want model=%s: %s" % (want, line))


def test_bad_key_401():
    for key in (None, "wrong-key-123456", KEY + "x", KEY[:-1]):
        st, js, raw, _ = gw.chat(G1(), key=key)
        check(st == 401 and js["error"]["code"] == "invalid_api_key", "%s: %s" % (key, raw))
    st, js, raw, _ = gw.request("GET", "/v1/models", key=None)
    check(st == 401, raw)


def test_brute_force_blocks_only_that_address():
    import http.client
    g2 = Gateway(channels="channel m {\n plugin mock\n models mock-1\n}\n")

    def call(key, source):
        c = http.client.HTTPConnection("127.0.0.1", g2.port, timeout=5, source_address=(source, 0))
        c.request("POST", "/v1/chat/completions", body=json.dumps(
            {"model": "mock-1", "messages": [{"role": "user", "content": "x"}]}),
            headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status, r.getheader("Retry-After")

    try:
        codes = [call("sk-wrong-key-%03d" % i, "127.0.0.3")[0] for i in range(25)]
        check(codes[:20] == [401] * 20 and set(codes[20:]) == {429}, "20 failures then 429: %s" % codes)
        st, retry = call(KEY, "127.0.0.3")
        check(st == 429 and int(retry) >= 50, "the address is blocked even with a valid key: %s %s" % (st, retry))
        st, _ = call(KEY, "127.0.0.4")
        check(st == 200, "other clients are unaffected: %s" % st)
    finally:
        g2.stop()


def test_models_and_health():
    st, js, raw, _ = gw.request("GET", "/v1/models")
    ids = [m["id"] for m in js["data"]]
    check(st == 200 and js["object"] == "list" and {"gpt-x", "alias", "mock-1"} <= set(ids), raw)
    st, js, raw, _ = gw.request("GET", "/v1/models/alias")
    check(st == 200 and js["id"] == "alias" and js["object"] == "model", raw)
    st, js, raw, _ = gw.request("GET", "/v1/models/nope")
    check(st == 404 and js["error"]["code"] == "model_not_found", raw)
    st, js, raw, _ = gw.request("GET", "/healthz", key=None)
    check(st == 200 and js["status"] == "ok", raw)
    st, js, raw, _ = gw.request("GET", "/v1/chat/completions")
    check(st == 405, raw)
    st, js, raw, _ = gw.request("GET", "/nope")
    check(st == 404 and "error" in js, raw)


def test_embeddings():
    mock.routes["/v1/embeddings"] = lambda h, b: json_reply(h, 200, {
        "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
        "model": "up", "usage": {"prompt_tokens": 5, "total_tokens": 5}})
    st, js, raw, _ = gw.request("POST", "/v1/embeddings", {"model": "gpt-x", "input": "hello"})
    check(st == 200 and js["data"][0]["embedding"] == [0.1, 0.2], raw)
    check(mock.requests[-1]["path"] == "/v1/embeddings" and mock.last_json()["input"] == "hello", "fwd")
    st, js, raw, _ = gw.request("POST", "/v1/embeddings", {"model": "gpt-x", "input": []})
    check(st == 400, raw)


def test_mock_plugin_offline():
    st, js, raw, _ = gw.chat({"model": "mock-1", "messages": [{"role": "user", "content": "ping"}]})
    check(st == 200 and js["choices"][0]["message"]["content"] == "Hello from Longmen! You said: ping", raw)
    st, ev, raw, _ = gw.stream({"model": "mock-1", "stream": True, "stream_options": {"include_usage": True},
                                "messages": [{"role": "user", "content": "ping"}]})
    check(content_of(ev) == "Hello from Longmen! You said: ping" and ev[-1] == "[DONE]", raw)
    check(sse_json(ev)[-1]["usage"]["completion_tokens"] == 6, raw)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    st, js, raw, _ = gw.chat({"model": "mock-tools", "tools": tools,
                              "messages": [{"role": "user", "content": "Paris"}]})
    tc = js["choices"][0]["message"]["tool_calls"][0]
    check(js["choices"][0]["finish_reason"] == "tool_calls" and json.loads(tc["function"]["arguments"]) == {"city": "Paris"}, raw)


def test_disconnect_midstream_cancels_upstream():
    def slow(h, b):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(100):
            d = ("data: %s\n\n" % json.dumps(chunk("t%d " % i))).encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(d), d))
            h.wfile.flush()
            time.sleep(0.1)
        h.wfile.write(b"0\r\n\r\n")
    route(slow)
    n0 = len(mock.events)
    s = socket.create_connection(("127.0.0.1", gw.port))
    body = json.dumps(G1(stream=True)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (KEY.encode(), len(body), body))
    got = b""
    while got.count(b"data: ") < 3:
        got += s.recv(65536)
    s.close()
    t = time.time()
    deadline = t + 3
    while time.time() < deadline and len(mock.events) == n0:
        time.sleep(0.05)
    check(len(mock.events) > n0, "upstream connection was not closed after the client left")
    check(mock.events[-1][2] - t < 1.3, "closed %.2fs after the disconnect" % (mock.events[-1][2] - t))


def test_upstream_lingering_after_done_is_not_client_gone():
    """The upstream keeps its connection open a while after [DONE]: the
    client got the whole answer, so no "client went away" is logged; a
    client that really leaves early still is."""
    def lingering(h, b):
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for ev in (chunk("all", role="assistant"), chunk(finish="stop"), usage_chunk(3, 1), "[DONE]"):
            d = ("data: %s\n\n" % (ev if isinstance(ev, str) else json.dumps(ev))).encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(d), d))
        h.wfile.flush()
        time.sleep(1.0)
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
    route(lingering)
    line = "client went away; upstream transfer cancelled"
    before = gw.logtext().count(line)
    st, ev, raw, _ = gw.stream(G1(stream=True, stream_options={"include_usage": True}))
    check(st == 200 and content_of(ev) == "all" and ev[-1] == "[DONE]", raw)
    time.sleep(1.5)  # the upstream body ends (or is cut) meanwhile
    log = gw.logtext()
    check(log.count(line) == before, "complete stream logged as client gone: " + log[-1500:])
    rid = [l for l in log.splitlines() if "access id=" in l][-1]
    check(" client_gone" not in rid, rid)
    test_disconnect_midstream_cancels_upstream()  # a real early abort
    deadline = time.time() + 3
    while time.time() < deadline and gw.logtext().count(line) == before:
        time.sleep(0.05)
    check(gw.logtext().count(line) == before + 1, "early abort not logged: " + gw.logtext()[-1500:])


def test_secret_not_logged():
    check("sk-upstream-secret" not in gw.logtext() and KEY not in gw.logtext(), "secret in log")


def teardown():
    rc = gw.stop()
    check(rc == 0, "clean exit on SIGTERM, rc=%s\n%s" % (rc, gw.logtext()[-2000:]))


def test_clean_shutdown():
    teardown()


setup()
run([test_plain, test_model_alias_maps_upstream_id, test_stream_with_usage,
     test_stream_without_usage_drops_usage_chunk, test_stream_usage_false_still_asked_upstream,
     test_stream_upstream_without_done_marker,
     test_tool_call_passthrough, test_upstream_errors_mapped, test_upstream_redirect_named, test_upstream_error_before_stream,
     test_upstream_timeout_504, test_upstream_refused_502, test_stream_cut_midway_gets_error_event,
     test_stream_idle_timeout, test_bad_input, test_truncated_at_every_offset, test_deep_nesting,
     test_body_limit_413, test_unknown_model_404, test_unknown_model_logged_by_name, test_bad_key_401, test_models_and_health,
     test_embeddings, test_mock_plugin_offline, test_brute_force_blocks_only_that_address, test_disconnect_midstream_cancels_upstream,
     test_upstream_lingering_after_done_is_not_client_gone,
     test_secret_not_logged, test_clean_shutdown])
