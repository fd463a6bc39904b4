"""The admin API (docs/admin.md): token bootstrap and rotation (AU-5), route
separation (AU-6), key CRUD, keys never at rest in plaintext (AU-1), hostile
input (AU-3), money validation (QB-3), the shell client."""
import glob
import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse

from lib import KEY, ROOT, Gateway, check, free_port, run

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
SQL_LEAK = re.compile(r"sqlite|syntax error|constraint|near \"|no such (table|column)", re.I)
MOCK = "channel mock {\n plugin mock\n models mock-1\n}\n"
READ_TOKEN = "read-only-token-0123456789abcdef"
# The tests' admin-API channels reach mocks on 127.0.0.1 and name
# LM_TEST_* variables: allow both (conf/outbound.h; off by default).
OUTBOUND = "admin_private_upstreams on\nadmin_env_allow LM_TEST_*\n"


class Admin:
    """A gateway with a store and an admin listener; the generated admin
    token (if any) is read once from its log."""

    def __init__(self, data=None, env=None, channels=MOCK, outbound=OUTBOUND):
        self.data = data or tempfile.mkdtemp(prefix="lm-adm-")
        self.aport = free_port()
        extra = "data_dir %s\nadmin_listen 127.0.0.1:%d\n%s" % (self.data, self.aport, outbound)
        self.gw = Gateway(channels=channels, extra=extra, env=env)
        deadline = time.time() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.aport), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        found = TOKEN_RE.findall(self.gw.logtext())
        self.printed = found
        self.token = found[0] if found else (env or {}).get("LONGMEN_ADMIN_TOKEN")

    def call(self, method, path, body=None, token=None, raw=None, headers=None, port=None):
        """(status, json or None, raw bytes). token None = the admin token,
        "" = no Authorization header."""
        token = self.token if token is None else token
        h = {}
        if token:
            h["Authorization"] = "Bearer " + token
        data = raw
        if body is not None:
            data = json.dumps(body)
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        c = http.client.HTTPConnection("127.0.0.1", port or self.aport, timeout=15)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        c.close()
        try:
            js = json.loads(out)
        except ValueError:
            js = None
        return r.status, js, out

    def create(self, **fields):
        fields.setdefault("quota", "unlimited")
        st, js, raw = self.call("POST", "/admin/keys", fields)
        check(st == 201, "create %r -> %d %s" % (fields, st, raw[:300]))
        return js

    def stop(self):
        return self.gw.stop()


def is_error_shape(js):
    e = (js or {}).get("error")
    return isinstance(e, dict) and {"message", "type", "param", "code"} <= set(e)


# ---------------------------------------------------------------------------


def test_token_shown_once():
    a = Admin()
    try:
        check(len(a.printed) == 1, "one token line: %r" % a.printed)
        check(len(a.token) - len("lmadm-") >= 22, "at least 128 bits: " + a.token)
        st, js, _ = a.call("GET", "/admin/health")
        check(st == 200 and js["status"] == "ok", "health %d" % st)
    finally:
        a.stop()
    log1 = a.gw.logtext()
    check(log1.count(a.token) == 1, "token printed exactly once")
    b = Admin(data=a.data)
    try:
        check(b.printed == [], "second start prints no token")
        check(a.token not in b.gw.logtext(), "old token not shown again")
        st, _, _ = b.call("GET", "/admin/health", token=a.token)
        check(st == 200, "the stored token still works: %d" % st)
    finally:
        b.stop()
    db = open(os.path.join(a.data, "longmen.db"), "rb").read()
    check(a.token.encode() not in db, "admin token not in the DB")


def walk_body(method, path):
    if method == "POST" and path == "/admin/keys":
        return {"name": "walk", "quota": "1"}
    if method == "POST" and path == "/admin/channels":
        return {"name": "walk-new", "plugin": "mock", "models": ["walk-model"]}
    if method == "PUT" and path == "/admin/channels/{name}":
        return {"plugin": "mock", "models": ["walk-model-2"]}
    if method == "PATCH" and path == "/admin/channels/{name}":
        return {"weight": 2}
    if method == "PATCH":
        return {"name": "walked"}
    return None


def test_route_separation():
    """AU-6: every route in the table, with no key, a config key, a virtual
    key, a wrong token, the read-only token and the admin token."""
    # the wrong tokens below would trip the brute-force guard (AU-4)
    a = Admin(env={"LONGMEN_ADMIN_READONLY_TOKEN": READ_TOKEN}, outbound=OUTBOUND + "auth_fail_limit 0\n")
    try:
        vkey = a.create(name="virtual")
        st, js, _ = a.call("GET", "/admin/routes")
        check(st == 200 and len(js["data"]) >= 10, "route table %d" % st)
        routes = sorted(js["data"], key=lambda r: r["method"] == "DELETE")  # delete last
        for n, r in enumerate(routes):
            method = r["method"]
            victim = a.create(name="victim")["id"]
            path = r["path"].replace("{id}", str(victim))
            if "{name}" in path:  # a stored channel to read, change or delete
                chan = "victim-%d" % n
                st, _, raw = a.call("POST", "/admin/channels", {"name": chan, "plugin": "mock",
                                                                "models": ["victim-model"]})
                check(st == 201, "victim channel %d %s" % (st, raw[:200]))
                path = path.replace("{name}", chan)
            body = walk_body(method, r["path"])
            for who, tok, want in (("no key", "", 401), ("config key", KEY, 403),
                                   ("virtual key", vkey["secret"], 403),
                                   ("wrong token", "lmadm-" + "x" * 32, 401),
                                   ("wrong token 2", a.token[:-1] + ("B" if a.token[-1] == "A" else "A"), 401)):
                st, js, raw = a.call(method, path, body, token=tok)
                check(st == want and is_error_shape(js), "%s %s as %s -> %d %s" % (
                    method, path, who, st, raw[:200]))
            st, js, raw = a.call(method, path, body, token=READ_TOKEN)
            want_ro = 403 if r["write"] else 200
            check(st == want_ro, "%s %s read-only -> %d %s" % (method, path, st, raw[:200]))
            st, js, raw = a.call(method, path, body)
            check(200 <= st < 300, "%s %s admin -> %d %s" % (method, path, st, raw[:200]))
            for tok in ("", KEY, vkey["secret"]):
                st, js, raw = a.call(method, path, body, token=tok, port=a.gw.port)
                check(st == 404, "data plane %s %s -> %d" % (method, path, st))
        # an unknown admin path: 401 without a token, 404 with it
        check(a.call("GET", "/admin/nope", token="")[0] == 401, "unknown path, no token")
        check(a.call("GET", "/admin/nope")[0] == 404, "unknown path, token")
        st, js, _ = a.call("PUT", "/admin/keys")
        check(st == 405 and is_error_shape(js), "wrong method %d" % st)
    finally:
        a.stop()


def test_key_crud():
    a = Admin()
    try:
        k = a.create(name="crud", owner="team-a", group="g1", quota="12.5", models=["mock-1"],
                     cidrs=["127.0.0.0/8", "::1/128"], rpm=60, tpm=1000, max_concurrent=2,
                     expires_at=4102444800, enabled=True)
        check(k["secret"].startswith("sk-") and k["prefix"] == k["secret"][:7], "secret/prefix")
        check(k["quota"] == "12.500000" and k["quota_micro"] == 12500000, "quota %r" % k)
        check(k["used"] == "0.000000" and k["unlimited"] is False, "used")
        check(k["models"] == ["mock-1"] and k["cidrs"] == ["127.0.0.0/8", "::1/128"], "lists")
        check((k["rpm"], k["tpm"], k["max_concurrent"]) == (60, 1000, 2), "limits")
        kid = k["id"]
        st, g, _ = a.call("GET", "/admin/keys/%d" % kid)
        check(st == 200 and "secret" not in g and "hash" not in g, "get %d %r" % (st, g))
        check(g["name"] == "crud" and g["owner"] == "team-a" and g["group"] == "g1", "get fields")
        check(k["secret"] not in json.dumps(g), "secret not in the record")
        # update: only the named fields change; rpm alone keeps tpm/max_concurrent
        st, u, raw = a.call("PATCH", "/admin/keys/%d" % kid, {"rpm": 5, "enabled": False,
                                                             "quota": "unlimited"})
        check(st == 200 and u["rpm"] == 5 and u["tpm"] == 1000 and u["max_concurrent"] == 2,
              "patch limits %d %s" % (st, raw))
        check(u["enabled"] is False and u["unlimited"] is True and u["quota"] is None, "patch")
        check(u["name"] == "crud" and u["models"] == ["mock-1"], "untouched fields kept")
        st, u, _ = a.call("PATCH", "/admin/keys/%d" % kid, {"models": [], "quota_micro": 7})
        check(st == 200 and u["models"] == [] and u["quota_micro"] == 7, "patch 2")
        for bad in ({}, {"role": "admin"}, {"allowed_routes": ["*"]}, {"budget": "1"},
                    {"used": 0}, {"id": 2}, {"secret": "x"}, {"prefix": "sk-"}, {"hash": "00"}):
            st, js, raw = a.call("PATCH", "/admin/keys/%d" % kid, bad)
            check(st == 400 and is_error_shape(js), "patch %r -> %d %s" % (bad, st, raw))
            if bad:
                st, js, _ = a.call("POST", "/admin/keys", dict(bad, quota="1"))
                check(st == 400, "create with %r -> %d" % (bad, st))
        st, js, _ = a.call("POST", "/admin/keys", {"name": "no quota"})
        check(st == 400 and js["error"]["param"] == "quota", "quota required")
        st, js, _ = a.call("POST", "/admin/keys", raw="name=x&quota=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        check(st == 415, "form body refused: %d" % st)
        # paging
        ids = [kid] + [a.create(name="page%d" % i)["id"] for i in range(4)]
        st, p1, _ = a.call("GET", "/admin/keys?limit=2")
        check(st == 200 and [x["id"] for x in p1["data"]] == ids[:2] and p1["has_more"], "p1")
        st, p2, _ = a.call("GET", "/admin/keys?limit=2&after=%d" % p1["last_id"])
        check([x["id"] for x in p2["data"]] == ids[2:4] and p2["has_more"], "p2")
        st, p3, _ = a.call("GET", "/admin/keys?limit=2&after=%d" % p2["last_id"])
        check([x["id"] for x in p3["data"]] == ids[4:] and not p3["has_more"], "p3")
        for rec in p1["data"] + p2["data"] + p3["data"]:
            check("secret" not in rec and "hash" not in rec, "list record %r" % rec)
        # delete
        st, js, _ = a.call("DELETE", "/admin/keys/%d" % kid)
        check(st == 200 and js["deleted"] is True, "delete %d" % st)
        check(a.call("GET", "/admin/keys/%d" % kid)[0] == 404, "gone")
        check(a.call("DELETE", "/admin/keys/%d" % kid)[0] == 404, "delete twice")
        check(a.call("PATCH", "/admin/keys/%d" % kid, {"name": "x"})[0] == 404, "patch gone")
        st, js, _ = a.call("GET", "/admin/keys")
        check(kid not in [x["id"] for x in js["data"]], "deleted key not listed")
        for bad_id in ("0", "abc", "-1", "1.5", "99999999999999999999", "1%27%20OR%201=1"):
            st, js, _ = a.call("GET", "/admin/keys/" + bad_id)
            check(st == 400 and is_error_shape(js), "id %s -> %d" % (bad_id, st))
        check(a.call("GET", "/admin/keys/999999")[0] == 404, "unknown id")
        # usage queries answer (the ledger is empty here)
        for by in ("key", "model", "model_served", "channel", "day", "none"):
            st, js, raw = a.call("GET", "/admin/usage?group_by=%s&from=2024-01-01&to=%d"
                                 % (by, int(time.time() * 1000) + 1))
            check(st == 200 and js["group_by"] == by and "total" in js, "usage %s %s" % (by, raw))
        st, js, _ = a.call("GET", "/admin/usage/rows?limit=10")
        check(st == 200 and js["object"] == "list", "rows")
    finally:
        a.stop()


def test_secrets_not_at_rest():
    """AU-1: 100 keys created through the API; no secret in the DB, its WAL
    and SHM, or the log (while running and after stop)."""
    a = Admin()
    secrets = []
    try:
        for i in range(100):
            secrets.append(a.create(name="k%d" % i, quota="1")["secret"])
        check(len(set(secrets)) == 100, "distinct secrets")
        st, js, _ = a.call("GET", "/admin/keys?limit=500")
        check(st == 200 and len(js["data"]) == 100, "100 listed")
        listing = json.dumps(js)
        check(not any(s in listing for s in secrets), "no secret in the listing")
        running = {p: open(p, "rb").read() for p in glob.glob(os.path.join(a.data, "*"))}
        check(any(p.endswith("-wal") for p in running), "WAL present while running")
    finally:
        a.stop()
    files = dict(running)
    files.update({p: open(p, "rb").read() for p in glob.glob(os.path.join(a.data, "*"))})
    files[a.gw.log.name] = a.gw.logtext().encode()
    hits = [(os.path.basename(p), s[:7]) for p, data in files.items() for s in secrets
            if s.encode() in data or s[3:].encode() in data]
    check(hits == [], "plaintext secrets at rest: %r" % hits[:5])


HOSTILE = [
    "'; DROP TABLE keys; --", "\" OR 1=1 --", "Robert'); DROP TABLE usage;--", "%s%n%x",
    "龙门 🐉 ñ é", "<img src=x onerror=alert(1)>", "\\x00\\", "a\nb\tc\r", "x" * 10240,
    "龙" * 3400, "",
]


def no_leak(st, raw):
    check(st != 500 and not SQL_LEAK.search(raw.decode("utf-8", "replace")),
          "status %d / SQL text: %s" % (st, raw[:300]))


def long_get(a, path, **kw):
    """GET of a path or token that may pass the head limits: the gateway
    answers 414 (request line over 8 KiB) or 431 (a header over 8 KiB) in
    the error shape, never a dropped connection."""
    return a.call("GET", path, **kw)


def test_hostile_input():
    """AU-3: SQL metacharacters, NUL, 10 KB values and Unicode in every field
    and parameter: 400 or stored exactly, never a 500 or SQL text."""
    a = Admin()
    try:
        k = a.create(name="base")
        kid = k["id"]
        for v in HOSTILE:
            for field in ("name", "owner", "group"):
                st, js, raw = a.call("POST", "/admin/keys", {field: v, "quota": "1"})
                no_leak(st, raw)
                check(st == 201 and js[field] == v, "%s=%r -> %d" % (field, v[:40], st))
                st, g, raw = a.call("GET", "/admin/keys/%d" % js["id"])
                check(st == 200 and g[field] == v, "%s read back exactly" % field)
                st, u, raw = a.call("PATCH", "/admin/keys/%d" % kid, {field: v})
                no_leak(st, raw)
                check(st == 200 and u[field] == v, "patch %s=%r -> %d" % (field, v[:40], st))
            if v and len(v.encode()) <= 256:
                st, js, raw = a.call("PATCH", "/admin/keys/%d" % kid, {"models": [v]})
                no_leak(st, raw)
                check(st == 200 and js["models"] == [v], "model %r -> %d" % (v, st))
            st, js, raw = a.call("PATCH", "/admin/keys/%d" % kid, {"cidrs": [v]})
            no_leak(st, raw)
            check(st == 400, "cidr %r -> %d" % (v[:40], st))
        refused = [
            {"name": "a\u0000b"}, {"owner": "\u0000"}, {"group": "x\u0000"},
            {"name": "x" * 16385}, {"models": ["m\u0000"]}, {"models": ["m" * 257]},
            {"models": [""]}, {"models": [1]}, {"models": "mock-1"}, {"models": ["m"] * 1025},
            {"cidrs": ["10.0.0.0/33"]}, {"cidrs": ["1.2.3.4\u0000"]}, {"name": 5},
            {"name": None}, {"enabled": 1}, {"enabled": "true"}, {"rpm": "5"}, {"rpm": -1},
            {"rpm": 1.5}, {"rpm": 10 ** 30}, {"tpm": -1}, {"max_concurrent": 10 ** 7},
            {"expires_at": -5}, {"expires_at": "2030-01-01"}, {"expires_at": 10 ** 13},
            {"'; DROP TABLE keys; --": 1}, {"龙": 1}, {"name\u0000": "x"},
        ]
        for body in refused:
            st, js, raw = a.call("PATCH", "/admin/keys/%d" % kid, body)
            no_leak(st, raw)
            check(st == 400 and is_error_shape(js), "patch %r -> %d %s" % (
                str(body)[:60], st, raw[:200]))
            st, js, raw = a.call("POST", "/admin/keys", dict(body, quota="1"))
            no_leak(st, raw)
            check(st == 400, "create %r -> %d" % (str(body)[:60], st))
        for raw_body in ('{"name":"a","name":"b","quota":"1"}', "[1]", "nul\u0000", "{",
                         '{"name":"\\ud800","quota":"1"}', "[" * 100 + "]" * 100, "\xff\xfe"):
            st, js, raw = a.call("POST", "/admin/keys", raw=raw_body.encode("utf-8", "surrogatepass"))
            no_leak(st, raw)
            check(st == 400 and is_error_shape(js), "body %r -> %d" % (raw_body[:30], st))
        # query parameters and path ids
        params = {"/admin/keys": ["after", "limit"], "/admin/usage": ["group_by", "from", "to",
                                                                      "key_id"],
                  "/admin/usage/rows": ["after", "limit", "key_id"]}
        values = HOSTILE[:-1] + ["-1", "99999999999999999999999", "1 OR 1=1", "\u0000", "1e3"]
        for path, names in params.items():
            for name in names + ["bogus", "'; DROP TABLE keys; --"]:
                for v in values:
                    q = urllib.parse.urlencode({name: v})
                    st, js, raw = long_get(a, path + "?" + q)
                    no_leak(st, raw)
                    want = 414 if len(path) + len(q) > 8150 else 400
                    check(st == want and is_error_shape(js), "%s?%s -> %d" % (path, q[:60], st))
            st, js, raw = a.call("GET", path + "?limit=%zz")
            check(st == 400, "bad escape %d" % st)
        for seg in ("%27%3B%20DROP%20TABLE%20keys", "%00", urllib.parse.quote("龙门"),
                    "1%00", "x" * 10240):
            st, js, raw = long_get(a, "/admin/keys/" + seg)
            no_leak(st, raw)
            want = 414 if len(seg) > 8000 else 400
            check(st == want and is_error_shape(js), "id %r -> %d" % (seg[:30], st))
        for tok in ("'; DROP TABLE keys; --", "x" * 10240, "龙门".encode().decode("latin-1")):
            st, js, raw = long_get(a, "/admin/health", token=tok)
            no_leak(st, raw)
            want = 431 if len(tok) > 8000 else 401
            check(st == want and is_error_shape(js), "token %r -> %d" % (tok[:20], st))
        # the table survived and the base key is intact
        st, js, _ = a.call("GET", "/admin/keys/%d" % kid)
        check(st == 200 and js["prefix"] == k["prefix"], "base key intact")
        st, js, _ = a.call("GET", "/admin/keys?limit=500")
        check(st == 200 and len(js["data"]) == 1 + 3 * len(HOSTILE), "all keys listed")
    finally:
        a.stop()


def test_money_validation():
    """QB-3: negative and absurd amounts are 400 and change nothing."""
    a = Admin()
    try:
        k = a.create(name="m", quota="3")
        kid = k["id"]
        bad = [{"quota": q} for q in ("-1", "-0.5", "-0", "1e9", "1000000000.000001",
                                      "99999999999999999999", "0.0000001", "abc", "", " 1",
                                      "1 ", "+1", "1,5", "NaN", "Infinity", "0x10", "1.", ".5",
                                      "1\u00005", 12, -1, 1.5, True, [], {})]
        bad += [{"quota_micro": q} for q in (-1, 10 ** 15 + 1, 10 ** 18, 2 ** 63, 1.5, "5",
                                             None, True)]
        bad += [{"quota": "1", "quota_micro": 1}]
        for body in bad:
            st, js, raw = a.call("POST", "/admin/keys", dict(body, name="x"))
            no_leak(st, raw)
            check(st == 400 and is_error_shape(js), "create %r -> %d %s" % (body, st, raw))
            st, js, raw = a.call("PATCH", "/admin/keys/%d" % kid, body)
            check(st == 400, "patch %r -> %d" % (body, st))
        st, js, _ = a.call("GET", "/admin/keys/%d" % kid)
        check(js["quota_micro"] == 3000000 and js["used_micro"] == 0, "unchanged: %r" % js)
        for q, micro in (("0", 0), ("0.000001", 1), ("1000000000", 10 ** 15), ("12.34", 12340000)):
            js = a.create(name="ok", quota=q)
            check(js["quota_micro"] == micro, "%s -> %r" % (q, js["quota_micro"]))
        st, js, _ = a.call("POST", "/admin/keys", {"name": "micro", "quota_micro": 10 ** 15})
        check(st == 201 and js["quota"] == "1000000000.000000", "quota_micro max")
        js = a.create(name="unl", quota=None)
        check(js["unlimited"] is True and js["quota"] is None, "null = unlimited")
        st, js, raw = a.call("GET", "/admin/keys?limit=500")
        check(all(x["quota_micro"] is None or x["quota_micro"] >= 0 for x in js["data"]),
              "no negative quota stored")
    finally:
        a.stop()


def test_token_rotation():
    a = Admin()
    t1 = a.token
    a.stop()
    t2 = "rotated-admin-token-" + os.urandom(16).hex()
    b = Admin(data=a.data, env={"LONGMEN_ADMIN_TOKEN": t2})
    try:
        check(b.printed == [], "no token printed when set from the environment")
        check(b.call("GET", "/admin/health", token=t2)[0] == 200, "new token works")
        check(b.call("GET", "/admin/health", token=t1)[0] == 401, "old token refused")
        check(t2 not in b.gw.logtext(), "env token not logged")
    finally:
        b.stop()
    c = Admin(data=a.data)
    try:
        check(c.printed == [], "restart without the variable prints nothing")
        check(c.call("GET", "/admin/health", token=t2)[0] == 200, "rotated token persisted")
        check(c.call("GET", "/admin/health", token=t1)[0] == 401, "old token still refused")
    finally:
        c.stop()
    for weak in ("short", "has space in the token value", "x" * 600):
        try:
            d = Admin(data=a.data, env={"LONGMEN_ADMIN_TOKEN": weak})
            d.stop()
            check(False, "weak token %r accepted" % weak[:20])
        except RuntimeError as e:
            check("LONGMEN_ADMIN_TOKEN" in str(e) and weak not in str(e), "refusal: %s" % e)
    # read-only token: GETs only; an empty variable removes it
    e = Admin(data=a.data, env={"LONGMEN_ADMIN_READONLY_TOKEN": READ_TOKEN})
    try:
        check(e.call("GET", "/admin/keys", token=READ_TOKEN)[0] == 200, "read-only GET")
        check(e.call("POST", "/admin/keys", {"name": "x", "quota": "1"},
                     token=READ_TOKEN)[0] == 403, "read-only POST")
    finally:
        e.stop()
    f = Admin(data=a.data, env={"LONGMEN_ADMIN_READONLY_TOKEN": ""})
    try:
        check(f.call("GET", "/admin/keys", token=READ_TOKEN)[0] == 401, "read-only removed")
        check(f.call("GET", "/admin/keys", token=t2)[0] == 200, "admin token unaffected")
    finally:
        f.stop()


def test_shell_client():
    a = Admin()
    cli = os.path.join(ROOT, "bin", "longmen-admin")
    env = dict(os.environ, LONGMEN_ADMIN_URL="http://127.0.0.1:%d" % a.aport,
               LONGMEN_ADMIN_TOKEN=a.token)

    def sh(*args, ok=True):
        p = subprocess.run(["sh", cli] + list(args), capture_output=True, text=True, env=env,
                           timeout=20)
        check((p.returncode == 0) == ok, "%r -> %d %s %s" % (args, p.returncode, p.stdout,
                                                              p.stderr))
        return json.loads(p.stdout) if p.stdout.strip() else None

    try:
        name = 'shell "key" \\ with\nnewline\ttab 龙'
        k = sh("create", name, "--quota", "5.25", "--models", "mock-1,mock-tools", "--rpm", "10",
               "--owner", "ops", "--cidrs", "127.0.0.1/32")
        check(k["secret"].startswith("sk-") and k["name"] == name, "created %r" % k)
        check(k["quota_micro"] == 5250000 and k["models"] == ["mock-1", "mock-tools"], "fields")
        lst = sh("list", "--limit", "10")
        check([x["id"] for x in lst["data"]] == [k["id"]], "listed")
        u = sh("update", str(k["id"]), "--disable", "--quota", "unlimited", "--models", "")
        check(u["enabled"] is False and u["unlimited"] and u["models"] == [], "updated %r" % u)
        g = sh("get", str(k["id"]))
        check(g["enabled"] is False and "secret" not in g, "get")
        us = sh("usage", "--by", "model", "--from", "2024-01-01")
        check(us["group_by"] == "model", "usage")
        check(sh("rows", "--limit", "5")["object"] == "list", "rows")
        check(sh("health")["status"] == "ok", "health")
        sh("create", "bad", "--quota", "-1", ok=False)
        sh("delete", str(k["id"]))
        sh("get", str(k["id"]), ok=False)
        env["LONGMEN_ADMIN_TOKEN"] = "wrong-token-0123456789"
        sh("list", ok=False)
        # the token is given to curl on stdin, never in its argv
        src = open(cli).read()
        check("-K -" in src, "token via curl config on stdin")
    finally:
        a.stop()


def test_created_key_calls_data_plane():
    """A key created through the admin API authenticates on the data plane,
    its usage is visible through the admin API, and disabling or deleting
    it takes effect at once."""
    a = Admin()
    try:
        k = a.create(name="dp", quota="1", models=["mock-1"])
        body = {"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}
        st, js, raw, _ = a.gw.chat(body, key=k["secret"])
        check(st == 200 and "Hello from Longmen" in raw.decode(), "chat %d %s" % (st, raw[:200]))
        deadline = time.time() + 5
        while True:
            st, u, _ = a.call("GET", "/admin/usage?group_by=key&key_id=%d" % k["id"])
            if st == 200 and u["data"] and u["data"][0]["requests"] >= 1:
                break
            check(time.time() < deadline, "usage for the key: %r" % u)
            time.sleep(0.05)
        check(u["data"][0]["key_id"] == k["id"] and u["data"][0]["prompt_tokens"] > 0, "usage")
        st, rows, _ = a.call("GET", "/admin/usage/rows?key_id=%d" % k["id"])
        check(st == 200 and rows["data"] and rows["data"][0]["model_asked"] == "mock-1", "rows")
        st, _, _ = a.call("PATCH", "/admin/keys/%d" % k["id"], {"enabled": False})
        check(st == 200, "disable")
        check(a.gw.chat(body, key=k["secret"])[0] == 401, "disabled key refused")
        a.call("PATCH", "/admin/keys/%d" % k["id"], {"enabled": True})
        check(a.gw.chat(body, key=k["secret"])[0] == 200, "enabled again")
        check(a.call("DELETE", "/admin/keys/%d" % k["id"])[0] == 200, "delete")
        check(a.gw.chat(body, key=k["secret"])[0] == 401, "deleted key refused")
    finally:
        a.stop()


def test_non_loopback_warning():
    data = tempfile.mkdtemp(prefix="lm-adm-")
    port = free_port()
    gw = Gateway(channels=MOCK, extra="data_dir %s\nadmin_listen 0.0.0.0:%d\n" % (data, port))
    try:
        time.sleep(0.2)
        check(re.search(r"\[warn\] admin: admin_listen 0\.0\.0\.0:%d is not a loopback" % port,
                        gw.logtext()), "warning: " + gw.logtext())
    finally:
        gw.stop()


def test_body_limit():
    a = Admin()
    try:
        big = json.dumps({"name": "x" * (2 << 20), "quota": "1"})
        try:
            st, js, raw = a.call("POST", "/admin/keys", raw=big)
            check(st == 413 or st == 400, "2 MiB body -> %d" % st)
        except (ConnectionError, http.client.HTTPException):
            pass  # closed by the listener: also refused
        check(a.call("GET", "/admin/health")[0] == 200, "still serving")
    finally:
        a.stop()


def test_connection_close():
    """Connection: close frees the connection before the request's fini hook
    runs; the hook must not touch the freed gate (ASan caught a use after
    free). Raw sockets, so that the header is exactly what the client sent."""
    a = Admin()
    try:
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", a.aport), timeout=10)
            req = ("GET /admin/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Connection: close\r\n\r\n" % a.token)
            s.sendall(req.encode())
            got = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
            s.close()
            check(got.startswith(b"HTTP/1.1 200"), "request %d: %r" % (i, got[:80]))
        check(a.call("GET", "/admin/health")[0] == 200, "still serving")
    finally:
        rc = a.stop()
        check(rc == 0, "gateway exit status %r; log tail:\n%s" % (rc, a.gw.logtext()[-3000:]))


def test_connections_open_at_stop():
    """Admin connections still open at SIGTERM (keep-alive after an answer,
    half a head, nothing sent) are closed by the admin thread as it stops:
    before, they outlived its loop (LeakSanitizer under make test-asan)."""
    a = Admin()
    keep = []
    try:
        c = http.client.HTTPConnection("127.0.0.1", a.aport, timeout=10)
        c.request("GET", "/admin/health", headers={"Authorization": "Bearer " + a.token})
        r = c.getresponse()
        r.read()
        check(r.status == 200, "keep-alive request: %d" % r.status)
        keep.append(c)
        half = socket.create_connection(("127.0.0.1", a.aport), timeout=10)
        half.sendall(b"GET /admin/ke")
        keep.append(half)
        keep.append(socket.create_connection(("127.0.0.1", a.aport), timeout=10))
        # the admin thread has all three before the stop: the answer below
        # comes after it took the ones opened before it (one thread, in order)
        check(a.call("GET", "/admin/health")[0] == 200, "still serving")
    finally:
        rc = a.stop()
        for k in keep:
            k.close()
        check(rc == 0, "gateway exit status %r; log tail:\n%s" % (rc, a.gw.logtext()[-3000:]))


if __name__ == "__main__":
    run([test_token_shown_once, test_route_separation, test_key_crud, test_secrets_not_at_rest,
         test_hostile_input, test_money_validation, test_token_rotation, test_shell_client,
         test_created_key_calls_data_plane, test_non_loopback_warning, test_body_limit, test_connection_close,
         test_connections_open_at_stop])
