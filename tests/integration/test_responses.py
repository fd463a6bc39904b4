"""/v1/responses (the OpenAI Responses API, stateless) through the real
binary, for every channel through the canonical form.

Against the native-API mocks of test_providers.py (Qwen, Gemini, Claude and
an OpenAI-compatible DeepSeek channel), whose golden answers the chat tests
already pin, plus a scripted OpenAI-compatible upstream for reasoning,
two-turn function calls, truncated answers and client aborts:
- plain and streamed answers: the Responses event order (what the SDKs'
  stream helpers fold), and the same text and usage as /v1/chat/completions
  gets for the same upstream answer;
- function tools: function_call items out, function_call_output back in as
  a tool message after the assistant's tool_calls;
- the stateful and built-in features refused with a 400 naming the field,
  before any upstream call;
- upstream errors in OpenAI's shape, and response.failed mid-stream;
- a client that leaves mid-stream is billed for what was received, and the
  ledger row says api "responses".
"""
import json
import time

import test_providers as tp
from inbound_lib import (AdminGateway, OwnUpstream, check_abort_billed, no_violations, own_reasoning_chunks,
                         own_tool_call_reply)
from lib import KEY, check, run, usage_chunk
from lib import chunk as oa_chunk

own = OwnUpstream()

EXTRA = tp.channel("own", "openai", "own-model",
                   ["base_url " + own.url + "/v1", "api_key env:LMT_OPENAI", "price_input 1", "price_output 2"])
gw = None


def setup():
    global gw
    gw = AdminGateway(channels=tp.CHANNELS + EXTRA, env=tp.ENV, workers=2)


# ------------------------------------------------------------------ helpers

def resp(body, key=KEY, timeout=10):
    return gw.request("POST", "/v1/responses", body, key=key, timeout=timeout)


def events_of(raw):
    """[(event name, data dict)] of an SSE body; each event's name is its
    data's type and sequence_number counts from 0."""
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
            check(data["sequence_number"] == len(out), "sequence_number %s at %d" % (data["sequence_number"], len(out)))
            out.append((name, data))
    return out


TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def check_order(evs):
    """created, in_progress, then items one after another (added, their
    parts and deltas, done; a function call's argument deltas and done),
    then one terminal event: what openai-node's ResponseStream and
    openai-python's ResponseStreamState accept."""
    names = [n for n, _ in evs]
    check(names[:2] == ["response.created", "response.in_progress"], "opening: %s" % names)
    check(names[-1] in TERMINAL and not any(n in TERMINAL for n in names[:-1]), "closing: %s" % names)
    check(evs[0][1]["response"]["output"] == [] and evs[0][1]["response"]["status"] == "in_progress",
          "created %s" % evs[0][1])
    items = {}  # output_index -> [item, open]
    for n, d in evs[2:-1]:
        if n == "response.output_item.added":
            check(d["output_index"] == len(items), "item index %s after %d items" % (d["output_index"], len(items)))
            it = d["item"]
            check(it.get("content", []) == [] and it.get("arguments", "") == "", "an announced item is empty: %s" % it)
            items[d["output_index"]] = [it, True]
            continue
        check(d["output_index"] in items and items[d["output_index"]][1], "%s for an item not open: %s" % (n, d))
        it = items[d["output_index"]][0]
        if "item_id" in d:
            check(d["item_id"] == it["id"], "%s names item %s, not %s" % (n, d["item_id"], it["id"]))
        if n == "response.output_item.done":
            check(d["item"]["id"] == it["id"] and d["item"]["type"] == it["type"], "done %s" % d)
            items[d["output_index"]][1] = False
    check(not any(o for _, o in items.values()), "an item left open: %s" % names)


def text_of(evs, kind="response.output_text.delta"):
    return "".join(d["delta"] for n, d in evs if n == kind)


def output_text(js):
    return "".join(c["text"] for it in js["output"] if it["type"] == "message"
                   for c in it["content"] if c["type"] == "output_text")


def R(model, **kw):
    """G1 of test_providers in the Responses API's terms."""
    b = {"model": model, "instructions": "You are terse.", "input": "Say hi", "max_output_tokens": 16,
         "temperature": 0.2}
    b.update(kw)
    return b


RESP_TOOLS = [{"type": "function", "name": t["function"]["name"], "description": t["function"]["description"],
               "parameters": t["function"]["parameters"]} for t in tp.TOOLS]

GOLDEN = [("qwen-plus", tp.qwen), ("gemini-2.0-flash", tp.gemini), ("claude-sonnet-4-5", tp.claude),
          ("deepseek-chat", tp.openai)]


# ------------------------------------------------------------------ tests

def test_plain_every_channel():
    for model, up in GOLDEN:
        up.mode = "golden"
        st, js, raw, hdrs = resp(R(model))
        check(st == 200, "%s: %d %s" % (model, st, raw[:300]))
        check(js["object"] == "response" and js["status"] == "completed" and js["id"].startswith("resp_"),
              "%s: shape %s" % (model, js))
        check(js["error"] is None and js["incomplete_details"] is None, "%s: %s" % (model, js))
        msg = js["output"][-1]
        check(msg["type"] == "message" and msg["role"] == "assistant" and msg["status"] == "completed" and
              msg["content"] == [{"type": "output_text", "text": "Hi!", "annotations": []}],
              "%s: output %s" % (model, js["output"]))
        cst, cjs, _, _ = gw.chat(tp.G1(model))
        check(cst == 200 and cjs["choices"][0]["message"]["content"] == "Hi!", "chat %s: %d" % (model, cst))
        u, ru = cjs["usage"], js["usage"]
        check(ru["input_tokens"] == u["prompt_tokens"] and ru["output_tokens"] == u["completion_tokens"] and
              ru["total_tokens"] == u["total_tokens"], "%s: usage %s vs chat %s" % (model, ru, u))
        check("cached_tokens" in ru["input_tokens_details"] and
              "reasoning_tokens" in ru["output_tokens_details"], "%s: usage details %s" % (model, ru))
    no_violations(GOLDEN)


def test_stream_every_channel():
    for model, up in GOLDEN:
        up.mode = "golden"
        st, _, raw, hdrs = resp(R(model, stream=True))
        check(st == 200 and hdrs.get("Content-Type", "").startswith("text/event-stream"),
              "%s: %d %s" % (model, st, raw[:300]))
        check(b"[DONE]" not in raw, "%s: the Responses API has no [DONE]" % model)
        evs = events_of(raw)
        check_order(evs)
        check(text_of(evs) == "Hi!", "%s: text %r" % (model, text_of(evs)))
        final = evs[-1][1]["response"]
        check(evs[-1][0] == "response.completed" and final["status"] == "completed", "%s: end %s" % (model, evs[-1]))
        check(output_text(final) == "Hi!", "%s: final output %s" % (model, final["output"]))
        done = [d for n, d in evs if n == "response.output_text.done"]
        check(len(done) == 1 and done[0]["text"] == "Hi!", "%s: text done %s" % (model, done))
        cst, cev, _, _ = gw.stream(tp.G2(model))
        u = [json.loads(e) for e in cev if e != "[DONE]" and '"usage"' in e][-1]["usage"]
        ru = final["usage"]
        check(ru["input_tokens"] == u["prompt_tokens"] and ru["output_tokens"] == u["completion_tokens"],
              "%s: usage %s vs chat %s" % (model, ru, u))
    no_violations(GOLDEN)


def test_tools_first_turn_every_channel():
    for model, up in GOLDEN:
        up.mode = "golden"
        body = {"model": model, "input": "Weather in Paris?", "tools": RESP_TOOLS, "tool_choice": "auto"}
        st, js, raw, _ = resp(body)
        check(st == 200, "%s: %d %s" % (model, st, raw[:300]))
        fc = [it for it in js["output"] if it["type"] == "function_call"]
        check(len(fc) == 1 and fc[0]["name"] == "get_weather" and json.loads(fc[0]["arguments"]) == {"city": "Paris"}
              and fc[0]["call_id"] and fc[0]["status"] == "completed", "%s: function_call %s" % (model, js["output"]))
        body["stream"] = True
        st, _, raw, _ = resp(body)
        evs = events_of(raw)
        check_order(evs)
        added = [d["item"] for n, d in evs if n == "response.output_item.added" and d["item"]["type"] == "function_call"]
        check(len(added) == 1 and added[0]["name"] == "get_weather", "%s: stream items %s" % (model, added))
        args = text_of(evs, "response.function_call_arguments.delta")
        check(json.loads(args) == {"city": "Paris"}, "%s: streamed arguments %r" % (model, args))
        adone = [d for n, d in evs if n == "response.function_call_arguments.done"]
        check(len(adone) == 1 and json.loads(adone[0]["arguments"]) == {"city": "Paris"}, "%s: done %s" % (model, adone))
        fin = [it for it in evs[-1][1]["response"]["output"] if it["type"] == "function_call"]
        check(len(fin) == 1 and json.loads(fin[0]["arguments"]) == {"city": "Paris"}, "%s: final %s" % (model, fin))
    no_violations(GOLDEN)


def test_tools_two_turns():
    own.reply = own_tool_call_reply()
    turn1 = [{"role": "user", "content": "Weather in Paris?"}]
    st, js, raw, _ = resp({"model": "own-model", "input": turn1, "tools": RESP_TOOLS,
                           "tool_choice": {"type": "function", "name": "get_weather"}, "store": False})
    check(st == 200, "turn 1: %d %s" % (st, raw[:300]))
    sent = own.last_body()
    check(sent["tools"] == tp.TOOLS, "tools %s" % sent["tools"])
    check(sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}, "tool_choice %s" % sent)
    check([it["type"] for it in js["output"]] == ["function_call"], "only a call: %s" % js["output"])
    fc = js["output"][0]
    check(fc["call_id"] == "call_1" and fc["name"] == "get_weather", "call %s" % fc)
    own.reply = {"id": "chatcmpl-t2", "object": "chat.completion", "created": 1, "model": "own-model",
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "Sunny, 21C."}}],
                 "usage": {"prompt_tokens": 40, "completion_tokens": 4, "total_tokens": 44}}
    turn2 = turn1 + js["output"] + [{"type": "function_call_output", "call_id": "call_1", "output": "sunny 21"}]
    st, js, raw, _ = resp({"model": "own-model", "input": turn2, "tools": RESP_TOOLS})
    check(st == 200 and output_text(js) == "Sunny, 21C.", "turn 2: %s" % raw[:300])
    m = own.last_body()["messages"]
    check(m[1]["role"] == "assistant" and m[1]["tool_calls"][0]["id"] == "call_1" and
          json.loads(m[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}, "assistant %s" % m[1])
    check(m[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny 21"}, "tool msg %s" % m[2])
    check(js["usage"]["input_tokens"] == 40 and js["usage"]["output_tokens"] == 4, "usage %s" % js["usage"])


def test_reasoning_and_incomplete():
    own.delay = 0
    own.script = own_reasoning_chunks() + [
        oa_chunk("Answer"), oa_chunk(" here.", finish="length"), usage_chunk(11, 7), "[DONE]"]
    st, _, raw, _ = resp({"model": "own-model", "input": "Think.", "stream": True, "max_output_tokens": 7,
                          "reasoning": {"effort": "low"}})
    check(st == 200, "%d %s" % (st, raw[:300]))
    evs = events_of(raw)
    check_order(evs)
    kinds = [d["item"]["type"] for n, d in evs if n == "response.output_item.added"]
    check(kinds == ["reasoning", "message"], "items %s" % kinds)
    check(text_of(evs, "response.reasoning_text.delta") == "Let me think. Done.", "reasoning text")
    check(text_of(evs) == "Answer here.", "text")
    check(evs[-1][0] == "response.incomplete", "a cut answer ends incomplete: %s" % evs[-1][0])
    final = evs[-1][1]["response"]
    check(final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"},
          "final %s" % final)
    check(final["usage"]["input_tokens"] == 11 and final["usage"]["output_tokens"] == 7, "usage %s" % final["usage"])
    check(final["output"][0]["content"][0] == {"type": "reasoning_text", "text": "Let me think. Done."},
          "reasoning item %s" % final["output"][0])
    sent = own.last_body()
    check(sent.get("reasoning_effort") == "low" and sent.get("max_tokens") == 7, "sent %s" % sent)
    own.reply = {"id": "chatcmpl-l", "object": "chat.completion", "created": 1, "model": "own-model",
                 "choices": [{"index": 0, "finish_reason": "length",
                              "message": {"role": "assistant", "content": "Cut", "reasoning_content": "hm"}}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
    st, js, raw, _ = resp({"model": "own-model", "input": "x", "max_output_tokens": 1})
    check(st == 200 and js["status"] == "incomplete" and
          js["incomplete_details"] == {"reason": "max_output_tokens"}, "%s" % raw[:300])
    check([it["type"] for it in js["output"]] == ["reasoning", "message"], "output %s" % js["output"])


def test_unsupported_400():
    cases = [({"store": True}, "store"),
             ({"previous_response_id": "resp_abc"}, "previous_response_id"),
             ({"conversation": "conv_1"}, "conversation"),
             ({"background": True}, "background"),
             ({"tools": [{"type": "web_search"}]}, "tools[0].type 'web_search'"),
             ({"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[0].type 'file_search'"),
             ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
             ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
              "input[0].content[0].type 'input_file'"),
             ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type 'item_reference'"),
             ({"input": [{"role": "user", "content": "x"}, {"type": "function_call_output", "output": "r"}]},
              "input[1].call_id is required")]
    with own.lock:
        n = len(own.requests)
    for extra, field in cases:
        b = {"model": "own-model", "input": "x"}
        b.update(extra)
        st, js, raw, _ = resp(b)
        check(st == 400, "%s: %d %s" % (extra, st, raw[:300]))
        e = tp.error_shape(js, raw)
        check(e["type"] == "invalid_request_error" and field in e["message"], "%s: %s" % (extra, e))
    with own.lock:
        check(len(own.requests) == n, "a refused request reached the upstream")
    st, js, raw, _ = resp({"model": "own-model", "input": "x", "store": False,
                           "include": ["reasoning.encrypted_content"], "metadata": {"a": "b"}})
    check(st == 200, "store false, include encrypted reasoning, metadata: %d %s" % (st, raw[:300]))


def test_errors():
    st, js, raw, _ = resp(R("qwen-plus"), key="sk-wrong")
    check(st == 401 and tp.error_shape(js, raw)["code"] == "invalid_api_key", "bad key: %d %s" % (st, raw))
    st, js, raw, _ = resp(R("no-such-model"))
    check(st == 404 and tp.error_shape(js, raw), "unknown model: %d %s" % (st, raw))
    st, js, raw, _ = resp(b"{not json")
    check(st == 400 and tp.error_shape(js, raw), "bad JSON: %d %s" % (st, raw))
    tp.qwen.mode = "429"
    try:
        st, js, raw, _ = resp(R("qwen-plus"))
        check(st == 429 and tp.error_shape(js, raw)["type"] == "rate_limit_error", "429: %d %s" % (st, raw))
        cst, cjs, craw, _ = gw.chat(tp.G1("qwen-plus"))
        check(cst == 429 and tp.error_shape(cjs, craw) == tp.error_shape(js, raw), "as chat: %s" % craw)
    finally:
        tp.qwen.mode = "golden"
    time.sleep(1.1)
    tp.gemini.mode = "500"
    try:
        st, js, raw, _ = resp(R("gemini-2.0-flash"))
        cst, cjs, craw, _ = gw.chat(tp.G1("gemini-2.0-flash"))
        check(st >= 500 and st == cst and tp.error_shape(js, raw) == tp.error_shape(cjs, craw),
              "5xx: %d %s, chat %d %s" % (st, raw, cst, craw))
    finally:
        tp.gemini.mode = "golden"
    tp.claude.mode = "midstream"
    try:
        st, _, raw, _ = resp(R("claude-sonnet-4-5", stream=True))
        evs = events_of(raw)
        check(st == 200 and evs[0][0] == "response.created" and evs[-1][0] == "response.failed",
              "midstream: %s" % raw[:600])
        f = evs[-1][1]["response"]
        check(f["status"] == "failed" and f["error"]["message"] and f["error"]["code"], "failed %s" % f)
    finally:
        tp.claude.mode = "golden"
    for _, up in GOLDEN:
        with up.lock:
            up.violations[:] = []


def test_client_abort_billed():
    # "event:" and "type" name each delta: 3 deltas
    check_abort_billed(gw, own, "/v1/responses", {"model": "own-model", "input": "Talk.", "stream": True},
                       b"response.output_text.delta", 6, "responses")


def test_ledger_and_log():
    st, js, raw, hdrs = resp(R("qwen-plus"))
    rid = hdrs.get("X-Request-Id")
    check(st == 200 and js["id"].startswith("resp_"), "id %s / %s" % (js["id"], rid))
    rows = gw.usage_rows(rid)
    check(rows and rows[0]["api"] == "responses", "responses row %s" % rows)
    check("api=responses" in gw.logtext(), "access log api field")


def main():
    setup()
    try:
        run([test_plain_every_channel, test_stream_every_channel, test_tools_first_turn_every_channel,
             test_tools_two_turns, test_reasoning_and_incomplete, test_unsupported_400, test_errors,
             test_client_abort_billed, test_ledger_and_log])
    finally:
        gw.stop()


if __name__ == "__main__":
    main()
