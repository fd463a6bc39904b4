"""Verbatim stream events (ABI 1.4 emit_raw): an OpenAI-compatible upstream's
chunk that needs no change reaches the client as the upstream's own bytes;
the kernel still cuts out usage (its own usage chunk, only when asked), fills
missing ids, adds the role, keeps one finish per choice, fails a malformed
event as before, and a Lua on_event sees the chunks of the tree path."""
import json
import os
import tempfile

from lib import Gateway, Mock, check, content_of, run, sse_json, sse_reply

mock = Mock()
gw = None

CHAN = """
channel up {
    plugin openai
    base_url %s/v1
    api_key sk-test
    models gpt-x alias=real-model
    first_byte_timeout 2s
    idle_timeout 2s
}
"""

# Upstream chunks as text, written in ways a re-serialiser would change
# (spaces, member order, escapes, extra members).
HEAD = '"id": "chatcmpl-up7", "object": "chat.completion.chunk", "created": 1700000001, "model": "up-model"'
C0 = '{%s, "system_fingerprint": "fp_1", "choices": [{"index": 0, "delta": {"role": "assistant", ' \
     '"content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]}' % HEAD
C1 = '{"choices":[{"delta":{"content":"caf\\u00e9 \\"q\\" "},"index":0,"finish_reason":null}],%s}' % HEAD
C2 = '{%s,"choices":[{"index":0,"delta":{"content":"\\ud83d\\ude00"},"logprobs":null,' \
     '"finish_reason":null}]}' % HEAD
C3 = '{%s, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}' % HEAD
USAGE = '{%s, "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 4, ' \
        '"total_tokens": 15}}' % HEAD


def setup():
    global gw
    gw = Gateway(channels=CHAN % mock.url)


def route(events):
    mock.routes["/v1/chat/completions"] = lambda h, b: sse_reply(h, events)


def body(model="gpt-x", **kw):
    b = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    b.update(kw)
    return b


def test_chunks_forwarded_byte_for_byte():
    route([C0, C1, C2, C3, USAGE, "[DONE]"])
    st, ev, raw, _ = gw.stream(body())
    check(st == 200, raw)
    check(ev == [C0, C1, C2, C3, "[DONE]"], "not the upstream's bytes: %r" % ev)
    check(content_of(ev) == 'caf\u00e9 "q" \U0001F600', raw)


def test_include_usage_gets_the_kernels_usage_chunk():
    route([C0, C1, C2, C3, USAGE, "[DONE]"])
    sent = '{"model": "gpt-x", "stream": true, "stream_options": {"include_usage": true}, ' \
           '"messages": [{"role": "user", "content": "hi"}]}'
    st, ev, raw, _ = gw.stream(sent)
    check(mock.requests[-1]["body"] == sent.encode(),
          "a client that asked for usage: its bytes go upstream as they are: %r" % mock.requests[-1]["body"])
    check(st == 200 and ev[:4] == [C0, C1, C2, C3] and ev[-1] == "[DONE]" and len(ev) == 6, raw)
    u = json.loads(ev[4])
    check(u["choices"] == [] and u["usage"] == {"prompt_tokens": 11, "completion_tokens": 4,
                                                 "total_tokens": 15}, ev[4])
    check((u["id"], u["model"], u["created"]) == ("chatcmpl-up7", "up-model", 1700000001),
          "the usage chunk takes the stream's ids: %s" % ev[4])


def test_usage_member_cut_out_of_the_bytes():
    """OpenAI sends "usage":null on every chunk when usage is asked (the kernel always
    asks): the member goes, the rest of the bytes stay."""
    a = '{%s,"choices":[{"index":0,"delta":{"role":"assistant","content":"x"},' \
        '"finish_reason":null}],"usage":null}' % HEAD
    b = '{"usage":null, %s,"choices":[{"index":0,"delta":{"content":"y"},"finish_reason":null}]}' % HEAD
    c = '{%s,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,' \
        '"completion_tokens":2,"total_tokens":4}}' % HEAD
    for ask in (False, True):
        route([a, b, c, "[DONE]"])
        extra = {"stream_options": {"include_usage": True}} if ask else {}
        st, ev, raw, _ = gw.stream(body(**extra))
        check(st == 200, raw)
        want = [a.replace(',"usage":null', ''), b.replace('"usage":null, ', ''), c[:c.index(',"usage"')] + '}']
        check(ev[:3] == want, "include_usage=%s: %r" % (ask, ev))
        if ask:
            check(len(ev) == 5 and json.loads(ev[3])["usage"]["total_tokens"] == 4, raw)
        else:
            check(len(ev) == 4 and b'"usage"' not in raw, raw)


def test_alias_and_missing_ids_as_before():
    """The client asked "alias": the upstream gets real-model, the chunks keep the model the
    upstream wrote (the kernel does not rewrite it, as before); chunks without ids get the
    kernel's, the same on every chunk, its own usage chunk included."""
    bare = '{"choices":[{"index":0,"delta":{"role":"assistant","content":"a"},"finish_reason":null}]}'
    more = '{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":null}]}'
    route([bare, more, '{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
           '{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}', "[DONE]"])
    st, ev, raw, hdrs = gw.stream(body("alias", stream_options={"include_usage": True}))
    check(st == 200 and mock.last_json()["model"] == "real-model", raw)
    js = sse_json(ev)
    check(len(js) == 4 and content_of(ev) == "ab", raw)
    check({(j["id"], j["model"], j["created"], j["object"]) for j in js} ==
          {(js[0]["id"], "real-model", js[0]["created"], "chat.completion.chunk")}, raw)
    check(js[0]["id"] == "chatcmpl-" + hdrs.get("X-Request-Id"), raw)
    route([C0, C1, C3, "[DONE]"])
    st, ev, raw, _ = gw.stream(body("alias"))
    check(st == 200 and ev == [C0, C1, C3, "[DONE]"], "the upstream's model stays: %r" % ev)


def test_protocol_fixed_where_the_bytes_must_change():
    """No role on the first delta, a repeated finish, tool calls ending in "stop", and a stream
    that ends without a finish: the kernel's rewrite, with the same id throughout."""
    h = HEAD.replace(": ", ":").replace(", ", ",")
    tc = '{%s,"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function",' \
         '"function":{"name":"f","arguments":"{}"}}]},"finish_reason":null}]}' % h
    stop = '{%s,"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}' % h
    route([tc, stop, stop, "[DONE]"])
    st, ev, raw, _ = gw.stream(body())
    js = sse_json(ev)
    check(st == 200 and len(js) == 2, raw)
    check(js[0]["choices"][0]["delta"]["role"] == "assistant", raw)
    check(js[1]["choices"][0]["finish_reason"] == "tool_calls", raw)
    first = '{%s,"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}' % h
    later = '{%s,"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":null}]}' % h
    route([first, later, "[DONE]"])
    st, ev, raw, _ = gw.stream(body())
    js = sse_json(ev)
    check(st == 200 and json.loads(ev[0])["choices"][0]["delta"]["role"] == "assistant", raw)
    check(ev[1] == later, "a started choice's later chunk goes as written: %r" % ev)
    check(js[-1]["choices"][0]["finish_reason"] == "stop" and len({j["id"] for j in js}) == 1, raw)


def test_malformed_event_is_the_error_path():
    route([C0, C1, '{"choices":[{"index":0,"delta":{"content":', C3, "[DONE]"])
    st, ev, raw, _ = gw.stream(body())
    check(st == 200 and ev[:2] == [C0, C1] and ev[-1] == "[DONE]", raw)
    err = json.loads(ev[2])["error"]
    check(err["code"] == "upstream_error" and "malformed upstream response" in err["message"], ev[2])
    check(len(ev) == 4, "nothing after the error but [DONE]: %r" % ev)
    route([C0, '{"error":{"message":"overloaded","type":"server_error"}}', "[DONE]"])
    st, ev, raw, _ = gw.stream(body())
    check(st == 200 and ev[0] == C0 and "overloaded" in json.loads(ev[1])["error"]["message"], raw)


def test_cache_replays_the_forwarded_bytes():
    """The response cache records the chunks the client got (the upstream's bytes, usage cut
    out) and a hit replays them as they were."""
    cached = Gateway(channels=CHAN % mock.url, extra="cache on models gpt-x\n")
    try:
        b = body(temperature=0, stream_options={"include_usage": True})
        route([C0, C1, C3, USAGE, "[DONE]"])
        st, ev, raw, h1 = cached.stream(b)
        check(st == 200 and h1.get("X-Longmen-Cache") == "miss" and ev[:3] == [C0, C1, C3], raw)
        route([])  # a hit never reaches the upstream
        st, ev2, raw2, h2 = cached.stream(b)
        check(st == 200 and h2.get("X-Longmen-Cache") == "hit", "%s %s" % (raw2, h2))
        check(ev2[:3] == [C0, C1, C3] and json.loads(ev2[3])["usage"]["total_tokens"] == 15 and
              ev2[-1] == "[DONE]", "replay: %r" % ev2)
    finally:
        cached.stop()


def test_lua_on_event_sees_the_tree_path():
    d = tempfile.mkdtemp(prefix="lm-stream-")
    path = os.path.join(d, "ev.lua")
    with open(path, "w") as f:
        f.write("function on_event(ev)\n  local c = ev.choices[1]\n"
                "  if c and c.delta and c.delta.content then c.delta.content = c.delta.content .. '.' end\n"
                "end\n")
    lua = Gateway(channels=CHAN % mock.url, extra="script ev %s\n" % path)
    try:
        route([C0, C1, C3, "[DONE]"])
        st, ev, raw, _ = lua.stream(body())
        check(st == 200 and content_of(ev) == '.caf\u00e9 "q" .', raw)
        check(ev[1] != C1 and json.loads(ev[1])["choices"][0]["delta"]["content"] == 'caf\u00e9 "q" .', raw)
    finally:
        lua.stop()


def test_clean_shutdown():
    check(gw.stop() == 0, "exit status")
    mock.close()


if __name__ == "__main__":
    setup()
    run([test_chunks_forwarded_byte_for_byte, test_include_usage_gets_the_kernels_usage_chunk,
         test_usage_member_cut_out_of_the_bytes, test_alias_and_missing_ids_as_before,
         test_protocol_fixed_where_the_bytes_must_change, test_malformed_event_is_the_error_path,
         test_cache_replays_the_forwarded_bytes, test_lua_on_event_sees_the_tree_path, test_clean_shutdown])
