"""Large embeddings requests split into concurrent upstream calls (ABI 1.2
embed_max_inputs, kernel/relay/fanout.c), through the real binary. The
channel's plugin (tests/plugins/embsplit.c) takes 3 inputs per call: 7
inputs become calls of 3, 3 and 1 that run at the same time; the client
gets one answer in input order with the usage summed, billed once. One
failing part fails the request with its error and bills nothing; a client
that leaves cancels the parts; a request that fits is one call, as before."""
import base64
import http.client
import json
import re
import socket
import struct
import tempfile
import threading
import time

from lib import TEST_PLUGIN_DIR, Gateway, Mock, admin_call, check, free_port, json_reply, ledger_rows, run

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
WAIT = 10  # seconds: generous bounds for things that take milliseconds


def vector(item):
    """The embedding the mock gives an input (a string or a token array)."""
    text = item if isinstance(item, str) else json.dumps(item)
    return [float(len(text)), float(sum(map(ord, text)) % 997)]


def tokens(item):
    return len(item) if isinstance(item, str) else len(item) + 1


class Upstream:
    """/split/embeddings answers every input with vector(input), listing the
    embeddings in reverse with their indexes, and usage = tokens(input)
    summed. With hold=N it keeps each call until N calls have arrived, then
    answers them last-come first. An input "FAIL400" gets a 400; an input
    "SLOW" waits for `release`. /down/embeddings always answers 500."""

    def __init__(self):
        self.mock = Mock()
        self.mock.server.socket.listen(256)  # 64 parts connect at once (the default backlog is 5)
        self.cond = threading.Condition()
        self.hold = 0
        self.arrived = []  # call ids in arrival order
        self.turn = []  # call ids still to answer, in answering order
        self.answered = 0
        self.release = threading.Event()
        self.gen = 0  # a reset lets calls still held from the last test go
        self.mock.routes["/split/embeddings"] = self.embeddings
        self.mock.routes["/down/embeddings"] = lambda h, b: json_reply(
            h, 500, {"error": {"message": "down", "type": "server_error"}})

    def reset(self, hold=0):
        with self.cond:
            self.hold = hold
            self.gen += 1
            self.cond.notify_all()
            self.arrived, self.turn, self.answered = [], [], 0
            self.release.clear()
            self.mock.requests.clear()

    def calls(self, path="/split/embeddings"):
        return [json.loads(r["body"]) for r in self.mock.requests if r["path"] == path]

    def wait_turn(self):
        with self.cond:
            me, gen = len(self.arrived), self.gen
            self.arrived.append(me)
            if len(self.arrived) == self.hold:
                self.turn = list(reversed(self.arrived))
                self.cond.notify_all()
            ok = self.cond.wait_for(lambda: gen != self.gen or (self.turn and self.turn[0] == me), WAIT)
        return me, ok and gen == self.gen

    def done_turn(self, me):
        with self.cond:
            if self.turn and self.turn[0] == me:
                self.turn.pop(0)
            self.cond.notify_all()

    def embeddings(self, h, body):
        req = json.loads(body)
        inputs = req["input"]
        if isinstance(inputs, str) or isinstance(inputs[0], int):
            inputs = [inputs]  # one input
        me, ok = self.wait_turn() if self.hold else (None, True)
        try:
            if not ok:
                return json_reply(h, 503, {"error": {"message": "calls were not concurrent",
                                                     "type": "server_error"}})
            if "FAIL400" in inputs:
                return json_reply(h, 400, {"error": {"message": "input FAIL400 is not allowed",
                                                     "type": "invalid_request_error"}})
            if "SLOW" in inputs:
                self.release.wait(WAIT)
            n = sum(tokens(i) for i in inputs)
            data = [{"object": "embedding", "index": k, "embedding": vector(i)}
                    for k, i in enumerate(inputs)]
            json_reply(h, 200, {"object": "list", "data": list(reversed(data)),
                                "model": "up-%s" % json.dumps(inputs[0]),
                                "usage": {"prompt_tokens": n, "total_tokens": n}})
            with self.cond:
                self.answered += 1
        finally:
            if me is not None:
                self.done_turn(me)


up = Upstream()
gw = None
admin_port = None
token = None
secret = None  # a stored key: only those are billed (config keys are bootstrap keys)


def setup():
    global gw, admin_port, token, secret
    admin_port = free_port()
    data_dir = tempfile.mkdtemp(prefix="lm-split-")
    gw = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (data_dir, admin_port),
                 plugin_dir=TEST_PLUGIN_DIR, channels="""
channel split {
    plugin embsplit
    base_url %s/split
    models emb emb-fo
    price_input 1
    price_output 1
    priority 1
}
channel down {
    plugin embsplit
    base_url %s/down
    models emb-fo
}
""" % (up.mock.url, up.mock.url))
    token = TOKEN_RE.search(gw.logtext()).group(1)
    st, k = admin_call(admin_port, token, "POST", "/admin/keys", {"name": "split", "quota": "10"})
    check(st == 201, "key: %s %s" % (st, k))
    secret = k.get("secret") or k.get("key")


def embed(inputs, model="emb", timeout=WAIT * 2):
    return gw.request("POST", "/v1/embeddings", {"model": model, "input": inputs}, key=secret,
                      timeout=timeout)


def rows_for(request_id, settle=0.3):
    """The ledger rows of one request, once its rows have landed."""
    return ledger_rows(admin_port, token, request_id, WAIT, settle)


def check_answer(js, inputs):
    data = js["data"]
    check(len(data) == len(inputs), "%d embeddings for %d inputs" % (len(data), len(inputs)))
    check([d["index"] for d in data] == list(range(len(inputs))), "indexes %s" % [d["index"] for d in data])
    for i, d in enumerate(data):
        check(d["embedding"] == vector(inputs[i]), "input %d got %s" % (i, d["embedding"]))
    n = sum(tokens(i) for i in inputs)
    check(js["usage"] == {"prompt_tokens": n, "total_tokens": n}, "usage %s (want %d)" % (js["usage"], n))
    check(js["model"] == "up-%s" % json.dumps(inputs[0]), "model of the first part: %s" % js["model"])


def test_split_concurrent_joined_in_order_billed_once():
    inputs = ["alpha", "b", "gamma ray", "delta", "epsilon!", "zeta", "the seventh input"]
    up.reset(hold=3)  # each call waits for the other two: they must run at the same time
    st, js, raw, hdrs = embed(inputs)
    check(st == 200, "status %s %s" % (st, raw[:300]))
    calls = up.calls()
    check(sorted(len(c["input"]) for c in calls) == [1, 3, 3], "call sizes %s" % [c["input"] for c in calls])
    check(sorted(c["input"] for c in calls) == sorted([inputs[0:3], inputs[3:6], inputs[6:7]]),
          "slices %s" % [c["input"] for c in calls])
    check(all(c["model"] == "emb" for c in calls), "model in calls %s" % [c["model"] for c in calls])
    check_answer(js, inputs)
    rows = rows_for(hdrs["X-Request-Id"])
    n = sum(tokens(i) for i in inputs)
    check(len(rows) == 1, "exactly one ledger row: %s" % rows)
    check(rows[0]["prompt_tokens"] == n and rows[0]["status"] == 200 and rows[0]["cost_micro"] == n,
          "the summed usage billed: %s (want %d)" % (rows[0], n))


def test_split_base64_applies_to_the_join():
    inputs = ["a", "bb", "ccc", "dddd", "eeeee"]
    up.reset()
    st, js, raw, _ = gw.request("POST", "/v1/embeddings",
                                {"model": "emb", "input": inputs, "encoding_format": "base64"}, key=secret,
                                timeout=WAIT * 2)
    check(st == 200, "status %s %s" % (st, raw[:300]))
    check(all("encoding_format" not in json.dumps(c) for c in up.calls()), "a part carried encoding_format")
    for i, d in enumerate(js["data"]):
        raw32 = base64.b64decode(d["embedding"])
        got = list(struct.unpack("<%df" % (len(raw32) // 4), raw32))
        check(got == vector(inputs[i]) and d["index"] == i, "input %d decodes to %s" % (i, got))


def test_token_arrays_split():
    inputs = [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]]
    up.reset(hold=2)
    st, js, raw, _ = embed(inputs)
    check(st == 200, "status %s %s" % (st, raw[:300]))
    check(sorted(len(c["input"]) for c in up.calls()) == [1, 3], "calls %s" % up.calls())
    check_answer(js, inputs)


def test_fits_one_call_unchanged():
    for inputs in (["one", "two", "three"], "just one string", [1, 2, 3, 4, 5, 6, 7]):
        up.reset()
        body = json.dumps({"model": "emb", "input": inputs})
        st, js, raw, _ = gw.request("POST", "/v1/embeddings", body, key=secret)
        check(st == 200, "status %s %s" % (st, raw[:300]))
        check(len(up.mock.requests) == 1, "%d upstream calls for %r" % (len(up.mock.requests), inputs))
        # one call takes the client's own bytes (raw_body): the unchanged single path
        check(up.mock.requests[0]["body"] == body.encode(), "forwarded %r" % up.mock.requests[0]["body"])


def test_one_part_400_fails_request_bills_nothing():
    inputs = ["a", "b", "c", "d", "FAIL400", "f", "g"]
    up.reset()
    st, js, raw, hdrs = embed(inputs)
    check(st == 400, "status %s %s" % (st, raw[:300]))
    check(js["error"]["message"] == "input FAIL400 is not allowed", "error %s" % js)
    check(js["error"]["type"] == "invalid_request_error", "error %s" % js)
    check(len(up.calls("/down/embeddings")) == 0, "a 400 is not failed over")
    rows = rows_for(hdrs["X-Request-Id"])
    check(rows and all(r["cost_micro"] == 0 and r["prompt_tokens"] == 0 for r in rows),
          "nothing billed: %s" % rows)
    check(all(r["status"] == 400 for r in rows), "the failed attempt's row says why: %s" % rows)


def test_part_5xx_fails_over_whole_request():
    inputs = ["p%d" % i for i in range(7)]
    up.reset()
    st, js, raw, hdrs = embed(inputs, model="emb-fo")
    check(st == 200, "status %s %s" % (st, raw[:300]))
    check("attempts=2" in hdrs.get("X-Longmen-Route", "") and "channel=split" in hdrs["X-Longmen-Route"],
          "route %s" % hdrs.get("X-Longmen-Route"))
    check(len(up.calls("/down/embeddings")) >= 1 and len(up.calls()) == 3,
          "calls down %d split %d" % (len(up.calls("/down/embeddings")), len(up.calls())))
    check_answer(js, inputs)
    rows = rows_for(hdrs["X-Request-Id"])
    billed = [r for r in rows if r["cost_micro"] > 0]
    check(len(billed) == 1 and billed[0]["channel"] == "split", "billed once, on split: %s" % rows)


def test_too_many_parts_is_400():
    up.reset()
    st, js, raw, _ = embed(["x"] * (3 * 64 + 1))
    check(st == 400 and "64" in js["error"]["message"] and "192" in js["error"]["message"],
          "status %s %s" % (st, raw[:300]))
    check(len(up.mock.requests) == 0, "no upstream call")
    st, js, raw, _ = embed(["x"] * (3 * 64))
    check(st == 200 and len(js["data"]) == 192, "the limit itself: %s %s" % (st, raw[:200]))


def leave_early(inputs, calls, answered):
    """Send the request on a raw socket and close it once the mock has seen
    `calls` calls and answered `answered`; returns the request id."""
    req = json.dumps({"model": "emb", "input": inputs}).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
              % (secret.encode(), len(req), req))
    deadline = time.time() + WAIT
    while (len(up.mock.requests) < calls or up.answered < answered) and time.time() < deadline:
        time.sleep(0.02)
    check(len(up.mock.requests) == calls and up.answered == answered,
          "calls %d answered %d" % (len(up.mock.requests), up.answered))
    time.sleep(0.5)  # the gateway has read the answers (a millisecond's work)
    s.close()


GONE_RE = re.compile(r"(\w+): client gone; (\d+) of (\d+) upstream calls had answered")


def gone_lines():
    return GONE_RE.findall(gw.logtext())


def next_gone_line(before):
    """The first "client gone ... had answered" line after the first `before`."""
    deadline = time.time() + WAIT
    while time.time() < deadline:
        lines = gone_lines()
        if len(lines) > before:
            return lines[before]
        time.sleep(0.05)
    return None


def test_client_gone_cancels_parts_bills_answered():
    inputs = ["q1", "q2", "q3", "q4", "q5", "q6", "SLOW"]
    up.reset()
    before = len(gone_lines())
    leave_early(inputs, 3, 2)
    m = next_gone_line(before)
    check(m and m[1] == "2" and m[2] == "3", "log says two of three answered: %s" % (m,))
    up.release.set()
    rows = rows_for(m[0])
    n = sum(tokens(i) for i in inputs[:6])
    check(len(rows) == 1 and rows[0]["prompt_tokens"] == n and rows[0]["cost_micro"] == n and
          rows[0]["client_aborted"] in (1, True),
          "the answered parts billed once, client_aborted: %s (want %d)" % (rows, n))
    st, js, _, _ = embed(["after", "the", "client", "left"])
    check(st == 200 and len(js["data"]) == 4, "still serving: %s" % st)


def test_client_gone_before_any_answer():
    inputs = ["r%d" % i for i in range(7)]
    up.reset(hold=4)  # never reached: every call waits until the client is gone
    mark = "client gone; 3 upstream calls cancelled, none had answered"
    before = gw.logtext().count(mark)
    leave_early(inputs, 3, 0)
    deadline = time.time() + WAIT
    while time.time() < deadline and gw.logtext().count(mark) == before:
        time.sleep(0.05)
    check(gw.logtext().count(mark) == before + 1, "parts cancelled: %s" % gw.logtext()[-2000:])
    up.reset()
    st, js, _, _ = embed(["still", "here", "after", "that"])
    check(st == 200 and len(js["data"]) == 4, "still serving: %s" % st)


def test_clean_shutdown():
    check(gw.stop() == 0, "clean exit")
    up.mock.close()


if __name__ == "__main__":
    setup()
    run([test_split_concurrent_joined_in_order_billed_once, test_split_base64_applies_to_the_join,
         test_token_arrays_split,
         test_fits_one_call_unchanged, test_one_part_400_fails_request_bills_nothing,
         test_part_5xx_fails_over_whole_request, test_too_many_parts_is_400,
         test_client_gone_cancels_parts_bills_answered, test_client_gone_before_any_answer,
         test_clean_shutdown])
