"""/v1/messages (the Anthropic Messages API) through the real binary, for
every channel through the canonical form.

Against the native-API mocks of test_providers.py (Qwen, Gemini, Claude and
an OpenAI-compatible DeepSeek channel), whose golden answers the chat tests
already pin, plus a scripted OpenAI-compatible upstream for images,
reasoning, two-turn tools and client aborts:
- plain and streamed answers: Anthropic's exact event order, and the same
  text and usage as /v1/chat/completions gets for the same upstream answer;
- tools (tool_use out, tool_result back in as a tool message);
- images (base64 and url sources -> image_url parts), text documents, a
  PDF refused with a 400 naming the field;
- errors in Anthropic's shape: bad requests, x-api-key good and bad,
  upstream 429 -> rate_limit_error with retry-after, upstream 5xx;
- a client that leaves mid-stream is billed for what was received, and the
  ledger row says api "messages";
- count_tokens (an estimate).
"""
import json
import time

import test_providers as tp
from inbound_lib import (AdminGateway, OwnUpstream, check_abort_billed, no_violations, own_reasoning_chunks,
                         own_tool_call_reply)
from lib import KEY, check, run, usage_chunk
from lib import chunk as oa_chunk

own = OwnUpstream()

EXTRA = "".join([
    tp.channel("own", "openai", "own-model own-vision",
               ["base_url " + own.url + "/v1", "api_key env:LMT_OPENAI", "price_input 1", "price_output 2"]),
])
gw = None


def setup():
    global gw
    gw = AdminGateway(channels=tp.CHANNELS + EXTRA, env=tp.ENV, workers=2)


# ------------------------------------------------------------------ helpers

def msgs(body, key=KEY, headers=None, use_x_api_key=True, timeout=10):
    h = {"anthropic-version": "2023-06-01"}
    if use_x_api_key and key:
        h["x-api-key"] = key
    h.update(headers or {})
    return gw.request("POST", "/v1/messages", body, key=None if use_x_api_key else key, headers=h,
                      timeout=timeout)


def events_of(raw):
    """[(event name, data dict)] of an SSE body."""
    out = []
    for block in raw.decode().split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
        if name or data:
            check(name and data and data.get("type") == name, "event name and type differ: %r" % block)
            out.append((name, data))
    return out


def check_order(evs):
    """message_start, blocks (start, deltas, stop), message_delta,
    message_stop: Anthropic's grammar; pings anywhere between (the gateway
    sends one after message_start, Anthropic itself after the first block
    start, and a Claude channel's stream passes through as it came)."""
    names = [n for n, _ in evs]
    check(names[:1] == ["message_start"], "opening: %s" % names)
    check(names[-2:] == ["message_delta", "message_stop"], "closing: %s" % names)
    open_idx, nxt = None, 0
    for n, d in evs[1:-2]:
        if n == "content_block_start":
            check(open_idx is None and d["index"] == nxt, "block start out of order: %s" % names)
            open_idx, nxt = d["index"], nxt + 1
        elif n == "content_block_delta":
            check(d["index"] == open_idx, "delta outside its block: %s" % names)
        elif n == "content_block_stop":
            check(d["index"] == open_idx, "stop of a block not open: %s" % names)
            open_idx = None
        elif n != "ping":
            check(False, "unexpected event %s" % n)
    check(open_idx is None, "a block left open")


def text_of(evs, kind="text_delta", field="text"):
    return "".join(d["delta"].get(field, "") for n, d in evs
                   if n == "content_block_delta" and d["delta"]["type"] == kind)


def final_usage(evs):
    """message_start's usage updated by message_delta's, as the SDKs read it
    (Anthropic's message_delta carries only output_tokens)."""
    u = dict(evs[0][1]["message"].get("usage") or {})
    u.update(evs[-2][1]["usage"])
    return u


def M(model, **kw):
    b = {"model": model, "max_tokens": 16, "temperature": 0.2, "system": "You are terse.",
         "messages": [{"role": "user", "content": "Say hi"}]}
    b.update(kw)
    return b


ANT_TOOLS = [{"name": "get_weather", "description": "Get weather",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]

GOLDEN = [("qwen-plus", tp.qwen), ("gemini-2.0-flash", tp.gemini), ("claude-sonnet-4-5", tp.claude),
          ("deepseek-chat", tp.openai)]


# ------------------------------------------------------------------ tests

def test_plain_every_channel():
    for model, up in GOLDEN:
        up.mode = "golden"
        st, js, raw, hdrs = msgs(M(model))
        check(st == 200, "%s: %d %s" % (model, st, raw[:300]))
        check(js["type"] == "message" and js["role"] == "assistant", "%s: shape %s" % (model, js))
        check(js["content"] == [{"type": "text", "text": "Hi!"}], "%s: content %s" % (model, js["content"]))
        check(js["stop_reason"] == "end_turn" and js["stop_sequence"] is None, "%s: stop %s" % (model, js))
        cst, cjs, _, _ = gw.chat(tp.G1(model))
        check(cst == 200, "chat %s: %d" % (model, cst))
        u = cjs["usage"]
        check(js["usage"]["input_tokens"] == u["prompt_tokens"] and
              js["usage"]["output_tokens"] == u["completion_tokens"],
              "%s: usage %s vs chat %s" % (model, js["usage"], u))
        check(cjs["choices"][0]["message"]["content"] == "Hi!", "chat text")
    no_violations(GOLDEN)


def test_stream_every_channel():
    for model, up in GOLDEN:
        up.mode = "golden"
        st, _, raw, hdrs = msgs(M(model, stream=True))
        check(st == 200 and hdrs.get("Content-Type", "").startswith("text/event-stream"),
              "%s: %d %s" % (model, st, raw[:300]))
        evs = events_of(raw)
        check_order(evs)
        start = evs[0][1]["message"]
        check(start["role"] == "assistant" and start["content"] == [] and start["model"] == model,
              "%s: message_start %s" % (model, start))
        check(text_of(evs) == "Hi!", "%s: text %r" % (model, text_of(evs)))
        check(evs[-2][1]["delta"]["stop_reason"] == "end_turn", "%s: stop %s" % (model, evs[-2]))
        cst, cev, _, _ = gw.stream(tp.G2(model))
        u = [json.loads(e) for e in cev if e != "[DONE]" and '"usage"' in e][-1]["usage"]
        mu = final_usage(evs)
        check(mu["input_tokens"] == u["prompt_tokens"] and mu["output_tokens"] == u["completion_tokens"],
              "%s: usage %s vs chat %s" % (model, mu, u))
    no_violations(GOLDEN)


def test_tools_first_turn_every_channel():
    for model, up in GOLDEN:
        up.mode = "golden"
        body = {"model": model, "max_tokens": 64, "tools": ANT_TOOLS, "tool_choice": {"type": "auto"},
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}
        # the tp mocks check max_tokens away for tools requests only where they pin it
        st, js, raw, _ = msgs(body)
        check(st == 200, "%s: %d %s" % (model, st, raw[:300]))
        tu = [b for b in js["content"] if b["type"] == "tool_use"]
        check(len(tu) == 1 and tu[0]["name"] == "get_weather" and tu[0]["input"] == {"city": "Paris"},
              "%s: tool_use %s" % (model, js["content"]))
        check(js["stop_reason"] == "tool_use", "%s: stop %s" % (model, js["stop_reason"]))
        body["stream"] = True
        st, _, raw, _ = msgs(body)
        evs = events_of(raw)
        check_order(evs)
        starts = [d["content_block"] for n, d in evs if n == "content_block_start"]
        check(any(b["type"] == "tool_use" and b["name"] == "get_weather" for b in starts),
              "%s: stream blocks %s" % (model, starts))
        args = text_of(evs, "input_json_delta", "partial_json")
        check(json.loads(args) == {"city": "Paris"}, "%s: streamed input %r" % (model, args))
        check(evs[-2][1]["delta"]["stop_reason"] == "tool_use", "%s: stream stop" % model)
    # max_tokens is extra for the tool-call goldens of some mocks: only body-shape
    # violations about tools would matter here
    for _, up in GOLDEN:
        with up.lock:
            bad = [v for v in up.violations if "tools" in v.lower() and "G3" in v]
            up.violations[:] = []
        check(not bad, "tools not forwarded: %s" % bad)


def test_tools_two_turns():
    own.reply = own_tool_call_reply()
    turn1 = [{"role": "user", "content": "Weather in Paris?"}]
    st, js, raw, _ = msgs({"model": "own-model", "max_tokens": 50, "tools": ANT_TOOLS,
                           "tool_choice": {"type": "tool", "name": "get_weather"}, "messages": turn1})
    check(st == 200, "turn 1: %d %s" % (st, raw[:300]))
    sent = own.last_body()
    check(sent["tools"][0]["function"]["parameters"] == ANT_TOOLS[0]["input_schema"], "tools %s" % sent)
    check(sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}, "tool_choice")
    tu = js["content"][0]
    check(tu == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}, "tu %s" % tu)
    own.reply = {"id": "chatcmpl-t2", "object": "chat.completion", "created": 1, "model": "own-model",
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "Sunny, 21C."}}],
                 "usage": {"prompt_tokens": 40, "completion_tokens": 4, "total_tokens": 44}}
    turn2 = turn1 + [{"role": "assistant", "content": js["content"]},
                     {"role": "user", "content": [
                         {"type": "tool_result", "tool_use_id": "call_1",
                          "content": [{"type": "text", "text": "sunny 21"}]},
                         {"type": "text", "text": "Answer briefly."}]}]
    st, js, raw, _ = msgs({"model": "own-model", "max_tokens": 50, "tools": ANT_TOOLS, "messages": turn2})
    check(st == 200 and js["content"] == [{"type": "text", "text": "Sunny, 21C."}], "turn 2: %s" % raw[:300])
    m = own.last_body()["messages"]
    check(m[1]["role"] == "assistant" and m[1]["tool_calls"][0]["id"] == "call_1" and
          json.loads(m[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}, "assistant %s" % m[1])
    check(m[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny 21"}, "tool msg %s" % m[2])
    check(m[3] == {"role": "user", "content": "Answer briefly."}, "user after tool %s" % m[3])


def test_images_and_documents():
    own.reply = {"id": "chatcmpl-i", "object": "chat.completion", "created": 1, "model": "own-vision",
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "A cat."}}],
                 "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
    body = {"model": "own-vision", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}},
        {"type": "text", "text": "What is it?"}]}]}
    st, js, raw, _ = msgs(body)
    check(st == 200 and js["content"][0]["text"] == "A cat.", "%d %s" % (st, raw[:300]))
    parts = own.last_body()["messages"][0]["content"]
    check(parts[0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}, "b64 %s" % parts[0])
    check(parts[1] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}, "url %s" % parts[1])
    check(parts[2] == {"type": "text", "text": "doc text"} and parts[3]["text"] == "What is it?", "doc %s" % parts)
    pdf = {"model": "own-vision", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]}
    n = len(own.requests)
    st, js, raw, _ = msgs(pdf)
    check(st == 400 and js["type"] == "error" and js["error"]["type"] == "invalid_request_error" and
          "messages.0.content.0.source" in js["error"]["message"], "pdf: %d %s" % (st, raw))
    check(len(own.requests) == n, "a refused request reached the upstream")


def test_reasoning_to_thinking():
    own.delay = 0
    own.script = own_reasoning_chunks() + [
        oa_chunk("Answer"), oa_chunk(" here.", finish="stop"), usage_chunk(11, 7), "[DONE]"]
    body = {"model": "own-model", "max_tokens": 2000, "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "Think."}]}
    st, _, raw, _ = msgs(body)
    evs = events_of(raw)
    check_order(evs)
    blocks = [d["content_block"]["type"] for n, d in evs if n == "content_block_start"]
    check(blocks == ["thinking", "text"], "blocks %s" % blocks)
    check(text_of(evs, "thinking_delta", "thinking") == "Let me think. Done.", "thinking text")
    check(text_of(evs) == "Answer here.", "text")
    check(final_usage(evs) == {"input_tokens": 11, "output_tokens": 7}, "usage %s" % final_usage(evs))
    check("thinking" not in own.last_body(), "thinking forwarded to an OpenAI-compatible upstream")


def test_errors():
    st, js, raw, _ = msgs({"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]})
    check(st == 400 and js == {"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": js["error"]["message"]}} and
          "max_tokens" in js["error"]["message"], "no max_tokens: %d %s" % (st, raw))
    st, js, raw, _ = msgs(M("qwen-plus", messages=[{"role": "system", "content": "x"}]))
    check(st == 400 and "messages.0.role" in js["error"]["message"], "bad role: %s" % raw)
    st, js, raw, _ = msgs(M("qwen-plus"), key="sk-wrong")
    check(st == 401 and js["error"]["type"] == "authentication_error", "bad x-api-key: %d %s" % (st, raw))
    st, js, raw, _ = msgs(M("qwen-plus"), key=None)
    check(st == 401 and js["type"] == "error", "no key: %d %s" % (st, raw))
    st, js, raw, _ = msgs(M("qwen-plus"), use_x_api_key=False)
    check(st == 200, "Authorization: Bearer: %d %s" % (st, raw[:200]))
    st, js, raw, _ = msgs(M("no-such-model"))
    check(st == 404 and js["error"]["type"] == "not_found_error", "unknown model: %d %s" % (st, raw))
    tp.qwen.mode = "429"
    try:
        st, js, raw, hdrs = msgs(M("qwen-plus"))
        check(st == 429 and js["error"]["type"] == "rate_limit_error", "429: %d %s" % (st, raw))
    finally:
        tp.qwen.mode = "golden"
    own.status = 429  # an upstream 429 with Retry-After: the client is told when to come back
    try:
        st, js, raw, hdrs = msgs({"model": "own-model", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        check(st == 429 and js["error"]["type"] == "rate_limit_error", "429: %d %s" % (st, raw))
        check({k.lower(): v for k, v in hdrs.items()}.get("retry-after") == "1", "retry-after: %s" % hdrs)
    finally:
        own.status = 200
    time.sleep(1.1)  # the channel held by the 429's retry-after
    tp.gemini.mode = "500"
    try:
        st, js, raw, _ = msgs(M("gemini-2.0-flash"))
        check(st >= 500 and js["type"] == "error" and js["error"]["type"] in ("api_error", "overloaded_error"),
              "5xx: %d %s" % (st, raw))
    finally:
        tp.gemini.mode = "golden"
    tp.claude.mode = "midstream"
    try:
        st, _, raw, _ = msgs(M("claude-sonnet-4-5", stream=True))
        evs = events_of(raw)
        check(st == 200 and evs[0][0] == "message_start" and evs[-1][0] == "error" and
              evs[-1][1]["error"]["type"] in ("overloaded_error", "api_error"), "midstream: %s" % raw[:600])
    finally:
        tp.claude.mode = "golden"
    with tp.claude.lock:
        tp.claude.violations[:] = []


def test_client_abort_billed():
    check_abort_billed(gw, own, "/v1/messages", {"model": "own-model", "max_tokens": 100, "stream": True,
                                                  "messages": [{"role": "user", "content": "Talk."}]},
                       b"text_delta", 3, "messages", headers={"x-api-key": KEY}, bearer=False)


def test_ledger_and_count_tokens():
    st, js, raw, hdrs = msgs(M("qwen-plus"))
    rid = hdrs.get("X-Request-Id")
    rows = gw.usage_rows(rid)
    check(rows and rows[0]["api"] == "messages", "messages row %s" % rows)
    st, js, raw, hdrs = gw.chat(tp.G1("qwen-plus"))
    rows = gw.usage_rows(hdrs.get("X-Request-Id"))
    check(rows and rows[0]["api"] == "chat", "chat row %s" % rows)
    check("api=messages" in gw.logtext() and "api=chat" in gw.logtext(), "access log api field")
    st, js, raw, _ = gw.request("POST", "/v1/messages/count_tokens",
                                {"model": "qwen-plus", "system": "You are terse.",
                                 "messages": [{"role": "user", "content": "Say hi " * 40}]},
                                key=None, headers={"x-api-key": KEY})
    check(st == 200 and 60 < js["input_tokens"] < 200, "count_tokens %d %s" % (st, raw))
    st, js, raw, _ = gw.request("POST", "/v1/messages/count_tokens",
                                {"model": "qwen-plus", "messages": []}, key=None, headers={"x-api-key": KEY})
    check(st == 400 and js["error"]["type"] == "invalid_request_error", "count_tokens 400 %s" % raw)
    st, js, raw, _ = gw.request("POST", "/v1/messages/count_tokens", {"model": "qwen-plus", "messages": []},
                                key="bad")
    check(st == 401 and js["error"]["type"] == "authentication_error", "count_tokens 401 %s" % raw)


def main():
    setup()
    try:
        run([test_plain_every_channel, test_stream_every_channel, test_tools_first_turn_every_channel,
             test_tools_two_turns, test_images_and_documents, test_reasoning_to_thinking, test_errors,
             test_client_abort_billed, test_ledger_and_count_tokens])
    finally:
        gw.stop()


if __name__ == "__main__":
    main()
