"""The web console's server side without a browser (docs/console.md): the
embedded files and their headers, the sign-in cookie's flags, CSRF on
state-changing requests, session expiry and sign-out, the brute-force guard
at the sign-in, the read-only session, Accept-Language, and the status,
series and check routes."""
import http.client
import json
import os
import socket
import tempfile
import time

from lib import KEY, Gateway, check, free_port, run

TOKEN = "console-admin-token-0123456789abcdef"
READ = "console-read-token-0123456789abcdef"
MOCK = "channel mock {\n plugin mock\n models mock-1\n}\n"


class Console:
    def __init__(self, env=None, extra=""):
        self.aport = free_port()
        data = tempfile.mkdtemp(prefix="lm-con-")
        e = {"LONGMEN_ADMIN_TOKEN": TOKEN, "LONGMEN_ADMIN_READONLY_TOKEN": READ}
        e.update(env or {})
        self.gw = Gateway(channels=MOCK, env=e,
                          extra="data_dir %s\nadmin_listen 127.0.0.1:%d\n%s" % (data, self.aport, extra))
        deadline = time.time() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.aport), timeout=0.2).close()
                break
            except OSError:
                check(time.time() < deadline, "admin listener did not start")
                time.sleep(0.05)

    def call(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.aport, timeout=10)
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            js = json.loads(raw)
        except ValueError:
            js = None
        return r.status, js, raw, r.headers

    def sign_in(self, token=TOKEN):
        st, js, _, h = self.call("POST", "/admin/session", {"token": token})
        check(st == 200, "sign-in: %d %r" % (st, js))
        cookie = h["Set-Cookie"].split(";")[0]
        return {"Cookie": cookie}, js["csrf_token"], h["Set-Cookie"]


def test_console_files_and_headers():
    c = Console()
    try:
        st, _, raw, h = c.call("GET", "/")
        check(st == 200 and raw.startswith(b"<!doctype html>"), "index: %d %r" % (st, raw[:40]))
        check(h["Content-Type"].startswith("text/html"), h["Content-Type"])
        csp = h["Content-Security-Policy"]
        check("script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, csp)
        check(h["X-Content-Type-Options"] == "nosniff", "nosniff")
        check(b'<html lang="en"' in raw, "english by default")
        st, _, raw, h = c.call("GET", "/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
        check(b'<html lang="zh-CN"' in raw, "zh-CN when asked: %r" % raw[:80])
        st, _, raw, h = c.call("GET", "/", headers={"Accept-Language": "en-US,en;q=0.9,zh;q=0.8"})
        check(b'<html lang="en"' in raw, "english preferred")
        st, _, raw, h = c.call("GET", "/", headers={"Accept-Language": "fr;q=0.5, zh-TW;q=0.7"})
        check(b'<html lang="zh-CN"' in raw, "highest q wins")
        st, _, _, h = c.call("GET", "/console/app.js")
        check(st == 200 and h["Content-Type"].startswith("text/javascript"), "app.js %d" % st)
        st, js, _, _ = c.call("GET", "/console/nope.js")
        check(st == 401, "unknown file without a token is 401 like any path: %d" % st)
        st, js, _, _ = c.call("GET", "/console/../admin/keys")
        check(st in (401, 404), "no traversal: %d" % st)
    finally:
        c.gw.stop()


def test_cookie_flags_and_csrf():
    c = Console()
    try:
        h, csrf, setc = c.sign_in()
        flags = [f.strip() for f in setc.split(";")]
        check("HttpOnly" in flags and "SameSite=Strict" in flags and "Path=/" in flags, setc)
        check(any(f.startswith("Max-Age=") and int(f[8:]) > 0 for f in flags), setc)
        check(TOKEN not in setc, "the token is not the cookie")
        st, js, _, _ = c.call("GET", "/admin/session", headers=h)
        check(st == 200 and js["role"] == "admin" and js["csrf_token"] == csrf, "whoami %r" % js)
        st, js, _, _ = c.call("GET", "/admin/keys", headers=h)
        check(st == 200, "GET with the cookie: %d" % st)
        st, js, _, _ = c.call("POST", "/admin/keys", {"name": "x", "quota": "1"}, headers=h)
        check(st == 403 and js["error"]["code"] == "csrf_failed", "POST without CSRF: %d %r" % (st, js))
        bad = dict(h, **{"X-CSRF-Token": csrf[:-1] + ("A" if csrf[-1] != "A" else "B")})
        st, js, _, _ = c.call("POST", "/admin/keys", {"name": "x", "quota": "1"}, headers=bad)
        check(st == 403, "wrong CSRF: %d" % st)
        good = dict(h, **{"X-CSRF-Token": csrf})
        st, js, _, _ = c.call("POST", "/admin/keys", {"name": "x", "quota": "1"}, headers=good)
        check(st == 201 and js["secret"].startswith("sk-"), "POST with CSRF: %d %r" % (st, js))
        st, _, _, _ = c.call("GET", "/admin/keys", headers={"Cookie": "lm_console=" + "A" * 43})
        check(st == 401, "forged cookie: %d" % st)
        st, js, _, hh = c.call("DELETE", "/admin/session", headers=h)
        check(st == 403, "sign-out needs CSRF too: %d" % st)
        st, js, _, hh = c.call("DELETE", "/admin/session", headers=good)
        check(st == 200 and "Max-Age=0" in hh["Set-Cookie"], "sign-out: %d %r" % (st, hh["Set-Cookie"]))
        st, _, _, _ = c.call("GET", "/admin/keys", headers=h)
        check(st == 401, "after sign-out the cookie is dead: %d" % st)
    finally:
        c.gw.stop()


def test_session_expiry():
    c = Console(env={"LONGMEN_ADMIN_SESSION_TTL": "1"})
    try:
        h, csrf, setc = c.sign_in()
        check("Max-Age=1" in setc, setc)
        st, _, _, _ = c.call("GET", "/admin/health", headers=h)
        check(st == 200, "fresh session: %d" % st)
        time.sleep(1.3)
        st, _, _, _ = c.call("GET", "/admin/health", headers=h)
        check(st == 401, "expired session: %d" % st)
    finally:
        c.gw.stop()


def test_read_only_session():
    c = Console()
    try:
        h, csrf, _ = c.sign_in(READ)
        st, js, _, _ = c.call("GET", "/admin/session", headers=h)
        check(js["role"] == "read", "role %r" % js)
        good = dict(h, **{"X-CSRF-Token": csrf})
        for m, p, b in (("POST", "/admin/keys", {"name": "x", "quota": "1"}), ("POST", "/admin/reload", None),
                        ("POST", "/admin/check", None),
                        ("POST", "/admin/channels", {"name": "c", "plugin": "mock", "models": ["m"]})):
            st, js, _, _ = c.call(m, p, b, headers=good)
            check(st == 403 and js["error"]["code"] == "permission_denied", "%s %s: %d" % (m, p, st))
        st, _, _, _ = c.call("DELETE", "/admin/session", headers=good)
        check(st == 200, "read-only may sign out: %d" % st)
    finally:
        c.gw.stop()


def test_sign_in_guard():
    c = Console(extra="auth_fail_limit 5\n")
    try:
        for i in range(5):
            st, js, _, _ = c.call("POST", "/admin/session", {"token": "wrong-token-%d-0123456789" % i})
            check(st == 401, "wrong token %d: %d" % (i, st))
        st, js, _, h = c.call("POST", "/admin/session", {"token": TOKEN})
        check(st == 429 and int(h["Retry-After"]) > 0, "sixth try blocked even with the right token: %d" % st)
        st, js, _, _ = c.call("GET", "/admin/health", headers={"Authorization": "Bearer " + TOKEN})
        check(st == 429, "the same guard covers the bearer token: %d" % st)
        st, js, _, _ = c.call("POST", "/admin/session", {"token": 5})
        check(st in (400, 429), "bad body %d" % st)
    finally:
        c.gw.stop()


def test_status_series_check():
    c = Console()
    try:
        auth = {"Authorization": "Bearer " + TOKEN}
        for _ in range(3):
            st, _, _, _ = c.gw.chat({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]})
            check(st == 200, "chat %d" % st)
        st, js, _, _ = c.call("GET", "/admin/status", headers=auth)
        check(st == 200 and js["generation"] >= 1, "status %d %r" % (st, js))
        check(any(p["name"] == "mock" and p["abi"].startswith("1.") for p in js["plugins"]), js["plugins"])
        ch = [x for x in js["channels"] if x["name"] == "mock"][0]
        check(ch["models"][0]["model"] == "mock-1" and ch["models"][0]["state"] == "closed", ch)
        deadline = time.time() + 5
        while True:
            st, js, _, _ = c.call("GET", "/admin/usage/series?window=hour&group_by=model", headers=auth)
            check(st == 200, "series %d %r" % (st, js))
            if sum(js["total"]["requests"]) >= 3:
                break
            check(time.time() < deadline, "ledger rows not in the series: %r" % js["total"])
            time.sleep(0.1)
        check(js["buckets"] == 60 and len(js["total"]["requests"]) == 60, "60 buckets")
        check(js["groups"][0]["group"] == "mock-1" and sum(js["groups"][0]["requests"]) == 3, js["groups"])
        st, js, _, _ = c.call("GET", "/admin/usage/series?window=day&group_by=channel", headers=auth)
        check(st == 200 and js["buckets"] == 96 and js["groups"][0]["group"] == "mock", js)
        st, js, _, _ = c.call("GET", "/admin/usage/series?window=week", headers=auth)
        check(st == 400 and js["error"]["param"] == "window", "bad window %d" % st)
        st, js, _, _ = c.call("POST", "/admin/check", headers=auth)
        check(st == 200 and js["ok"] is True and js["errors"] == [], "check ok %r" % js)
        with open(c.gw.conf, "a") as f:
            f.write("\nchannel broken {\n plugin mock\n bogus_directive 1\n}\n")
        st, js, _, _ = c.call("POST", "/admin/check", headers=auth)
        check(st == 200 and js["ok"] is False, "check fails %r" % js)
        e = js["errors"][0]
        check(e["file"] == c.gw.conf and isinstance(e["line"], int) and e["line"] > 0, "file:line %r" % e)
    finally:
        c.gw.stop()


if __name__ == "__main__":
    run([test_console_files_and_headers, test_cookie_flags_and_csrf, test_session_expiry, test_read_only_session,
         test_sign_in_guard, test_status_series_check])
