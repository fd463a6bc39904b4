"""The kernel owns the client-facing protocol (ABI 1.2), for every channel.

Through the real binary, against the native-API mocks of test_providers.py
plus a scripted OpenAI-compatible upstream:
- encoding_format: base64 embeddings decode to the upstream's floats, for
  every plugin that serves embeddings; the upstream never sees the format.
- validation: the same bad requests get the same 400 from three providers,
  and no upstream call is made.
- capabilities: images to a channel without vision, n > 1 where the
  provider returns one choice: a 400 before any upstream call.
- the stream protocol (role on the first delta, one finish_reason, a
  synthesised finish) and the one usage writer, for two providers.
- declared ranges: a value outside a provider's range is clamped and said.
"""
import base64
import json
import struct
import threading

import test_providers as tp
from lib import Gateway, Mock, check, json_reply, run, sse_json, sse_reply

# A scripted OpenAI-compatible upstream: what it streams is set per test.
own = Mock()
own.script = []
own.reply = {}


def own_chat(h, body):
    b = json.loads(body)
    if b.get("stream"):
        return sse_reply(h, own.script)
    return json_reply(h, 200, own.reply)


own.routes["/v1/chat/completions"] = own_chat
own.routes["/v2/chat/completions"] = own_chat

EXTRA = "".join([
    tp.channel("shape-oa", "openai", "oa-shape",
               ["base_url " + own.url + "/v1", "api_key env:LMT_OPENAI"]),
    tp.channel("shape-eb", "ernie2", "eb-shape",
               ["base_url " + own.url + "/v2", "api_key env:LMT_ERNIE"]),
    tp.channel("local", "mock", "mock-local", []),
])
gw = None


def setup():
    global gw
    gw = Gateway(channels=tp.CHANNELS + EXTRA, env=tp.ENV, workers=2)
    tp.gw = gw  # the providers' helpers (emb_request) talk to this gateway


def f32(xs):
    return [struct.unpack("<f", struct.pack("<f", x))[0] for x in xs]


def decode(s):
    raw = base64.b64decode(s)
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


# --------------------------------------------------------------------------- encoding_format
EMBEDDERS = [("text-embedding-v3", tp.qwen, ["alpha", "beta"], [[0.1, 0.2], [0.3, 0.4]]),
             ("text-embedding-004", tp.gemini, ["alpha", "beta"], [[0.1, 0.2], [0.3, 0.4]]),
             ("all-minilm", tp.ollama, ["alpha", "beta"], [[0.1, 0.2], [0.3, 0.4]]),
             ("embedding-v1", tp.ernie, ["alpha", "beta"], [[0.1, 0.2], [0.3, 0.4]]),
             ("deepseek-chat", tp.openai, ["alpha", "beta"], [[0.1, 0.2], [0.3, 0.4]])]


def test_base64_embeddings_decode_to_upstream_floats():
    for model, up, inp, want in EMBEDDERS:
        w = tp.Watch(up)
        st, js, raw, _ = gw.request("POST", "/v1/embeddings",
                                    {"model": model, "input": inp, "encoding_format": "base64"})
        check(st == 200, "%s: %d %r" % (model, st, raw[:300]))
        w.done("embed")
        sent = json.loads(w.requests()[-1]["body"])
        check("encoding_format" not in json.dumps(sent), "%s: the upstream saw encoding_format" % model)
        for i, d in enumerate(js["data"]):
            check(isinstance(d["embedding"], str), "%s: item %d is not base64: %r" % (model, i, d))
            got = decode(d["embedding"])
            check(len(got) == len(want[i]), "%s: %d dimensions, want %d" % (model, len(got), len(want[i])))
            check(got == f32(want[i]), "%s: item %d decodes to %r, want %r" % (model, i, got, want[i]))
        # Gemini reports no embedding usage (its plugin leaves lm_usage unknown): no invented zeros.
        if up is not tp.gemini or "usage" in js:
            check(js["usage"]["total_tokens"] >= js["usage"]["prompt_tokens"] >= 0, "usage %r" % js.get("usage"))
        # float stays float
        st, js, raw, _ = gw.request("POST", "/v1/embeddings",
                                    {"model": model, "input": inp, "encoding_format": "float"})
        check(st == 200 and js["data"][0]["embedding"] == want[0], "%s float: %r" % (model, raw[:200]))


def test_base64_embeddings_local_plugin_and_bad_format():
    st, js, raw, _ = gw.request("POST", "/v1/embeddings", {"model": "mock-local", "input": ["a", "b"]})
    check(st == 200, raw[:300])
    floats = [d["embedding"] for d in js["data"]]
    st, js, raw, _ = gw.request("POST", "/v1/embeddings",
                                {"model": "mock-local", "input": ["a", "b"], "encoding_format": "base64"})
    check(st == 200, raw[:300])
    for i, d in enumerate(js["data"]):
        check(decode(d["embedding"]) == f32(floats[i]), "mock item %d" % i)
    st, js, raw, _ = gw.request("POST", "/v1/embeddings",
                                {"model": "mock-local", "input": "a", "encoding_format": "hex"})
    check(st == 400 and "encoding_format" in js["error"]["message"], raw[:300])


# --------------------------------------------------------------------------- validation
BAD = [
    ("messages[0].content", [{"role": "user"}], {}),
    ("messages[1].tool_call_id", [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}], {}),
    ("messages[1].tool_calls[0].function.arguments",
     [{"role": "user", "content": "x"},
      {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f"}}]}], {}),
    ("messages[0].role", [{"role": "wizard", "content": "x"}], {}),
    ("n", [{"role": "user", "content": "x"}], {"n": 2}),
]
THREE = [("qwen-plus", tp.qwen), ("claude-sonnet-4-5", tp.claude), ("llama3.2", tp.ollama)]


def test_same_bad_request_same_answer_on_three_providers():
    for field, msgs, extra in BAD:
        answers = []
        for model, up in THREE:
            w = tp.Watch(up)
            body = {"model": model, "messages": msgs}
            body.update(extra)
            st, js, raw, _ = gw.chat(body)
            check(st == 400, "%s on %s: %d %r" % (field, model, st, raw[:300]))
            e = tp.error_shape(js, raw)
            check(field in e["message"], "%s on %s: message %r does not name the field" % (field, model, e["message"]))
            check(not w.requests(), "%s on %s: an upstream call was made" % (field, model))
            answers.append((st, e["type"], e["code"], e["message"]))
        check(len(set(answers)) == 1, "%s: the providers answered differently: %r" % (field, answers))


# --------------------------------------------------------------------------- capabilities
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]


def test_images_refused_before_upstream_without_vision():
    for model, up in (("spark-max", tp.spark), ("mock-local", None)):
        w = tp.Watch(up) if up else None
        st, js, raw, _ = gw.chat({"model": model, "messages": IMAGE})
        check(st == 400, "%s: %d %r" % (model, st, raw[:300]))
        e = tp.error_shape(js, raw)
        check(e["code"] == "vision_unsupported" and "messages[0].content[1]" in e["message"],
              "%s: %r" % (model, e))
        check(w is None or not w.requests(), "%s: the upstream was called" % model)


def test_embeddings_and_n_refused_before_upstream():
    for model, up in (("claude-sonnet-4-5", tp.claude), ("spark-max", tp.spark)):
        w = tp.Watch(up)
        st, js, raw, _ = gw.request("POST", "/v1/embeddings", {"model": model, "input": "x"})
        check(st == 400 and js["error"]["code"] == "model_not_supported", "%s: %r" % (model, raw[:300]))
        check(not w.requests(), "%s: the upstream was called" % model)


# --------------------------------------------------------------------------- stream protocol
def ch(delta, finish=None, idx=0):
    return {"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "x",
            "choices": [{"index": idx, "delta": delta, "finish_reason": finish}]}


SCRIPTS = {
    # no role, two finishes, text after the finish
    "messy": [ch({"content": "Hel"}), ch({"content": "lo"}), ch({}, "stop"), ch({}, "stop"),
              ch({"content": "late"}), "[DONE]"],
    # no finish at all
    "unfinished": [ch({"content": "Hi"}), "[DONE]"],
    # a tool call, then the end without a finish
    "tools": [ch({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                  "function": {"name": "f", "arguments": ""}}]}),
              ch({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}), "[DONE]"],
}


def conforms(events, want_text, want_finish):
    chunks = [c for c in sse_json(events) if c.get("choices")]
    check(chunks, "no chunks")
    first = chunks[0]["choices"][0]["delta"]
    check(first.get("role") == "assistant", "first delta has no role: %r" % first)
    roles = sum(1 for c in chunks for x in c["choices"] if "role" in x.get("delta", {}))
    check(roles == 1, "%d deltas carry a role" % roles)
    fins = [x["finish_reason"] for c in chunks for x in c["choices"] if x.get("finish_reason")]
    check(fins == [want_finish], "finish reasons %r, want [%r]" % (fins, want_finish))
    last = chunks[-1]["choices"][0]
    check(last.get("finish_reason") == want_finish, "something follows the finish: %r" % last)
    text = "".join((x.get("delta") or {}).get("content") or "" for c in chunks for x in c["choices"])
    check(text == want_text, "text %r, want %r" % (text, want_text))
    check(events[-1] == "[DONE]", "no [DONE]")


def test_stream_protocol_kept_for_two_providers():
    for model in ("oa-shape", "eb-shape"):
        for name, want_text, want_finish in (("messy", "Hello", "stop"), ("unfinished", "Hi", "stop"),
                                             ("tools", "", "tool_calls")):
            own.script = SCRIPTS[name]
            st, events, raw, _ = gw.stream({"model": model, "stream": True,
                                            "messages": [{"role": "user", "content": "x"}]})
            check(st == 200, "%s/%s: %d %r" % (model, name, st, raw[:300]))
            try:
                conforms(events, want_text, want_finish)
            except AssertionError as e:
                raise AssertionError("%s/%s: %s" % (model, name, e))


def test_usage_has_one_writer():
    answers = []
    for model in ("oa-shape", "eb-shape"):
        own.reply = {"id": "x", "object": "chat.completion", "created": 1, "model": "x",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
        st, js, raw, _ = gw.chat({"model": model, "messages": [{"role": "user", "content": "x"}]})
        check(st == 200, "%s: %d %r" % (model, st, raw[:300]))
        answers.append(js["usage"])
        own.script = [ch({"content": "ok"}, "stop"),
                      {"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "x", "choices": [],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 3}}, "[DONE]"]
        st, events, raw, _ = gw.stream({"model": model, "stream": True, "stream_options": {"include_usage": True},
                                        "messages": [{"role": "user", "content": "x"}]})
        usages = [c["usage"] for c in sse_json(events) if c.get("usage")]
        check(len(usages) == 1, "%s: %d usage chunks" % (model, len(usages)))
        answers.append(usages[0])
    for u in answers:
        check(u.get("prompt_tokens") == 5 and u.get("completion_tokens") == 3 and u.get("total_tokens") == 8,
              "usage %r (all: %r)" % (u, answers))


# --------------------------------------------------------------------------- declared limits
def find(obj, key):
    """The first value of `key` anywhere in a JSON value."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            got = find(v, key)
            if got is not None:
                return got
    return None


def test_values_clamped_into_provider_ranges():
    cases = [("claude-sonnet-4-5", tp.claude, "temperature", 1.5, 1.0, "temperature=1.5->1"),
             ("qwen-plus", tp.qwen, "temperature", 2.0, 1.99, "temperature=2->1.99"),
             ("qwen-plus", tp.qwen, "top_p", 1.0, 0.9999, "top_p=1->0.9999"),
             # Qianfan v2 takes temperature in (0, 1]: 0 is sent as the smallest value, never dropped
             ("ernie-3.5-8k", tp.ernie, "temperature", 0, 0.01, "temperature=0->0.01")]
    for model, up, field, sent, want, said in cases:
        w = tp.Watch(up)
        st, js, raw, hdrs = gw.chat(tp.G1(model, **{field: sent}))
        check(st == 200, "%s %s=%s: %d %r" % (model, field, sent, st, raw[:300]))
        got = find(json.loads(w.requests()[-1]["body"]), field)
        check(got == want, "%s: the upstream got %s=%r, want %r" % (model, field, got, want))
        check(said in hdrs.get("X-Longmen-Clamped", ""), "%s: header %r" % (model, hdrs.get("X-Longmen-Clamped")))
    # in range: sent as asked, nothing said
    w = tp.Watch(tp.claude)
    st, js, raw, hdrs = gw.chat(tp.G1("claude-sonnet-4-5", temperature=0.5))
    check(st == 200 and find(json.loads(w.requests()[-1]["body"]), "temperature") == 0.5, raw[:200])
    check("X-Longmen-Clamped" not in hdrs, "header on an unclamped request")


def test_qwen_embeddings_split_at_its_declared_limit():
    calls = []
    lock = threading.Lock()

    def qw_embed_any(h, body):
        texts = json.loads(body)["input"]["texts"]
        with lock:
            calls.append(texts)
        tp.json_reply(h, 200, {"output": {"embeddings": [
            {"text_index": i, "embedding": [float(len(t)), float(i)]} for i, t in reversed(list(enumerate(texts)))]},
            "usage": {"total_tokens": len(texts)}, "request_id": "req-split"})

    old = tp.qwen.routes[tp.QW_EMB]
    tp.qwen.routes[tp.QW_EMB] = qw_embed_any
    try:
        inputs = ["t%d" % i + "x" * i for i in range(23)]
        st, js, raw, _ = gw.request("POST", "/v1/embeddings", {"model": "text-embedding-v3", "input": inputs})
        check(st == 200, "%d %r" % (st, raw[:300]))
        check(sorted(len(c) for c in calls) == [3, 10, 10], "DashScope got calls of %s" % [len(c) for c in calls])
        check([d["index"] for d in js["data"]] == list(range(23)), "indexes")
        for i, d in enumerate(js["data"]):
            check(d["embedding"][0] == float(len(inputs[i])), "input %d got %r" % (i, d["embedding"]))
        check(js["usage"]["total_tokens"] == 23, "usage summed: %r" % js["usage"])
    finally:
        tp.qwen.routes[tp.QW_EMB] = old


def test_clean_shutdown():
    rc = gw.stop()
    check(rc == 0, "clean exit, rc=%s" % rc)
    for up in tp.UPSTREAMS + [own]:
        up.close()


if __name__ == "__main__":
    def _overtime():
        print("FAIL test_protocol: over 55 s, aborted", flush=True)
        if gw is not None and gw.proc.poll() is None:
            gw.proc.kill()
        import os
        os._exit(3)
    _timer = threading.Timer(55, _overtime)
    _timer.daemon = True
    _timer.start()
    setup()
    run([test_base64_embeddings_decode_to_upstream_floats, test_base64_embeddings_local_plugin_and_bad_format,
         test_same_bad_request_same_answer_on_three_providers, test_images_refused_before_upstream_without_vision,
         test_embeddings_and_n_refused_before_upstream, test_stream_protocol_kept_for_two_providers,
         test_usage_has_one_writer, test_values_clamped_into_provider_ranges,
         test_qwen_embeddings_split_at_its_declared_limit, test_clean_shutdown])
