"""Every provider plugin through the real gateway binary.

One longmen runs with one channel per provider (plus a bad-key twin where the
error probe is an auth failure). Each channel's base_url points at a mock of
that provider's NATIVE API which checks auth and field placement the way the
real service does and answers with the golden bodies of docs/wire-formats.md
section 9. The client side always speaks OpenAI.

Per provider: G1 (plain), G2 (stream, with and without include_usage), G3
(tool call), the section-9 error probe, upstream 429, upstream 500, a stream
cut off mid-way; embeddings where the provider has them; the openai presets
resolve under `longmen -t`; no provider key in any response or in the log.
"""
import json
import os
import subprocess
import tempfile
import threading

from lib import (BUILD, PLUGIN_DIR, ROOT, Gateway, Mock, check, content_of, json_reply, run,
                 sanitizer_report, sse_json)

# --------------------------------------------------------------------------- keys
# Provider keys (given to the gateway through the environment only).
KEYS = {
    "QWEN": "sk-qwen-SECRET-7a1f9c3e",
    "QWEN_BAD": "sk-qwen-REVOKED-00d0e1",
    "ERNIE": "bce-v3/ALTAK-ernieSECRET/5b2d8e",
    "ERNIE_BAD": "bce-v3/ALTAK-ernieWRONG/111111",
    "SPARK": "sparkPASSWORD-SECRET-4c4c",
    "SPARK_BAD": "sparkPASSWORD-WRONG-9e9e",
    "CLAUDE": "sk-ant-api03-SECRET-d00d",
    "CLAUDE_BAD": "sk-ant-api03-WRONG-beef",
    "GEMINI": "AIzaSy-GEMINI-SECRET-0123",
    "GEMINI_BAD": "AIzaSy-GEMINI-WRONG-3210",
    "OLLAMA": "ollama-proxy-SECRET-55aa",
    "OPENAI": "sk-oa-SECRET-8b8b8b8b",
    "OPENAI_BAD": "sk-oa-WRONG-7c7c7c7c",
}
ENV = {"LMT_" + k: v for k, v in KEYS.items()}

TIMEOUT = 8  # seconds, per gateway request

# --------------------------------------------------------------------------- inbound requests
SYS_USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
SCHEMA = TOOLS[0]["function"]["parameters"]


def G1(model, **kw):
    b = {"model": model, "messages": [dict(m) for m in SYS_USER], "max_tokens": 16, "temperature": 0.2}
    b.update(kw)
    return b


def G2(model, include_usage=True):
    b = G1(model, stream=True)
    if include_usage:
        b["stream_options"] = {"include_usage": True}
    return b


def G3(model):
    return {"model": model, "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": json.loads(json.dumps(TOOLS)), "tool_choice": "auto"}


U12 = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
U30 = {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40}


# --------------------------------------------------------------------------- mock plumbing
class Upstream(Mock):
    """A mock provider: `mode` selects the scenario ("golden", "probe",
    "429", "500", "cut"); `violations` collects every way a request differed
    from what the real API requires."""

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.mode = "golden"
        self.violations = []
        self.kinds = []  # the scenario each request was answered with

    def bad(self, msg):
        with self.lock:
            self.violations.append("%s: %s" % (self.name, msg))

    def served(self, kind):
        with self.lock:
            self.kinds.append(kind)


def chunked(h, ctype, parts, cut=False, status=200):
    """Write `parts` as chunked transfer; with cut, close without the final
    0-length chunk (a transfer that dies mid-way)."""
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Transfer-Encoding", "chunked")
    if cut:
        h.send_header("Connection", "close")
    h.end_headers()
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
        h.wfile.flush()
    if cut:
        h.close_connection = True
        return
    h.wfile.write(b"0\r\n\r\n")
    h.wfile.flush()


def hdr(h, name):
    return h.headers.get(name)


def parse(up, h, body):
    if not (hdr(h, "Content-Type") or "").startswith("application/json"):
        up.bad("Content-Type %r, want application/json" % hdr(h, "Content-Type"))
    try:
        return json.loads(body)
    except ValueError:
        up.bad("request body is not JSON: %r" % body[:200])
        return None


def D(o):
    return json.dumps(o, separators=(",", ":"))


# =========================================================================== DashScope (qwen)
qwen = Upstream("qwen")
QW_CHAT = "/api/v1/services/aigc/text-generation/generation"
QW_EMB = "/api/v1/services/embeddings/text-embedding/text-embedding"


def qw_err(h, status, code, msg, rid="req-e"):
    json_reply(h, status, {"code": code, "message": msg, "request_id": rid})


def qw_auth(up, h):
    if hdr(h, "Authorization") != "Bearer " + KEYS["QWEN"]:
        qw_err(h, 401, "InvalidApiKey", "Invalid API-key provided.")
        return False
    return True


def qw_event(i, content, finish, inp, out, rid="req-g2"):
    d = {"output": {"choices": [{"message": {"content": content, "role": "assistant"},
                                 "finish_reason": finish}]},
         "usage": {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out},
         "request_id": rid}
    return "id:%d\nevent:result\n:HTTP_STATUS/200\ndata:%s\n\n" % (i, D(d))


def qw_chat(h, body):
    up = qwen
    if not qw_auth(up, h):
        return
    b = parse(up, h, body)
    if b is None:
        return qw_err(h, 400, "InvalidParameter", "bad json")
    if "messages" in b or not isinstance(b.get("input", {}).get("messages"), list):
        up.bad("messages must be in input.messages, not top level: %s" % body[:300])
        return qw_err(h, 400, "InvalidParameter", "Either prompt or messages must exist")
    p = b.get("parameters") or {}
    if p.get("result_format") != "message":
        up.bad("parameters.result_format must be \"message\": %s" % p)
    sse = hdr(h, "X-DashScope-SSE") == "enable"
    acc = (hdr(h, "Accept") or "") == "text/event-stream"
    if sse != acc:
        up.bad("stream needs both X-DashScope-SSE: enable and Accept: text/event-stream")
    stream = sse or acc
    if stream and p.get("incremental_output") is not True:
        up.bad("stream without parameters.incremental_output:true")
    msgs = b["input"]["messages"]
    if "tools" in p:
        kind = "g3s" if stream else "g3"
        if p["tools"] != TOOLS or p.get("tool_choice") != "auto":
            up.bad("G3: parameters.tools/tool_choice not forwarded: %s" % p)
        if msgs != [{"role": "user", "content": "Weather in Paris?"}]:
            up.bad("G3 messages %s" % msgs)
    else:
        kind = "g2" if stream else "g1"
        if b.get("model") != "qwen-plus" or msgs != SYS_USER or p.get("max_tokens") != 16 \
                or p.get("temperature") != 0.2:
            up.bad("%s body: %s" % (kind, body[:400]))
    up.served(kind)
    mode = up.mode
    if mode == "429":
        return qw_err(h, 429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
    if mode == "500":
        return qw_err(h, 500, "InternalError", "An internal error has occured, please try again later.")
    if mode == "cut":
        return chunked(h, "text/event-stream", [qw_event(1, "Hi", "null", 12, 1)], cut=True)
    if mode == "eof":  # clean end of body before the event with the final finish_reason
        return chunked(h, "text/event-stream", [qw_event(1, "Hi", "null", 12, 1)])
    if mode == "empty":  # a 200 event stream without a single event
        return chunked(h, "text/event-stream", [":HTTP_STATUS/200\n\n"])
    if mode == "midstream":
        return chunked(h, "text/event-stream", [qw_event(1, "Hi", "null", 12, 1),
                                                "id:2\nevent:error\n:HTTP_STATUS/429\ndata:" + D({
                                                    "code": "Throttling.AllocationQuota",
                                                    "message": "Allocated quota exceeded, please increase your quota limit.",
                                                    "request_id": "req-mid"}) + "\n\n"])
    if mode == "echo":
        return qw_err(h, 400, "InvalidParameter", "Bad request with header Authorization: %s" % hdr(h, "Authorization"))
    if kind == "g3s":
        def ev(i, tc, fin, out):
            m = {"content": "", "role": "assistant"}
            if tc:
                m["tool_calls"] = tc
            d = {"output": {"choices": [{"message": m, "finish_reason": fin}]},
                 "usage": {"input_tokens": 30, "output_tokens": out, "total_tokens": 30 + out}, "request_id": "req-g3s"}
            return "id:%d\nevent:result\n:HTTP_STATUS/200\ndata:%s\n\n" % (i, D(d))
        return chunked(h, "text/event-stream", [
            ev(1, [{"index": 0, "id": "call_abc", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":"}}], "null", 5),
            ev(2, [{"index": 0, "id": "", "type": "function", "function": {"arguments": " \"Paris\"}"}}], "null", 9),
            ev(3, None, "tool_calls", 10)])
    if kind == "g3":
        return json_reply(h, 200, {"output": {"choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "", "tool_calls": [{
                "index": 0, "id": "call_abc", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}}]},
            "usage": {"input_tokens": 30, "output_tokens": 10, "total_tokens": 40}, "request_id": "req-g3"})
    if kind == "g2":
        return chunked(h, "text/event-stream", [qw_event(1, "Hi", "null", 12, 1),
                                                qw_event(2, "!", "stop", 12, 2)])
    return json_reply(h, 200, {"output": {"choices": [{"finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hi!"}}]},
        "usage": {"input_tokens": 12, "output_tokens": 2, "total_tokens": 14}, "request_id": "req-g1"})


def qw_embed(h, body):
    up = qwen
    if not qw_auth(up, h):
        return
    b = parse(up, h, body) or {}
    texts = (b.get("input") or {}).get("texts")
    if texts != ["alpha", "beta"] or b.get("model") != "text-embedding-v3":
        up.bad("embeddings body: %s" % body[:300])
        return qw_err(h, 400, "InvalidParameter", "texts required")
    up.served("embed")
    # answered out of order: the adapter must sort by text_index
    json_reply(h, 200, {"output": {"embeddings": [{"text_index": 1, "embedding": [0.3, 0.4]},
                                                  {"text_index": 0, "embedding": [0.1, 0.2]}]},
                        "usage": {"total_tokens": 3}, "request_id": "req-emb"})


qwen.routes[QW_CHAT] = qw_chat
qwen.routes[QW_EMB] = qw_embed


# =========================================================================== Qianfan v2 (ernie2)
ernie = Upstream("ernie2")


def eb_auth(up, h):
    if hdr(h, "Authorization") != "Bearer " + KEYS["ERNIE"]:
        json_reply(h, 401, {"error": {"code": "invalid_iam_token", "message": "IAM Certification failed",
                                      "type": "invalid_request_error"}, "id": "as-401"})
        return False
    return True


def eb_chunk(delta, finish=None, usage=None, is_end=False):
    d = {"id": "as-g2", "object": "chat.completion.chunk", "created": 1700000000, "model": "ernie-3.5-8k",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "flag": 0}],
         "is_end": is_end, "need_clear_history": False, "ban_round": -1}
    if usage is not None:
        d["usage"] = usage
        d["choices"] = []
    return "data: %s\n\n" % D(d)


def eb_chat(h, body):
    up = ernie
    if not eb_auth(up, h):
        return
    b = parse(up, h, body)
    if b is None:
        return
    if not isinstance(b.get("messages"), list) or "input" in b:
        up.bad("messages must be top-level OpenAI messages: %s" % body[:300])
    stream = b.get("stream") is True
    if stream and (b.get("stream_options") or {}).get("include_usage") is not True:
        up.bad("stream without stream_options.include_usage")
    if "tools" in b:
        kind = "g3s" if stream else "g3"
        if b["tools"] != TOOLS or b.get("tool_choice") != "auto":
            up.bad("G3 tools: %s" % body[:400])
    else:
        kind = "g2" if stream else "g1"
        if b.get("model") != "ernie-3.5-8k" or b["messages"] != SYS_USER or b.get("max_tokens") != 16 \
                or b.get("temperature") != 0.2:
            up.bad("%s body: %s" % (kind, body[:400]))
    up.served(kind)
    mode = up.mode
    if mode == "probe":  # v1-style error inside an HTTP 200 body
        return json_reply(h, 200, {"error_code": 18, "error_msg": "Open api qps request limit reached"})
    if mode == "429":
        return json_reply(h, 429, {"error": {"code": "rpm_rate_limit_exceeded", "message": "Rate limit reached for RPM",
                                             "type": "rate_limit_error"}, "id": "as-429"})
    if mode == "500":
        return json_reply(h, 500, {"error": {"code": "internal_error", "message": "Internal error",
                                             "type": "server_error"}, "id": "as-500"})
    if mode == "cut":
        return chunked(h, "text/event-stream", [eb_chunk({"role": "assistant", "content": "Hi"})], cut=True)
    if mode == "midstream":  # v1-style error code inside the stream
        return chunked(h, "text/event-stream", [eb_chunk({"role": "assistant", "content": "Hi"}),
                                                "data: " + D({"error_code": 336100,
                                                              "error_msg": "server high load, please retry"}) + "\n\n"])
    if mode == "echo":
        return json_reply(h, 400, {"error": {"code": "invalid_argument", "type": "invalid_request_error",
                                             "message": "bad request, auth was %s" % hdr(h, "Authorization")}})
    if kind == "g3s":
        return chunked(h, "text/event-stream", [
            eb_chunk({"role": "assistant", "content": "", "tool_calls": [{
                "index": 0, "id": "call_eb1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":"}}]}),
            eb_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            eb_chunk({}, finish="tool_calls", is_end=True),
            eb_chunk({}, usage=U30, is_end=True), "data: [DONE]\n\n"])
    if kind == "g3":
        return json_reply(h, 200, {
            "id": "as-g3", "object": "chat.completion", "created": 1700000000, "model": "ernie-3.5-8k",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "", "tool_calls": [{
                "id": "call_eb1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                "finish_reason": "tool_calls", "flag": 0}],
            "usage": U30, "need_clear_history": False})
    if kind == "g2":
        return chunked(h, "text/event-stream", [
            eb_chunk({"role": "assistant", "content": "Hi"}),
            eb_chunk({"content": "!"}, finish="normal", is_end=True),
            eb_chunk({}, usage=U12, is_end=True),
            "data: [DONE]\n\n"])
    return json_reply(h, 200, {
        "id": "as-g1", "object": "chat.completion", "created": 1700000000, "model": "ernie-3.5-8k",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "normal",
                     "flag": 0}],
        "usage": U12, "is_truncated": False, "need_clear_history": False})


def eb_embed(h, body):
    up = ernie
    if not eb_auth(up, h):
        return
    b = parse(up, h, body) or {}
    if b.get("input") != ["alpha", "beta"] or b.get("model") != "embedding-v1":
        up.bad("embeddings body: %s" % body[:300])
    up.served("embed")
    json_reply(h, 200, {"id": "as-emb", "object": "list", "created": 1700000000, "model": "embedding-v1",
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                                 {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]}],
                        "usage": {"prompt_tokens": 3, "total_tokens": 3}})


ernie.routes["/v2/chat/completions"] = eb_chat
ernie.routes["/v2/embeddings"] = eb_embed


# =========================================================================== Spark HTTP
spark = Upstream("spark")


def sp_chunk(content, usage=None, sid="cha000g2"):
    d = {"code": 0, "message": "Success", "sid": sid, "id": sid, "created": 1719546385,
         "choices": [{"delta": {"role": "assistant", "content": content}, "index": 0}]}
    if usage:
        d["usage"] = usage
    return "data:%s\n\n" % D(d)  # Spark writes no space after "data:"


def sp_chat(h, body):
    up = spark
    if hdr(h, "Authorization") != "Bearer " + KEYS["SPARK"]:
        return json_reply(h, 401, {"error": {"message": "invalid user", "type": "api_error", "param": None,
                                             "code": None}})
    b = parse(up, h, body)
    if b is None:
        return
    if b.get("model") != "generalv3.5":
        up.bad("model must be the Spark domain generalv3.5, got %r" % b.get("model"))
    stream = b.get("stream") is True
    if stream and (b.get("stream_options") or {}).get("include_usage") is not True:
        up.bad("stream without stream_options.include_usage (stream_usage defaults to true)")
    if "tools" in b:
        kind = "g3s" if stream else "g3"
        if b["tools"] != TOOLS:
            up.bad("G3 tools: %s" % body[:400])
    else:
        kind = "g2" if stream else "g1"
        if b.get("messages") != SYS_USER or b.get("max_tokens") != 16 or b.get("temperature") != 0.2:
            up.bad("%s body: %s" % (kind, body[:400]))
    up.served(kind)
    mode = up.mode
    if mode == "probe":
        return json_reply(h, 200, {"code": 11202, "message": "licc failed", "sid": "cha000e"})
    if mode == "429":
        return json_reply(h, 429, {"error": {"message": "rate limited", "type": "rate_limit_error",
                                             "param": None, "code": "11202"}})
    if mode == "500":
        return json_reply(h, 500, {"error": {"message": "engine internal error", "type": "api_error",
                                             "param": None, "code": None}})
    if mode == "cut":
        return chunked(h, "text/event-stream", [sp_chunk("Hi")], cut=True)
    if mode == "midstream":
        return chunked(h, "text/event-stream", [sp_chunk("Hi"), "data:" + D(
            {"code": 10110, "message": "service busy", "sid": "cha000m"}) + "\n\n"])
    if mode == "echo":
        return json_reply(h, 400, {"error": {"message": "bad request, got %s" % hdr(h, "Authorization"),
                                             "type": "invalid_request_error", "param": None, "code": "10163"}})
    if kind == "g3s":  # no id, no finish_reason
        d = {"code": 0, "message": "Success", "sid": "cha000g3", "id": "cha000g3", "created": 1719546385,
             "choices": [{"delta": {"role": "assistant", "content": "", "tool_calls": [{
                 "index": 0, "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}, "index": 0}],
             "usage": U30}
        return chunked(h, "text/event-stream", ["data:%s\n\n" % D(d), "data: [DONE]\n\n"])
    if kind == "g3":  # no id, no finish_reason: both must be synthesised
        return json_reply(h, 200, {"code": 0, "message": "Success", "sid": "cha000g3", "choices": [{
            "message": {"role": "assistant", "content": "", "tool_calls": [{
                "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            "index": 0}], "usage": U30})
    if kind == "g2":
        return chunked(h, "text/event-stream", [sp_chunk("Hi"), sp_chunk("!", usage=U12), "data: [DONE]\n\n"])
    return json_reply(h, 200, {"code": 0, "message": "Success", "sid": "cha000g1", "choices": [{
        "message": {"role": "assistant", "content": "Hi!"}, "index": 0}], "usage": U12})


spark.routes["/v1/chat/completions"] = sp_chat


# =========================================================================== Anthropic
claude = Upstream("claude")


def cl_err(h, status, typ, msg):
    json_reply(h, status, {"type": "error", "error": {"type": typ, "message": msg}, "request_id": "req_011"})


def cl_ev(d):
    return "event: %s\ndata: %s\n\n" % (d["type"], D(d))


CL_G2 = [
    {"type": "message_start", "message": {"id": "msg_g2", "type": "message", "role": "assistant", "content": [],
                                          "model": "claude-sonnet-4-5", "stop_reason": None,
                                          "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
     "usage": {"output_tokens": 2}},
    {"type": "message_stop"}]


CL_FIELDS = {"model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
             "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier", "container",
             "mcp_servers"}


def cl_chat(h, body):
    up = claude
    if hdr(h, "x-api-key") != KEYS["CLAUDE"]:
        return cl_err(h, 401, "authentication_error", "invalid x-api-key")
    if hdr(h, "Authorization") is not None:
        up.bad("Authorization header sent to Anthropic (key belongs in x-api-key only)")
    if hdr(h, "anthropic-version") != "2023-06-01":
        up.bad("anthropic-version header %r" % hdr(h, "anthropic-version"))
        return cl_err(h, 400, "invalid_request_error", "anthropic-version: header is required")
    b = parse(up, h, body)
    if b is None:
        return
    if not isinstance(b.get("max_tokens"), int):
        up.bad("max_tokens missing")
        return cl_err(h, 400, "invalid_request_error", "max_tokens: Field required")
    msgs = b.get("messages") or []
    if any(m.get("role") not in ("user", "assistant") for m in msgs):
        up.bad("roles other than user/assistant in messages: %s" % msgs)
        return cl_err(h, 400, "invalid_request_error", "messages: Unexpected role \"system\"")
    stream = b.get("stream") is True

    def text_of(c):
        if isinstance(c, str):
            return c
        if isinstance(c, list) and len(c) == 1 and c[0].get("type") == "text":
            return c[0]["text"]
        return None

    extra = set(b) - CL_FIELDS
    if extra:
        up.bad("fields Anthropic rejects (Extra inputs are not permitted): %s" % sorted(extra))
        return cl_err(h, 400, "invalid_request_error", "%s: Extra inputs are not permitted" % sorted(extra)[0])
    if not isinstance(b.get("temperature", 0), (int, float)) or not 0 <= b.get("temperature", 0) <= 1:
        up.bad("temperature out of [0,1]: %r" % b.get("temperature"))
    if "tools" in b:
        kind = "g3s" if stream else "g3"
        want = [{"name": "get_weather", "description": "Get weather", "input_schema": SCHEMA}]
        if b["tools"] != want or b.get("tool_choice") != {"type": "auto"} or b["max_tokens"] <= 0:
            up.bad("G3 body: %s" % body[:400])
        if len(msgs) != 1 or text_of(msgs[0].get("content")) != "Weather in Paris?":
            up.bad("G3 messages: %s" % msgs)
    else:
        kind = "g2" if stream else "g1"
        if b.get("model") != "claude-sonnet-4-5" or b.get("system") != "You are terse." \
                or b.get("max_tokens") != 16 or b.get("temperature") != 0.2 or len(msgs) != 1 \
                or msgs[0]["role"] != "user" or text_of(msgs[0].get("content")) != "Say hi":
            up.bad("%s body: %s" % (kind, body[:400]))
    up.served(kind)
    mode = up.mode
    if mode == "probe":
        return cl_err(h, 529, "overloaded_error", "Overloaded")
    if mode == "429":
        return cl_err(h, 429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit")
    if mode == "500":
        return cl_err(h, 500, "api_error", "Internal server error")
    if mode == "cut":
        return chunked(h, "text/event-stream", [cl_ev(e) for e in CL_G2[:4]], cut=True)
    if mode == "eof":
        return chunked(h, "text/event-stream", [cl_ev(e) for e in CL_G2[:4]])
    if mode == "midstream":
        return chunked(h, "text/event-stream", [cl_ev(e) for e in CL_G2[:4]] + [cl_ev(
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})])
    if mode == "echo":
        return cl_err(h, 400, "invalid_request_error", "bad request (x-api-key %s)" % hdr(h, "x-api-key"))
    if kind == "g3s":
        return chunked(h, "text/event-stream", [cl_ev(e) for e in [
            dict(CL_G2[0], message=dict(CL_G2[0]["message"], id="msg_g3s",
                                        usage={"input_tokens": 30, "output_tokens": 1})),
            {"type": "content_block_start", "index": 0, "content_block": {
                "type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {}}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ""}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Par"}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "is\"}"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
             "usage": {"output_tokens": 10}},
            {"type": "message_stop"}]])
    if kind == "g3":
        return json_reply(h, 200, {"id": "msg_g3", "type": "message", "role": "assistant",
                                   "model": "claude-sonnet-4-5",
                                   "content": [{"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
                                                "input": {"city": "Paris"}}],
                                   "stop_reason": "tool_use", "stop_sequence": None,
                                   "usage": {"input_tokens": 30, "output_tokens": 10}})
    if kind == "g2":
        if (hdr(h, "Accept") or "") not in ("text/event-stream", "application/json", "*/*"):
            up.bad("odd Accept header on a stream: %r" % hdr(h, "Accept"))
        return chunked(h, "text/event-stream", [cl_ev(e) for e in CL_G2])
    return json_reply(h, 200, {"id": "msg_g1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                               "content": [{"type": "text", "text": "Hi!"}], "stop_reason": "end_turn",
                               "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 2}})


claude.routes["/v1/messages"] = cl_chat


# =========================================================================== Gemini
gemini = Upstream("gemini")
GM = "/v1beta/models/gemini-2.0-flash"
GM_EMB = "/v1beta/models/text-embedding-004"


def gm_err(h, status, st, msg, reason=None):
    e = {"code": status, "message": msg, "status": st}
    if reason:
        e["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                         "domain": "googleapis.com"}]
    json_reply(h, status, {"error": e})


def gm_auth(up, h):
    q = h.path.split("?", 1)[1] if "?" in h.path else ""
    if "key=" in q:
        up.bad("API key sent in the URL: %s" % h.path)
    if hdr(h, "Authorization") is not None:
        up.bad("Authorization header sent to Gemini")
    k = hdr(h, "x-goog-api-key")
    if k is None:
        gm_err(h, 403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without "
               "established identity). Please use API Key or other form of API consumer identity to call this API.")
        return False
    if k != KEYS["GEMINI"]:
        gm_err(h, 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")
        return False
    return True


def gm_ev(d):
    return "data: %s\r\n\r\n" % D(d)  # Google frames SSE with CRLF


def gm_chunk(text, finish=None, n=1):
    c = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        c["finishReason"] = finish
    return {"candidates": [c], "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": n,
                                                 "totalTokenCount": 12 + n}, "responseId": "resp-g2"}


GM_FIELDS = {"contents", "systemInstruction", "system_instruction", "generationConfig", "generation_config",
             "tools", "toolConfig", "tool_config", "safetySettings", "safety_settings", "cachedContent"}


def gm_chat(stream):
    def handler(h, body):
        up = gemini
        if not gm_auth(up, h):
            return
        if stream and "alt=sse" not in (h.path.split("?", 1) + [""])[1]:
            up.bad("streamGenerateContent without ?alt=sse: %s" % h.path)
        b = parse(up, h, body)
        if b is None:
            return
        if "messages" in b or not isinstance(b.get("contents"), list):
            up.bad("Gemini body needs contents[], not messages: %s" % body[:300])
            return gm_err(h, 400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name \"messages\"")
        if any(c.get("role") not in ("user", "model") for c in b["contents"]):
            up.bad("roles other than user/model: %s" % b["contents"])
        extra = set(b) - GM_FIELDS
        if extra:
            up.bad("unknown fields Gemini rejects: %s" % sorted(extra))
            return gm_err(h, 400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown name \"%s\"" % sorted(extra)[0])
        if "tools" in b:
            kind = "g3s" if stream else "g3"
            want = [{"functionDeclarations": [{"name": "get_weather", "description": "Get weather",
                                               "parameters": SCHEMA}]}]
            if b["tools"] != want or (b.get("toolConfig") or {}).get("functionCallingConfig", {}).get("mode") != "AUTO":
                up.bad("G3 body: %s" % body[:400])
            if b["contents"] != [{"role": "user", "parts": [{"text": "Weather in Paris?"}]}]:
                up.bad("G3 contents: %s" % b["contents"])
        else:
            kind = "g2" if stream else "g1"
            if b.get("systemInstruction") != {"parts": [{"text": "You are terse."}]} \
                    or b["contents"] != [{"role": "user", "parts": [{"text": "Say hi"}]}] \
                    or b.get("generationConfig") != {"temperature": 0.2, "maxOutputTokens": 16}:
                up.bad("%s body: %s" % (kind, body[:400]))
        up.served(kind)
        mode = up.mode
        if mode == "429":
            return gm_err(h, 429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
        if mode == "500":
            return gm_err(h, 500, "INTERNAL", "An internal error has occurred.")
        if mode == "cut":
            return chunked(h, "text/event-stream", [gm_ev(gm_chunk("Hi"))], cut=True)
        if mode == "midstream":
            return chunked(h, "text/event-stream", [gm_ev(gm_chunk("Hi")), gm_ev(
                {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                           "status": "UNAVAILABLE"}})])
        if mode == "echo":
            return gm_err(h, 400, "INVALID_ARGUMENT", "Bad request for key %s" % hdr(h, "x-goog-api-key"))
        if kind == "g3s":
            return chunked(h, "text/event-stream", [gm_ev({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}, "finishReason": "STOP",
                "index": 0}], "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 10,
                                                "totalTokenCount": 40}, "responseId": "resp-g3s"})])
        if kind == "g3":
            return json_reply(h, 200, {"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}, "finishReason": "STOP",
                "index": 0}], "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 10,
                                                "totalTokenCount": 40}})
        if kind == "g2":
            return chunked(h, "text/event-stream", [gm_ev(gm_chunk("Hi")), gm_ev(gm_chunk("!", "STOP", 2))])
        return json_reply(h, 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi!"}]},
                                                   "finishReason": "STOP", "index": 0}],
                                   "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 2,
                                                     "totalTokenCount": 14},
                                   "modelVersion": "gemini-2.0-flash", "responseId": "resp-g1"})
    return handler


def gm_embed_one(h, body):
    up = gemini
    if not gm_auth(up, h):
        return
    b = parse(up, h, body) or {}
    if b.get("content") != {"parts": [{"text": "alpha"}]}:
        up.bad("embedContent body: %s" % body[:300])
    up.served("embed")
    json_reply(h, 200, {"embedding": {"values": [0.1, 0.2]}})


def gm_embed_batch(h, body):
    up = gemini
    if not gm_auth(up, h):
        return
    b = parse(up, h, body) or {}
    want = [{"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}} for t in ("alpha", "beta")]
    if b.get("requests") != want:
        up.bad("batchEmbedContents body: %s" % body[:300])
    up.served("embed")
    json_reply(h, 200, {"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]})


gemini.routes[GM + ":generateContent"] = gm_chat(False)
gemini.routes[GM + ":streamGenerateContent"] = gm_chat(True)
gemini.routes[GM_EMB + ":embedContent"] = gm_embed_one
gemini.routes[GM_EMB + ":batchEmbedContents"] = gm_embed_batch


# =========================================================================== Ollama
ollama = Upstream("ollama")


def ol_auth(up, h):  # the channel sets api_key: the mock plays the reverse proxy in front
    if hdr(h, "Authorization") != "Bearer " + KEYS["OLLAMA"]:
        json_reply(h, 401, {"error": "unauthorized"})
        return False
    return True


def ol_line(content, done=False, **kw):
    d = {"model": "llama3.2", "created_at": "2024-07-22T20:33:28Z",
         "message": {"role": "assistant", "content": content}, "done": done}
    d.update(kw)
    return D(d) + "\n"


def ol_chat(h, body):
    up = ollama
    if not ol_auth(up, h):
        return
    b = parse(up, h, body)
    if b is None:
        return
    if not isinstance(b.get("stream"), bool):
        up.bad("stream must be explicit (Ollama defaults to true): %s" % body[:300])
    stream = b.get("stream", True) is not False
    if b.get("model") != "llama3.2":
        up.served("probe")
        return json_reply(h, 404, {"error": "model \"%s\" not found, try pulling it first" % b.get("model")})
    if "tools" in b:
        kind = "g3s" if stream else "g3"
        if b["tools"] != TOOLS:
            up.bad("G3 tools: %s" % body[:400])
    else:
        kind = "g2" if stream else "g1"
        if b.get("messages") != SYS_USER or b.get("options") != {"temperature": 0.2, "num_predict": 16}:
            up.bad("%s body: %s" % (kind, body[:400]))
    up.served(kind)
    mode = up.mode
    if mode == "429":
        return json_reply(h, 429, {"error": "too many requests"})
    if mode == "500":
        return json_reply(h, 500, {"error": "llama runner process has terminated: exit status 2"})
    if mode == "cut":
        return chunked(h, "application/x-ndjson", [ol_line("Hi")], cut=True)
    if mode == "eof":
        return chunked(h, "application/x-ndjson", [ol_line("Hi")])
    if mode == "midstream":
        return chunked(h, "application/x-ndjson", [ol_line("Hi"), D({"error": "an error was encountered while running the model: unexpected EOF"}) + "\n"])
    if mode == "echo":
        return json_reply(h, 400, {"error": "bad request from %s" % hdr(h, "Authorization")})
    if kind == "g3s":
        d = json.loads(ol_line(""))
        d["message"]["tool_calls"] = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
        return chunked(h, "application/x-ndjson", [
            D(d) + "\n", ol_line("", True, done_reason="stop", prompt_eval_count=30, eval_count=10)])
    if kind == "g3":
        return json_reply(h, 200, {"model": "llama3.2", "created_at": "2024-07-22T20:33:28Z", "message": {
            "role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            "done": True, "done_reason": "stop", "prompt_eval_count": 30, "eval_count": 10})
    if kind == "g2":
        return chunked(h, "application/x-ndjson", [
            ol_line("Hi"), ol_line("!"),
            ol_line("", True, done_reason="stop", total_duration=1000, prompt_eval_count=12, eval_count=2)])
    return json_reply(h, 200, {"model": "llama3.2", "created_at": "2024-07-22T20:33:28.123648Z",
                               "message": {"role": "assistant", "content": "Hi!"}, "done": True,
                               "done_reason": "stop", "total_duration": 1000, "prompt_eval_count": 12,
                               "eval_count": 2})


def ol_embed(h, body):
    up = ollama
    if not ol_auth(up, h):
        return
    b = parse(up, h, body) or {}
    if b.get("model") != "all-minilm" or b.get("input") != ["alpha", "beta"]:
        up.bad("embed body: %s" % body[:300])
    up.served("embed")
    json_reply(h, 200, {"model": "all-minilm", "embeddings": [[0.1, 0.2], [0.3, 0.4]],
                        "total_duration": 14143917, "load_duration": 1019500, "prompt_eval_count": 8})


ollama.routes["/api/chat"] = ol_chat
ollama.routes["/api/embed"] = ol_embed


# =========================================================================== OpenAI-compatible (presets)
openai = Upstream("openai")
PRESETS = ["openai", "deepseek", "moonshot", "zhipu", "hunyuan", "doubao", "minimax", "baichuan",
           "dashscope", "qianfan", "spark", "ollama"]


def oa_chunk(delta, finish=None, usage=None):
    d = {"id": "chatcmpl-oa2", "object": "chat.completion.chunk", "created": 1700000000, "model": "deepseek-chat",
         "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        d["usage"] = usage
    return "data: %s\n\n" % D(d)


def oa_chat(h, body):
    up = openai
    if hdr(h, "Authorization") != "Bearer " + KEYS["OPENAI"]:
        return json_reply(h, 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                             "param": None, "code": "invalid_api_key"}})
    b = parse(up, h, body)
    if b is None:
        return
    stream = b.get("stream") is True
    if stream and (b.get("stream_options") or {}).get("include_usage") is not True:
        up.bad("stream without stream_options.include_usage")
    if "tools" in b:
        kind = "g3s" if stream else "g3"
        if b["tools"] != TOOLS or b.get("tool_choice") != "auto":
            up.bad("G3 tools: %s" % body[:400])
    else:
        kind = "g2" if stream else "g1"
        if b.get("messages") != SYS_USER or b.get("max_tokens") != 16:
            up.bad("%s body: %s" % (kind, body[:400]))
    up.served(kind)
    model = b.get("model")
    mode = up.mode
    if mode == "429":
        return json_reply(h, 429, {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                                             "code": "rate_limit_exceeded"}})
    if mode == "500":
        return json_reply(h, 500, {"error": {"message": "The server had an error", "type": "server_error",
                                             "param": None, "code": None}})
    if mode == "cut":
        return chunked(h, "text/event-stream", [oa_chunk({"role": "assistant", "content": "Hi"})], cut=True)
    if mode == "midstream":
        return chunked(h, "text/event-stream", [oa_chunk({"role": "assistant", "content": "Hi"}), "data: " + D(
            {"error": {"message": "The server is overloaded", "type": "server_error", "param": None,
                       "code": "overloaded"}}) + "\n\n"])
    if mode == "echo":
        return json_reply(h, 400, {"error": {"message": "bad request, got %s" % hdr(h, "Authorization"),
                                             "type": "invalid_request_error", "param": None, "code": None}})
    if kind == "g3s":
        return chunked(h, "text/event-stream", [
            oa_chunk({"role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": "call_oa1", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}]}),
            oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            oa_chunk({}, "tool_calls"), oa_chunk(None, usage=U30), "data: [DONE]\n\n"])
    if kind == "g3":
        return json_reply(h, 200, {"id": "chatcmpl-oa3", "object": "chat.completion", "created": 1700000000,
                                   "model": model, "choices": [{"index": 0, "message": {
                                       "role": "assistant", "content": None, "tool_calls": [{
                                           "id": "call_oa1", "type": "function", "function": {
                                               "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                                       "finish_reason": "tool_calls"}], "usage": U30})
    if kind == "g2":
        return chunked(h, "text/event-stream", [
            oa_chunk({"role": "assistant", "content": ""}), oa_chunk({"content": "Hi"}), oa_chunk({"content": "!"}),
            oa_chunk({}, "stop"), oa_chunk(None, usage=U12), "data: [DONE]\n\n"])
    return json_reply(h, 200, {"id": "chatcmpl-oa1", "object": "chat.completion", "created": 1700000000,
                               "model": model, "choices": [{"index": 0, "message": {
                                   "role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
                               "usage": U12})


def oa_embed(h, body):
    up = openai
    if hdr(h, "Authorization") != "Bearer " + KEYS["OPENAI"]:
        return json_reply(h, 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                             "param": None, "code": "invalid_api_key"}})
    up.served("embed")
    json_reply(h, 200, {"object": "list", "model": "emb", "usage": {"prompt_tokens": 3, "total_tokens": 3},
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                                 {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]}]})


openai.routes["/v1/chat/completions"] = oa_chat
openai.routes["/v1/embeddings"] = oa_embed

UPSTREAMS = [qwen, ernie, spark, claude, gemini, ollama, openai]

# =========================================================================== gateway config
TIMEOUTS = "    connect_timeout 2s\n    first_byte_timeout 5s\n    idle_timeout 5s\n"


def channel(name, plugin, models, settings):
    return "channel %s {\n    plugin %s\n    models %s\n%s%s}\n" % (
        name, plugin, models, "".join("    %s\n" % s for s in settings), TIMEOUTS)


CHANNELS = "".join([
    channel("qwen", "qwen", "qwen-plus text-embedding-v3",
            ["base_url " + qwen.url, "api_key env:LMT_QWEN"]),
    channel("qwen-bad", "qwen", "qwen-badkey=qwen-plus",
            ["base_url " + qwen.url + "/api/v1/", "api_key env:LMT_QWEN_BAD"]),
    channel("ernie", "ernie2", "ernie-3.5-8k embedding-v1",
            ["base_url " + ernie.url + "/v2", "api_key env:LMT_ERNIE"]),
    channel("ernie-bad", "ernie2", "ernie-badkey=ernie-3.5-8k",
            ["base_url " + ernie.url + "/v2/", "api_key env:LMT_ERNIE_BAD"]),
    channel("spark", "spark", "spark-max",
            ["base_url " + spark.url + "/v1", "api_key env:LMT_SPARK"]),
    channel("spark-bad", "spark", "spark-badkey=spark-max",
            ["base_url " + spark.url + "/v1", "api_key env:LMT_SPARK_BAD"]),
    channel("claude", "claude", "claude-sonnet-4-5",
            ["base_url " + claude.url, "api_key env:LMT_CLAUDE"]),
    channel("claude-bad", "claude", "claude-badkey=claude-sonnet-4-5",
            ["base_url " + claude.url + "/", "api_key env:LMT_CLAUDE_BAD"]),
    channel("gemini", "gemini", "gemini-2.0-flash text-embedding-004",
            ["base_url " + gemini.url + "/v1beta", "api_key env:LMT_GEMINI"]),
    channel("gemini-bad", "gemini", "gemini-badkey=gemini-2.0-flash",
            ["base_url " + gemini.url + "/v1beta/", "api_key env:LMT_GEMINI_BAD"]),
    channel("ollama", "ollama", "llama3.2 llama9 all-minilm",
            ["base_url " + ollama.url, "api_key env:LMT_OLLAMA"]),
    channel("oa-deepseek", "openai", "deepseek-chat",
            ["preset deepseek", "base_url " + openai.url + "/v1", "api_key env:LMT_OPENAI"]),
    channel("oa-bad", "openai", "oa-badkey=deepseek-chat",
            ["preset deepseek", "base_url " + openai.url + "/v1", "api_key env:LMT_OPENAI_BAD"]),
] + [channel("oa-p-" + p, "openai", "preset-%s=%s-model" % (p, p),
             ["preset " + p, "base_url " + openai.url + "/v1", "api_key env:LMT_OPENAI"]) for p in PRESETS])

gw = None


def setup():
    global gw
    # debug level: the plugins log dropped fields there; a key must not leak even then
    gw = Gateway(channels=CHANNELS, extra="log_level debug\n", env=ENV, workers=2)


# =========================================================================== assertions
def no_secret(raw, what="response"):
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    for k, v in KEYS.items():
        check(v not in text, "provider key %s appears in the %s" % (k, what))


def error_shape(js, raw):
    check(isinstance(js, dict) and isinstance(js.get("error"), dict), "not an OpenAI error: %r" % raw[:300])
    e = js["error"]
    check({"message", "type", "param", "code"} <= set(e), "error lacks message/type/param/code: %r" % raw[:300])
    check(isinstance(e["message"], str) and e["message"], "empty error message: %r" % raw[:300])
    return e


class Watch:
    """Snapshot of an upstream's counters, to look at what one test caused."""

    def __init__(self, up, mode="golden"):
        self.up = up
        up.mode = mode
        self.v0 = len(up.violations)
        self.k0 = len(up.kinds)
        self.r0 = len(up.requests)

    def violations(self):
        return self.up.violations[self.v0:]

    def kinds(self):
        return self.up.kinds[self.k0:]

    def requests(self):
        return self.up.requests[self.r0:]

    def done(self, *want_kinds):
        self.up.mode = "golden"
        check(not self.violations(), "upstream request wrong: %s" % self.violations())
        if want_kinds:
            check(self.kinds() == list(want_kinds), "mock answered %s, wanted %s" % (self.kinds(), list(want_kinds)))


def assert_g1(st, js, raw):
    check(st == 200, "status %d %r" % (st, raw[:400]))
    no_secret(raw)
    c = js["choices"][0]
    check(js.get("object") == "chat.completion", "object %r" % js.get("object"))
    check(c["message"]["role"] == "assistant" and c["message"]["content"] == "Hi!", "content: %r" % raw[:400])
    check(c["finish_reason"] == "stop", "finish_reason %r" % c["finish_reason"])
    check({k: js["usage"][k] for k in U12} == U12, "usage %r" % js.get("usage"))


def assert_g2(st, ev, raw, hdrs, include_usage):
    check(st == 200, "status %d %r" % (st, raw[:400]))
    no_secret(raw)
    check(hdrs.get("Content-Type", "").startswith("text/event-stream"), "content type %r" % hdrs.get("Content-Type"))
    check(ev.count("[DONE]") == 1 and ev[-1] == "[DONE]", "exactly one [DONE], last: %r" % raw[-300:])
    js = sse_json(ev)
    check(not any("error" in e for e in js), "error event in a good stream: %r" % raw)
    check(all(e.get("object") == "chat.completion.chunk" for e in js), "chunk object: %r" % raw[:400])
    deltas = [c["delta"]["content"] for e in js for c in e.get("choices", [])
              if (c.get("delta") or {}).get("content")]
    check("".join(deltas) == "Hi!" and content_of(ev) == "Hi!", "content deltas %r" % deltas)
    fins = [c["finish_reason"] for e in js for c in e.get("choices", []) if c.get("finish_reason")]
    check(fins == ["stop"], "finish chunks %r (want exactly one stop)" % fins)
    check(len({e.get("id") for e in js}) == 1, "one id for every chunk: %r" % {e.get("id") for e in js})
    usage_chunks = [e for e in js if e.get("usage")]
    if include_usage:
        check(len(usage_chunks) == 1 and usage_chunks[0] is js[-1], "one usage chunk, last: %r" % raw[-500:])
        check(js[-1]["choices"] == [], "usage chunk has choices []: %r" % js[-1])
        check({k: js[-1]["usage"][k] for k in U12} == U12, "usage %r" % js[-1]["usage"])
    else:
        check(not usage_chunks, "usage chunk sent though the client did not ask: %r" % raw[-500:])
        check(all(e.get("choices") for e in js), "empty-choices chunk without include_usage: %r" % raw[-500:])


def assert_g3(st, js, raw, want_id=None, id_prefix=None):
    check(st == 200, "status %d %r" % (st, raw[:400]))
    no_secret(raw)
    c = js["choices"][0]
    tcs = c["message"].get("tool_calls") or []
    check(len(tcs) == 1, "one tool call: %r" % raw[:400])
    tc = tcs[0]
    check(tc.get("type") == "function" and tc["function"]["name"] == "get_weather", "tool call %r" % tc)
    check(isinstance(tc["function"]["arguments"], str), "arguments must be a JSON string: %r" % tc)
    check(json.loads(tc["function"]["arguments"]) == {"city": "Paris"}, "arguments %r" % tc["function"])
    check(isinstance(tc.get("id"), str) and tc["id"], "tool call id empty: %r" % tc)
    if want_id:
        check(tc["id"] == want_id, "tool call id %r, want %r" % (tc["id"], want_id))
    if id_prefix:
        check(tc["id"].startswith(id_prefix), "tool call id %r, want prefix %r" % (tc["id"], id_prefix))
    check(c["finish_reason"] == "tool_calls", "finish_reason %r" % c["finish_reason"])
    check({k: js["usage"][k] for k in U30} == U30, "usage %r" % js.get("usage"))


def assert_g3_stream(st, ev, raw, hdrs, want_id=None, id_prefix=None):
    check(st == 200, "status %d %r" % (st, raw[:400]))
    no_secret(raw)
    check(ev.count("[DONE]") == 1 and ev[-1] == "[DONE]", "exactly one [DONE], last: %r" % raw[-300:])
    js = sse_json(ev)
    check(not any("error" in e for e in js), "error event: %r" % raw)
    calls = {}
    for e in js:
        for c in e.get("choices", []):
            for tc in (c.get("delta") or {}).get("tool_calls") or []:
                check(isinstance(tc.get("index"), int), "tool call delta without index: %r" % tc)
                cur = calls.setdefault(tc["index"], {"id": None, "name": None, "args": "", "n": 0})
                if cur["n"] == 0:
                    cur["id"], cur["name"] = tc.get("id"), (tc.get("function") or {}).get("name")
                    check(tc.get("type") == "function", "first fragment lacks type function: %r" % tc)
                else:
                    check(not tc.get("id") and not (tc.get("function") or {}).get("name"),
                          "id/name repeated on a later fragment: %r" % tc)
                cur["n"] += 1
                cur["args"] += (tc.get("function") or {}).get("arguments") or ""
    check(list(calls) == [0], "tool call indexes %r: %r" % (list(calls), raw[:600]))
    tc = calls[0]
    check(tc["name"] == "get_weather", "name %r" % tc["name"])
    check(isinstance(tc["id"], str) and tc["id"], "empty tool call id: %r" % raw[:600])
    if want_id:
        check(tc["id"] == want_id, "tool call id %r, want %r" % (tc["id"], want_id))
    if id_prefix:
        check(tc["id"].startswith(id_prefix), "tool call id %r, want prefix %r" % (tc["id"], id_prefix))
    try:
        args = json.loads(tc["args"])
    except ValueError:
        raise AssertionError("arguments do not concatenate to JSON: %r" % tc["args"])
    check(args == {"city": "Paris"}, "arguments %r" % args)
    fins = [c["finish_reason"] for e in js for c in e.get("choices", []) if c.get("finish_reason")]
    check(fins == ["tool_calls"], "finish chunks %r (want exactly one tool_calls)" % fins)
    check(js[-1]["choices"] == [] and {k: js[-1]["usage"][k] for k in U30} == U30, "usage chunk %r" % js[-1])


def assert_cut(st, ev, raw, partial="Hi"):
    check(st == 200, "status %d %r" % (st, raw[:400]))
    no_secret(raw)
    check(content_of(ev) == partial, "partial content %r: %r" % (content_of(ev), raw))
    js = sse_json(ev)
    errs = [e for e in js if "error" in e]
    check(len(errs) == 1, "one error event: %r" % raw)
    error_shape(errs[0], raw)
    check(js[-1] is errs[0], "the error event is the last before [DONE]: %r" % raw)
    check(ev.count("[DONE]") == 1 and ev[-1] == "[DONE]", "[DONE] last: %r" % raw)
    fins = [c["finish_reason"] for e in js for c in e.get("choices", []) if c.get("finish_reason")]
    check(not fins, "a cut stream must not claim a finish_reason: %r" % fins)


# =========================================================================== per-provider tests
PROVIDERS = {
    # name: upstream mock, client model, G3 tool-call id expectation, mid-stream error type/code,
    # error probe (model to call, mock mode, expected status/type/code)
    "qwen": dict(up=qwen, model="qwen-plus", g3=dict(want_id="call_abc"),
                 mid=dict(type="rate_limit_error", code="Throttling.AllocationQuota"),
                 probe=dict(model="qwen-badkey", mode="golden", status=401, type="authentication_error",
                            code="InvalidApiKey")),
    "ernie2": dict(up=ernie, model="ernie-3.5-8k", g3=dict(want_id="call_eb1"),
                   mid=dict(type="api_error", code="336100"),
                   probe=dict(model="ernie-3.5-8k", mode="probe", status=429, type="rate_limit_error",
                              code="18")),
    "spark": dict(up=spark, model="spark-max", g3=dict(id_prefix="call_"),
                  mid=dict(type="api_error", code="10110"),
                  probe=dict(model="spark-max", mode="probe", status=429, type="rate_limit_error",
                             code="11202")),
    "claude": dict(up=claude, model="claude-sonnet-4-5", g3=dict(want_id="toolu_01A"),
                   mid=dict(type="api_error", code="overloaded"),
                   probe=dict(model="claude-sonnet-4-5", mode="probe", status=503, type="api_error",
                              code="overloaded")),
    "gemini": dict(up=gemini, model="gemini-2.0-flash", g3=dict(),
                   mid=dict(type="api_error"),
                   probe=dict(model="gemini-badkey", mode="golden", status=401, type="authentication_error",
                              code="API_KEY_INVALID")),
    "ollama": dict(up=ollama, model="llama3.2", g3=dict(),
                   mid=dict(type="api_error"),
                   probe=dict(model="llama9", mode="golden", status=404, type="invalid_request_error",
                              code="model_not_found")),
    "openai": dict(up=openai, model="deepseek-chat", g3=dict(want_id="call_oa1"),
                   mid=dict(type="server_error", code="overloaded"),
                   probe=dict(model="oa-badkey", mode="golden", status=401, type="invalid_request_error",
                              code="invalid_api_key")),
}

# Assertions that fail because of a known plugin/kernel bug: test name -> description
# (request, expected, actual). The test still runs and still reports FAIL; the entry only
# says why. Remove an entry once the bug is fixed. Empty: the bugs this file found while
# it was written (stream + HTTP 200 JSON error body, echoed provider key, clean EOF before
# the end marker) were fixed in the kernel before it was committed.
KNOWN_BUGS = {}


def known_bugs(fn):
    """Keep the test (it still FAILs) but say which known bug it hits."""
    def wrapped():
        try:
            fn()
        except AssertionError as e:
            if fn.__name__ in KNOWN_BUGS:
                raise AssertionError("KNOWN BUG: %s | %s" % (KNOWN_BUGS[fn.__name__], e))
            raise
        finally:  # a failed test must not leave a mock in an error mode
            for up in UPSTREAMS:
                up.mode = "golden"
    wrapped.__name__ = fn.__name__
    return wrapped


def make_tests(name, p):
    up, model = p["up"], p["model"]

    def g1():
        w = Watch(up)
        st, js, raw, _ = gw.chat(G1(model), timeout=TIMEOUT)
        assert_g1(st, js, raw)
        w.done("g1")

    def g2():
        w = Watch(up)
        st, ev, raw, hdrs = gw.stream(G2(model, include_usage=True), timeout=TIMEOUT)
        assert_g2(st, ev, raw, hdrs, True)
        st, ev, raw, hdrs = gw.stream(G2(model, include_usage=False), timeout=TIMEOUT)
        assert_g2(st, ev, raw, hdrs, False)
        w.done("g2", "g2")

    def g3():
        w = Watch(up)
        st, js, raw, _ = gw.chat(G3(model), timeout=TIMEOUT)
        assert_g3(st, js, raw, **p["g3"])
        w.done("g3")

    def probe():
        pr = p["probe"]
        w = Watch(up, pr["mode"])
        for body in (G1(pr["model"]), G2(pr["model"])):  # before the first byte of a stream too
            st, js, raw, _ = gw.chat(body, timeout=TIMEOUT)
            no_secret(raw)
            check(st == pr["status"], "%s: status %d, want %d: %r" % (
                "stream" if body.get("stream") else "plain", st, pr["status"], raw[:400]))
            e = error_shape(js, raw)
            check(e["type"] == pr["type"], "type %r, want %r" % (e["type"], pr["type"]))
            if pr["code"] is not None:
                check(e["code"] == pr["code"], "code %r, want %r" % (e["code"], pr["code"]))
        up.mode = "golden"
        check(not w.violations(), "upstream request wrong: %s" % w.violations())
        check(len(w.requests()) >= 2, "the probe did not reach the upstream")

    def e429():
        w = Watch(up, "429")
        for body in (G1(model), G2(model)):
            st, js, raw, _ = gw.chat(body, timeout=TIMEOUT)
            no_secret(raw)
            check(st == 429, "upstream 429 -> %d %r" % (st, raw[:400]))
            e = error_shape(js, raw)
            check(e["type"] in ("rate_limit_error", "requests", "tokens"), "type %r" % e["type"])
        w.done()

    def e500():
        w = Watch(up, "500")
        for body in (G1(model), G2(model)):
            st, js, raw, _ = gw.chat(body, timeout=TIMEOUT)
            no_secret(raw)
            check(500 <= st <= 599, "upstream 500 -> %d %r" % (st, raw[:400]))
            e = error_shape(js, raw)
            check(e["type"] in ("api_error", "server_error"), "type %r" % e["type"])
        w.done()

    def cut():
        w = Watch(up, "cut")
        for inc in (True, False):
            st, ev, raw, _ = gw.stream(G2(model, include_usage=inc), timeout=TIMEOUT)
            assert_cut(st, ev, raw)
        w.done()

    def g3s():
        w = Watch(up)
        body = G3(model)
        body.update(stream=True, stream_options={"include_usage": True})
        st, ev, raw, hdrs = gw.stream(body, timeout=TIMEOUT)
        assert_g3_stream(st, ev, raw, hdrs, **p["g3"])
        w.done("g3s")

    def midstream():
        w = Watch(up, "midstream")
        st, ev, raw, _ = gw.stream(G2(model), timeout=TIMEOUT)
        assert_cut(st, ev, raw)
        e = [x for x in sse_json(ev) if "error" in x][0]["error"]
        want = p["mid"]
        check(e["type"] == want["type"], "type %r, want %r" % (e["type"], want["type"]))
        if want.get("code") is not None:
            check(e["code"] == want["code"], "code %r, want %r" % (e["code"], want["code"]))
        w.done("g2")

    def echo():
        w = Watch(up, "echo")
        st, js, raw, _ = gw.chat(G1(model), timeout=TIMEOUT)
        check(st == 400, "status %d %r" % (st, raw[:300]))
        error_shape(js, raw)
        no_secret(raw)  # the upstream quoted the key back; the gateway must not forward it
        w.done("g1")

    out = []
    for fn, suffix in ((g1, "g1_plain"), (g2, "g2_stream"), (g3, "g3_tool_call"), (g3s, "g3_tool_call_stream"),
                       (probe, "error_probe"), (e429, "upstream_429"), (e500, "upstream_500"),
                       (cut, "stream_cut_midway"), (midstream, "error_event_midstream"),
                       (echo, "upstream_echoes_key")):
        fn.__name__ = "test_%s_%s" % (name, suffix)
        out.append(fn)
    return out


def test_stream_clean_eof_before_end_marker():
    """Not in section 9: a stream whose body ends cleanly before the provider's own
    end marker is a truncated answer and must not look complete."""
    problems = []
    for up, model in ((qwen, "qwen-plus"), (claude, "claude-sonnet-4-5"), (ollama, "llama3.2")):
        w = Watch(up, "eof")
        st, ev, raw, _ = gw.stream(G2(model), timeout=TIMEOUT)
        w.done("g2")
        try:
            assert_cut(st, ev, raw)
        except AssertionError as e:
            problems.append("%s: %s" % (up.name, e))
    w = Watch(qwen, "empty")
    st, js, raw, _ = gw.chat(G2("qwen-plus"), timeout=TIMEOUT)
    w.done("g2")
    if not ((st >= 500 and js and "error" in js) or (st == 200 and b'"error"' in raw)):
        problems.append("qwen empty stream: %d %r (want a 502 error or an error event)" % (st, raw[:200]))
    check(not problems, "; ".join(problems))


# --------------------------------------------------------------------------- embeddings
def emb_request(model, inp):
    return gw.request("POST", "/v1/embeddings", {"model": model, "input": inp}, timeout=TIMEOUT)


def assert_emb_list(st, js, raw, n, usage_reported=True):
    check(st == 200, "status %d %r" % (st, raw[:400]))
    no_secret(raw)
    check(js.get("object") == "list" and isinstance(js.get("data"), list) and len(js["data"]) == n, raw[:400])
    want = [[0.1, 0.2], [0.3, 0.4]][:n]
    for i, d in enumerate(js["data"]):
        check(d.get("object") == "embedding" and d.get("index") == i, "item %d: %r" % (i, d))
        check(d.get("embedding") == want[i], "item %d vector %r, want %r" % (i, d.get("embedding"), want[i]))
    # The kernel writes "usage" from what the plugin reports; a provider that
    # reports none for embeddings (Gemini) gets no invented zeros.
    if usage_reported or "usage" in js:
        check(isinstance(js.get("usage"), dict) and {"prompt_tokens", "total_tokens"} <= set(js["usage"]),
              "usage %r" % js.get("usage"))
    check(isinstance(js.get("model"), str), "model %r" % js.get("model"))


def test_qwen_embeddings():
    w = Watch(qwen)
    st, js, raw, _ = emb_request("text-embedding-v3", ["alpha", "beta"])
    assert_emb_list(st, js, raw, 2)
    check(js["usage"]["prompt_tokens"] == 3 and js["usage"]["total_tokens"] == 3, "usage %r" % js["usage"])
    w.done("embed")


def test_gemini_embeddings():
    w = Watch(gemini)
    st, js, raw, _ = emb_request("text-embedding-004", "alpha")
    assert_emb_list(st, js, raw, 1, usage_reported=False)
    st, js, raw, _ = emb_request("text-embedding-004", ["alpha", "beta"])
    assert_emb_list(st, js, raw, 2, usage_reported=False)
    w.done("embed", "embed")


def test_ollama_embeddings():
    w = Watch(ollama)
    st, js, raw, _ = emb_request("all-minilm", ["alpha", "beta"])
    assert_emb_list(st, js, raw, 2)
    check(js["usage"]["prompt_tokens"] == 8, "usage %r" % js["usage"])
    w.done("embed")


def test_ernie2_and_openai_embeddings():
    w = Watch(ernie)
    st, js, raw, _ = emb_request("embedding-v1", ["alpha", "beta"])
    assert_emb_list(st, js, raw, 2)
    w.done("embed")
    w = Watch(openai)
    st, js, raw, _ = emb_request("deepseek-chat", ["alpha", "beta"])
    assert_emb_list(st, js, raw, 2)
    w.done("embed")


def test_no_embeddings_for_claude_and_spark():
    for model, up in (("claude-sonnet-4-5", claude), ("spark-max", spark)):
        w = Watch(up)
        st, js, raw, _ = emb_request(model, "alpha")
        check(st in (400, 404), "%s embeddings -> %d %r" % (model, st, raw[:300]))
        error_shape(js, raw)
        check(not w.requests(), "%s: an embeddings call reached the upstream" % model)


# --------------------------------------------------------------------------- presets
def test_openai_presets_route_through_gateway():
    """Every preset channel (base_url overridden to the mock) serves G1."""
    w = Watch(openai)
    for p in PRESETS:
        st, js, raw, _ = gw.chat(G1("preset-" + p), timeout=TIMEOUT)
        check(st == 200, "preset %s: %d %r" % (p, st, raw[:300]))
        check(js["choices"][0]["message"]["content"] == "Hi!", "preset %s: %r" % (p, raw[:300]))
    models = [json.loads(r["body"])["model"] for r in w.requests()]
    check(models == ["%s-model" % p for p in PRESETS], "upstream model ids %r" % models)
    w.done(*(["g1"] * len(PRESETS)))


def longmen_t(conf_text, env=None):
    d = tempfile.mkdtemp(prefix="lm-prov-")
    path = os.path.join(d, "p.conf")
    with open(path, "w") as f:
        f.write(conf_text)
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([os.path.join(BUILD, "longmen"), "-t", "-c", path, "-p", PLUGIN_DIR],
                       capture_output=True, text=True, timeout=20, env=e, cwd=ROOT)
    out = p.stdout + p.stderr
    check(not sanitizer_report(out), "sanitizer: " + sanitizer_report(out))
    return p.returncode, out


def test_openai_presets_check_config():
    """Without base_url each preset must resolve on its own (longmen -t)."""
    conf = "listen 127.0.0.1:%d\n" % 1 + "".join(
        "channel p-%s {\n plugin openai\n preset %s\n api_key env:LMT_OPENAI\n models m-%s\n}\n" % (p, p, p)
        for p in PRESETS)
    rc, out = longmen_t(conf, ENV)
    check(rc == 0 and "is ok" in out, "presets -t: rc %d %s" % (rc, out))
    no_secret(out, "longmen -t output")
    rc, out = longmen_t("channel p {\n plugin openai\n preset nosuchvendor\n models m\n}\n")
    check(rc == 1 and "nosuchvendor" in out, "unknown preset must fail -t: rc %d %s" % (rc, out))
    rc, out = longmen_t("channel p {\n plugin openai\n models m\n}\n")
    check(rc == 1 and "base_url or preset" in out, "no base_url nor preset must fail -t: rc %d %s" % (rc, out))


def test_docs_example_config_checks():
    """The channel examples of docs/providers.md pass longmen -t."""
    path = os.path.join(ROOT, "docs", "providers.md")
    check(os.path.exists(path), "docs/providers.md missing")
    text = open(path).read()
    blocks, cur = [], None
    for line in text.splitlines():
        if line.strip() == "```conf":
            cur = []
        elif line.strip() == "```" and cur is not None:
            blocks.append("\n".join(cur))
            cur = None
        elif cur is not None:
            cur.append(line)
    check(len(blocks) >= 13, "expected one conf example per provider, found %d" % len(blocks))
    env = {}
    for b in blocks:
        for tok in b.split():
            if tok.startswith("env:"):
                env[tok[4:]] = "dummy-docs-key-123456"
    rc, out = longmen_t("listen 127.0.0.1:1\n" + "\n".join(blocks) + "\n", env)
    check(rc == 0 and "is ok" in out, "docs examples -t: rc %d %s" % (rc, out))


# --------------------------------------------------------------------------- secrets, shutdown
def test_keys_never_logged():
    log = gw.logtext()
    check(log.strip(), "empty gateway log")
    no_secret(log, "gateway log")
    for up in UPSTREAMS:
        for r in up.requests:
            check(" " not in r["path"] and "key=" not in r["path"], "%s: credential-ish URL %s" % (up.name, r["path"]))


def test_clean_shutdown():
    rc = gw.stop()
    check(rc == 0, "clean exit on SIGTERM, rc=%s\n%s" % (rc, gw.logtext()[-2000:]))
    for up in UPSTREAMS:
        up.close()


def all_tests():
    tests = []
    for name, p in PROVIDERS.items():
        tests += make_tests(name, p)
    tests += [test_stream_clean_eof_before_end_marker, test_qwen_embeddings, test_gemini_embeddings, test_ollama_embeddings,
              test_ernie2_and_openai_embeddings, test_no_embeddings_for_claude_and_spark,
              test_openai_presets_route_through_gateway, test_openai_presets_check_config,
              test_docs_example_config_checks, test_keys_never_logged]
    return [known_bugs(t) for t in tests] + [test_clean_shutdown]


if __name__ == "__main__":
    def _overtime():
        print("FAIL test_providers: over 55 s, aborted", flush=True)
        if gw is not None and gw.proc.poll() is None:
            gw.proc.kill()
        os._exit(3)
    _timer = threading.Timer(55, _overtime)  # hard bound on the whole file
    _timer.daemon = True
    _timer.start()
    setup()
    run(all_tests())
