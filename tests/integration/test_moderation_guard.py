"""scripts/moderation_guard.lua with lm.moderate: a side call to a moderation
channel while the request is parked. Flagged requests are refused before the
chat upstream is called, a missing verdict (500, timeout) fails closed (or
passes with fail_open), the side call is billed as its own ledger row, and a
client leaving or a reload while parked is safe."""
import http.client
import json
import os
import re
import socket
import tempfile
import threading
import time

from lib import (ROOT, Gateway, Mock, admin_key, check, content_of, free_port, json_reply,
                 ledger_rows, run, sse_reply, chunk, usage_chunk)
from redis_server import RedisServer, available as redis_available

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
WAIT = 10
GUARD = os.path.join(ROOT, "scripts", "moderation_guard.lua")

up = Mock()
gw = None
admin_port = None
token = None
secret = None
chat_calls = []
slow_gate = threading.Event()


def moderations(h, body):
    text = json.loads(body)["input"]
    if "BOOM" in text:
        return json_reply(h, 500, {"error": {"message": "moderation broke", "type": "server_error"}})
    if "SLOW" in text:  # past the channel's 1 s request_timeout
        time.sleep(2.5)
    if "WAIT" in text:  # until the test lets it answer
        slow_gate.wait(WAIT)
    flagged = "BAD" in text
    json_reply(h, 200, {"id": "modr-1", "model": "omni-up", "results": [
        {"flagged": flagged, "categories": {"violence": flagged}, "category_scores": {"violence": 0.9 if flagged else 0.01}}]})


def chat(h, body):
    req = json.loads(body)
    chat_calls.append(req)
    if req.get("stream"):
        return sse_reply(h, [chunk(role="assistant", content="ok"), chunk(finish="stop"), usage_chunk(3, 1), "[DONE]"])
    json_reply(h, 200, {"id": "c1", "object": "chat.completion", "created": 1, "model": req["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "answered"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


up.routes["/m/moderations"] = moderations
up.routes["/c/chat/completions"] = chat


def guard_conf(data_dir, port, extra=""):
    """The gateway's settings: a ledger, the admin API, the guard on chat-*
    (fails closed) and open-* (fail_open), a moderation channel."""
    return dict(extra="""data_dir %s
admin_listen 127.0.0.1:%d
%s
script guard %s {
    models chat-*
    args {"model": "omni-mod"}
}
script guard_open %s {
    models open-*
    args {"model": "omni-mod", "fail_open": true}
}
""" % (data_dir, port, extra, GUARD, GUARD), channels="""
channel chat {
    plugin openai
    base_url %s/c
    api_key sk-up-chat
    models chat-1 open-1
}
channel mod {
    plugin openai
    base_url %s/m
    api_key sk-up-mod
    models omni-mod=omni-up
    price omni-up 1 per_1m_chars
    request_timeout 1s
}
""" % (up.url, up.url))


def setup():
    global gw, admin_port, token, secret
    admin_port = free_port()
    gw = Gateway(**guard_conf(tempfile.mkdtemp(prefix="lm-modg-"), admin_port))
    token = TOKEN_RE.search(gw.logtext()).group(1)
    secret = admin_key(admin_port, token, "modg", "10")


def body(text, model="chat-1", **kw):
    b = {"model": model, "messages": [{"role": "user", "content": text}]}
    b.update(kw)
    return b


def mod_calls():
    return [r for r in up.requests if r["path"] == "/m/moderations"]


def test_not_flagged_is_answered_and_billed():
    n_mod, n_chat = len(mod_calls()), len(chat_calls)
    st, js, raw, hdrs = gw.chat(body("hello there"), key=secret)
    check(st == 200 and js["choices"][0]["message"]["content"] == "answered", "answer %s %s" % (st, raw))
    check(len(mod_calls()) == n_mod + 1 and len(chat_calls) == n_chat + 1, "both upstreams called once")
    sent = json.loads(mod_calls()[-1]["body"])
    check(sent == {"model": "omni-up", "input": "hello there"}, "moderation request %s" % sent)
    check(mod_calls()[-1]["headers"].get("Authorization") == "Bearer sk-up-mod", "moderation channel's key")
    rid = hdrs["X-Request-Id"]
    rows = ledger_rows(admin_port, token, rid + "-mod1", WAIT)
    # 1 per 1M characters = 1 micro-unit per character: 11 characters
    check(len(rows) == 1 and rows[0]["cost_micro"] == 11 and rows[0]["channel"] == "mod"
          and rows[0]["api"] == "moderations" and rows[0]["model_served"] == "omni-up"
          and rows[0]["status"] == 200, "side call's row: %s" % rows)
    main = ledger_rows(admin_port, token, rid, WAIT)
    check(len(main) == 1 and main[0]["channel"] == "chat", "the request's own row: %s" % main)
    check(rows[0].get("key_id") == main[0].get("key_id"), "same key: %s %s" % (rows, main))


def test_flagged_is_refused_before_the_chat_upstream():
    n_chat = len(chat_calls)
    st, js, raw, hdrs = gw.chat(body("something BAD"), key=secret)
    check(st == 400 and js["error"]["code"] == "content_flagged"
          and "flagged by content moderation" in js["error"]["message"], "refused: %s %s" % (st, raw))
    check(len(chat_calls) == n_chat, "chat upstream never called")
    rows = ledger_rows(admin_port, token, hdrs["X-Request-Id"] + "-mod1", WAIT)
    check(len(rows) == 1 and rows[0]["cost_micro"] == len("something BAD"), "the verdict is billed: %s" % rows)


def test_stream_request():
    n_chat = len(chat_calls)
    st, events, raw, _ = gw.stream(body("stream me", stream=True), key=secret)
    check(st == 200 and content_of(events) == "ok" and events[-1] == "[DONE]", "stream %s %s" % (st, raw[:300]))
    st, js, raw, _ = gw.chat(body("stream BAD", stream=True), key=secret)
    check(st == 400 and js["error"]["code"] == "content_flagged", "flagged stream: %s %s" % (st, raw))
    check(len(chat_calls) == n_chat + 1, "only the clean stream reached the chat upstream")


def test_no_verdict_fails_closed_or_open():
    n_chat = len(chat_calls)
    st, js, raw, hdrs = gw.chat(body("BOOM"), key=secret)
    check(st == 503 and js["error"]["code"] == "moderation_unavailable"
          and "answered 500" in js["error"]["message"], "500 fails closed: %s %s" % (st, raw))
    check(ledger_rows(admin_port, token, hdrs["X-Request-Id"] + "-mod1", 1) == [], "a failed call bills nothing")
    t0 = time.time()
    st, js, raw, _ = gw.chat(body("SLOW"), key=secret)
    check(st == 503 and js["error"]["code"] == "moderation_unavailable"
          and "timed out" in js["error"]["message"], "timeout fails closed: %s %s" % (st, raw))
    check(time.time() - t0 < 10, "bounded by the channel's request_timeout")
    check(len(chat_calls) == n_chat, "chat upstream never called")
    st, js, raw, _ = gw.chat(body("BOOM", model="open-1"), key=secret)
    check(st == 200 and js["choices"][0]["message"]["content"] == "answered", "fail_open passes: %s %s" % (st, raw))
    check(len(chat_calls) == n_chat + 1, "fail_open reached the chat upstream")


def test_quota_covers_the_side_call_first():
    broke = admin_key(admin_port, token, "modg-broke", "0")
    n_mod, n_chat = len(mod_calls()), len(chat_calls)
    st, js, raw, _ = gw.chat(body("hello"), key=broke)
    check(st == 503 and js["error"]["code"] == "moderation_unavailable"
          and "insufficient quota" in js["error"]["message"], "no quota, no side call: %s %s" % (st, raw))
    check(len(mod_calls()) == n_mod and len(chat_calls) == n_chat, "neither upstream called")


def test_client_leaves_while_parked():
    n_chat = len(chat_calls)
    slow_gate.clear()
    n_mod = len(mod_calls())
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    c.request("POST", "/v1/chat/completions", body=json.dumps(body("WAIT then leave")),
              headers={"Authorization": "Bearer " + secret, "Content-Type": "application/json"})
    deadline = time.time() + WAIT
    while len(mod_calls()) == n_mod and time.time() < deadline:
        time.sleep(0.02)
    check(len(mod_calls()) == n_mod + 1, "the side call started")
    billed = gw.logtext().count("moderation side call 1: channel mod")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    time.sleep(0.3)
    slow_gate.set()  # the moderation channel answers to nobody
    time.sleep(0.3)
    check(len(chat_calls) == n_chat, "chat upstream never called")
    check(gw.logtext().count("moderation side call 1: channel mod") == billed, "the cancelled call is not billed")
    st, js, raw, _ = gw.chat(body("still fine"), key=secret)
    check(st == 200, "the gateway goes on: %s %s" % (st, raw))


def test_reload_while_parked():
    slow_gate.clear()
    out = {}

    def ask():
        out["r"] = gw.chat(body("WAIT through a reload"), key=secret)

    t = threading.Thread(target=ask)
    n_mod = len(mod_calls())
    t.start()
    deadline = time.time() + WAIT
    while len(mod_calls()) == n_mod and time.time() < deadline:
        time.sleep(0.02)
    gw.proc.send_signal(1)
    deadline = time.time() + 5
    while time.time() < deadline and "reloaded: generation 2" not in gw.logtext():
        time.sleep(0.05)
    check("reloaded: generation 2" in gw.logtext(), "reloaded")
    slow_gate.set()
    t.join(WAIT)
    st, js, raw, _ = out["r"]
    check(st == 200 and js["choices"][0]["message"]["content"] == "answered", "answered after the reload: %s %s" % (st, raw))
    st, js, raw, _ = gw.chat(body("after BAD"), key=secret)
    check(st == 400 and js["error"]["code"] == "content_flagged", "the new generation guards too: %s" % raw)


def shared_used(redis):
    """The key's spend in Redis (lm:k:ID:q used), or None before the first."""
    names = re.findall(rb"lm:k:\d+:q", redis.cmd("KEYS", "lm:k:*:q"))
    if len(names) != 1:
        return None
    m = re.search(rb"^:?\$?\d+\r\n(\d+)\r\n", redis.cmd("HGET", names[0].decode(), "used"))
    return int(m.group(1)) if m else None


def test_side_call_counts_in_shared_spend():
    """With Redis (scale-out), a side call's charge is in the key's shared
    spend too, even for a request the guard refuses (never admitted)."""
    if not redis_available():
        print("SKIP test_side_call_counts_in_shared_spend: no redis-server")
        return
    redis = RedisServer()
    port = free_port()
    g = None
    try:
        g = Gateway(**guard_conf(tempfile.mkdtemp(prefix="lm-modg-"), port, "redis " + redis.url))
        tok = TOKEN_RE.search(g.logtext()).group(1)
        sec = admin_key(port, tok, "shared", "10")
        expect = 0
        for text, status in (("hello there", 200), ("something BAD", 400)):
            st, js, raw, _ = g.chat(body(text), key=sec)
            check(st == status, "%s: %s %s" % (text, st, raw))
            expect += len(text)  # 1 micro-unit per character; the chat channel is free
            deadline = time.time() + WAIT  # the settle is queued to the Redis thread
            while shared_used(redis) != expect and time.time() < deadline:
                time.sleep(0.02)
            check(shared_used(redis) == expect,
                  "shared spend %s after %r, want %d" % (shared_used(redis), text, expect))
        check(g.stop() == 0, "exit code")
        g = None
    finally:
        if g:
            g.stop()
        redis.close()


def test_clean_shutdown():
    check(gw.stop() == 0, "exit code")


if __name__ == "__main__":
    setup()
    run([test_not_flagged_is_answered_and_billed, test_flagged_is_refused_before_the_chat_upstream,
         test_stream_request, test_no_verdict_fails_closed_or_open, test_quota_covers_the_side_call_first,
         test_client_leaves_while_parked,
         test_reload_while_parked, test_side_call_counts_in_shared_spend, test_clean_shutdown])
    up.close()
