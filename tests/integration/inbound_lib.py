"""Shared setup for the inbound-API tests (/v1/messages, /v1/responses):
a gateway with an admin listener (for the ledger), Anthropic requests and
SSE parsing, ledger rows, a raw-socket client that leaves mid-stream,
scripted Anthropic / Responses / OpenAI-compatible upstreams, and what the
Node SDK tests share (installing the SDKs, a DashScope native answer).
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from lib import KEY, Gateway, Mock, admin_call, check, free_port, json_reply, run, sse_reply, usage_chunk
from lib import chunk as oa_chunk

SDK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "anthropic_sdk")


class AdminGateway(Gateway):
    """A Gateway with a data_dir and an admin listener; .admin holds the token."""

    def __init__(self, channels, env=None, workers=2, extra=""):
        self.admin_port = free_port()
        super().__init__(channels=channels, env=env, workers=workers,
                         extra="data_dir %s\nadmin_listen 127.0.0.1:%d\n%s"
                         % (tempfile.mkdtemp(prefix="lm-inb-"), self.admin_port, extra))
        self.admin = re.search(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)", self.logtext()).group(1)

    def msgs(self, body, headers=None, timeout=10, path="/v1/messages"):
        h = {"anthropic-version": "2023-06-01", "x-api-key": KEY}
        h.update(headers or {})
        return self.request("POST", path, body, key=None, headers=h, timeout=timeout)

    def usage_rows(self, rid, want=1):
        """The request's ledger rows once `want` are written (bounded wait)."""
        deadline = time.time() + 10
        while True:
            st, js = admin_call(self.admin_port, self.admin, "GET", "/admin/usage/rows?limit=100")
            check(st == 200, "admin usage %d" % st)
            rows = [r for r in js["data"] if r["request_id"] == rid]
            if len(rows) >= want or time.time() > deadline:
                return sorted(rows, key=lambda r: r["attempt"])
            time.sleep(0.05)

    def leave_mid_stream(self, path, body, marker, count, headers=None, bearer=True):
        """POST a stream on a raw socket, read until `marker` was seen `count`
        times, hang up; returns (request id, bytes received). Without bearer
        only `headers` carry the key."""
        data = json.dumps(body)
        h = {"Authorization": "Bearer " + KEY} if bearer else {}
        h["anthropic-version"] = "2023-06-01"
        h.update(headers or {})
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
                   "Content-Length: %d\r\n\r\n%s" % (path, "".join("%s: %s\r\n" % kv for kv in h.items()),
                                                     len(data), data)).encode())
        got = b""
        while got.count(marker) < count:
            b = s.recv(65536)
            check(b, "stream ended early: %r" % got[-300:])
            got += b
        s.close()
        rid = [ln.split(b":", 1)[1].strip().decode() for ln in got.split(b"\r\n")
               if ln.lower().startswith(b"x-request-id:")][0]
        return rid, got


def events_of(raw):
    """[(event name, data dict)] of an SSE body (bytes or str)."""
    out = []
    text = raw.decode() if isinstance(raw, bytes) else raw
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        if data and data != "[DONE]":
            d = json.loads(data)
            out.append((name or d.get("type"), d))
    return out


def msgs_text(evs, kind="text_delta", field="text"):
    return "".join(d["delta"].get(field, "") for n, d in evs
                   if n == "content_block_delta" and d["delta"]["type"] == kind)


def msgs_usage(evs):
    """message_start's usage updated by the last message_delta's."""
    u = {}
    for n, d in evs:
        if n == "message_start":
            u.update(d["message"].get("usage") or {})
        elif n == "message_delta":
            u.update(d.get("usage") or {})
    return u


# ---- scripted Anthropic answers (what a Claude upstream sends) ----

def ant_event(d):
    return "event: %s\ndata: %s\n\n" % (d["type"], json.dumps(d))


def ant_stream(text_parts, model, in_tok=25, out_tok=None, thinking=None, tool=None, stop="end_turn"):
    """Anthropic's event sequence, as SSE text blocks (one per event)."""
    evs = [{"type": "message_start", "message": {
        "id": "msg_up1", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": in_tok, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1}}}]
    idx = 0
    if thinking:
        evs.append({"type": "content_block_start", "index": idx,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
        evs.append({"type": "content_block_delta", "index": idx,
                    "delta": {"type": "thinking_delta", "thinking": thinking}})
        evs.append({"type": "content_block_delta", "index": idx,
                    "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}})
        evs.append({"type": "content_block_stop", "index": idx})
        idx += 1
    evs.append({"type": "content_block_start", "index": idx, "content_block": {"type": "text", "text": ""}})
    evs.append({"type": "ping"})
    for p in text_parts:
        evs.append({"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": p}})
    evs.append({"type": "content_block_stop", "index": idx})
    if tool:
        idx += 1
        evs.append({"type": "content_block_start", "index": idx, "content_block": {
            "type": "tool_use", "id": tool[0], "name": tool[1], "input": {}}})
        evs.append({"type": "content_block_delta", "index": idx,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(tool[2])}})
        evs.append({"type": "content_block_stop", "index": idx})
    evs.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": out_tok if out_tok is not None else 5 * len(text_parts)}})
    evs.append({"type": "message_stop"})
    return [ant_event(e) for e in evs]


def ant_message(text, model, in_tok=25, out_tok=7, tool=None, stop="end_turn", cache_read=3):
    content = [{"type": "text", "text": text}]
    if tool:
        content.append({"type": "tool_use", "id": tool[0], "name": tool[1], "input": tool[2]})
    return {"id": "msg_up2", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": in_tok, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read,
                      "output_tokens": out_tok}}


def ant_error(etype, msg):
    return {"type": "error", "error": {"type": etype, "message": msg}}


# ---- scripted Responses answers (what an upstream /v1/responses sends) ----

def resp_event(d):
    return "event: %s\ndata: %s\n\n" % (d["type"], json.dumps(d))


def resp_object(text, model, in_tok=11, out_tok=6, status="completed"):
    return {"id": "resp_up1", "object": "response", "created_at": 1, "status": status, "model": model,
            "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": in_tok, "input_tokens_details": {"cached_tokens": 2},
                      "output_tokens": out_tok, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": in_tok + out_tok}}


def resp_stream(parts, model, in_tok=11, out_tok=6):
    """The Responses API's event sequence for a text answer."""
    full = "".join(parts)
    base = resp_object("", model, in_tok, out_tok, status="in_progress")
    base["output"], base["usage"] = [], None
    evs = [{"type": "response.created", "sequence_number": 0, "response": base},
           {"type": "response.in_progress", "sequence_number": 1, "response": base},
           {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
            "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}},
           {"type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}]
    for i, p in enumerate(parts):
        evs.append({"type": "response.output_text.delta", "sequence_number": 4 + i, "item_id": "msg_1",
                    "output_index": 0, "content_index": 0, "delta": p})
    n = 4 + len(parts)
    evs += [{"type": "response.output_text.done", "sequence_number": n, "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "text": full},
            {"type": "response.completed", "sequence_number": n + 1,
             "response": resp_object(full, model, in_tok, out_tok)}]
    return [resp_event(e) for e in evs]


# ---- a scripted OpenAI-compatible upstream (the "own" channel) ----

class OwnUpstream(Mock):
    """/v1/chat/completions answering `reply` (plain), `script` (streamed,
    `delay` apart) or, when `status` is not 200, a rate-limit error."""

    def __init__(self):
        super().__init__()
        self.script, self.reply, self.delay, self.status = [], {}, 0.0, 200
        self.routes["/v1/chat/completions"] = self.chat

    def chat(self, h, body):
        if self.status != 200:
            return json_reply(h, self.status, {"error": {"message": "Rate limit reached", "type": "requests",
                                                         "code": "rate_limit_exceeded"}}, headers={"Retry-After": "1"})
        b = json.loads(body)
        if b.get("stream"):
            return sse_reply(h, self.script, delay=self.delay)
        return json_reply(h, 200, self.reply)

    def last_body(self):
        with self.lock:
            return json.loads(self.requests[-1]["body"])


def own_tool_call_reply():
    """A chat completion that calls get_weather for Paris."""
    return {"id": "chatcmpl-t1", "object": "chat.completion", "created": 1, "model": "own-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}


def own_reasoning_chunks():
    """The two reasoning_content chunks that open a thinking answer."""
    return [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "own-model",
         "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Let me think."}, "finish_reason": None}]},
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "own-model",
         "choices": [{"index": 0, "delta": {"reasoning_content": " Done."}, "finish_reason": None}]}]


def no_violations(golden):
    """No upstream of golden [(model, mock)] saw a bad request (and none is remembered)."""
    for _, up in golden:
        with up.lock:
            v, up.violations[:] = list(up.violations), []
        check(not v, "upstream saw a bad request: %s" % v)


def check_abort_billed(gw, own, path, body, marker, count, api, **kw):
    """A stream of 42 words the client leaves after `count` markers: one
    ledger row, client_aborted, billed for what was received."""
    own.script = [oa_chunk("word ", role="assistant")] + [oa_chunk("word ") for _ in range(40)] + \
        [oa_chunk("end", finish="stop"), usage_chunk(10, 42), "[DONE]"]
    own.delay = 0.05
    try:
        rid, _ = gw.leave_mid_stream(path, body, marker, count, **kw)
    finally:
        own.delay = 0
    rows = gw.usage_rows(rid)
    check(len(rows) == 1, "rows %s" % rows)
    r = rows[0]
    check(r["client_aborted"] and r["api"] == api, "row %s" % r)
    check(0 < r["completion_tokens"] < 42 and r["status"] == 200, "billed for what was received: %s" % r)


# ---- the Node SDK tests ----

def sdk_ready(*packages):
    """The SDKs under anthropic_sdk/node_modules, installed by `npm ci` from
    the lock file when one of `packages` is missing."""
    if all(os.path.isdir(os.path.join(SDK_DIR, "node_modules", p)) for p in packages):
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SDK_DIR, capture_output=True, text=True,
                       timeout=300)
    check(r.returncode == 0, "npm ci failed (network?): %s" % (r.stdout + r.stderr)[-2000:])


def D(o):
    """Compact JSON."""
    return json.dumps(o, separators=(",", ":"))


def qw_ev(i, msg, finish, out, request_id):
    """One DashScope native SSE event of an answer with 12 input tokens."""
    d = {"output": {"choices": [{"message": dict(msg, role="assistant"), "finish_reason": finish}]},
         "usage": {"input_tokens": 12, "output_tokens": out, "total_tokens": 12 + out}, "request_id": request_id}
    return "id:%d\nevent:result\n:HTTP_STATUS/200\ndata:%s\n\n" % (i, D(d))


SDK_CALL = [{"index": 0, "id": "call_sdk1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]


def qw_sdk_chat(h, body, first=None, turn_ok=None):
    """The DashScope native answers of the SDK tests: the tool result of
    call_sdk1 ("sunny, 21C", and turn_ok(messages) when given) gets the
    weather, else first(h, messages) may answer (True when it did), offered
    tools get the call SDK_CALL, anything else a greeting."""
    from test_providers import chunked  # imported by every caller already
    b = json.loads(body)
    p = b.get("parameters") or {}
    msgs = b["input"]["messages"]
    stream = h.headers.get("X-DashScope-SSE") == "enable"
    last = msgs[-1]
    if last["role"] == "tool":
        if last.get("tool_call_id") != "call_sdk1" or last.get("content") != "sunny, 21C" or \
                (turn_ok and not turn_ok(msgs)):
            return json_reply(h, 400, {"code": "InvalidParameter", "message": "tool turn: %s" % D(msgs)})
        msg, out, finish = {"content": "It is sunny in Paris."}, 6, "stop"
    elif first and first(h, msgs):
        return None
    elif "tools" in p:
        msg, out, finish = {"content": "", "tool_calls": SDK_CALL}, 10, "tool_calls"
    else:
        msg, out, finish = {"content": "Hello from Qwen."}, 4, "stop"
    if not stream:
        return json_reply(h, 200, {"output": {"choices": [{"finish_reason": finish,
                                                           "message": dict(msg, role="assistant")}]},
                                   "usage": {"input_tokens": 12, "output_tokens": out, "total_tokens": 12 + out},
                                   "request_id": "req-sdk"})
    if "tool_calls" in msg:
        return chunked(h, "text/event-stream", [qw_ev(1, msg, "null", 5, "req-sdk"),
                                                qw_ev(2, {"content": ""}, finish, out, "req-sdk")])
    text = msg["content"]
    return chunked(h, "text/event-stream", [qw_ev(1, {"content": text[:6]}, "null", 2, "req-sdk"),
                                            qw_ev(2, {"content": text[6:]}, finish, out, "req-sdk")])


def run_sdk_script(gw, script, cases):
    """node `script` (in anthropic_sdk/) against gw with the test key and
    qwen-plus; its output is echoed, and every case must report OK."""
    r = subprocess.run(["node", script, "http://127.0.0.1:%d" % gw.port, KEY, "qwen-plus"], cwd=SDK_DIR,
                       capture_output=True, text=True, timeout=120)
    sys.stdout.write(r.stdout)
    check(r.returncode == 0, "the SDK failed:\n%s\n%s" % (r.stdout, r.stderr[-3000:]))
    for case in cases:
        check("OK " + case in r.stdout, "case %s did not run" % case)


def sdk_test_main(name, qwen, packages, script, cases, what):
    """The main of an SDK test: a gateway with one Qwen channel on the mock
    qwen, then the case `name` runs node `script` (run_sdk_script) once the
    SDK `packages` are installed. Without node it prints a SKIP line."""
    import test_providers as tp  # imported by every caller already
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("SKIP %s: node/npm not installed (%s needs Node 18+)" % (name, what))
        return
    gw = Gateway(channels=tp.channel("qwen", "qwen", "qwen-plus",
                                     ["base_url " + qwen.url, "api_key env:LMT_QWEN"]), env=tp.ENV)

    def case():
        sdk_ready(*packages)
        run_sdk_script(gw, script, cases)

    case.__name__ = name
    try:
        run([case])
    finally:
        gw.stop()
