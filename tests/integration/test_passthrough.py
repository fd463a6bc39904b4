"""Pass-through of an inbound API to a channel that speaks it natively
(relay/passthru.h), through the real binary:
- /v1/messages on a Claude channel: the upstream gets the client's bytes
  with only "model" replaced (and the client's anthropic-beta), the client
  gets the upstream's answer and events byte for byte;
- the ledger bills the upstream's usage as chat would (prompt = input +
  cache creation + cache reads), api "messages";
- a client that leaves mid-stream is billed for what was received;
- upstream errors reach the client in Anthropic's shape; an error event
  mid-stream is forwarded once; a failing Claude channel (529, or an error
  event before any output) fails over to the next channel, a Claude one
  (passed through) or an OpenAI one (translated);
- /v1/responses on an OpenAI channel with `passthrough responses` goes to
  <base>/responses unchanged but for the model, its usage billed;
- /v1/messages/count_tokens asks a Claude channel's upstream (its refusal
  passed on, its other failures answered by the estimate).
"""
import json
import threading
import time

from inbound_lib import (AdminGateway, ant_error, ant_message, ant_stream, events_of, msgs_text, msgs_usage,
                         resp_object, resp_stream)
from lib import KEY, Mock, check, chunk, json_reply, run, sse_reply, usage_chunk

TIMEOUTS = "    connect_timeout 2s\n    first_byte_timeout 5s\n    idle_timeout 5s\n"

claude = Mock()      # the working Claude upstream
claude_down = Mock()  # a Claude upstream that fails
oai = Mock()         # an OpenAI upstream with /v1/responses and /v1/chat/completions
state = {"stream": [], "whole": None, "status": 200, "delay": 0.0, "down": "529", "count": 42}
lock = threading.Lock()


def claude_messages(h, body):
    b = json.loads(body)
    if state["status"] != 200:
        return json_reply(h, state["status"], state["whole"])
    if b.get("stream"):
        return sse_reply(h, None, delay=state["delay"], raw=state["stream"])
    return json_reply(h, 200, state["whole"])


def claude_count(h, body):
    if state["status"] != 200:
        return json_reply(h, state["status"], state["whole"])
    return json_reply(h, 200, {"input_tokens": state["count"]})


def down_messages(h, body):
    if state["down"] == "529":
        return json_reply(h, 529, ant_error("overloaded_error", "Overloaded"))
    return sse_reply(h, None, raw=["event: error\ndata: %s\n\n" % json.dumps(ant_error("overloaded_error",
                                                                                         "Overloaded"))])


def oai_responses(h, body):
    b = json.loads(body)
    if b.get("stream"):
        return sse_reply(h, None, raw=resp_stream(["Hel", "lo", "!"], "gpt-up"))
    return json_reply(h, 200, resp_object("Hello!", "gpt-up"))


def oai_chat(h, body):
    b = json.loads(body)
    if b.get("stream"):
        return sse_reply(h, [chunk("From ", role="assistant"), chunk("OpenAI", finish="stop"),
                             usage_chunk(9, 4), "[DONE]"])
    return json_reply(h, 200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "oa-up",
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": "From OpenAI"}}],
                               "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})


claude.routes["/v1/messages"] = claude_messages
claude.routes["/v1/messages/count_tokens"] = claude_count
claude_down.routes["/v1/messages"] = down_messages
oai.routes["/v1/responses"] = oai_responses
oai.routes["/v1/chat/completions"] = oai_chat


def channel(name, plugin, models, settings):
    return "channel %s {\n    plugin %s\n    models %s\n%s%s}\n" % (
        name, plugin, models, "".join("    %s\n" % s for s in settings), TIMEOUTS)


CHANNELS = "".join([
    channel("cl", "claude", "claude-pt=claude-up-1 claude-fo=claude-up-1",
            ["base_url " + claude.url, "api_key env:LMT_PT_CLAUDE", "priority 1",
             "price_input 1", "price_output 2"]),
    channel("cl-down", "claude", "claude-fo=claude-up-0 claude-fo2=claude-up-0",
            ["base_url " + claude_down.url, "api_key env:LMT_PT_CLAUDE", "priority 0"]),
    channel("oa", "openai", "claude-fo2=oa-up gpt-pt=gpt-up",
            ["base_url " + oai.url + "/v1", "api_key env:LMT_PT_OPENAI", "priority 1",
             "passthrough responses", "price_input 1", "price_output 2"]),
])
ENV = {"LMT_PT_CLAUDE": "sk-ant-upstream", "LMT_PT_OPENAI": "sk-oai-upstream"}
gw = None


def last(mock, path):
    with mock.lock:
        return [r for r in mock.requests if r["path"] == path][-1]


# A body as a client may send it: odd spacing, fields the canonical form
# does not know (thinking, cache_control, metadata), unicode escapes.
RAW = ('{ "max_tokens" : 1024,\n "model":"claude-pt" , "thinking": {"type": "enabled", "budget_tokens": 512},'
       '"system":[{"type":"text","text":"Be \\u00e9 terse.","cache_control":{"type":"ephemeral"}}],'
       '"metadata":{"user_id":"u-1"},"messages":[{"role":"user","content":"Say \\"model\\": hi"}]%s}')


def test_body_verbatim_but_model():
    state.update(status=200, whole=ant_message("Hi!", "claude-up-1"))
    st, js, raw, hdrs = gw.msgs(RAW % "", headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    check(st == 200, "%d %s" % (st, raw))
    up = last(claude, "/v1/messages")
    want = (RAW % "").replace('"model":"claude-pt"', '"model":"claude-up-1"')
    check(up["body"].decode() == want, "upstream body %r" % up["body"])
    hd = {k.lower(): v for k, v in up["headers"].items()}
    check(hd.get("x-api-key") == "sk-ant-upstream" and KEY not in json.dumps(hd), "auth headers %s" % hd)
    check(hd.get("anthropic-beta") == "interleaved-thinking-2025-05-14", "beta %s" % hd)
    check(raw == json.dumps(state["whole"]).encode(), "answer as it came: %r" % raw)
    check(hdrs.get("X-Longmen-Route", "").startswith("channel=cl;"), "route %s" % hdrs)
    rows = gw.usage_rows(hdrs["X-Request-Id"])
    check(len(rows) == 1, "rows %s" % rows)
    r = rows[0]
    check(r["api"] == "messages" and r["prompt_tokens"] == 28 and r["completion_tokens"] == 7 and
          r["status"] == 200 and r["model_served"] == "claude-up-1", "row %s" % r)


def test_stream_bytes_as_is():
    state.update(status=200, stream=ant_stream(["Hel", "lo", " there"], "claude-up-1", in_tok=31, out_tok=9,
                                               thinking="Let me think."))
    st, js, raw, hdrs = gw.msgs(json.loads(RAW % ', "stream": true'))
    check(st == 200 and hdrs.get("Content-Type", "").startswith("text/event-stream"), "%d %s" % (st, raw[:200]))
    check(raw.decode() == "".join(state["stream"]), "events as they came: %r" % raw[:400])
    up = json.loads(last(claude, "/v1/messages")["body"])
    check(up["model"] == "claude-up-1" and up["stream"] is True and up["thinking"]["budget_tokens"] == 512,
          "upstream %s" % up)
    evs = events_of(raw)
    check(msgs_text(evs) == "Hello there" and msgs_usage(evs)["output_tokens"] == 9, "parsed %s" % evs)
    r = gw.usage_rows(hdrs["X-Request-Id"])[0]
    check(r["prompt_tokens"] == 31 and r["completion_tokens"] == 9 and
          not r["client_aborted"], "row %s" % r)


def test_client_abort_billed():
    state.update(status=200, delay=0.05,
                 stream=ant_stream(["word "] * 40, "claude-up-1", in_tok=20, out_tok=80))
    try:
        rid, got = gw.leave_mid_stream("/v1/messages", {"model": "claude-pt", "max_tokens": 200, "stream": True,
                                                        "messages": [{"role": "user", "content": "Talk."}]},
                                       b"text_delta", 3)
    finally:
        state["delay"] = 0.0
    rows = gw.usage_rows(rid)
    check(len(rows) == 1, "rows %s" % rows)
    r = rows[0]
    check(r["client_aborted"] and r["api"] == "messages" and r["prompt_tokens"] == 20, "row %s" % r)
    check(0 < r["completion_tokens"] < 80, "billed for what was received: %s" % r)
    deadline = time.time() + 5
    while time.time() < deadline and not any(e[0] == "closed" for e in claude.events):
        time.sleep(0.05)
    check(any(e[0] == "closed" for e in claude.events), "upstream transfer not cancelled")


def test_upstream_error_anthropic_shape():
    state.update(status=400, whole=ant_error("invalid_request_error", "max_tokens: 999999 > 64000"))
    st, js, raw, hdrs = gw.msgs({"model": "claude-pt", "max_tokens": 999999,
                                 "messages": [{"role": "user", "content": "x"}]})
    check(st == 400 and js["type"] == "error" and js["error"]["type"] == "invalid_request_error" and
          "64000" in js["error"]["message"], "%d %s" % (st, raw))
    state.update(status=429, whole=ant_error("rate_limit_error", "slow down"))
    st, js, raw, hdrs = gw.msgs({"model": "claude-pt", "max_tokens": 10, "stream": True,
                                 "messages": [{"role": "user", "content": "x"}]})
    check(st == 429 and js["error"]["type"] == "rate_limit_error", "%d %s" % (st, raw))
    state.update(status=200)


def test_error_event_mid_stream_forwarded_once():
    evs = ant_stream(["a", "b"], "claude-up-1")
    state.update(status=200, stream=evs[:4] + ["event: error\ndata: %s\n\n" %
                                               json.dumps(ant_error("overloaded_error", "Overloaded"))])
    st, js, raw, hdrs = gw.msgs({"model": "claude-pt", "max_tokens": 10, "stream": True,
                                 "messages": [{"role": "user", "content": "x"}]})
    got = events_of(raw)
    errs = [d for n, d in got if n == "error"]
    check(st == 200 and len(errs) == 1 and errs[0]["error"]["type"] == "overloaded_error", "%s" % raw)
    check(raw.decode() == "".join(state["stream"]), "as it came %r" % raw)


def test_failover_from_failing_claude():
    state.update(status=200, whole=ant_message("Recovered", "claude-up-1"),
                 stream=ant_stream(["Recovered"], "claude-up-1", in_tok=12, out_tok=3))
    for down in ("529", "event"):
        state["down"] = down
        for stream in (False, True):
            st, js, raw, hdrs = gw.msgs({"model": "claude-fo", "max_tokens": 10, "stream": stream,
                                         "messages": [{"role": "user", "content": "x"}]})
            check(st == 200 and hdrs.get("X-Longmen-Route", "").startswith("channel=cl;"),
                  "%s/%s: %d %s %s" % (down, stream, st, hdrs, raw[:200]))
            text = msgs_text(events_of(raw)) if stream else js["content"][0]["text"]
            check(text == "Recovered", "text %r" % text)
            rows = gw.usage_rows(hdrs["X-Request-Id"], want=2)
            check(len(rows) == 2 and rows[0]["channel"] == "cl-down" and rows[0]["prompt_tokens"] == 0 and
                  rows[1]["channel"] == "cl" and rows[1]["status"] == 200 and rows[1]["prompt_tokens"] > 0,
                  "rows %s" % rows)
    # to a channel that does not speak Messages: translated
    state["down"] = "529"
    st, js, raw, hdrs = gw.msgs({"model": "claude-fo2", "max_tokens": 10,
                                 "messages": [{"role": "user", "content": "x"}]})
    check(st == 200 and js["type"] == "message" and js["content"][0]["text"] == "From OpenAI" and
          js["usage"]["input_tokens"] == 9, "%d %s" % (st, raw))
    st, js, raw, hdrs = gw.msgs({"model": "claude-fo2", "max_tokens": 10, "stream": True,
                                 "messages": [{"role": "user", "content": "x"}]})
    check(st == 200 and msgs_text(events_of(raw)) == "From OpenAI", "%d %s" % (st, raw))


def test_responses_passthrough():
    raw_body = '{"model":"gpt-pt","input":"Say hello","instructions":"Be terse.","store":false,"reasoning":{"effort":"low"}}'
    st, js, raw, hdrs = gw.request("POST", "/v1/responses", raw_body)
    check(st == 200 and raw == json.dumps(resp_object("Hello!", "gpt-up")).encode(), "%d %s" % (st, raw))
    up = last(oai, "/v1/responses")
    check(up["body"].decode() == raw_body.replace('"gpt-pt"', '"gpt-up"'), "upstream body %r" % up["body"])
    check(up["headers"].get("Authorization") == "Bearer sk-oai-upstream", "auth %s" % up["headers"])
    r = gw.usage_rows(hdrs["X-Request-Id"])[0]
    check(r["api"] == "responses" and r["prompt_tokens"] == 11 and r["completion_tokens"] == 6, "row %s" % r)
    st, js, raw, hdrs = gw.request("POST", "/v1/responses", {"model": "gpt-pt", "input": "Say hello",
                                                               "stream": True})
    check(st == 200 and raw.decode() == "".join(resp_stream(["Hel", "lo", "!"], "gpt-up")), "%d %s" % (st, raw))
    r = gw.usage_rows(hdrs["X-Request-Id"])[0]
    check(r["prompt_tokens"] == 11 and r["completion_tokens"] == 6 and r["status"] == 200, "row %s" % r)


def test_count_tokens_upstream():
    state.update(status=200, count=1234)
    body = '{"model": "claude-pt", "system": "x", "messages": [{"role": "user", "content": "hi"}]}'
    st, js, raw, hdrs = gw.msgs(body, path="/v1/messages/count_tokens")
    check(st == 200 and js == {"input_tokens": 1234}, "%d %s" % (st, raw))
    up = last(claude, "/v1/messages/count_tokens")
    check(up["body"].decode() == body.replace("claude-pt", "claude-up-1"), "upstream body %s" % up["body"])
    check(up["headers"].get("x-api-key") == "sk-ant-upstream", "auth %s" % up["headers"])
    # the upstream refuses the request: its error, in Anthropic's shape
    state.update(status=400, whole=ant_error("invalid_request_error", "messages: bad"))
    st, js, raw, hdrs = gw.msgs(body, path="/v1/messages/count_tokens")
    check(st == 400 and js["error"]["message"] == "messages: bad", "%d %s" % (st, raw))
    # the channel is in trouble (its key refused): the gateway's estimate
    state.update(status=401, whole=ant_error("authentication_error", "invalid x-api-key"))
    st, js, raw, hdrs = gw.msgs(body, path="/v1/messages/count_tokens")
    check(st == 200 and 0 < js["input_tokens"] < 100, "%d %s" % (st, raw))
    state.update(status=200)
    # another channel's model: the estimate, no upstream call
    n = len(oai.requests)
    st, js, raw, hdrs = gw.msgs(body.replace("claude-pt", "gpt-pt"), path="/v1/messages/count_tokens")
    check(st == 200 and 0 < js["input_tokens"] < 100 and len(oai.requests) == n, "%d %s" % (st, raw))
    st, js, raw, hdrs = gw.msgs(body.replace("claude-pt", "nope"), path="/v1/messages/count_tokens")
    check(st == 404 and js["error"]["type"] == "not_found_error", "%d %s" % (st, raw))


def test_native_only_body():
    """What has no canonical form (server tools, their blocks in history, a
    PDF) reaches a Claude channel as sent; another channel refuses it with
    the translation's 400."""
    state.update(status=200, whole=ant_message("Searched.", "claude-up-1"))
    body = {"model": "claude-pt", "max_tokens": 100,
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
                      {"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                    "data": "JVBERi0xLjQK"}},
                    {"type": "text", "text": "Search the news."}]},
                {"role": "assistant", "content": [
                    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
                    {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                    {"type": "text", "text": "Found it."}]},
                {"role": "user", "content": "Thanks, and?"}]}
    raw_body = json.dumps(body)
    st, js, raw, hdrs = gw.msgs(raw_body)
    check(st == 200 and js["content"][0]["text"] == "Searched.", "%d %s" % (st, raw))
    check(last(claude, "/v1/messages")["body"].decode() == raw_body.replace('"claude-pt"', '"claude-up-1"'),
          "sent as is")
    st, js, raw, hdrs = gw.msgs(raw_body.replace('"claude-pt"', '"gpt-pt"'))
    check(st == 400 and js["error"]["type"] == "invalid_request_error" and "messages.0.content.0.source" in js["error"]["message"],
          "%d %s" % (st, raw))
    # the Claude channel fails and only a translating one is left: overloaded
    state["down"] = "529"
    st, js, raw, hdrs = gw.msgs(raw_body.replace('"claude-pt"', '"claude-fo2"'))
    check(st == 529 and js["error"]["type"] == "overloaded_error", "%d %s" % (st, raw))
    rows = gw.usage_rows(hdrs["X-Request-Id"])
    check([r["channel"] for r in rows] == ["cl-down"], "rows %s" % rows)
    # a failing Claude channel fails over to another Claude channel
    st, js, raw, hdrs = gw.msgs(raw_body.replace('"claude-pt"', '"claude-fo"'))
    check(st == 200 and hdrs["X-Longmen-Route"].startswith("channel=cl;"), "%d %s" % (st, raw))


def test_responses_native_only_body():
    """Built-in tools, store and previous_response_id reach a passthrough
    channel as sent; on a translating channel they stay a 400."""
    raw_body = ('{"model":"gpt-pt","input":"Search","store":true,"previous_response_id":"resp_0",'
                '"tools":[{"type":"web_search"},{"type":"function","name":"f","parameters":{"type":"object"}}],'
                '"include":["web_search_call.action.sources"]}')
    st, js, raw, hdrs = gw.request("POST", "/v1/responses", raw_body)
    check(st == 200 and js["object"] == "response", "%d %s" % (st, raw))
    check(last(oai, "/v1/responses")["body"].decode() == raw_body.replace('"gpt-pt"', '"gpt-up"'), "as sent")
    st, js, raw, hdrs = gw.request("POST", "/v1/responses", raw_body.replace('"gpt-pt"', '"claude-pt"'))
    check(st == 400 and "not supported" in js["error"]["message"], "%d %s" % (st, raw))


def test_stored_channel_setting():
    """`passthrough responses` in a stored channel's settings (admin API)."""
    from lib import admin_call
    g2 = AdminGateway(CHANNELS, env=ENV, extra="admin_private_upstreams on\nadmin_env_allow LMT_PT_*\n")
    try:
        st, js = admin_call(g2.admin_port, g2.admin, "POST", "/admin/channels", {
            "name": "stored", "plugin": "openai", "models": ["gpt-st=gpt-up"],
            "settings": {"base_url": oai.url + "/v1", "api_key": "env:LMT_PT_OPENAI",
                         "passthrough": "responses"}})
        check(st == 201, "create %d %s" % (st, js))
        deadline = time.time() + 5
        while True:
            st, js, raw, hdrs = g2.request("POST", "/v1/responses", {"model": "gpt-st", "input": "hi"})
            if st != 404 or time.time() > deadline:
                break
            time.sleep(0.1)
        check(st == 200 and raw == json.dumps(resp_object("Hello!", "gpt-up")).encode(), "%d %s" % (st, raw))
        check(last(oai, "/v1/responses")["body"] == b'{"model": "gpt-up", "input": "hi"}', "upstream body")
    finally:
        g2.stop()


def test_script_reading_answers_translates():
    """A script with on_response / on_event works on the canonical form: on
    that gateway the Claude channel's answers are translated, and the
    scripts' edits show."""
    import os
    import tempfile
    d = tempfile.mkdtemp(prefix="lm-pt-lua-")
    path = os.path.join(d, "upper.lua")
    with open(path, "w") as f:
        f.write("function on_event(ev)\n  local d = ev.choices[1] and ev.choices[1].delta\n"
                "  if d and d.content then d.content = string.upper(d.content) end\nend\n"
                "function on_response(body)\n  body.choices[1].message.content = "
                "body.choices[1].message.content .. ' (checked)'\nend\n")
    g2 = AdminGateway(CHANNELS, env=ENV, extra="script upper %s\n" % path)
    try:
        state.update(status=200, whole=ant_message("Hi!", "claude-up-1"),
                     stream=ant_stream(["Hel", "lo"], "claude-up-1"))
        st, js, raw, hdrs = g2.msgs({"model": "claude-pt", "max_tokens": 10,
                                     "messages": [{"role": "user", "content": "x"}]})
        check(st == 200 and js["content"][0]["text"] == "Hi! (checked)", "%d %s" % (st, raw))
        st, js, raw, hdrs = g2.msgs({"model": "claude-pt", "max_tokens": 10, "stream": True,
                                     "messages": [{"role": "user", "content": "x"}]})
        check(st == 200 and msgs_text(events_of(raw)) == "HELLO", "%d %s" % (st, raw))
    finally:
        g2.stop()


def main():
    global gw
    gw = AdminGateway(CHANNELS, env=ENV)
    try:
        run([test_body_verbatim_but_model, test_stream_bytes_as_is, test_client_abort_billed,
             test_upstream_error_anthropic_shape, test_error_event_mid_stream_forwarded_once,
             test_failover_from_failing_claude, test_responses_passthrough,
             test_count_tokens_upstream, test_native_only_body, test_responses_native_only_body, test_stored_channel_setting,
             test_script_reading_answers_translates])
    finally:
        gw.stop()


if __name__ == "__main__":
    main()
