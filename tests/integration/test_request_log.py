"""The request log (docs/observability.md), through the real binary: one
row per request with its attempts and statuses, GET /admin/requests with
filters (key, model, channel, status, since/until) and cursor paging,
bodies kept only for the models and keys a request_log_bodies rule names,
no secret in any row, and retention by row count and by age."""
import json
import re
import tempfile
import time

from lib import (KEY, Gateway, Mock, admin_call, check, chunk, free_port, json_reply, request_log, run,
                 sse_reply, usage_chunk)

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
up = Mock()


def answer(h, b):
    req = json.loads(b)
    if req.get("stream"):
        return sse_reply(h, [chunk("streamed", role="assistant"), chunk(finish="stop"), usage_chunk(4, 1),
                             "[DONE]"])
    json_reply(h, 200, {"id": "up-1", "object": "chat.completion", "created": 1, "model": req["model"],
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "logged answer"},
                                     "finish_reason": "length"}],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})


def refuse(h, b):
    json_reply(h, 503, {"error": {"message": "down", "type": "server_error"}})


up.routes["/v1/chat/completions"] = answer
up.routes["/bad/v1/chat/completions"] = refuse
CHANNELS = ("channel bad {\n plugin openai\n base_url %s/bad/v1\n models fo-*\n priority 0\n}\n"
            "channel good {\n plugin openai\n base_url %s/v1\n models m-* fo-* body-*\n priority 1\n"
            " price_input 1\n price_output 1\n}\n"
            "channel other {\n plugin openai\n base_url %s/v1\n models o-*\n}\n" % (up.url, up.url, up.url))


class Env:
    def __init__(self, extra):
        d = tempfile.mkdtemp(prefix="lm-reqlog-")
        self.admin_port = free_port()
        self.gw = Gateway(extra="request_log on\n" + extra +
                          "data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (d, self.admin_port),
                          channels=CHANNELS)
        m = TOKEN_RE.search(self.gw.logtext())
        self.token = m.group(1) if m else None

    def admin(self, method, path, body=None):
        return admin_call(self.admin_port, self.token, method, path, body)

    def rows(self, query="", want=None, timeout=8):
        return request_log(self.admin, query, want, timeout)


main = None
vkey = None


def body(model, **kw):
    b = {"model": model, "messages": [{"role": "user", "content": "the question"}]}
    b.update(kw)
    return b


def test_setup_traffic():
    global vkey
    st, js = main.admin("POST", "/admin/keys", {"name": "vk", "quota": "unlimited"})
    check(st == 201, js)
    vkey = js["secret"]
    for m in ("m-1", "m-2", "o-1"):
        check(main.gw.chat(body(m))[0] == 200, m)
    check(main.gw.chat(body("m-1"), key=vkey)[0] == 200, "virtual key")
    check(main.gw.chat(body("fo-1"))[0] == 200, "failover")
    check(main.gw.stream(body("m-1", stream=True))[0] == 200, "stream")
    check(main.gw.chat(body("nope"))[0] == 404, "unknown model")
    check(main.gw.chat(body("body-1"))[0] == 200, "bodies")
    main.rows(want=8)


def test_row_fields():
    js = main.rows("model=fo-1")
    check(len(js["data"]) == 1, js)
    r = js["data"][0]
    check(r["status"] == 200 and r["channel"] == "good" and r["model_asked"] == "fo-1", r)
    check([(a["channel"], a["status"]) for a in r["attempts"]] == [("bad", 503), ("good", 200)], r["attempts"])
    check(r["prompt_tokens"] == 7 and r["completion_tokens"] == 3 and r["finish_reason"] == "length", r)
    check(r["key"] == "test" and r["api"] == "chat" and r["latency_ms"] >= 0 and not r["stream"], r)
    s = main.rows("model=m-1&key=test")["data"]
    streams = [x for x in s if x["stream"]]
    check(len(streams) == 1 and streams[0]["finish_reason"] == "stop" and streams[0]["completion_tokens"] == 1,
          s)
    e = main.rows("status=404")["data"]
    check(len(e) == 1 and e[0]["error_code"] == "model_not_found" and e[0]["model_asked"] == "nope", e)


def test_filters():
    check(len(main.rows("key=vk")["data"]) == 1, "key")
    check(main.rows("key=vk")["data"][0]["key_id"] is not None, "key id")
    check(len(main.rows("channel=other")["data"]) == 1, "channel")
    check(len(main.rows("model=m-1")["data"]) == 3, "model")
    check(len(main.rows("status=200")["data"]) == 7, "status")
    now = int(time.time() * 1000)
    check(len(main.rows("since=%d" % (now + 60000))["data"]) == 0, "since in the future")
    check(len(main.rows("until=%d" % (now - 3600000))["data"]) == 0, "until an hour ago")
    check(len(main.rows("since=%d&until=%d" % (now - 3600000, now + 60000))["data"]) == 8, "range")
    st, js = main.admin("GET", "/admin/requests?status=abc")
    check(st == 400, "bad status accepted: %s" % st)
    st, js = main.admin("GET", "/admin/requests?what=1")
    check(st == 400, "unknown parameter accepted: %s" % st)


def test_paging():
    seen, cursor, pages = [], None, 0
    while True:
        q = "limit=3" + ("&cursor=%d" % cursor if cursor else "")
        js = main.rows(q)
        pages += 1
        seen += [r["id"] for r in js["data"]]
        if not js["has_more"]:
            check(js["next_cursor"] is None, js)
            break
        cursor = js["next_cursor"]
    check(pages == 3 and len(seen) == 8 and seen == sorted(seen, reverse=True) and len(set(seen)) == 8,
          "%d pages %s" % (pages, seen))


def test_bodies_opt_in_and_no_secrets():
    rows = main.rows("bodies=1")["data"]
    kept = [r for r in rows if r.get("request_body")]
    check([r["model_asked"] for r in kept] == ["body-1"], [r["model_asked"] for r in kept])
    check("the question" in kept[0]["request_body"] and "logged answer" in kept[0]["response_body"], kept[0])
    check(all(r.get("response_body") is None for r in rows if r["model_asked"] != "body-1"), "other bodies")
    check("request_body" not in main.rows()["data"][0], "bodies without bodies=1")
    text = json.dumps(rows)
    check(KEY not in text and vkey not in text and "Bearer" not in text, "a secret in the request log")


def test_retention_by_rows_and_age():
    by_rows = Env("request_log_max_rows 3\n")
    by_age = Env("request_log_max_age 1s\n")
    try:
        for env in (by_rows, by_age):
            for i in range(6):
                check(env.gw.chat(body("m-1"))[0] == 200, "request")
            env.rows(want=6)
        deadline = time.time() + 25  # pruned every 10 s by the control thread
        while time.time() < deadline:
            if len(by_rows.rows()["data"]) == 3 and len(by_age.rows()["data"]) == 0:
                break
            time.sleep(0.5)
        check(len(by_rows.rows()["data"]) == 3, "max_rows kept %d" % len(by_rows.rows()["data"]))
        check(len(by_age.rows()["data"]) == 0, "max_age kept %d" % len(by_age.rows()["data"]))
    finally:
        by_rows.gw.stop()
        by_age.gw.stop()


if __name__ == "__main__":
    main = Env("request_log_bodies off keys vk\nrequest_log_bodies on models body-*\n")
    try:
        run([test_setup_traffic, test_row_fields, test_filters, test_paging, test_bodies_opt_in_and_no_secrets,
             test_retention_by_rows_and_age])
    finally:
        main.gw.stop()
        up.close()
