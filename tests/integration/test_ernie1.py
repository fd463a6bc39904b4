"""The ernie plugin (Baidu ERNIE, Qianfan v1 "wenxinworkshop" API with an
OAuth access token) through the real gateway binary.

A stdlib mock emulates the native v1 API (docs/wire-formats.md 2.1, 9.2):
  - POST /oauth/2.0/token?grant_type=client_credentials&client_id=..&client_secret=..
    checks the pair, counts calls per client, can delay its answer, and issues
    "24.test" for the golden client "ak" (then "24.<client>.<n>");
  - POST /rpc/2.0/ai_custom/v1/wenxinworkshop/chat/<endpoint>?access_token=..
    answers HTTP 200 {"error_code":110} to a missing or unknown token and 111
    to one the test expired, checks field placement the way Baidu does (no
    "system" role in messages, odd alternating count, max_output_tokens not
    max_tokens, functions not tools) and answers the golden bodies;
  - POST .../embeddings/<endpoint>?access_token=..

Each scenario has its own channel (and client_id), so token fetches are
counted per channel: one fetch for 20 concurrent requests, a refresh after an
expired token (plain and streamed), exactly one retry when every answer is
111, an OAuth refusal as 401, 18 as 429, and no secret in any answer or log.
"""
import base64
import json
import os
import struct
import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from lib import Gateway, Mock, check, content_of, json_reply, run, sse_json

# --------------------------------------------------------------------------- credentials
# client_id -> (client_secret, scenario); secrets reach the gateway through the environment.
SECRETS = {
    "EB_GOLDEN": "sk",  # providers.md 9.2: client_id ak, client_secret sk
    "EB_CONC": "SK-conc-SECRET-4e1f22",
    "EB_EXP": "SK-exp-SECRET-7b33c0",
    "EB_R111": "SK-r111-SECRET-91d0aa",
    "EB_R18": "SK-r18-SECRET-0c5e77",
    "EB_BAD": "SK-bad-SECRET-5a5a5a",
}
ENV = {"LMT_" + k: v for k, v in SECRETS.items()}
CLIENTS = {
    "ak": dict(secret=SECRETS["EB_GOLDEN"], scenario="golden"),
    "ak-conc": dict(secret=SECRETS["EB_CONC"], scenario="golden", delay=0.3),
    "ak-exp": dict(secret=SECRETS["EB_EXP"], scenario="golden"),
    "ak-r111": dict(secret=SECRETS["EB_R111"], scenario="always111"),
    "ak-r18": dict(secret=SECRETS["EB_R18"], scenario="rate18"),
}
BAD_CLIENT = "ak-unknown-3d3d"  # not in CLIENTS: the token endpoint refuses it
TIMEOUT = 8

# --------------------------------------------------------------------------- golden bodies
SYS_USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
U12 = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
U30 = {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}

G1_UP = {"messages": [{"role": "user", "content": "Say hi"}], "system": "You are terse.",
         "temperature": 0.2, "max_output_tokens": 16}
G2_UP = dict(G1_UP, stream=True)
G3_UP = {"messages": [{"role": "user", "content": "Weather in Paris?"}],
         "functions": [{"name": "get_weather", "description": "Get weather",
                        "parameters": TOOLS[0]["function"]["parameters"]}]}


def G1(model):
    return {"model": model, "messages": [dict(m) for m in SYS_USER], "max_tokens": 16, "temperature": 0.2}


def G2(model):
    return dict(G1(model), stream=True, stream_options={"include_usage": True})


def G3(model):
    return {"model": model, "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": json.loads(json.dumps(TOOLS)), "tool_choice": "auto"}


def D(o):
    return json.dumps(o, separators=(",", ":"))


# --------------------------------------------------------------------------- the mock
class Baidu:
    """State shared by the API mock and the separate OAuth mock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.token_calls = {}  # client_id -> count
        self.chat_calls = {}  # client_id -> count
        self.tokens = {}  # issued token -> client_id
        self.expired = set()  # tokens answered with 111
        self.violations = []
        self.err_sse_ctype = False  # send a stream request's error as text/event-stream

    def bad(self, msg):
        with self.lock:
            self.violations.append(msg)

    def count(self, table, client):
        with self.lock:
            table[client] = table.get(client, 0) + 1
            return table[client]

    def calls(self, table, client):
        with self.lock:
            return table.get(client, 0)

    def latest_token(self, client):
        with self.lock:
            issued = [t for t, c in self.tokens.items() if c == client]
            return issued[-1] if issued else None


# socketserver listens with a backlog of 5: 20 concurrent upstream connects
# would partly wait for a SYN retransmit (1 s). Only this process's mocks.
ThreadingHTTPServer.request_queue_size = 128

baidu = Baidu()
api = Mock()  # chat and embeddings (base_url)
oauth = Mock()  # a second host for oauth_url


def query(h):
    return {k: v[0] for k, v in parse_qs(urlsplit(h.path).query, keep_blank_values=True).items()}


def token_endpoint(h, body):
    q = query(h)
    if h.command != "POST" or body:
        baidu.bad("token: want POST with an empty body, got %s %r" % (h.command, body[:100]))
    if q.get("grant_type") != "client_credentials":
        baidu.bad("token: grant_type %r" % q.get("grant_type"))
    client = q.get("client_id", "")
    info = CLIENTS.get(client)
    n = baidu.count(baidu.token_calls, client)
    if info and info.get("delay"):
        time.sleep(info["delay"])
    if info is None:
        return json_reply(h, 401, {"error": "invalid_client", "error_description": "unknown client id"})
    if q.get("client_secret") != info["secret"]:
        return json_reply(h, 401, {"error": "invalid_client", "error_description": "Client authentication failed"})
    tok = "24.test" if client == "ak" and n == 1 else "24.%s.%d" % (client, n)
    with baidu.lock:
        baidu.tokens[tok] = client
    json_reply(h, 200, {"access_token": tok, "expires_in": 2592000, "refresh_token": "25.test",
                        "scope": "x", "session_key": "x", "session_secret": "x"})


def v1_error(h, code, msg, stream=False):
    body = {"error_code": code, "error_msg": msg}
    if stream and baidu.err_sse_ctype:  # a plain JSON body under an SSE content type
        data = D(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        return
    json_reply(h, 200, body)


def check_placement(b):
    """What Baidu's v1 API refuses; returns an error message or None."""
    msgs = b.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "messages must be a non-empty list"
    for k in ("max_tokens", "max_completion_tokens", "tools", "stream_options", "n", "model"):
        if k in b:
            return "unexpected field %s" % k
    roles = [m.get("role") for m in msgs]
    if "system" in roles or "developer" in roles:
        return "invalid role: system belongs in the top-level system field"
    if len(msgs) % 2 == 0:
        return "messages length must be odd"
    for i, r in enumerate(roles):
        want = ("user", "function") if i % 2 == 0 else ("assistant",)
        if r not in want or (i == 0 and r != "user"):
            return "invalid role sequence %s" % roles
    if "temperature" in b and not (0 < b["temperature"] <= 1):
        return "temperature out of range"
    if "max_output_tokens" in b and b["max_output_tokens"] < 2:
        return "max_output_tokens below 2"
    return None


def chat_endpoint(h, body):
    if (h.headers.get("Content-Type") or "").split(";")[0] != "application/json":
        baidu.bad("chat: Content-Type %r" % h.headers.get("Content-Type"))
    try:
        b = json.loads(body)
    except ValueError:
        baidu.bad("chat: body is not JSON: %r" % body[:200])
        return v1_error(h, 336002, "invalid JSON")
    stream = b.get("stream") is True
    tok = query(h).get("access_token")
    with baidu.lock:
        client = baidu.tokens.get(tok) if tok else None
        expired = tok in baidu.expired
    if client is None:
        return v1_error(h, 110, "Access token invalid or no longer valid", stream)
    baidu.count(baidu.chat_calls, client)
    if expired:
        return v1_error(h, 111, "Access token expired", stream)
    problem = check_placement(b)
    if problem:
        baidu.bad("chat (%s): %s: %s" % (client, problem, body[:300]))
        return v1_error(h, 336003, problem)
    scenario = CLIENTS[client]["scenario"]
    if scenario == "always111":
        return v1_error(h, 111, "Access token expired", stream)
    if scenario == "rate18":
        return v1_error(h, 18, "Open api qps request limit reached", stream)
    if "functions" in b:
        if b != G3_UP:
            baidu.bad("G3 body: %s" % body[:400])
        return json_reply(h, 200, {
            "id": "as-g3", "object": "chat.completion", "created": 1700000000, "result": "",
            "is_truncated": False, "need_clear_history": False, "finish_reason": "function_call",
            "function_call": {"name": "get_weather", "thoughts": "need weather",
                              "arguments": "{\"city\":\"Paris\"}"}, "usage": U30})
    if stream:
        if b != G2_UP:
            baidu.bad("G2 body: %s" % body[:400])
        ev = {"id": "as-g2", "object": "chat.completion", "created": 1700000000, "is_truncated": False,
              "need_clear_history": False}
        parts = ["data: %s\n\n" % D(dict(ev, sentence_id=0, is_end=False, result="Hi",
                                          usage={"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13})),
                 "data: %s\n\n" % D(dict(ev, sentence_id=1, is_end=True, result="!", finish_reason="normal",
                                          usage=U12))]
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for p in parts:
            data = p.encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")
        return
    if {k: v for k, v in b.items() if k != "stream"} != G1_UP or b.get("stream", False) is not False:
        baidu.bad("G1 body: %s" % body[:400])
    json_reply(h, 200, {"id": "as-g1", "object": "chat.completion", "created": 1700000000, "result": "Hi!",
                        "is_truncated": False, "need_clear_history": False, "finish_reason": "normal",
                        "usage": U12})


def embed_endpoint(h, body):
    tok = query(h).get("access_token")
    with baidu.lock:
        client = baidu.tokens.get(tok) if tok else None
    if client is None:
        return v1_error(h, 110, "Access token invalid or no longer valid")
    if json.loads(body) != {"input": ["alpha", "beta"]}:
        baidu.bad("embeddings body: %r" % body[:300])
    json_reply(h, 200, {"id": "as-emb", "object": "embedding_list", "created": 1687155816,
                        "data": [{"object": "embedding", "embedding": [0.1, 0.2], "index": 0},
                                 {"object": "embedding", "embedding": [0.3, 0.4], "index": 1}],
                        "usage": {"prompt_tokens": 3, "total_tokens": 3}})


CHAT = "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/"
for ep in ("completions", "completions_pro"):
    api.routes[CHAT + ep] = chat_endpoint
api.routes["/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/embedding-v1"] = embed_endpoint
api.routes["/oauth/2.0/token"] = token_endpoint
oauth.routes["/oauth/2.0/token"] = token_endpoint

# --------------------------------------------------------------------------- the gateway
TIMEOUTS = "    connect_timeout 2s\n    first_byte_timeout 5s\n    idle_timeout 5s\n"


def channel(name, models, client, secret_env, extra=()):
    lines = ["plugin ernie", "models " + models, "base_url " + api.url, "client_id " + client,
             "client_secret env:LMT_" + secret_env] + list(extra)
    return "channel %s {\n%s%s}\n" % (name, "".join("    %s\n" % s for s in lines), TIMEOUTS)


CHANNELS = "".join([
    channel("eb", "ERNIE-3.5-8K embedding-v1", "ak", "EB_GOLDEN"),
    channel("eb-conc", "eb-conc=ERNIE-4.0-8K", "ak-conc", "EB_CONC", ["oauth_url " + oauth.url + "/"]),
    channel("eb-exp", "eb-exp=ERNIE-3.5-8K", "ak-exp", "EB_EXP"),
    channel("eb-r111", "eb-r111=ERNIE-3.5-8K", "ak-r111", "EB_R111"),
    channel("eb-r18", "eb-r18=ERNIE-3.5-8K", "ak-r18", "EB_R18"),
    channel("eb-bad", "eb-bad=ERNIE-3.5-8K", BAD_CLIENT, "EB_BAD"),
])

gw = None


def setup():
    global gw
    # debug: the plugin logs dropped fields there; no secret may appear even then
    gw = Gateway(channels=CHANNELS, extra="log_level debug\n", env=ENV, workers=2)


# --------------------------------------------------------------------------- assertions
class Watch:
    """Violations the mock saw during one test."""

    def __init__(self):
        self.v0 = len(baidu.violations)

    def clean(self):
        new = baidu.violations[self.v0:]
        check(not new, "the mock saw invalid v1 requests: %s" % "; ".join(new[:3]))


def no_secret(raw, what="response"):
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    for k, v in SECRETS.items():
        if len(v) > 4:  # the golden "sk" is too short to search for
            check(v not in text, "secret %s appears in the %s" % (k, what))


def error_of(js, raw):
    check(isinstance(js, dict) and isinstance(js.get("error"), dict), "not an OpenAI error: %r" % raw[:300])
    return js["error"]


def ok_g1(st, js, raw):
    check(st == 200, "status %d: %r" % (st, raw[:300]))
    c0 = js["choices"][0]
    check(c0["message"]["content"] == "Hi!", "content %r" % c0["message"])
    check(c0["finish_reason"] == "stop", "finish_reason %r" % c0["finish_reason"])
    check(js["usage"]["prompt_tokens"] == 12 and js["usage"]["completion_tokens"] == 2
          and js["usage"]["total_tokens"] == 14, "usage %r" % js.get("usage"))


def ok_g2(st, events, raw):
    check(st == 200, "status %d: %r" % (st, raw[:300]))
    check(events and events[-1] == "[DONE]" and events.count("[DONE]") == 1, "one [DONE] at the end: %r" % raw[-200:])
    chunks = sse_json(events)
    check(content_of(events) == "Hi!", "content %r" % content_of(events))
    deltas = [(c.get("delta") or {}).get("content") for ch in chunks for c in ch.get("choices", [])]
    check([d for d in deltas if d] == ["Hi", "!"], "content deltas %r" % deltas)
    fins = [c["finish_reason"] for ch in chunks for c in ch.get("choices", []) if c.get("finish_reason")]
    check(fins == ["stop"], "finish reasons %r" % fins)
    first = chunks[0]["choices"][0]["delta"]
    check(first.get("role") == "assistant", "first delta %r" % first)
    last = chunks[-1]
    check(last.get("choices") == [] and last.get("usage", {}).get("total_tokens") == 14
          and last["usage"]["prompt_tokens"] == 12 and last["usage"]["completion_tokens"] == 2,
          "usage chunk %r" % last)


# --------------------------------------------------------------------------- tests
def test_g1_plain():
    w = Watch()
    st, js, raw, hdrs = gw.chat(G1("ERNIE-3.5-8K"), timeout=TIMEOUT)
    ok_g1(st, js, raw)
    check(js["object"] == "chat.completion" and js["model"] == "ERNIE-3.5-8K", "shape %r" % js)
    check(baidu.calls(baidu.token_calls, "ak") == 1, "token calls %d" % baidu.calls(baidu.token_calls, "ak"))
    check("channel=eb;" in hdrs.get("X-Longmen-Route", ""), "route %r" % hdrs.get("X-Longmen-Route"))
    w.clean()


def test_g2_stream():
    w = Watch()
    st, events, raw, _ = gw.stream(G2("ERNIE-3.5-8K"), timeout=TIMEOUT)
    ok_g2(st, events, raw)
    check(baidu.calls(baidu.token_calls, "ak") == 1, "the cached token is reused")
    w.clean()


def test_g3_tool():
    w = Watch()
    st, js, raw, _ = gw.chat(G3("ERNIE-3.5-8K"), timeout=TIMEOUT)
    check(st == 200, "status %d: %r" % (st, raw[:300]))
    c0 = js["choices"][0]
    tc = c0["message"]["tool_calls"]
    check(len(tc) == 1 and tc[0]["type"] == "function" and tc[0]["function"]["name"] == "get_weather",
          "tool_calls %r" % tc)
    check(json.loads(tc[0]["function"]["arguments"]) == {"city": "Paris"}, "arguments %r" % tc[0]["function"])
    check(tc[0]["id"].startswith("call_") and len(tc[0]["id"]) > 5, "id %r" % tc[0]["id"])
    check(c0["finish_reason"] == "tool_calls", "finish_reason %r" % c0["finish_reason"])
    check(js["usage"]["total_tokens"] == 40 and js["usage"]["prompt_tokens"] == 30, "usage %r" % js["usage"])
    w.clean()


def test_embeddings():
    w = Watch()
    st, js, raw, _ = gw.request("POST", "/v1/embeddings", {"model": "embedding-v1", "input": ["alpha", "beta"]},
                                timeout=TIMEOUT)
    check(st == 200, "status %d: %r" % (st, raw[:300]))
    check(js["object"] == "list" and [d["embedding"] for d in js["data"]] == [[0.1, 0.2], [0.3, 0.4]],
          "body %r" % js)
    check(js["usage"]["prompt_tokens"] == 3, "usage %r" % js["usage"])
    # what the official openai client asks by default: base64, decoded to the
    # same floats in full (it once came back with a quarter of its dimensions)
    st, js, raw, _ = gw.request("POST", "/v1/embeddings", {"model": "embedding-v1", "input": ["alpha", "beta"],
                                                           "encoding_format": "base64"}, timeout=TIMEOUT)
    check(st == 200, "status %d: %r" % (st, raw[:300]))
    for d, want in zip(js["data"], ([0.1, 0.2], [0.3, 0.4])):
        raw32 = base64.b64decode(d["embedding"])
        got = list(struct.unpack("<%df" % (len(raw32) // 4), raw32))
        check(got == [struct.unpack("<f", struct.pack("<f", x))[0] for x in want], "base64 %r -> %r" % (d, got))
    w.clean()


def test_token_fetched_once_for_20_concurrent():
    w = Watch()
    results = [None] * 20
    barrier = threading.Barrier(20)

    took = [0.0] * 20

    def one(i):
        barrier.wait()
        t0 = time.time()
        try:
            results[i] = gw.chat(G1("eb-conc"), timeout=TIMEOUT)[:3]
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = (0, None, repr(e).encode())
        took[i] = time.time() - t0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for st, js, raw in results:
        ok_g1(st, js, raw)
    n = baidu.calls(baidu.token_calls, "ak-conc")
    check(n == 1, "token endpoint called %d times for 20 concurrent requests, want 1" % n)
    # every waiter is woken when the one fetch (300 ms) ends, on either worker
    # a waiter never woken would sit until TIMEOUT (8 s) and fail above
    check(all(st == 200 for st, _, _ in results), "every waiter was answered")
    w.clean()


def test_token_expired_is_refreshed():
    w = Watch()
    ok_g1(*gw.chat(G1("eb-exp"), timeout=TIMEOUT)[:3])
    check(baidu.calls(baidu.token_calls, "ak-exp") == 1, "one token so far")
    before = baidu.calls(baidu.chat_calls, "ak-exp")
    baidu.expired.add(baidu.latest_token("ak-exp"))  # Baidu answers it with 111 from now on
    st, js, raw, _ = gw.chat(G1("eb-exp"), timeout=TIMEOUT)
    ok_g1(st, js, raw)
    n = baidu.calls(baidu.token_calls, "ak-exp")
    check(n == 2, "token calls %d, want 2 (one refresh)" % n)
    calls = baidu.calls(baidu.chat_calls, "ak-exp") - before
    check(calls == 2, "chat calls %d, want 2 (refused, then retried)" % calls)
    w.clean()


def test_stream_token_expired_is_refreshed():
    """A stream request's error is one plain JSON body: application/json, then
    text/event-stream starting with '{'. Both must lead to one refresh."""
    w = Watch()
    for sse_ctype in (False, True):
        n0 = baidu.calls(baidu.token_calls, "ak-exp")
        baidu.expired.add(baidu.latest_token("ak-exp"))
        baidu.err_sse_ctype = sse_ctype
        try:
            st, events, raw, _ = gw.stream(G2("eb-exp"), timeout=TIMEOUT)
        finally:
            baidu.err_sse_ctype = False
        check(st == 200, "ctype %s: status %d %r" % ("sse" if sse_ctype else "json", st, raw[:300]))
        ok_g2(st, events, raw)
        n = baidu.calls(baidu.token_calls, "ak-exp") - n0
        check(n == 1, "ctype %s: %d token fetches, want 1" % ("sse" if sse_ctype else "json", n))
    w.clean()


def test_always_111_retries_once():
    st, js, raw, _ = gw.chat(G1("eb-r111"), timeout=TIMEOUT)
    check(st == 401, "status %d, want 401: %r" % (st, raw[:300]))
    e = error_of(js, raw)
    check(e["type"] == "authentication_error" and e["code"] == "111", "error %r" % e)
    time.sleep(0.5)  # a retry loop would keep calling
    calls = baidu.calls(baidu.chat_calls, "ak-r111")
    toks = baidu.calls(baidu.token_calls, "ak-r111")
    check(calls == 2, "chat calls %d, want 2 (exactly one retry)" % calls)
    check(toks == 2, "token calls %d, want 2" % toks)
    no_secret(raw)


def test_stream_always_111_is_401():
    c0 = baidu.calls(baidu.chat_calls, "ak-r111")
    st, js, raw, _ = gw.chat(G2("eb-r111"), timeout=TIMEOUT)
    check(st == 401, "status %d, want 401 before the first byte: %r" % (st, raw[:300]))
    check(error_of(js, raw)["code"] == "111", "error %r" % js)
    time.sleep(0.3)
    calls = baidu.calls(baidu.chat_calls, "ak-r111") - c0
    check(calls == 2, "chat calls %d, want 2" % calls)


def test_oauth_failure_is_401():
    for body in (G1("eb-bad"), G2("eb-bad")):
        st, js, raw, _ = gw.chat(body, timeout=TIMEOUT)
        check(st == 401, "status %d, want 401: %r" % (st, raw[:300]))
        e = error_of(js, raw)
        check(e["type"] == "authentication_error", "type %r" % e)
        check(e["code"] == "invalid_client", "code %r" % e)
        check("unknown client id" in e["message"], "message %r" % e["message"])
        check(BAD_CLIENT not in raw.decode(), "client_id in the answer: %r" % raw)
        no_secret(raw)
        time.sleep(1.1)  # the host holds a failed fetch for a second; the next one fetches again
    no_secret(gw.logtext(), "gateway log")


def test_rate_limit_18_is_429():
    st, js, raw, _ = gw.chat(G1("eb-r18"), timeout=TIMEOUT)
    check(st == 429, "status %d, want 429: %r" % (st, raw[:300]))
    e = error_of(js, raw)
    check(e["type"] == "rate_limit_error" and e["code"] == "18", "error %r" % e)
    check(e["message"] == "Open api qps request limit reached", "message %r" % e["message"])


def test_no_secret_in_log():
    log = gw.logtext()
    no_secret(log, "gateway log")
    with baidu.lock:
        issued = list(baidu.tokens)
    for t in issued:
        check(t not in log, "access token %s appears in the gateway log" % t)


def test_clean_shutdown():
    rc = gw.stop()
    check(rc == 0, "clean exit on SIGTERM, rc=%s\n%s" % (rc, gw.logtext()[-2000:]))
    api.close()
    oauth.close()


if __name__ == "__main__":
    def _overtime():
        print("FAIL test_ernie1: over 55 s, aborted", flush=True)
        if gw is not None and gw.proc.poll() is None:
            gw.proc.kill()
        os._exit(3)
    _timer = threading.Timer(55, _overtime)  # hard bound on the whole file
    _timer.daemon = True
    _timer.start()
    setup()
    run([test_g1_plain, test_g2_stream, test_g3_tool, test_embeddings,
         test_token_fetched_once_for_20_concurrent, test_token_expired_is_refreshed,
         test_stream_token_expired_is_refreshed, test_always_111_retries_once,
         test_stream_always_111_is_401, test_oauth_failure_is_401, test_rate_limit_18_is_429,
         test_no_secret_in_log, test_clean_shutdown])
