"""Unit prices (per_image, per_1k_searches, per_1m_chars) through the real
binary: the quota hold taken before the upstream call covers them (a key
whose balance cannot pay is refused with 429 insufficient_quota and the
upstream is never called), a request that fits is settled to exactly its
unit cost (the settle replaces the hold, nothing is billed twice), an
upstream error releases the hold; channels stored through the admin API
carry the same `price` lines (checked by the file's parser, shown by GET,
kept across a restart, used for billing)."""
import json
import socket
import tempfile
import time

from lib import Gateway, Mock, admin_call, check, free_port, json_reply, run

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
ADMIN_TOKEN = "units-admin-token-0123456789abcdef"


class Env:
    def __init__(self, data_dir=None, pg=None, db=None):
        self.dir = data_dir or tempfile.mkdtemp(prefix="lm-units-")
        self.aport = free_port()
        env = {"LONGMEN_ADMIN_TOKEN": ADMIN_TOKEN}
        store = "data_dir %s\n" % self.dir
        if pg:
            store = 'store postgres "%s"\n' % pg.conninfo().replace("dbname=postgres", "dbname=" + db)
            env.update(pg.env())
        self.gw = Gateway(extra="%sadmin_listen 127.0.0.1:%d\n%s" % (store, self.aport, OUTBOUND),
                          channels=CHANNELS, env=env)
        self.token = ADMIN_TOKEN
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.aport), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)

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


STORED = {"name": "stored-units", "plugin": "openai", "models": ["simg", "srr"],
          "settings": {"base_url": up.url + "/u"},
          "prices": ["simg 0.05 per_image", "srr 3 per_1k_searches", "s* 1 2"]}


def test_stored_channel_unit_prices():
    global env
    st, js = env.admin("POST", "/admin/channels", STORED)
    check(st == 201, "create: %s %s" % (st, js))
    check(js["prices"] == STORED["prices"], "returned as given: %s" % js.get("prices"))
    st, js = env.admin("GET", "/admin/channels/stored-units")
    check(st == 200 and js["prices"] == STORED["prices"] and js["active"] is True, "GET: %s" % js)
    # the file's channel shows its price lines in the same form
    st, js = env.admin("GET", "/admin/channels/units")
    check(st == 200 and js["prices"] == ["img-units 0.040000 per_image", "rr-units 2.000000 per_1k_searches",
                                         "mod-units 1.000000 per_1m_chars"], "file channel: %s" % js)
    secret, _ = env.key("0.12")
    before = calls("/u/images/generations")
    st, js, raw, _ = env.post(secret, "/v1/images/generations", {"model": "simg", "prompt": "p", "n": 3})
    check(st == 429 and calls("/u/images/generations") == before, "stored price held: %s %s" % (st, raw))
    st, js, raw, hdrs = env.post(secret, "/v1/images/generations", {"model": "simg", "prompt": "p", "n": 2})
    check(st == 200, "fits: %s %s" % (st, raw))
    rows = env.rows(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 100000 and rows[0]["channel"] == "stored-units",
          "billed at the stored price: %s" % rows)
    # PATCH replaces the list; other fields stay
    st, js = env.admin("PATCH", "/admin/channels/stored-units", {"prices": ["simg 0.01 per_image"]})
    check(st == 200 and js["prices"] == ["simg 0.01 per_image"] and js["models"] == ["simg", "srr"],
          "patch: %s %s" % (st, js))
    st, js = env.admin("PATCH", "/admin/channels/stored-units", {"weight": 2})
    check(st == 200 and js["prices"] == ["simg 0.01 per_image"], "kept by an unrelated patch: %s" % js)
    # a restart reads them back from the store and bills with them
    env.gw.stop()
    env = Env(env.dir)
    st, js = env.admin("GET", "/admin/channels/stored-units")
    check(st == 200 and js["prices"] == ["simg 0.01 per_image"] and js["active"] is True,
          "after restart: %s %s" % (st, js))
    st, js, raw, hdrs = env.post(secret, "/v1/images/generations", {"model": "simg", "prompt": "p", "n": 1})
    check(st == 200, "after restart: %s %s" % (st, raw))
    rows = env.rows(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 10000, "billed after restart: %s" % rows)


def test_stored_channel_bad_price_lines():
    cases = [
        (["simg 2 per_fortnight"], 'price: unknown unit "per_fortnight" (per_1k_searches, per_image, '
                                   'per_second, per_1m_chars)'),
        (["simg -1 per_image"], 'price: "-1" is not an amount >= 0 such as 2.5'),
        (["simg"], "usage: price MODEL INPUT OUTPUT"),
        (["simg 1 per_image\n}"], "control characters"),
        ("simg 1 per_image", "prices must be an array"),
        ([7], "prices[0] must be a string"),
    ]
    for prices, msg in cases:
        body = dict(STORED, name="bad-units", prices=prices)
        st, js = env.admin("POST", "/admin/channels", body)
        check(st == 400 and js["error"]["param"] == "prices" and msg in js["error"]["message"],
              "%r -> %s %s" % (prices, st, js))
    st, js = env.admin("GET", "/admin/channels/bad-units")
    check(st == 404, "nothing stored: %s" % st)
    st, js = env.admin("PATCH", "/admin/channels/stored-units", {"prices": ["simg 1 per_decade"]})
    check(st == 400 and js["error"]["param"] == "prices" and "per_decade" in js["error"]["message"],
          "patch refused: %s %s" % (st, js))
    # a setting may not smuggle a price line in
    st, js = env.admin("PATCH", "/admin/channels/stored-units", {"settings": {"price": "simg 0 per_image"}})
    check(st == 400, "price as a setting: %s %s" % (st, js))


def test_stored_prices_on_postgres():
    import pglib
    if pglib.pg_bin() is None:
        print("SKIP test_stored_prices_on_postgres: no PostgreSQL binaries", flush=True)
        return
    pg = pglib.Postgres()
    e = None
    try:
        pg.sql("CREATE DATABASE lm_units")
        e = Env(pg=pg, db="lm_units")
        st, js = e.admin("POST", "/admin/channels", STORED)
        check(st == 201 and js["prices"] == STORED["prices"], "create: %s %s" % (st, js))
        e.gw.stop()
        e = Env(pg=pg, db="lm_units")
        st, js = e.admin("GET", "/admin/channels/stored-units")
        check(st == 200 and js["prices"] == STORED["prices"] and js["active"] is True,
              "read back from PostgreSQL: %s %s" % (st, js))
        secret, _ = e.key("1")
        st, js, raw, hdrs = e.post(secret, "/v1/images/generations", {"model": "simg", "prompt": "p", "n": 2})
        check(st == 200, "%s %s" % (st, raw))
        rows = e.rows(hdrs["X-Request-Id"])
        check(len(rows) == 1 and rows[0]["cost_micro"] == 100000, "billed on PostgreSQL: %s" % rows)
    finally:
        if e:
            e.gw.stop()
        pg.close()


def test_clean_shutdown():
    check(env.gw.stop() == 0, "exit status")


setup()
run([test_hold_refuses_images_it_cannot_pay, test_hold_released_on_upstream_error,
     test_hold_covers_searches_and_characters, test_stored_channel_unit_prices,
     test_stored_channel_bad_price_lines, test_stored_prices_on_postgres, test_clean_shutdown])
