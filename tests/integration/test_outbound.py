"""Outbound safety (SS-2, SS-7; docs/admin.md "Outbound safety"): a stored
secret is bound to its host when an admin update moves the channel; env:
names usable through the admin API are limited to admin_env_allow; every
upstream connection is checked on its resolved address (metadata and
link-local always refused, loopback/private only for file channels unless
admin_private_upstreams is on), refused at once, before any connection."""
import time

from lib import Gateway, check, run
from test_admin import Admin
from test_admin_channels import ask, chan, upstream, write

LITERAL = "sk-literal-stored-0123456789"
ENV = {"LM_TEST_UP_KEY": "up-key-from-env-0123456789", "LM_SECRET_OTHER": "other-0123456789"}


def body(name, mock, models, api_key, url=None):
    return {"name": name, "plugin": "openai", "models": models,
            "settings": {"base_url": url or mock.url + "/v1", "api_key": api_key}}


def refused(st, js, raw):
    err = (js or {}).get("error") or {}
    check(st == 502 and err.get("type") == "upstream_error"
          and err.get("code") == "upstream_address_refused", "refused: %d %s" % (st, raw[:300]))


def test_secret_bound_to_host():
    """Moving a stored channel to another host without giving its literal
    secret again is a 400 naming the secret; the channel stays as it was."""
    up_a, up_b = upstream("A"), upstream("B")
    a = Admin(env=ENV)
    try:
        write(a, "POST", "/admin/channels", body("mv", up_a, ["chat-mv"], LITERAL), 201)
        check(ask(a, "chat-mv")[1] == "A:chat-mv", "A serves")
        moved = {"settings": {"base_url": up_b.url + "/v1"}}
        for method, b in (("PATCH", moved),
                          ("PATCH", {"settings": {"base_url": up_b.url + "/v1", "api_key": "***"}}),
                          ("PUT", body("mv", up_b, ["chat-mv"], "***"))):
            st, js, raw = a.call(method, "/admin/channels/mv", b)
            msg = (js or {}).get("error", {}).get("message", "")
            check(st == 400 and "settings.api_key" in msg and LITERAL not in raw.decode(),
                  "%s refused: %d %s" % (method, st, raw[:300]))
        st, g, _ = chan(a, "mv")
        check(g["settings"]["base_url"] == up_a.url + "/v1", "unchanged: %r" % g["settings"])
        check(ask(a, "chat-mv")[1] == "A:chat-mv", "still A")
        check(not up_b.requests, "B never saw a request")
        # the same host: the stored secret stays (no need to give it)
        write(a, "PATCH", "/admin/channels/mv", {"weight": 2}, 200)
        # given again with the move: accepted, and B gets the new key only
        write(a, "PATCH", "/admin/channels/mv",
              {"settings": {"base_url": up_b.url + "/v1", "api_key": "sk-new-for-b-0123456789"}},
              200)
        check(ask(a, "chat-mv")[1] == "B:chat-mv", "B serves")
        check(up_b.requests[-1]["headers"].get("Authorization") == "Bearer sk-new-for-b-0123456789",
              "B got the new key")
        check(all(LITERAL not in repr(r["headers"]) for r in up_b.requests), "old key never sent")
    finally:
        a.stop()
        up_a.close()
        up_b.close()


def test_env_allow_list():
    """env: through the admin API only for names admin_env_allow lists; the
    file's channels keep using any variable."""
    up = upstream("E")
    files = ("channel filechan {\n plugin openai\n models chat-file\n base_url %s/v1\n"
             " api_key env:LM_SECRET_OTHER\n}\n" % up.url)
    a = Admin(env=ENV, channels=files, outbound="admin_private_upstreams on\n")
    try:
        check(ask(a, "chat-file")[1] == "E:chat-file", "file channel reads any variable")
        for var in ("LM_TEST_UP_KEY", "LM_SECRET_OTHER", "HOME"):
            st, js, raw = a.call("POST", "/admin/channels",
                                 body("e1", up, ["chat-e"], "env:" + var))
            err = (js or {}).get("error", {})
            check(st == 400 and err.get("param") == "settings.api_key"
                  and "variable %s may not" % var in err.get("message", "")
                  and ENV.get(var, "/") not in raw.decode(), "refused %s: %d %s" % (var, st, raw))
        check(chan(a, "e1")[0] == 404, "not stored")
    finally:
        a.stop()
    b = Admin(env=ENV, outbound="admin_private_upstreams on\nadmin_env_allow LM_TEST_UP_*\n")
    try:
        write(b, "POST", "/admin/channels", body("e1", up, ["chat-e"], "env:LM_TEST_UP_KEY"), 201)
        check(ask(b, "chat-e")[1] == "E:chat-e", "allowed name serves")
        st, js, raw = b.call("PATCH", "/admin/channels/e1",
                             {"settings": {"api_key": "env:LM_SECRET_OTHER"}})
        check(st == 400 and js["error"]["param"] == "settings.api_key", "patch: %d %s" % (st, raw))
    finally:
        b.stop()
        up.close()


def test_admin_channel_private_address():
    """An admin-API channel on 127.0.0.1: 502 upstream_address_refused, named
    in the log, while admin_private_upstreams is off; served when on."""
    up = upstream("P")
    a = Admin(outbound="")
    try:
        write(a, "POST", "/admin/channels", body("loop", up, ["chat-p"], "sk-p-0123456789"), 201)
        t0 = time.time()
        body_ = {"model": "chat-p", "messages": [{"role": "user", "content": "hi"}]}
        st, js, raw, _ = a.gw.chat(body_)
        refused(st, js, raw)
        check(time.time() - t0 < 3, "at once")
        check(not up.requests, "no request reached the mock")
        log = a.gw.logtext()
        check("channel loop: upstream address 127.0.0.1 (loopback) refused" in log
              and "admin_private_upstreams" in log, "logged: %s" % log[-800:])
        check("sk-p-0123456789" not in log, "no secret in the log")
        # the file's channel (plugin mock) is not concerned
        st, _, _, _ = a.gw.chat({"model": "mock-1", "messages": [{"role": "user", "content": "x"}]})
        check(st == 200, "file channel %d" % st)
    finally:
        a.stop()
    b = Admin(data=a.data, outbound="admin_private_upstreams on\n")
    try:
        check(ask(b, "chat-p")[1] == "P:chat-p", "allowed when on")
    finally:
        b.stop()
        up.close()


def test_file_channels_addresses():
    """File channels may use loopback in any notation; metadata and
    link-local are refused at connect, at once (no connect timeout)."""
    up = upstream("F")
    chans = ""
    for name, host in (("dec", "2130706433"), ("hex", "0x7f.1"), ("short", "127.1"),
                       ("oct", "0177.0.0.1"), ("meta", "169.254.169.254"),
                       ("link", "169.254.10.1"), ("meta6", "[::ffff:169.254.169.254]")):
        chans += ("channel %s {\n plugin openai\n models chat-%s\n base_url http://%s:%d/v1\n"
                  " api_key sk-file-0123456789\n connect_timeout 10s\n}\n"
                  % (name, name, host, up.port))
    gw = Gateway(channels=chans)
    try:
        for name in ("dec", "hex", "short", "oct"):
            st, js, raw, _ = gw.chat({"model": "chat-" + name,
                                      "messages": [{"role": "user", "content": "hi"}]})
            check(st == 200, "%s: %d %s" % (name, st, raw[:300]))
        n = len(up.requests)
        for name, addr in (("meta", "169.254.169.254 (cloud metadata)"),
                           ("link", "169.254.10.1 (link-local)"),
                           ("meta6", "169.254.169.254 (cloud metadata)")):
            t0 = time.time()
            st, js, raw, _ = gw.chat({"model": "chat-" + name,
                                      "messages": [{"role": "user", "content": "hi"}]})
            refused(st, js, raw)
            check(time.time() - t0 < 2, "%s refused at once: %.2fs" % (name, time.time() - t0))
            log = gw.logtext()
            check("channel %s: upstream address" % name in log and addr.split(" ")[1] in log,
                  "%s logged: %s" % (name, log[-600:]))
        check(len(up.requests) == n, "nothing reached an upstream")
    finally:
        gw.stop()
        up.close()


def test_proxy_env_ignored():
    """http_proxy, https_proxy and all_proxy in the gateway's environment
    are not used: through a proxy the address check would judge the
    proxy's address, not the upstream's (a proxy could reach a refused
    host for us). Requests go straight to the channel's host."""
    up, proxy = upstream("D"), upstream("P")
    env = {}
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        env[name] = "http://127.0.0.1:%d" % proxy.port
    env["no_proxy"] = env["NO_PROXY"] = ""
    gw = Gateway(channels="channel d {\n plugin openai\n models chat-d\n base_url %s/v1\n"
                          " api_key sk-file-0123456789\n}\n" % up.url, env=env)
    try:
        st, js, raw, _ = gw.chat({"model": "chat-d",
                                  "messages": [{"role": "user", "content": "hi"}]})
        check(st == 200 and js["choices"][0]["message"]["content"] == "D:chat-d",
              "served directly: %d %s" % (st, raw[:300]))
        check(len(up.requests) == 1, "the upstream saw it: %d" % len(up.requests))
        check(not proxy.requests, "the proxy saw nothing: %r" % proxy.requests[:1])
    finally:
        gw.stop()
        up.close()
        proxy.close()


if __name__ == "__main__":
    run([test_secret_bound_to_host, test_env_allow_list, test_admin_channel_private_address,
         test_file_channels_addresses, test_proxy_env_ignored])
