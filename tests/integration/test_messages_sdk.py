"""The official Anthropic SDK (@anthropic-ai/sdk, pinned in
tests/integration/anthropic_sdk/package.json) against the real binary and a
Qwen (DashScope native) channel mock: messages.create, messages.stream
(finalMessage text and usage), a tool-use round trip plain and streamed, a
Claude Code-style request (system blocks, tools, thinking enabled, a long
stream, the key as a bearer token) and a typed authentication error.

The SDK is installed with `npm ci` from the lock file when node_modules is
missing. Without node the test prints a SKIP line and passes; without
network for a first install it fails (never a silent pass).
"""
import json
import os
import shutil
import subprocess
import sys

import test_providers as tp
from lib import KEY, Gateway, Mock, check, json_reply, run
from test_providers import chunked

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "anthropic_sdk")
QW_CHAT = "/api/v1/services/aigc/text-generation/generation"
qwen = Mock()


def D(o):
    return json.dumps(o, separators=(",", ":"))


def qw_ev(i, msg, finish, out):
    d = {"output": {"choices": [{"message": dict(msg, role="assistant"), "finish_reason": finish}]},
         "usage": {"input_tokens": 12, "output_tokens": out, "total_tokens": 12 + out}, "request_id": "req-sdk"}
    return "id:%d\nevent:result\n:HTTP_STATUS/200\ndata:%s\n\n" % (i, D(d))


CALL = [{"index": 0, "id": "call_sdk1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]


def qw_chat(h, body):
    b = json.loads(body)
    p = b.get("parameters") or {}
    msgs = b["input"]["messages"]
    stream = (h.headers.get("X-DashScope-SSE") == "enable")
    last = msgs[-1]
    if last["role"] == "tool":
        if last.get("tool_call_id") != "call_sdk1" or last.get("content") != "sunny, 21C":
            return json_reply(h, 400, {"code": "InvalidParameter", "message": "tool turn: %s" % D(msgs)})
        msg, out = {"content": "It is sunny in Paris."}, 6
        finish = "stop"
    elif "tools" in p and "long" not in D(msgs):
        msg, out, finish = {"content": "", "tool_calls": CALL}, 10, "tool_calls"
    elif "long" in D(msgs):
        if msgs[0] != {"role": "system", "content": "You are Claude Code.\n\nBe helpful."}:
            return json_reply(h, 400, {"code": "InvalidParameter", "message": "system: %s" % D(msgs[0])})
        parts = ["word "] * 199 + ["word"]
        return chunked(h, "text/event-stream", [qw_ev(i + 1, {"content": t}, "stop" if i == 199 else "null", i + 1)
                                                for i, t in enumerate(parts)])
    else:
        msg, out, finish = {"content": "Hello from Qwen."}, 4, "stop"
    if not stream:
        return json_reply(h, 200, {"output": {"choices": [{"finish_reason": finish,
                                                           "message": dict(msg, role="assistant")}]},
                                   "usage": {"input_tokens": 12, "output_tokens": out, "total_tokens": 12 + out},
                                   "request_id": "req-sdk"})
    if "tool_calls" in msg:
        return chunked(h, "text/event-stream", [qw_ev(1, msg, "null", 5), qw_ev(2, {"content": ""}, finish, out)])
    text = msg["content"]
    return chunked(h, "text/event-stream", [qw_ev(1, {"content": text[:6]}, "null", 2),
                                            qw_ev(2, {"content": text[6:]}, finish, out)])


qwen.routes[QW_CHAT] = qw_chat
gw = None


def sdk_ready():
    if os.path.isdir(os.path.join(HERE, "node_modules", "@anthropic-ai", "sdk")):
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True,
                       timeout=300)
    check(r.returncode == 0, "npm ci failed (network?): %s" % (r.stdout + r.stderr)[-2000:])


def test_anthropic_sdk():
    sdk_ready()
    r = subprocess.run(["node", "sdk_check.mjs", "http://127.0.0.1:%d" % gw.port, KEY, "qwen-plus"], cwd=HERE, capture_output=True, text=True,
                       timeout=120)
    sys.stdout.write(r.stdout)
    check(r.returncode == 0, "the SDK failed:\n%s\n%s" % (r.stdout, r.stderr[-3000:]))
    for case in ("create", "stream", "tools", "tools-stream", "claude-code", "auth-error"):
        check("OK " + case in r.stdout, "case %s did not run" % case)


def main():
    global gw
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("SKIP test_anthropic_sdk: node/npm not installed (the Anthropic SDK test needs Node 18+)")
        return
    gw = Gateway(channels=tp.channel("qwen", "qwen", "qwen-plus",
                                     ["base_url " + qwen.url, "api_key env:LMT_QWEN"]), env=tp.ENV)
    try:
        run([test_anthropic_sdk])
    finally:
        gw.stop()


if __name__ == "__main__":
    main()
