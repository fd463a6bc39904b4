"""The official SDKs against the real binary for every kind of channel: the
Anthropic SDK (/v1/messages) and the OpenAI SDK's Responses client
(/v1/responses), pinned in tests/integration/anthropic_sdk/, on a Claude
channel (passed through), an OpenAI-compatible one (DeepSeek), Qwen
(DashScope native) and Gemini. Per channel (anthropic_sdk/inbound_check.mjs):
plain, streamed, tools over two turns, an image block, an upstream error as
the SDK's typed error, a Claude Code-style request (system blocks, tools,
thinking enabled, a long stream). Here: a client that leaves mid-stream is
billed for what was received (ledger row), and the issue's "done when": the
Anthropic-SDK stream and the Responses-SDK stream give the same text and
usage as /v1/chat/completions for the same upstream answer (asserted for
every channel, Qwen included).

The SDKs are installed with `npm ci` from the lock file when node_modules
lacks them. Without node the test prints a SKIP line and passes.
"""
import json
import shutil
import subprocess
import sys
import time

from inbound_lib import SDK_DIR, AdminGateway, D, ant_error, ant_message, ant_stream, qw_ev, sdk_ready
from lib import KEY, Mock, check, json_reply, run, sse_reply
from lib import chunk as oa_chunk
from lib import usage_chunk

HELLO = ["Hello ", "there, ", "friend."]
PNG_HEAD = "iVBORw0KGgo"
WORDS = ["word "] * 199 + ["word"]
SLOW = ["word "] * 40
ARGS = {"city": "Paris"}


def scenario(text):
    """What the scripted upstream answers, from the request's bytes:
    (kind, text pieces, output tokens)."""
    if "sunny, 21C" in text:
        return "text", ["It is sunny ", "in Paris."], 6
    if "trigger-error" in text:
        return "error", None, 0
    if "Write a long answer" in text:
        return "text", WORDS, 200
    if "slow-talk" in text:
        return "slow", SLOW, 80
    if "What is in the image" in text:
        return "text", ["I see a red square." if PNG_HEAD in text else "NO IMAGE"], 5
    if "get_weather" in text:
        return "tool", None, 10
    return "text", HELLO, 4


# ---- OpenAI-compatible (DeepSeek) ----
ds = Mock()


def ds_chat(h, body):
    b = json.loads(body)
    kind, parts, out = scenario(body.decode())
    if kind == "error":
        return json_reply(h, 400, {"error": {"message": "bad thing", "type": "invalid_request_error",
                                             "code": "invalid_value"}})
    call = [{"index": 0, "id": "call_ds1", "type": "function",
             "function": {"name": "get_weather", "arguments": D(ARGS)}}]
    if not b.get("stream"):
        msg = {"role": "assistant", "content": None, "tool_calls": call} if kind == "tool" else \
            {"role": "assistant", "content": "".join(parts)}
        return json_reply(h, 200, {"id": "chatcmpl-ds", "object": "chat.completion", "created": 1,
                                   "model": b["model"], "choices": [{"index": 0, "message": msg,
                                   "finish_reason": "tool_calls" if kind == "tool" else "stop"}],
                                   "usage": {"prompt_tokens": 12, "completion_tokens": out,
                                             "total_tokens": 12 + out}})
    if kind == "tool":
        evs = [oa_chunk(role="assistant", tool_calls=call), oa_chunk(finish="tool_calls")]
    else:
        evs = [oa_chunk(parts[0], role="assistant")] + [oa_chunk(p) for p in parts[1:]] + [oa_chunk(finish="stop")]
    return sse_reply(h, evs + [usage_chunk(12, out), "[DONE]"], delay=0.05 if kind == "slow" else 0)


ds.routes["/v1/chat/completions"] = ds_chat

# ---- Qwen (DashScope native) ----
qw = Mock()


def qw_chat(h, body, mm=False):
    kind, parts, out = scenario(body.decode())
    if kind == "error":
        return json_reply(h, 400, {"code": "InvalidParameter", "message": "bad thing", "request_id": "req-q"})
    call = [{"index": 0, "id": "call_qw1", "type": "function",
             "function": {"name": "get_weather", "arguments": D(ARGS)}}]
    if h.headers.get("X-DashScope-SSE") != "enable":
        text = "".join(parts or [])
        msg = {"content": "", "tool_calls": call} if kind == "tool" else \
            {"content": [{"text": text}] if mm else text}
        return json_reply(h, 200, {"output": {"choices": [{"finish_reason": "tool_calls" if kind == "tool" else "stop",
                                                           "message": dict(msg, role="assistant")}]},
                                   "usage": {"input_tokens": 12, "output_tokens": out, "total_tokens": 12 + out},
                                   "request_id": "req-q"})
    if kind == "tool":
        evs = [qw_ev(1, {"content": "", "tool_calls": call}, "null", 5, "req-q"),
               qw_ev(2, {"content": ""}, "tool_calls", out, "req-q")]
    else:
        n = len(parts)
        evs = [qw_ev(i + 1, {"content": p}, "stop" if i == n - 1 else "null", out if i == n - 1 else i + 1, "req-q")
               for i, p in enumerate(parts)]
    return sse_reply(h, None, raw=evs, delay=0.05 if kind == "slow" else 0)


qw.routes["/api/v1/services/aigc/text-generation/generation"] = qw_chat
qw.routes["/api/v1/services/aigc/multimodal-generation/generation"] = lambda h, b: qw_chat(h, b, mm=True)

# ---- Gemini ----
gm = Mock()


def gm_chat(h, body):
    kind, parts, out = scenario(body.decode())
    if kind == "error":
        return json_reply(h, 400, {"error": {"code": 400, "message": "bad thing", "status": "INVALID_ARGUMENT"}})
    usage = {"promptTokenCount": 12, "candidatesTokenCount": out, "totalTokenCount": 12 + out}

    def cand(ps, finish=None):
        c = {"content": {"role": "model", "parts": ps}, "index": 0}
        if finish:
            c["finishReason"] = finish
        return c
    if kind == "tool":
        pieces = [cand([{"functionCall": {"name": "get_weather", "args": ARGS}}], "STOP")]
    else:
        pieces = [cand([{"text": p}], "STOP" if i == len(parts) - 1 else None) for i, p in enumerate(parts)]
    if "streamGenerateContent" not in h.path:
        if kind != "tool":
            pieces = [cand([{"text": "".join(parts)}], "STOP")]
        return json_reply(h, 200, {"candidates": pieces, "usageMetadata": usage, "modelVersion": "gemini-2.0-flash"})
    evs = [{"candidates": [c]} for c in pieces]
    evs[-1]["usageMetadata"] = usage
    return sse_reply(h, evs, delay=0.05 if kind == "slow" else 0)


gm.routes["/v1beta/models/gemini-2.0-flash:generateContent"] = gm_chat
gm.routes["/v1beta/models/gemini-2.0-flash:streamGenerateContent"] = gm_chat

# ---- Claude (passed through for /v1/messages, translated for /v1/responses) ----
cl = Mock()


def cl_messages(h, body):
    b = json.loads(body)
    kind, parts, out = scenario(body.decode())
    if kind == "error":
        return json_reply(h, 400, ant_error("invalid_request_error", "bad thing"))
    tool = ("toolu_cl1", "get_weather", ARGS) if kind == "tool" else None
    long_ = parts is WORDS
    if not b.get("stream"):
        return json_reply(h, 200, ant_message("" if tool else "".join(parts), b["model"], in_tok=12, out_tok=out,
                                              tool=tool, stop="tool_use" if tool else "end_turn", cache_read=0))
    evs = ant_stream([] if tool else parts, b["model"], in_tok=12, out_tok=out, tool=tool,
                     thinking="Planning the answer." if long_ else None, stop="tool_use" if tool else "end_turn")
    return sse_reply(h, None, raw=evs, delay=0.05 if kind == "slow" else 0)


cl.routes["/v1/messages"] = cl_messages

T = "    connect_timeout 2s\n    first_byte_timeout 5s\n    idle_timeout 5s\n"
CHANNELS = "".join("channel %s {\n    plugin %s\n    models %s\n    base_url %s\n    api_key env:%s\n%s}\n" % c for c in [
    ("ds", "openai", "deepseek-chat", ds.url + "/v1", "LMT_SDK_DS", T),
    ("qw", "qwen", "qwen-plus qwen-vl-plus", qw.url, "LMT_SDK_QW", T),
    ("gm", "gemini", "gemini-2.0-flash", gm.url + "/v1beta", "LMT_SDK_GM", T),
    ("cl", "claude", "claude-sonnet-4-5", cl.url, "LMT_SDK_CL", T),
])
ENV = {"LMT_SDK_DS": "sk-ds", "LMT_SDK_QW": "sk-qw", "LMT_SDK_GM": "gm-key", "LMT_SDK_CL": "sk-ant"}
MODELS = ["claude-sonnet-4-5", "deepseek-chat", "qwen-plus", "gemini-2.0-flash"]
gw = None


def chat_stream_result():
    """The chat endpoint's text and usage for the same prompt and upstream answer."""
    return lambda model: _chat(model)


def _chat(model):
    st, evs, raw, _ = gw.stream({"model": model, "stream": True, "stream_options": {"include_usage": True},
                                 "messages": [{"role": "system", "content": "You are terse."},
                                              {"role": "user", "content": "Say hello"}]})
    check(st == 200, "chat %d %s" % (st, raw[:200]))
    text, usage = "", None
    for e in evs:
        if e == "[DONE]":
            continue
        d = json.loads(e)
        for c in d.get("choices", []):
            text += (c.get("delta") or {}).get("content") or ""
        usage = d.get("usage") or usage
    return {"text": text, "input": usage["prompt_tokens"], "output": usage["completion_tokens"]}


def sdk_case(model):
    sdk_ready("openai", "@anthropic-ai/sdk")
    want = {"hello": "".join(HELLO), "usage": [12, 4], "long_out": 200, "responses": True}
    r = subprocess.run(["node", "inbound_check.mjs", "http://127.0.0.1:%d" % gw.port, KEY, model, json.dumps(want)],
                       cwd=SDK_DIR, capture_output=True, text=True, timeout=120)
    sys.stdout.write("".join("  %s: %s\n" % (model, ln) for ln in r.stdout.splitlines() if ln.startswith("OK")))
    check(r.returncode == 0, "%s: the SDK failed:\n%s\n%s" % (model, r.stdout, r.stderr[-3000:]))
    for case in ("create", "stream", "tools", "image", "error", "claude-code", "responses-create",
                 "responses-stream", "responses-tools", "responses-image", "responses-error"):
        check("OK " + case in r.stdout, "%s: case %s did not run" % (model, case))
    res = dict((ln.split(" ", 2)[1], json.loads(ln.split(" ", 2)[2])) for ln in r.stdout.splitlines()
               if ln.startswith("RESULT "))
    chat = _chat(model)
    # the "done when": same text and usage as chat for the same upstream answer
    check(res["msgs-stream"] == chat, "%s: messages stream %s != chat %s" % (model, res["msgs-stream"], chat))
    check(res["resp-stream"] == chat, "%s: responses stream %s != chat %s" % (model, res["resp-stream"], chat))


def test_sdk_claude_passthrough():
    sdk_case("claude-sonnet-4-5")
    with cl.lock:
        bodies = [json.loads(r["body"]) for r in cl.requests if r["path"] == "/v1/messages"]
    cc = [b for b in bodies if "thinking" in b]
    check(cc and cc[-1]["thinking"] == {"type": "enabled", "budget_tokens": 1024} and
          cc[-1]["system"][1]["cache_control"] == {"type": "ephemeral"}, "Claude Code body not passed through")


def test_sdk_deepseek():
    sdk_case("deepseek-chat")


def test_sdk_qwen():
    sdk_case("qwen-plus")


def test_sdk_gemini():
    sdk_case("gemini-2.0-flash")


def test_abort_billed_every_channel():
    for model in MODELS:
        for path, marker, body in (
                ("/v1/messages", b"text_delta", {"model": model, "max_tokens": 200, "stream": True,
                                                 "messages": [{"role": "user", "content": "slow-talk"}]}),
                ("/v1/responses", b"output_text.delta", {"model": model, "stream": True, "input": "slow-talk"})):
            try:
                rid, _ = gw.leave_mid_stream(path, body, marker, 3)
            except OSError as e:
                raise AssertionError("%s %s: %s" % (model, path, e))
            rows = gw.usage_rows(rid)
            check(len(rows) == 1, "%s %s: rows %s" % (model, path, rows))
            r = rows[0]
            check(r["client_aborted"] and r["api"] == path.split("/")[-1] and r["status"] == 200,
                  "%s %s: row %s" % (model, path, r))
            check(0 < r["completion_tokens"] < 80 and r["prompt_tokens"] > 0,
                  "%s %s: billed for what was received: %s" % (model, path, r))
    time.sleep(0.1)


def main():
    global gw
    if shutil.which("node") is None or shutil.which("npm") is None:
        print("SKIP test_inbound_sdk: node/npm not installed (the SDK tests need Node 18+)")
        return
    gw = AdminGateway(CHANNELS, env=ENV)
    try:
        run([test_sdk_claude_passthrough, test_sdk_deepseek, test_sdk_qwen, test_sdk_gemini,
             test_abort_billed_every_channel])
    finally:
        gw.stop()


if __name__ == "__main__":
    main()
