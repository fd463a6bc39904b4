"""DashScope's asynchronous image synthesis behind POST /v1/images/generations
(ABI 1.4 tasks, the qwen plugin) through the real binary against a
DashScope-shaped mock: the submit carries X-DashScope-Async and the native
body (size 1024x1024 -> 1024*1024, n); the kernel polls GET /api/v1/tasks/{id}
on the worker's event loop until SUCCEEDED (OpenAI's {created, data[{url}]},
billed per image), FAILED (502 upstream_task_failed with the upstream's
message) or the channel's image_task_timeout (504 upstream_task_timeout); a
client that leaves stops the polling; one worker keeps answering other
requests while tasks are polled; b64_json is a 400 unsupported. Polls and
task outcomes are counted in /admin/metrics, and each task is one span
(kind INTERNAL, "task MODEL") beside its submit attempt's."""
import http.client
import json
import os
import re
import socket
import tempfile
import threading
import time

from lib import Gateway, Mock, admin_call, admin_key, check, free_port, json_reply, ledger_rows, run

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
SUBMIT = "/api/v1/services/aigc/text2image/image-synthesis"
CHAT = "/api/v1/services/aigc/text-generation/generation"
WAIT = 10

up = Mock()
collector = Mock()  # OTLP/HTTP JSON
spans_lock = threading.Lock()
spans = []
rids = {}  # test -> the request id it answered
gw = None
admin_port = None
token = None
secret = None
tasks = {}  # task id -> {"prompt", "n", "polls": [times], "script": [statuses]}
tasks_lock = threading.Lock()
seq = [0]


def task_reply(h, tid):
    with tasks_lock:
        t = tasks[tid]
        t["polls"].append(time.time())
        auth = h.headers.get("Authorization")
        t["auth"].append(auth)
        t["methods"].append(h.command)
        t["tp"].append(h.headers.get("traceparent"))
        st = t["script"][min(len(t["polls"]) - 1, len(t["script"]) - 1)]
    out = {"task_id": tid, "task_status": st}
    if st == "SUCCEEDED":
        out["results"] = [{"url": "https://dashscope-result.example/%s/%d.png" % (tid, i)}
                          for i in range(t["n"])]
        return json_reply(h, 200, {"request_id": "poll-" + tid, "output": out,
                                   "usage": {"image_count": t["n"]}})
    if st == "FAILED":
        out.update({"code": "DataInspectionFailed",
                    "message": "Output data may contain inappropriate content."})
    json_reply(h, 200, {"request_id": "poll-" + tid, "output": out})


def submit(h, body):
    req = json.loads(body)
    prompt = req["input"]["prompt"]
    if prompt == "REFUSE":
        return json_reply(h, 400, {"code": "InvalidParameter", "message": "bad prompt",
                                   "request_id": "sub-x"})
    with tasks_lock:
        seq[0] += 1
        tid = "task-%04d-%s" % (seq[0], "a" * 8)
        script = {"FAIL": ["RUNNING", "FAILED"], "NEVER": ["RUNNING"],
                  "LEAVE": ["RUNNING", "RUNNING", "SUCCEEDED"], "LEAVEFAIL": ["RUNNING", "FAILED"],
                  "SHUTDOWN": ["RUNNING"]}.get(prompt, ["RUNNING", "SUCCEEDED"])
        tasks[tid] = {"prompt": prompt, "n": req["parameters"].get("n", 1), "polls": [],
                      "auth": [], "methods": [], "tp": [], "script": script, "submit": req,
                      "headers": dict(h.headers), "submitted": time.time()}
    up.routes["/api/v1/tasks/" + tid] = lambda hh, _b, tid=tid: task_reply(hh, tid)
    json_reply(h, 200, {"request_id": "sub-" + tid,
                        "output": {"task_id": tid, "task_status": "PENDING"}})


def chat(h, body):
    json_reply(h, 200, {"request_id": "chat-1",
                        "output": {"choices": [{"finish_reason": "stop", "message": {
                            "role": "assistant", "content": "still here"}}]},
                        "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}})


def collect(h, body):
    doc = json.loads(body)
    with spans_lock:
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                spans.extend(ss["spans"])
    json_reply(h, 200, {})


up.routes[SUBMIT] = submit
up.routes[CHAT] = chat
collector.routes["/v1/traces"] = collect


def setup():
    global gw, admin_port, token, secret
    admin_port = free_port()
    data_dir = tempfile.mkdtemp(prefix="lm-img-")
    # One worker: every request below shares one event loop, so a task that
    # blocked it would hold up the chat request of the concurrency case.
    gw = Gateway(workers=1, extra="data_dir %s\nadmin_listen 127.0.0.1:%d\ndrain_timeout 1s\n"
                 "otel_endpoint %s/v1/traces\notel_protocol http/json\n"
                 % (data_dir, admin_port, collector.url),
                 channels="""
channel dash {
    plugin qwen
    base_url %s
    api_key sk-up-dash
    models wanx2.1-t2i-turbo qwen-plus
    price_input 1
    price_output 1
    price wanx2.1-t2i-turbo 0.04 per_image
}
channel dashfast {
    plugin qwen
    base_url %s
    api_key sk-up-dash
    image_task_timeout 2
    models wanx-v1
}
""" % (up.url, up.url))
    token = TOKEN_RE.search(gw.logtext()).group(1)
    secret = admin_key(admin_port, token, "img", "10")


def rows_for(request_id, settle=0.3):
    return ledger_rows(admin_port, token, request_id, WAIT, settle)


def post(body, timeout=30):
    return gw.request("POST", "/v1/images/generations", body, key=secret, timeout=timeout)


def task_for(prompt):
    with tasks_lock:
        found = [t for t in tasks.values() if t["prompt"] == prompt]
    return found[-1] if found else None


def test_task_succeeds():
    st, js, raw, hdrs = post({"model": "wanx2.1-t2i-turbo", "prompt": "a red fox", "n": 2,
                              "size": "1024x1024"})
    check(st == 200, "%s %s" % (st, raw))
    check(isinstance(js.get("created"), int) and len(js["data"]) == 2 and
          js["data"][0]["url"].startswith("https://dashscope-result.example/"), "answer %s" % js)
    t = task_for("a red fox")
    check(t["headers"].get("X-DashScope-Async") == "enable", "async header %s" % t["headers"])
    check(t["headers"].get("Authorization") == "Bearer sk-up-dash", "submit auth")
    check(t["submit"] == {"model": "wanx2.1-t2i-turbo", "input": {"prompt": "a red fox"},
                          "parameters": {"size": "1024*1024", "n": 2}}, "native body %s" % t["submit"])
    # PENDING at submit, RUNNING at the first poll, SUCCEEDED at the second
    check(len(t["polls"]) == 2 and set(t["methods"]) == {"GET"} and
          set(t["auth"]) == {"Bearer sk-up-dash"}, "polls %s %s" % (t["methods"], t["auth"]))
    gap1, gap2 = t["polls"][0] - t["submitted"], t["polls"][1] - t["polls"][0]
    check(gap1 >= 0.4 and gap2 >= 0.8, "the wait grows (0.5 s, then 1 s): %.2f %.2f" % (gap1, gap2))
    rids["succeeded"] = hdrs["X-Request-Id"]
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["status"] == 200 and rows[0]["api"] == "images" and
          rows[0]["cost_micro"] == 80000, "2 images at 0.04: %s" % rows)


def test_task_failed():
    st, js, raw, hdrs = post({"model": "wanx2.1-t2i-turbo", "prompt": "FAIL"})
    check(st == 502, "%s %s" % (st, raw))
    err = js["error"]
    check(err["code"] == "upstream_task_failed" and "inappropriate content" in err["message"] and
          "FAILED" in err["message"] and err.get("type"), "error %s" % err)
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["status"] == 502 and rows[0]["cost_micro"] == 0,
          "nothing billed: %s" % rows)


def test_submit_refused():
    st, js, raw, hdrs = post({"model": "wanx2.1-t2i-turbo", "prompt": "REFUSE"})
    check(st == 400 and "bad prompt" in js["error"]["message"], "%s %s" % (st, raw))


def test_task_timeout():
    t0 = time.time()
    st, js, raw, hdrs = post({"model": "wanx-v1", "prompt": "NEVER"})
    took = time.time() - t0
    check(st == 504 and js["error"]["code"] == "upstream_task_timeout", "%s %s" % (st, raw))
    check(1.5 <= took < 20, "image_task_timeout 2 s: answered after %.1f s" % took)
    rids["timeout"] = hdrs["X-Request-Id"]
    t = task_for("NEVER")
    n = len(t["polls"])
    check(n >= 1, "polled %d times" % n)
    time.sleep(1.5)
    check(len(t["polls"]) == n, "polling stopped at the deadline: %d -> %d" % (n, len(t["polls"])))
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["status"] == 504 and rows[0]["cost_micro"] == 0,
          "nothing billed: %s" % rows)


def metric(name, labels):
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=WAIT)
    c.request("GET", "/admin/metrics", headers={"Authorization": "Bearer " + token})
    text = c.getresponse().read().decode()
    c.close()
    want = "%s{%s} " % (name, ",".join('%s="%s"' % kv for kv in labels))
    line = [l for l in text.splitlines() if l.startswith(want)]
    return int(line[0].split()[-1]) if line else 0


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        v = a["value"]
        out[a["key"]] = v["stringValue"] if "stringValue" in v else int(v["intValue"])
    return out


def request_spans(rid):
    """The request span with longmen.request_id rid and its children."""
    deadline = time.time() + WAIT
    while time.time() < deadline:
        with spans_lock:
            sp = list(spans)
        for s in sp:
            if attrs(s).get("longmen.request_id") == rid:
                return s, [k for k in sp if k.get("parentSpanId") == s["spanId"]]
        time.sleep(0.1)
    return None, []


def test_task_metrics_and_spans():
    # so far: a red fox (2 polls, succeeded), FAIL (2 polls, failed) on dash;
    # NEVER (timeout) on dashfast
    fox = (("model", "wanx2.1-t2i-turbo"), ("channel", "dash"))
    never = (("model", "wanx-v1"), ("channel", "dashfast"))
    check(metric("longmen_task_polls_total", fox) == 4, "polls on dash: %d" % metric("longmen_task_polls_total", fox))
    check(metric("longmen_task_polls_total", never) == len(task_for("NEVER")["polls"]), "polls on dashfast")
    for labels, outcome, want in [(fox, "succeeded", 1), (fox, "failed", 1), (never, "timeout", 1),
                                  (never, "succeeded", 0)]:
        got = metric("longmen_tasks_total", labels + (("outcome", outcome),))
        check(got == want, "%s %s: %d, want %d" % (labels[0][1], outcome, got, want))
    for case, outcome, polls in [("succeeded", "succeeded", 2), ("timeout", "timeout", None)]:
        s, kids = request_spans(rids[case])
        check(s is not None, "a request span for %s" % case)
        att = [k for k in kids if k["kind"] == 3]
        task = [k for k in kids if k["kind"] == 1]
        check(len(att) == 1 and len(task) == 1, "one attempt and one task span: %s" % kids)
        a, t = attrs(task[0]), task[0]
        check(t["name"].startswith("task wanx") and a["longmen.task.outcome"] == outcome
              and a["longmen.channel"] in ("dash", "dashfast")
              and (polls is None or a["longmen.task.polls"] == polls) and a["longmen.task.polls"] >= 1,
              "task span %s" % t)
        check(t["traceId"] == s["traceId"] and (t["status"]["code"] == 1) == (outcome == "succeeded"),
              "task span status %s" % t["status"])
        check(int(att[0]["endTimeUnixNano"]) <= int(t["startTimeUnixNano"]) <= int(t["endTimeUnixNano"]),
              "the submit ends before the task's polling begins")
        check(attrs(att[0]).get("http.response.status_code") == 200, "the submit answered 200")
        t = task_for("a red fox" if case == "succeeded" else "NEVER")
        tp = "00-%s-%%s-01" % s["traceId"]
        check(t["headers"].get("traceparent") == tp % att[0]["spanId"]
              and set(t["tp"]) == {tp % task[0]["spanId"]},
              "the submit names its attempt's span, the polls the task's: %s %s" % (t["headers"].get("traceparent"), t["tp"]))


def leave_after_first_poll(prompt, n):
    """Submit a task on a raw socket and hang up once it has been polled."""
    body = json.dumps({"model": "wanx2.1-t2i-turbo", "prompt": prompt, "n": n}).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (secret.encode(), len(body), body))
    deadline = time.time() + WAIT
    while time.time() < deadline and not (task_for(prompt) and task_for(prompt)["polls"]):
        time.sleep(0.05)
    t = task_for(prompt)
    check(t and t["polls"], "the task is polled")
    s.close()
    return t


def aborted_image_rows(count):
    deadline = time.time() + WAIT
    rows = []
    while time.time() < deadline and len(rows) < count:
        st, js = admin_call(admin_port, token, "GET", "/admin/usage/rows?limit=200")
        rows = [r for r in js["data"] if r.get("client_aborted") and r["api"] == "images"]
        time.sleep(0.1)
    return rows


def test_client_leaves_task_polled_and_billed():
    """The provider makes (and charges for) a task whose client left: the
    gateway polls it to its end and bills the images with client_aborted,
    as a non-stream chat answer whose client left."""
    t = leave_after_first_poll("LEAVE", 2)
    deadline = time.time() + WAIT
    while time.time() < deadline and len(t["polls"]) < 3:
        time.sleep(0.05)
    check(len(t["polls"]) == 3, "polled on to SUCCEEDED after the client left: %d" % len(t["polls"]))
    rows = aborted_image_rows(1)
    check(len(rows) == 1 and rows[0]["cost_micro"] == 80000 and rows[0]["status"] != 499,
          "the task's row bills 2 images: %s" % rows)
    check("client gone; upstream task's answer billed" in gw.logtext(), "logged")
    def failed_rows():
        st, js = admin_call(admin_port, token, "GET", "/admin/usage/rows?limit=200")
        return [r for r in js["data"] if r["api"] == "images" and r["status"] == 502]
    before = len(failed_rows())
    t = leave_after_first_poll("LEAVEFAIL", 1)
    deadline = time.time() + WAIT
    while time.time() < deadline and len(failed_rows()) == before:
        time.sleep(0.05)
    rows = failed_rows()
    check(len(t["polls"]) == 2 and len(rows) == before + 1 and rows[0]["cost_micro"] == 0,
          "a task that fails after its client left costs nothing: %s" % rows[:1])


def test_b64_json_unsupported():
    before = len(tasks)
    st, js, raw, _ = post({"model": "wanx2.1-t2i-turbo", "prompt": "x", "response_format": "b64_json"})
    check(st == 400 and js["error"]["code"] == "unsupported" and "b64_json" in js["error"]["message"],
          "%s %s" % (st, raw))
    check(len(tasks) == before, "no task submitted")
    st, js, raw, _ = post({"model": "wanx2.1-t2i-turbo", "prompt": "x", "size": "big"})
    check(st == 400 and "size" in js["error"]["message"], "%s %s" % (st, raw))


def test_one_worker_serves_while_polling():
    results = {}

    def image(i):
        results[i] = post({"model": "wanx2.1-t2i-turbo", "prompt": "concurrent %d" % i})

    threads = [threading.Thread(target=image, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    deadline = time.time() + WAIT
    while time.time() < deadline and not all(task_for("concurrent %d" % i) for i in range(3)):
        time.sleep(0.02)
    check(all(task_for("concurrent %d" % i) for i in range(3)), "three tasks submitted")
    # the tasks are being polled on the one worker; a chat request is answered meanwhile
    st, js, raw, _ = gw.chat({"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}]},
                             key=secret)
    still_polling = [th.is_alive() for th in threads]
    check(st == 200 and js["choices"][0]["message"]["content"] == "still here", "%s %s" % (st, raw))
    check(any(still_polling), "the chat answer came while tasks were polled: %s" % still_polling)
    for th in threads:
        th.join(30)
    check(all(results[i][0] == 200 and len(results[i][1]["data"]) == 1 for i in range(3)),
          "every task answered: %s" % [results[i][0] for i in range(3)])
    polls = sorted(p for i in range(3) for p in task_for("concurrent %d" % i)["polls"])
    check(len(polls) == 6, "two polls each: %d" % len(polls))


def test_shutdown_while_polling():
    res = {}

    def image():
        try:
            res["r"] = post({"model": "wanx2.1-t2i-turbo", "prompt": "SHUTDOWN"})
        except OSError as e:  # the connection may close before an answer
            res["r"] = (0, None, str(e).encode(), {})

    tasks_script = threading.Thread(target=image)
    tasks_script.start()
    deadline = time.time() + WAIT
    while time.time() < deadline and not (task_for("SHUTDOWN") and task_for("SHUTDOWN")["polls"]):
        time.sleep(0.05)
    check(task_for("SHUTDOWN") and task_for("SHUTDOWN")["polls"], "the task is polled")
    check(gw.stop() == 0, "longmen exits 0 with a task being polled")
    tasks_script.join(15)
    st, js = res["r"][0], res["r"][1]
    check(st in (0, 503), "the client is told: %s %s" % (st, res["r"][2]))


if __name__ == "__main__":
    setup()
    try:
        run([test_task_succeeds, test_task_failed, test_submit_refused, test_task_timeout,
             test_task_metrics_and_spans,
             test_client_leaves_task_polled_and_billed, test_b64_json_unsupported,
             test_one_worker_serves_while_polling, test_shutdown_while_polling])
    finally:
        if gw:
            gw.stop()
        up.close()
        collector.close()
