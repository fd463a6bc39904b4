"""GET /v1/models through the real binary accepts every key chat accepts:
a virtual key created through the admin API lists the models, a wrong key
gets 401 in the OpenAI error shape, and failed lookups feed the same
brute-force guard (AU-4) as chat."""
import http.client
import json
import re
import tempfile

from lib import admin_call, Gateway, check, free_port, run

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
MOCK = "channel m {\n plugin mock\n models mock-1 mock-2 other-1\n}\n"


class Env:
    def __init__(self):
        self.admin_port = free_port()
        self.gw = Gateway(MOCK, extra="data_dir %s\nadmin_listen 127.0.0.1:%d\nauth_fail_limit 3\n"
                          % (tempfile.mkdtemp(prefix="lm-models-"), self.admin_port))
        m = TOKEN_RE.search(self.gw.logtext())
        check(m, "admin token printed")
        self.token = m.group(1)

    def admin(self, method, path, body=None):
        return admin_call(self.admin_port, self.token, method, path, body, timeout=10)

    def new_key(self, **fields):
        body = {"name": "lister%d" % len(fields), "quota": "unlimited"}
        body.update(fields)
        st, js = self.admin("POST", "/admin/keys", body)
        check(st == 201, "create key: %s %s" % (st, js))
        return js.get("secret") or js.get("key")


def models(gw, key, source="127.0.0.1", path="/v1/models"):
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5, source_address=(source, 0))
    c.request("GET", path, headers={"Authorization": "Bearer " + key})
    r = c.getresponse()
    raw = r.read()
    c.close()
    try:
        js = json.loads(raw)
    except ValueError:
        js = None
    return r.status, js, raw, r.getheader("Retry-After")


def test_virtual_key_lists_models():
    env = Env()
    try:
        secret = env.new_key()
        st, js, raw, _ = models(env.gw, secret)
        check(st == 200, "virtual key lists models: %s %s" % (st, raw))
        check("mock-1" in [m["id"] for m in js["data"]], raw)
        st, js, raw, _ = models(env.gw, secret, path="/v1/models/mock-1")
        check(st == 200 and js["id"] == "mock-1", "one model: %s %s" % (st, raw))
        st, js, raw, _ = models(env.gw, "sk-not-a-key-000000")
        check(st == 401, "wrong key: %s %s" % (st, raw))
        err = (js or {}).get("error") or {}
        check(err.get("code") == "invalid_api_key" and err.get("type") == "invalid_request_error"
              and err.get("message"), "OpenAI error shape: %s" % raw)
    finally:
        env.gw.stop()


def test_wrong_keys_feed_the_brute_force_guard():
    env = Env()
    try:
        secret = env.new_key()
        codes = [models(env.gw, "sk-wrong-key-%03d" % i, "127.0.0.7")[0] for i in range(5)]
        check(codes[:3] == [401] * 3 and set(codes[3:]) == {429}, "3 failures then 429: %s" % codes)
        st, js, raw, retry = models(env.gw, secret, "127.0.0.7")
        check(st == 429 and retry and int(retry) > 0 and js["error"]["code"] == "too_many_auth_failures",
              "blocked even with a valid key: %s %s %s" % (st, retry, raw))
        st, _, raw, _ = models(env.gw, secret, "127.0.0.8")
        check(st == 200, "other addresses are unaffected: %s %s" % (st, raw))
    finally:
        env.gw.stop()


def test_restricted_key_lists_only_its_models():
    """A key limited to some models sees only those in /v1/models, and the
    others are 404 by id, as the chat endpoint would refuse them."""
    env = Env()
    try:
        secret = env.new_key(models=["mock-*"])
        st, js, raw, _ = models(env.gw, secret)
        check(st == 200 and sorted(m["id"] for m in js["data"]) == ["mock-1", "mock-2"],
              "restricted list: %s %s" % (st, raw))
        check(models(env.gw, secret, path="/v1/models/mock-2")[0] == 200, "an allowed model by id")
        st, js, raw, _ = models(env.gw, secret, path="/v1/models/other-1")
        check(st == 404 and js["error"]["code"] == "model_not_found", "a model it may not use: %s" % raw)
        st, js, raw, _ = models(env.gw, env.new_key())
        check(st == 200 and len(js["data"]) == 3, "an open key sees all: %s" % raw)
    finally:
        env.gw.stop()


if __name__ == "__main__":
    run([test_virtual_key_lists_models, test_wrong_keys_feed_the_brute_force_guard,
         test_restricted_key_lists_only_its_models])
