"""The ABI 1.3 data-plane endpoints through the real binary against mock
upstreams: GET /v1/models lists each model's endpoints; /v1/rerank on an
OpenAI-compatible upstream (Cohere/Jina shape) and on DashScope's native
text-rerank (qwen); /v1/moderations and /v1/images/generations passed
through; an endpoint a channel's plugin does not declare is a 400 naming
it; bad bodies are 400s naming the field; upstream errors keep the OpenAI
error shape and bill nothing; answers are billed into the ledger with the
endpoint in the row's api column."""
import json
import os
import re
import tempfile
import time

from lib import Gateway, Mock, admin_call, admin_key, check, free_port, json_reply, ledger_rows, run

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
WAIT = 10

up = Mock()
gw = None
admin_port = None
token = None
secret = None


def oai_rerank(h, body):
    req = json.loads(body)
    if req["query"] == "FAIL":
        return json_reply(h, 400, {"error": {"message": "query refused upstream",
                                             "type": "invalid_request_error"}})
    if req["query"] == "DOWN":
        return json_reply(h, 503, {"error": {"message": "overloaded", "type": "server_error"}})
    docs = req["documents"]
    # scores in input order (unsorted), documents as strings: the kernel sorts
    # and wraps them
    res = [{"index": i, "relevance_score": round(0.1 + 0.2 * (i % 3), 2),
            **({"document": d} if req.get("return_documents") else {})}
           for i, d in enumerate(docs)][: req.get("top_n") or len(docs)]
    json_reply(h, 200, {"id": "rr-1", "model": req["model"], "results": res,
                        "usage": {"total_tokens": 11 * len(docs)}})


def qwen_rerank(h, body):
    req = json.loads(body)
    docs = req["input"]["documents"]
    res = [{"index": i, "relevance_score": 0.5 + 0.1 * i, "document": {"text": d}}
           for i, d in enumerate(docs)]
    res.sort(key=lambda r: -r["relevance_score"])
    json_reply(h, 200, {"output": {"results": res[: req["parameters"].get("top_n", len(res))]},
                        "usage": {"total_tokens": 7}, "request_id": "dash-req-1"})


def moderations(h, body):
    json_reply(h, 200, {"id": "modr-1", "model": "omni-moderation-latest",
                        "results": [{"flagged": "kill" in json.loads(body)["input"],
                                     "categories": {"violence": True}}]})


def images(h, body):
    req = json.loads(body)
    if req["prompt"] == "FAIL":
        return json_reply(h, 500, {"error": {"message": "boom", "type": "server_error"}})
    json_reply(h, 200, {"created": 1700000000,
                        "data": [{"url": "https://img.example/%d.png" % i} for i in range(req.get("n", 1))]})


up.routes["/oai/rerank"] = oai_rerank
up.routes["/oai/moderations"] = moderations
up.routes["/oai/images/generations"] = images
up.routes["/api/v1/services/rerank/text-rerank/text-rerank"] = qwen_rerank


LUA = """
-- every stage runs for every endpoint; on_request sees req.api and may refuse
function on_request(req)
    req.meta.api_seen = req.api
    if req.params and req.params.query == "LUA-REJECT" then
        return lm.reject(403, "refused by script", "script_refused")
    end
end
function on_route(req, candidates) end
function on_upstream_request(req, up) end
function on_response(body) end
function on_usage(usage, price, charge) end
function on_log(record) end
"""


def setup():
    global gw, admin_port, token, secret
    admin_port = free_port()
    data_dir = tempfile.mkdtemp(prefix="lm-ep-")
    script = os.path.join(data_dir, "tag.lua")
    with open(script, "w") as f:
        f.write(LUA)
    gw = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\nscript tag %s\n" % (data_dir, admin_port, script),
                 channels="""
channel oai {
    plugin openai
    base_url %s/oai
    api_key sk-up-oai
    models bge-reranker omni-moderation dall-e-3 gpt-x rr-units img-units mod-units
    price_input 1
    price_output 1
    price rr-units 2 per_1k_searches
    price img-units 0.04 per_image
    price mod-units 1 per_1m_chars
}
channel dash {
    plugin qwen
    base_url %s
    api_key sk-up-dash
    models gte-rerank
    price_input 2
    price_output 2
}
channel native {
    plugin openai
    base_url %s/nat
    completions native
    models base-x
    price_input 1
    price_output 1
}
channel local {
    plugin ollama
    base_url %s/ollama
    models llama3
}
""" % (up.url, up.url, up.url, up.url))
    token = TOKEN_RE.search(gw.logtext()).group(1)
    secret = admin_key(admin_port, token, "ep", "10")


def rows_for(request_id, settle=0.3):
    return ledger_rows(admin_port, token, request_id, WAIT, settle)


def post(path, body):
    return gw.request("POST", path, body, key=secret)


def test_models_list_endpoints():
    st, js, raw, _ = gw.request("GET", "/v1/models", key=secret)
    check(st == 200, "models: %s %s" % (st, raw))
    eps = {m["id"]: m["endpoints"] for m in js["data"]}
    check(set(eps["bge-reranker"]) >= {"chat", "embeddings", "completions", "rerank", "moderations",
                                       "images"}, "openai: %s" % eps["bge-reranker"])
    check("rerank" in eps["gte-rerank"] and "images" in eps["gte-rerank"]  # ABI 1.4 image tasks
          and "moderations" not in eps["gte-rerank"], "qwen: %s" % eps["gte-rerank"])
    check(eps["llama3"] == ["chat", "embeddings", "completions"],
          "an ABI 1.2-style table gets the default: %s" % eps["llama3"])
    st, js, _, _ = gw.request("GET", "/v1/models/gte-rerank", key=secret)
    check(st == 200 and "rerank" in js["endpoints"], "one model: %s %s" % (st, js))


def test_rerank_openai_compatible():
    up.requests.clear()
    st, js, raw, hdrs = post("/v1/rerank", {
        "model": "bge-reranker", "query": "capital of France",
        "documents": ["Paris", {"text": "Berlin"}, "Lyon", "Rome"], "return_documents": True})
    check(st == 200, "status %s %s" % (st, raw))
    sent = up.last_json()
    check(up.requests[-1]["path"] == "/oai/rerank", "path %s" % up.requests[-1]["path"])
    check(sent["documents"] == ["Paris", "Berlin", "Lyon", "Rome"], "object documents sent as text: %s" % sent)
    scores = [r["relevance_score"] for r in js["results"]]
    check(scores == sorted(scores, reverse=True), "sorted: %s" % js["results"])
    check([r["index"] for r in js["results"]] == [2, 1, 0, 3], "ties by index: %s" % js["results"])
    check(js["results"][0]["document"] == {"text": "Lyon"}, "document object: %s" % js["results"][0])
    check(js["usage"] == {"prompt_tokens": 44, "total_tokens": 44}, "usage %s" % js["usage"])
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["api"] == "rerank" and rows[0]["prompt_tokens"] == 44
          and rows[0]["cost_micro"] == 44 and rows[0]["status"] == 200, "ledger: %s" % rows)


def test_rerank_top_n_passthrough():
    st, js, raw, _ = post("/v1/rerank", {"model": "bge-reranker", "query": "q",
                                         "documents": ["a", "b", "c"], "top_n": 2})
    check(st == 200 and len(js["results"]) == 2, "top_n: %s %s" % (st, raw))
    check(all("document" not in r for r in js["results"]), "no documents unless asked: %s" % js)


def test_rerank_dashscope_native():
    up.requests.clear()
    st, js, raw, hdrs = post("/v1/rerank", {"model": "gte-rerank", "query": "q",
                                            "documents": ["x", "y", "z"], "top_n": 2,
                                            "return_documents": True})
    check(st == 200, "status %s %s" % (st, raw))
    r = up.requests[-1]
    check(r["path"] == "/api/v1/services/rerank/text-rerank/text-rerank", "path %s" % r["path"])
    check(r["headers"].get("Authorization") == "Bearer sk-up-dash", "auth header")
    sent = json.loads(r["body"])
    check(sent == {"model": "gte-rerank", "input": {"query": "q", "documents": ["x", "y", "z"]},
                   "parameters": {"top_n": 2, "return_documents": True}}, "native body %s" % sent)
    check([x["index"] for x in js["results"]] == [2, 1], "results %s" % js["results"])
    check(js["results"][0]["document"] == {"text": "z"}, "document %s" % js["results"][0])
    check(js["usage"]["total_tokens"] == 7 and js["model"] == "gte-rerank", "answer %s" % js)
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["api"] == "rerank" and rows[0]["cost_micro"] == 14,
          "ledger: %s" % rows)


def test_rerank_undeclared_is_400_naming_endpoint():
    n = len(up.requests)
    st, js, raw, _ = post("/v1/rerank", {"model": "llama3", "query": "q", "documents": ["a"]})
    check(st == 400 and "/v1/rerank" in js["error"]["message"]
          and js["error"]["code"] == "endpoint_unsupported", "%s %s" % (st, raw))
    st, js, raw, _ = post("/v1/images/generations", {"model": "llama3", "prompt": "cat"})
    check(st == 400 and "/v1/images/generations" in js["error"]["message"], "%s %s" % (st, raw))
    check(len(up.requests) == n, "no upstream call")


def test_rerank_bad_bodies():
    cases = [({"model": "bge-reranker", "documents": ["a"]}, "query"),
             ({"model": "bge-reranker", "query": "q"}, "documents"),
             ({"model": "bge-reranker", "query": "q", "documents": []}, "documents"),
             ({"model": "bge-reranker", "query": "q", "documents": [1]}, "documents[0]"),
             ({"model": "bge-reranker", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
             ({"model": "bge-reranker", "query": "q", "documents": ["a"], "return_documents": "y"},
              "return_documents"),
             ({"query": "q", "documents": ["a"]}, "model"),
             ({"model": "bge-reranker", "query": "q", "documents": ["d"] * 1001}, "documents")]
    for body, field in cases:
        st, js, raw, _ = post("/v1/rerank", body)
        check(st == 400 and js["error"]["type"] == "invalid_request_error"
              and field in js["error"]["message"], "%s -> %s %s" % (field, st, raw))
    st, js, raw, _ = post("/v1/rerank", "{not json")
    check(st == 400, "bad json %s" % st)
    st, js, raw, _ = gw.request("GET", "/v1/rerank", key=secret)
    check(st == 405, "GET %s" % st)


def test_rerank_upstream_errors():
    st, js, raw, hdrs = post("/v1/rerank", {"model": "bge-reranker", "query": "FAIL", "documents": ["a"]})
    check(st == 400 and "query refused upstream" in js["error"]["message"], "%s %s" % (st, raw))
    st, js, raw, hdrs = post("/v1/rerank", {"model": "bge-reranker", "query": "DOWN", "documents": ["a"]})
    check(st >= 500 and "error" in js, "%s %s" % (st, raw))
    rows = rows_for(hdrs["X-Request-Id"])
    check(rows and all(r["cost_micro"] == 0 for r in rows), "nothing billed: %s" % rows)


def test_moderations_passthrough():
    up.requests.clear()
    st, js, raw, hdrs = post("/v1/moderations", {"model": "omni-moderation", "input": "I will kill"})
    check(st == 200 and js["results"][0]["flagged"] is True, "%s %s" % (st, raw))
    check(up.requests[-1]["path"] == "/oai/moderations", "path")
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["api"] == "moderations" and rows[0]["status"] == 200, "ledger %s" % rows)
    st, js, raw, _ = post("/v1/moderations", {"model": "omni-moderation"})
    check(st == 400 and "input" in js["error"]["message"], "%s %s" % (st, raw))


def test_images_passthrough():
    st, js, raw, hdrs = post("/v1/images/generations", {"model": "dall-e-3", "prompt": "a cat", "n": 2})
    check(st == 200 and len(js["data"]) == 2, "%s %s" % (st, raw))
    check(up.requests[-1]["path"] == "/oai/images/generations", "path")
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["api"] == "images", "ledger %s" % rows)
    for body, field in [({"model": "dall-e-3"}, "prompt"),
                        ({"model": "dall-e-3", "prompt": "x", "n": 11}, "n"),
                        ({"model": "dall-e-3", "prompt": "x", "response_format": "gif"}, "response_format")]:
        st, js, raw, _ = post("/v1/images/generations", body)
        check(st == 400 and field in js["error"]["message"], "%s -> %s %s" % (field, st, raw))
    st, js, raw, _ = post("/v1/images/generations", {"model": "dall-e-3", "prompt": "FAIL"})
    check(st >= 500 and js["error"]["type"], "upstream 500: %s %s" % (st, raw))


def test_oversize_body_413():
    st, js, raw, _ = post("/v1/rerank", {"model": "bge-reranker", "query": "q",
                                         "documents": ["x" * 1000] * 12000})
    check(st == 413, "oversize: %s" % st)


def test_lua_stages_apply():
    st, js, raw, _ = post("/v1/rerank", {"model": "bge-reranker", "query": "LUA-REJECT", "documents": ["a"]})
    check(st == 403 and js["error"]["code"] == "script_refused", "on_request refuses a rerank: %s %s" % (st, raw))
    # the other requests of this file ran every stage of the script too
    st, js, raw, _ = post("/v1/rerank", {"model": "bge-reranker", "query": "q", "documents": ["a"]})
    check(st == 200, "a rerank through every stage: %s %s" % (st, raw))


def test_unit_prices_billed():
    # 150 documents: 2 searches at 2 per 1k searches; the line has no token price
    st, js, raw, hdrs = post("/v1/rerank", {"model": "rr-units", "query": "q", "documents": ["d"] * 150})
    check(st == 200, "%s %s" % (st, raw))
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 4000, "rerank searches: %s" % rows)
    st, js, raw, hdrs = post("/v1/images/generations", {"model": "img-units", "prompt": "a cat", "n": 3})
    check(st == 200, "%s %s" % (st, raw))
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 120000, "3 images at 0.04: %s" % rows)
    st, js, raw, hdrs = post("/v1/moderations", {"model": "mod-units", "input": "h\u00e9llo"})
    check(st == 200, "%s %s" % (st, raw))
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 5, "5 characters at 1 per 1M: %s" % rows)


def test_unit_price_line_checked():
    import os
    import subprocess
    from lib import BUILD, PLUGIN_DIR
    d = tempfile.mkdtemp(prefix="lm-ep-t-")
    conf = os.path.join(d, "c.conf")
    with open(conf, "w") as f:
        f.write("listen 127.0.0.1:1\nplugin_dir %s\nkey k sk-longkey-0001\nchannel a {\n plugin openai\n"
                " base_url http://127.0.0.1:9/v1\n models m\n price m 2 per_fortnight\n}\n" % PLUGIN_DIR)
    p = subprocess.run([os.path.join(BUILD, "longmen"), "-t", "-c", conf], capture_output=True, text=True,
                       timeout=20)
    check(p.returncode != 0 and "per_1k_searches" in (p.stdout + p.stderr),
          "an unknown unit is refused with the usage: %s %s" % (p.returncode, p.stdout + p.stderr))


def test_clean_shutdown():
    check(gw.stop() == 0, "exit status")



# ---------------------------------------------------------------- /v1/completions through chat

def chat_answer(h, body):
    req = json.loads(body)
    msgs = req["messages"]
    if msgs[0]["content"] == "FAIL":
        return json_reply(h, 429, {"error": {"message": "slow down", "type": "rate_limit_error"}})
    if req.get("stream") and msgs[0]["content"] == "SLOW":
        from lib import chunk, sse_reply
        return sse_reply(h, [chunk(role="assistant")] + [chunk("tok ") for _ in range(40)]
                         + [chunk(finish="stop"), "[DONE]"], delay=0.1)
    if req.get("stream"):
        from lib import chunk, sse_reply, usage_chunk
        return sse_reply(h, [chunk(role="assistant"), chunk("Once "), chunk("upon"),
                             chunk(finish="length"), usage_chunk(4, 2), "[DONE]"])
    json_reply(h, 200, {"id": "chatcmpl-9", "object": "chat.completion", "created": 1700000001,
                        "model": req["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Once upon"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}})


up.routes["/oai/chat/completions"] = chat_answer


def native_completions(h, body):
    req = json.loads(body)
    if req.get("stream"):
        from lib import sse_reply
        ev = [{"id": "cmpl-n", "object": "text_completion", "created": 5, "model": "base-x",
               "choices": [{"text": t, "index": 0, "logprobs": None, "finish_reason": f}]}
              for t, f in (("Hello", None), (" world", None), ("", "length"))]
        ev.append({"id": "cmpl-n", "object": "text_completion", "created": 5, "model": "base-x", "choices": [],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        return sse_reply(h, ev + ["[DONE]"])
    lp = {"tokens": ["Hello", " world"], "token_logprobs": [-0.1, -0.2]} if req.get("logprobs") else None
    json_reply(h, 200, {"id": "cmpl-n", "object": "text_completion", "created": 5, "model": "base-x",
                        "choices": [{"text": "Hello world", "index": 0, "logprobs": lp, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})


up.routes["/nat/completions"] = native_completions


def test_completions_native_passthrough():
    up.requests.clear()
    st, js, raw, hdrs = post("/v1/completions", {"model": "base-x", "prompt": "Say", "max_tokens": 7})
    check(st == 200, "%s %s" % (st, raw))
    r = up.requests[-1]
    sent = json.loads(r["body"])
    check(r["path"] == "/nat/completions" and sent["prompt"] == "Say" and "messages" not in sent
          and sent["max_tokens"] == 7, "native request: %s %s" % (r["path"], sent))
    check(js["object"] == "text_completion" and js["choices"][0]["text"] == "Hello world"
          and js["usage"]["total_tokens"] == 5, "answer %s" % js)
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["api"] == "completions" and rows[0]["cost_micro"] == 5, "ledger %s" % rows)
    st, _, raw, hdrs = post("/v1/completions", {"model": "base-x", "prompt": "Say", "stream": True})
    check(st == 200, "stream %s %s" % (st, raw))
    sent = up.last_json()
    check(sent["stream"] is True and sent["prompt"] == "Say", "native stream request %s" % sent)
    events = [l[6:] for l in raw.decode().split("\n") if l.startswith("data: ")]
    chunks = [json.loads(e) for e in events[:-1]]
    check(events[-1] == "[DONE]" and "".join(c["choices"][0]["text"] for c in chunks) == "Hello world"
          and chunks[-1]["choices"][0]["finish_reason"] == "length", "stream %s" % events)
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["completion_tokens"] == 2, "stream ledger %s" % rows)


def test_completions_native_only_fields_pass_through():
    # what the chat path cannot serve goes, as sent, to a channel with
    # `passthrough completions`; its answer comes back as it is. A gateway of
    # its own: scripts that read answers (setup's) keep requests translated.
    aport = free_port()
    g = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (tempfile.mkdtemp(prefix="lm-ep-pt-"), aport),
                env={"LONGMEN_ADMIN_TOKEN": "ep-pt-admin-token-0123456789"}, channels="""
channel native {
    plugin openai
    base_url %s/nat
    completions native
    passthrough completions
    models base-x
    price_input 1
    price_output 1
}
channel viachat {
    plugin openai
    base_url %s/oai
    passthrough completions
    models base-y
}
channel plain {
    plugin openai
    base_url %s/oai
    models gpt-x
}
""" % (up.url, up.url, up.url))

    def rows(rid):
        deadline = time.time() + WAIT
        while time.time() < deadline:
            st, js = admin_call(aport, "ep-pt-admin-token-0123456789", "GET", "/admin/usage/rows?limit=50")
            got = [r for r in js["data"] if r["request_id"] == rid] if st == 200 else []
            if got:
                return got
            time.sleep(0.05)
        return []

    try:
        body = {"model": "base-x", "prompt": ["Say", "Tell"], "echo": True, "logprobs": 2, "suffix": "!",
                "best_of": 2, "max_tokens": 3}
        st, js, raw, hdrs = g.request("POST", "/v1/completions", body)
        check(st == 200, "%s %s" % (st, raw))
        r = up.requests[-1]
        check(r["path"] == "/nat/completions" and json.loads(r["body"]) == body,
              "sent as given: %s %s" % (r["path"], r["body"]))
        check(js["choices"][0]["logprobs"]["token_logprobs"] == [-0.1, -0.2] and js["usage"]["total_tokens"] == 5,
              "the upstream's answer: %s" % js)
        got = rows(hdrs["X-Request-Id"])
        check(len(got) == 1 and got[0]["api"] == "completions" and got[0]["prompt_tokens"] == 3
              and got[0]["completion_tokens"] == 2, "ledger %s" % got)
        st, _, raw, hdrs = g.request("POST", "/v1/completions",
                                     {"model": "base-x", "prompt": [[1, 2, 3]], "echo": True, "stream": True})
        check(st == 200, "stream %s %s" % (st, raw))
        sent = up.last_json()
        check(sent["prompt"] == [[1, 2, 3]] and sent["echo"] is True and sent["stream"] is True, "sent %s" % sent)
        events = [l[6:] for l in raw.decode().split("\n") if l.startswith("data: ")]
        chunks = [json.loads(e) for e in events[:-1]]
        check(events[-1] == "[DONE]" and chunks[-1]["usage"]["total_tokens"] == 5 and
              "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Hello world",
              "the upstream's events: %s" % events)
        got = rows(hdrs["X-Request-Id"])
        check(len(got) == 1 and got[0]["prompt_tokens"] == 3 and got[0]["completion_tokens"] == 2,
              "stream ledger %s" % got)
        # a channel that translates to chat: <base>/chat/completions -> <base>/completions
        st, js, raw, _ = g.request("POST", "/v1/completions", {"model": "base-y", "prompt": "a", "suffix": "z"})
        check(up.requests[-1]["path"] == "/oai/completions", "native path: %s" % up.requests[-1]["path"])
        # an ordinary request on a pass-through channel is still translated
        # (translated: no usage chunk unless asked; the mock always sends one)
        st, js, raw, _ = g.request("POST", "/v1/completions", {"model": "base-x", "prompt": "Say", "stream": True})
        check(st == 200 and b'"usage"' not in raw and b"Hello" in raw, "%s %s" % (st, raw))
        # no channel that can take it: 400 naming the field, no upstream call
        n = len(up.requests)
        st, js, raw, _ = g.request("POST", "/v1/completions", {"model": "gpt-x", "prompt": "a", "echo": True})
        check(st == 400 and "echo" in js["error"]["message"] and len(up.requests) == n, "%s %s" % (st, raw))
    finally:
        g.stop()


def test_completions_through_chat():
    up.requests.clear()
    st, js, raw, hdrs = post("/v1/completions", {"model": "gpt-x", "prompt": "Tell a story",
                                                 "max_tokens": 5, "temperature": 0.5, "stop": ["\n"]})
    check(st == 200, "%s %s" % (st, raw))
    sent = up.last_json()
    check(up.requests[-1]["path"] == "/oai/chat/completions", "path")
    check(sent["messages"] == [{"role": "user", "content": "Tell a story"}] and sent["max_tokens"] == 5
          and sent["temperature"] == 0.5 and sent["stop"] == ["\n"] and "prompt" not in sent, "mapped %s" % sent)
    check(js["object"] == "text_completion" and js["choices"] == [
        {"text": "Once upon", "index": 0, "logprobs": None, "finish_reason": "stop"}], "answer %s" % js)
    check(js["usage"]["total_tokens"] == 6, "usage %s" % js)
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["api"] == "completions" and rows[0]["cost_micro"] == 6, "ledger %s" % rows)


def test_completions_stream():
    st, _, raw, hdrs = post("/v1/completions", {"model": "gpt-x", "prompt": ["Tell"], "stream": True})
    check(st == 200, "%s %s" % (st, raw))
    events = [l[6:] for l in raw.decode().split("\n") if l.startswith("data: ")]
    check(events[-1] == "[DONE]", "ends with [DONE]: %s" % events)
    chunks = [json.loads(e) for e in events[:-1]]
    check(all(c["object"] == "text_completion" for c in chunks), "objects %s" % chunks)
    check("".join(c["choices"][0]["text"] for c in chunks) == "Once upon", "text %s" % chunks)
    check(chunks[-1]["choices"][0]["finish_reason"] == "length", "finish %s" % chunks[-1])
    check(not any("usage" in c for c in chunks), "no usage chunk unless asked: %s" % chunks)
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["api"] == "completions" and rows[0]["completion_tokens"] == 2,
          "ledger %s" % rows)


def test_completions_stream_include_usage():
    for model in ("gpt-x", "base-x"):  # through chat, and a native completions channel
        for asked in (True, False):
            st, _, raw, hdrs = post("/v1/completions", {"model": model, "prompt": "Tell", "stream": True,
                                                        "stream_options": {"include_usage": asked}})
            check(st == 200, "%s %s %s" % (model, st, raw))
            events = [l[6:] for l in raw.decode().split("\n") if l.startswith("data: ")]
            check(events[-1] == "[DONE]", "ends with [DONE]: %s" % events)
            chunks = [json.loads(e) for e in events[:-1]]
            with_usage = [c for c in chunks if "usage" in c]
            if not asked:
                check(not with_usage, "%s: not asked, none: %s" % (model, chunks))
                continue
            u = chunks[-1].get("usage") or {}
            want = (4, 2) if model == "gpt-x" else (3, 2)
            check(len(with_usage) == 1 and chunks[-1]["choices"] == [] and
                  chunks[-1]["object"] == "text_completion" and chunks[-1]["id"] == chunks[0]["id"] and
                  (u.get("prompt_tokens"), u.get("completion_tokens")) == want and
                  u.get("total_tokens") == sum(want), "%s: the last chunk has the usage: %s" % (model, chunks))


def test_completions_stream_client_abort():
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=WAIT)
    c.request("POST", "/v1/completions", body=json.dumps({"model": "gpt-x", "prompt": "SLOW", "stream": True}),
              headers={"Authorization": "Bearer " + secret, "Content-Type": "application/json"})
    r = c.getresponse()
    rid = r.getheader("X-Request-Id")
    first = r.fp.readline()
    check(r.status == 200 and first, "stream started: %s %r" % (r.status, first))
    c.sock.close()  # leave mid-stream
    c.close()
    deadline = time.time() + WAIT
    while time.time() < deadline and not any(e[0] == "closed" for e in up.events):
        time.sleep(0.05)
    check(any(e[0] == "closed" for e in up.events), "the upstream transfer was cancelled")
    rows = rows_for(rid)
    check(len(rows) == 1 and rows[0]["api"] == "completions" and rows[0]["client_aborted"] in (1, True),
          "one client_aborted row: %s" % rows)
    st, js, raw, _ = post("/v1/completions", {"model": "gpt-x", "prompt": "after"})
    check(st == 200, "still serving: %s" % st)


def test_completions_bad_and_upstream_error():
    for body, field in [({"model": "gpt-x"}, "prompt"), ({"model": "gpt-x", "prompt": ["a", "b"]}, "prompt"),
                        ({"model": "gpt-x", "prompt": "a", "echo": True}, "echo"),
                        ({"model": "gpt-x", "prompt": "a", "best_of": 3}, "best_of"),
                        ({"model": "gpt-x", "prompt": "a", "suffix": "z"}, "suffix")]:
        st, js, raw, _ = post("/v1/completions", body)
        check(st == 400 and field in js["error"]["message"], "%s -> %s %s" % (field, st, raw))
    st, js, raw, hdrs = post("/v1/completions", {"model": "gpt-x", "prompt": "FAIL"})
    check(st == 429 and js["error"]["type"] == "rate_limit_error", "%s %s" % (st, raw))
    st, js, raw, _ = post("/v1/completions", {"model": "gte-rerank-none", "prompt": "a"})
    check(st == 404, "unknown model %s" % st)

if __name__ == "__main__":
    setup()
    run([test_models_list_endpoints, test_rerank_openai_compatible, test_rerank_top_n_passthrough,
         test_rerank_dashscope_native, test_rerank_undeclared_is_400_naming_endpoint,
         test_rerank_bad_bodies, test_rerank_upstream_errors, test_moderations_passthrough,
         test_images_passthrough, test_oversize_body_413, test_completions_through_chat,
         test_completions_stream, test_completions_stream_include_usage, test_completions_stream_client_abort, test_completions_native_passthrough,
         test_completions_native_only_fields_pass_through,
         test_completions_bad_and_upstream_error, test_lua_stages_apply, test_unit_prices_billed,
         test_unit_price_line_checked, test_clean_shutdown])
    up.close()
