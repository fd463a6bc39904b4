"""Channels over the admin API (docs/admin.md, "Channels"): create, change,
disable and delete channels without a restart; every change is validated
like `longmen -t` before it is stored; file channels are read-only (409);
stored channels survive a restart; route separation (AU-6), SQL
metacharacters (AU-3) and a secret canary (AU-8)."""
import json
import os
import re
import stat
import subprocess
import uuid

from lib import KEY, ROOT, Mock, check, json_reply, run
from test_admin import READ_TOKEN, SQL_LEAK, Admin, is_error_shape

UP_KEY = "up-key-from-env-0123456789"
ENV = {"LM_TEST_UP_KEY": UP_KEY}


def upstream(tag):
    """An OpenAI-compatible upstream answering "<tag>:<model>"."""
    m = Mock()

    def chat(h, body):
        req = json.loads(body)
        json_reply(h, 200, {
            "id": "chatcmpl-%s" % tag, "object": "chat.completion", "created": 1700000000,
            "model": req["model"],
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "%s:%s" % (tag, req["model"])},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})

    m.routes["/v1/chat/completions"] = chat
    return m


def ask(a, model):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    st, js, raw, _ = a.gw.chat(body)
    text = js["choices"][0]["message"]["content"] if st == 200 and js else None
    return st, text, raw


def chan(a, name):
    return a.call("GET", "/admin/channels/" + name)


def write(a, method, path, body, want):
    st, js, raw = a.call(method, path, body)
    check(st == want, "%s %s %r -> %d %s" % (method, path, body, st, raw[:400]))
    if want < 300 and method != "DELETE":
        check(js["reload"]["applied"] is True and js["reload"]["generation"] >= 2,
              "applied at once: %r" % js["reload"])
    return js


def channel_body(name, mock, models, **extra):
    b = {"name": name, "plugin": "openai", "models": models,
         "settings": {"base_url": mock.url + "/v1", "api_key": "env:LM_TEST_UP_KEY"}}
    b.update(extra)
    return b


# ---------------------------------------------------------------------------


def test_create_and_chat():
    """A channel created over the admin API serves at once, without a restart."""
    up = upstream("A")
    a = Admin(env=ENV)
    try:
        st, _, _ = ask(a, "chat-a")
        check(st == 404, "unknown before: %d" % st)
        js = write(a, "POST", "/admin/channels",
                   channel_body("up-a", up, ["chat-a=up-model-a"], priority=2, price_input="2.5"),
                   201)
        check(js["name"] == "up-a" and js["source"] == "store" and js["active"] is True, "reply")
        check(js["settings"] == {"base_url": up.url + "/v1", "api_key": "env:LM_TEST_UP_KEY"},
              "settings shown (env reference kept): %r" % js["settings"])
        check(js["priority"] == 2 and js["weight"] == 1 and js["max_inflight"] == 1024, "nums")
        check(js["price_input"] == "2.500000" and js["price_input_micro"] == 2500000, "price")
        check(js["connect_timeout_ms"] == 5000 and js["request_timeout_ms"] == 600000, "defaults")
        st, text, raw = ask(a, "chat-a")
        check(st == 200 and text == "A:up-model-a", "chat via the new channel: %d %s" % (st, raw))
        check(up.requests[-1]["headers"].get("Authorization") == "Bearer " + UP_KEY,
              "env key sent upstream")
        st, models, _, _ = a.gw.request("GET", "/v1/models")
        check("chat-a" in [m["id"] for m in models["data"]], "listed in /v1/models")
        st, lst, _ = a.call("GET", "/admin/channels")
        check(st == 200 and lst["object"] == "list", "list %d" % st)
        by = {c["name"]: c for c in lst["data"]}
        check(by["mock"]["source"] == "file" and by["mock"]["active"] is True, "file channel")
        check(by["up-a"]["source"] == "store" and by["up-a"]["shadowed"] is False, "stored")
        st, g, _ = chan(a, "up-a")
        check(st == 200 and g["models"] == ["chat-a=up-model-a"], "get %d %r" % (st, g))
        st, g, _ = chan(a, "mock")
        check(st == 200 and g["source"] == "file" and g["models"] == ["mock-1"], "get file")
        check("admin: channel up-a created" in a.gw.logtext(), "logged")
    finally:
        a.stop()
        up.close()


def test_update_disable_delete():
    up_a, up_b = upstream("A"), upstream("B")
    a = Admin(env=ENV)
    try:
        write(a, "POST", "/admin/channels", channel_body("up", up_a, ["chat-a"], weight=5), 201)
        check(ask(a, "chat-a")[1] == "A:chat-a", "A serves")
        # PATCH: only the named members change; settings merge
        js = write(a, "PATCH", "/admin/channels/up",
                   {"models": ["chat-b"], "settings": {"base_url": up_b.url + "/v1"}}, 200)
        check(js["weight"] == 5 and js["settings"]["api_key"] == "env:LM_TEST_UP_KEY", "kept")
        check(ask(a, "chat-a")[0] == 404, "old model gone")
        st, text, raw = ask(a, "chat-b")
        check(st == 200 and text == "B:chat-b", "new base_url and model: %d %s" % (st, raw))
        js = write(a, "PATCH", "/admin/channels/up", {"settings": {"api_key": None}}, 200)
        check("api_key" not in js["settings"], "null removes a setting")
        check("Authorization" not in up_b.requests[-1]["headers"] or ask(a, "chat-b")[0] == 200,
              "still serves")
        # PUT replaces: unnamed fields take their defaults
        js = write(a, "PUT", "/admin/channels/up", channel_body("up", up_a, ["chat-c"]), 200)
        check(js["weight"] == 1 and js["models"] == ["chat-c"], "replaced: %r" % js)
        check(ask(a, "chat-c")[1] == "A:chat-c", "PUT applied")
        # disable: the model is gone at once; enable brings it back
        js = write(a, "PATCH", "/admin/channels/up", {"enabled": False}, 200)
        check(js["enabled"] is False and js["active"] is False, "disabled %r" % js)
        st, _, raw = ask(a, "chat-c")
        check(st == 404 and b"model_not_found" in raw, "disabled -> 404: %d" % st)
        st, lst, _ = a.call("GET", "/admin/channels")
        check([c["enabled"] for c in lst["data"] if c["name"] == "up"] == [False], "listed off")
        write(a, "PATCH", "/admin/channels/up", {"enabled": True}, 200)
        check(ask(a, "chat-c")[0] == 200, "enabled again")
        # delete
        st, js, raw = a.call("DELETE", "/admin/channels/up")
        check(st == 200 and js["deleted"] is True and js["reload"]["applied"], "delete %s" % raw)
        check(ask(a, "chat-c")[0] == 404, "deleted -> 404")
        check(chan(a, "up")[0] == 404, "get deleted")
        check(a.call("DELETE", "/admin/channels/up")[0] == 404, "delete twice")
        check(a.call("PATCH", "/admin/channels/up", {"weight": 2})[0] == 404, "patch deleted")
        check(ask(a, "mock-1")[0] == 200, "file channel untouched")
    finally:
        a.stop()
        up_a.close()
        up_b.close()


def test_invalid_changes_refused():
    """Each change is checked like longmen -t before it is stored: 400 with
    the parser's or plugin's message, and nothing is stored."""
    up = upstream("A")
    a = Admin(env=ENV)
    try:
        good = channel_body("bad", up, ["m1"])
        cases = [
            (dict(good, plugin="nosuch"), "plugin", "nosuch.so"),
            (dict(good, plugin="../../tmp/x"), "plugin", "[a-z0-9_-]+"),
            (dict(good, settings={"base_url": up.url, "bogus": "1"}), "settings.bogus",
             'unknown setting "bogus"'),
            (dict(good, models=["=x"]), "models", "bad model mapping"),
            (dict(good, models=["a="]), "models", "bad model mapping"),
            (dict(good, models=[]), "models", "models"),
            (dict(good, settings={"base_url": "ftp://x"}), None, "base_url must start with http"),
            (dict(good, settings={"base_url": "env:LM_TEST_SURELY_UNSET"}), "settings.base_url",
             "LM_TEST_SURELY_UNSET is not set"),
            (dict(good, settings={"base_url": up.url, "priority": "1"}), "settings",
             "channel field"),
            (dict(good, settings={"base_url": up.url, "region": ["a", "b"]}), "settings",
             "only a secret"),
            (dict(good, settings={"base_url": "http://x\nmodels evil"}), "settings", "control"),
            (dict(good, settings={"base_url": up.url, "api_key": "***"}), "settings", "masked"),
            (dict(good, weight=0), "weight", "weight"),
            (dict(good, priority=-1), "priority", "priority"),
            (dict(good, connect_timeout_ms="5s"), "connect_timeout_ms", "integer"),
            (dict(good, price_input=2.5), "price_input", "decimal string"),
            (dict(good, price_input="1", price_input_micro=1), "price_input", "not both"),
            (dict(good, enabled="yes"), "enabled", "true or false"),
            (dict(good, id=5), None, "read-only"),
            (dict(good, source="file"), None, "read-only"),
            (dict(good, bogus=1), None, "unknown"),
            ({"name": "bad", "plugin": "openai"}, "models", "required"),
            (dict(good, name="has space"), "name", "[A-Za-z0-9_.-]+"),
            (dict(good, name="x" * 65), "name", "[A-Za-z0-9_.-]+"),
        ]
        for body, param, needle in cases:
            st, js, raw = a.call("POST", "/admin/channels", body)
            check(st == 400 and is_error_shape(js), "%r -> %d %s" % (body, st, raw[:300]))
            msg = js["error"]["message"]
            check(needle in msg, "%r: message %r lacks %r" % (body, msg, needle))
            if param is not None:
                check(js["error"]["param"] == param, "%r: param %r" % (body, js["error"]["param"]))
            check(not msg.startswith("(store)") and ".conf:" not in msg.split("channel")[0],
                  "no rendered-text location: %r" % msg)
        for raw_body in ("[1]", "{", '{"name":"a","name":"b"}'):
            st, js, _ = a.call("POST", "/admin/channels", raw=raw_body)
            check(st == 400 and is_error_shape(js), "body %r -> %d" % (raw_body, st))
        st, lst, _ = a.call("GET", "/admin/channels")
        check([c["name"] for c in lst["data"]] == ["mock"], "nothing stored: %r" % lst)
        # a valid channel, then invalid updates leave it as it was
        write(a, "POST", "/admin/channels", good, 201)
        for body in ({"plugin": "nosuch"}, {"models": ["=x"]}, {"settings": {"zzz": "1"}},
                     {"name": "renamed"}, {}, {"settings": {"base_url": "ftp://x"}}):
            st, js, raw = a.call("PATCH", "/admin/channels/bad", body)
            check(st == 400 and is_error_shape(js), "patch %r -> %d %s" % (body, st, raw[:200]))
        st, js, raw = a.call("PUT", "/admin/channels/bad", {"plugin": "openai"})
        check(st == 400 and js["error"]["param"] == "models", "PUT needs models: %s" % raw)
        st, g, _ = chan(a, "bad")
        check(g["plugin"] == "openai" and g["models"] == ["m1"] and
              g["settings"]["base_url"] == up.url + "/v1", "unchanged: %r" % g)
        check(ask(a, "m1")[1] == "A:m1", "still serves")
        # a disabled channel is only parsed: a broken plugin can still be stored switched off
        st, js, raw = a.call("POST", "/admin/channels",
                             dict(good, name="off", plugin="nosuch", enabled=False))
        check(st == 201 and js["enabled"] is False, "disabled with a missing plugin: %s" % raw)
        st, js, raw = a.call("PATCH", "/admin/channels/off", {"enabled": True})
        check(st == 400 and "nosuch" in js["error"]["message"], "enabling is checked: %s" % raw)
        st, js, raw = a.call("POST", "/admin/channels", dict(good, name="off2", models=["=x"],
                                                             enabled=False))
        check(st == 400, "a disabled channel must still parse: %d" % st)
    finally:
        a.stop()
        up.close()


def test_file_channels_read_only():
    up = upstream("A")
    a = Admin(env=ENV)
    try:
        st, js, raw = a.call("POST", "/admin/channels", channel_body("mock", up, ["x"]))
        check(st == 409 and is_error_shape(js) and "configuration file" in js["error"]["message"],
              "create over a file channel: %d %s" % (st, raw))
        for method, body in (("PUT", channel_body("mock", up, ["x"])), ("PATCH", {"weight": 2}),
                             ("DELETE", None)):
            st, js, raw = a.call(method, "/admin/channels/mock", body)
            check(st == 409 and "read-only" in js["error"]["message"], "%s mock -> %d %s" % (
                method, st, raw))
        write(a, "POST", "/admin/channels", channel_body("dup", up, ["x"]), 201)
        st, js, raw = a.call("POST", "/admin/channels", channel_body("dup", up, ["y"]))
        check(st == 409 and js["error"]["param"] == "name", "duplicate stored name: %s" % raw)
        check(ask(a, "mock-1")[0] == 200 and ask(a, "x")[0] == 200, "both serve")
    finally:
        a.stop()
        up.close()


def test_broken_file():
    """Changes are checked against the file as it is now: while it does not
    load they are 409; a delete is stored but its reload fails (applied:
    false) until the file is fixed."""
    up = upstream("A")
    a = Admin(env=ENV)
    try:
        write(a, "POST", "/admin/channels", channel_body("one", up, ["one-model"]), 201)
        good = open(a.gw.conf).read()
        with open(a.gw.conf, "a") as f:
            f.write("bogus_directive 1\n")
        st, js, raw = a.call("POST", "/admin/channels", channel_body("two", up, ["two-model"]))
        check(st == 409 and "bogus_directive" in js["error"]["message"], "create: %d %s" % (
            st, raw))
        st, js, raw = a.call("GET", "/admin/channels")
        check(st == 500 and js["error"]["code"] == "config_error", "list: %d %s" % (st, raw))
        st, js, raw = a.call("DELETE", "/admin/channels/one")
        check(st == 200 and js["deleted"] is True and js["reload"]["applied"] is False and
              "bogus_directive" in js["reload"]["error"], "delete stored, not applied: %s" % raw)
        check(ask(a, "one-model")[0] == 200, "the previous generation keeps serving")
        with open(a.gw.conf, "w") as f:
            f.write(good)
        write(a, "POST", "/admin/channels", channel_body("two", up, ["two-model"]), 201)
        check(ask(a, "one-model")[0] == 404 and ask(a, "two-model")[0] == 200, "both applied")
    finally:
        a.stop()
        up.close()


def test_survives_restart():
    """Stored channels are in the first generation of the next start; one
    that no longer parses there (its env: variable is gone) is left out
    with a message, the others serve, and changes are 409 until it is
    fixed or deleted."""
    up = upstream("A")
    a = Admin(env=dict(ENV, LM_TEST_FIRST_RUN_ONLY="k-0123456789"))
    try:
        write(a, "POST", "/admin/channels", channel_body("keep", up, ["kept-model"]), 201)
        write(a, "POST", "/admin/channels", channel_body("off", up, ["off-model"], enabled=False),
              201)
        body = channel_body("envy", up, ["envy-model"])
        body["settings"]["api_key"] = "env:LM_TEST_FIRST_RUN_ONLY"
        write(a, "POST", "/admin/channels", body, 201)
        check(ask(a, "envy-model")[0] == 200, "envy serves on the first run")
    finally:
        a.stop()
    env = dict(ENV, LONGMEN_ADMIN_TOKEN="restart-admin-token-0123456789")
    b = Admin(data=a.data, env=env)
    try:
        st, text, raw = ask(b, "kept-model")
        check(st == 200 and text == "A:kept-model", "served right after start: %d %s" % (st, raw))
        check(ask(b, "off-model")[0] == 404, "disabled stays off")
        check(ask(b, "envy-model")[0] == 404, "the broken one is left out")
        st, g, _ = chan(b, "keep")
        check(st == 200 and g["active"] is True, "listed after restart")
        st, g, _ = chan(b, "envy")
        check(st == 200 and g["active"] is False, "listed, not active: %r" % g)
        log = b.gw.logtext()
        check("stored channels added" in log, "start-up log")
        check("stored channel envy left out: settings.api_key: environment variable "
              "LM_TEST_FIRST_RUN_ONLY is not set" in log, "why it is left out")
        st, js, raw = b.call("PATCH", "/admin/channels/keep", {"weight": 2})
        check(st == 409 and "stored channel envy" in js["error"]["message"], "409: %s" % raw)
        st, js, raw = b.call("DELETE", "/admin/channels/envy")
        check(st == 200 and js["reload"]["applied"] is True, "delete the broken one: %s" % raw)
        write(b, "PATCH", "/admin/channels/keep", {"weight": 2}, 200)
    finally:
        b.stop()
        up.close()


def test_route_separation():
    """AU-6: no token 401, data-plane key 403, read-only token GET only, and
    the data-plane port answers 404 for every channel route."""
    up = upstream("A")
    a = Admin(env=dict(ENV, LONGMEN_ADMIN_READONLY_TOKEN=READ_TOKEN))
    try:
        write(a, "POST", "/admin/channels", channel_body("sep", up, ["sep-model"]), 201)
        calls = [("GET", "/admin/channels", None), ("POST", "/admin/channels",
                                                    channel_body("sep2", up, ["m"])),
                 ("GET", "/admin/channels/sep", None), ("PUT", "/admin/channels/sep",
                                                        channel_body("sep", up, ["m"])),
                 ("PATCH", "/admin/channels/sep", {"weight": 3}),
                 ("DELETE", "/admin/channels/sep", None)]
        for method, path, body in calls:
            for who, tok, want in (("no token", "", 401), ("config key", KEY, 403),
                                   ("wrong token", "lmadm-" + "y" * 32, 401)):
                st, js, raw = a.call(method, path, body, token=tok)
                check(st == want and is_error_shape(js), "%s %s as %s -> %d" % (
                    method, path, who, st))
            st, js, _ = a.call(method, path, body, token=READ_TOKEN)
            check(st == (200 if method == "GET" else 403), "%s %s read-only -> %d" % (
                method, path, st))
            for tok in ("", KEY, a.token):
                st, _, _ = a.call(method, path, body, token=tok, port=a.gw.port)
                check(st == 404, "data plane %s %s -> %d" % (method, path, st))
        check(chan(a, "sep")[1]["weight"] == 1, "nothing changed by refused calls")
        check(a.call("GET", "/admin/channels?x=1")[0] == 400, "unknown query parameter")
        check(a.call("POST", "/admin/channels/sep", {})[0] == 405, "wrong method")
    finally:
        a.stop()
        up.close()


HOSTILE = ["x'; DROP TABLE channels; --", "\" OR 1=1 --", "Robert'); DROP TABLE keys;--",
           "%s%n%x", "龙门 🐉", "<img src=x onerror=alert(1)>", "a\\b\"c", "#", "{", "}"]


def test_sql_metacharacters():
    """AU-3: hostile names are 400; hostile models and settings are stored
    exactly and mean exactly what they say."""
    up = upstream("A")
    a = Admin(env=ENV)
    try:
        for v in HOSTILE + ["a/b", "..", ".", "", "x" * 10240, "a\u0000b"]:
            st, js, raw = a.call("POST", "/admin/channels", channel_body(v, up, ["m"]))
            check(st == 400 and js["error"]["param"] == "name" and
                  not SQL_LEAK.search(raw.decode("utf-8", "replace")), "name %r -> %d %s" % (
                      v[:30], st, raw[:200]))
        for seg in ("x'%20OR%201=1", "%27%3B%20DROP%20TABLE%20channels", "%00", "a%2Fb",
                    "%E9%BE%99"):
            st, js, raw = a.call("GET", "/admin/channels/" + seg)
            check(st == 400 and is_error_shape(js), "path %r -> %d" % (seg, st))
        models = ["%s=up-%d" % (v, i) for i, v in enumerate(HOSTILE) if "=" not in v]
        body = channel_body("hostile", up, models)
        body["settings"]["api_key"] = "'; DROP TABLE channels; -- \"\\ #"
        js = write(a, "POST", "/admin/channels", body, 201)
        check(js["models"] == models, "models stored exactly: %r" % js["models"])
        check(js["settings"]["api_key"] == "***", "literal secret masked")
        for i, v in enumerate(HOSTILE):
            if "=" in v:
                continue
            st, text, raw = ask(a, v)
            check(st == 200 and text == "A:up-%d" % i, "model %r -> %d %s" % (v, st, raw[:200]))
        check(up.requests[-1]["headers"]["Authorization"] == "Bearer " + body["settings"]["api_key"],
              "secret reached the upstream exactly")
        st, lst, _ = a.call("GET", "/admin/channels")
        check(st == 200 and len(lst["data"]) == 2, "table intact")
        st, k, _ = a.call("POST", "/admin/keys", {"name": "still", "quota": "1"})
        check(st == 201, "keys table intact")
    finally:
        a.stop()
        up.close()


def test_secret_canary():
    """AU-8: a literal provider key given to the admin API appears in no
    admin reply, error, metric or log line, and not in a client's error
    even when the upstream echoes it; "***" keeps it on PUT."""
    canary = "sk-canary-" + uuid.uuid4().hex
    canary2 = "sk-canary2-" + uuid.uuid4().hex
    canary3 = "sk-canary3-" + uuid.uuid4().hex
    up = Mock()

    def echo(h, body):  # an upstream that quotes the key back in its error
        json_reply(h, 401, {"error": {"message": "invalid key: %s" % h.headers.get(
            "Authorization"), "type": "invalid_request_error", "code": "invalid_api_key"}})

    up.routes["/v1/chat/completions"] = echo
    good = upstream("G")
    a = Admin(env=ENV)
    replies = []

    def call(method, path, body=None, **kw):
        st, js, raw = a.call(method, path, body, **kw)
        replies.append(raw)
        return st, js, raw

    try:
        body = {"name": "canary", "plugin": "openai", "models": ["canary-model"],
                "settings": {"base_url": up.url + "/v1", "api_key": [canary, canary2]}}
        st, js, raw = call("POST", "/admin/channels", body)
        check(st == 201 and js["settings"]["api_key"] == ["***", "***"], "create %s" % raw)
        for _ in range(2):  # both rotating keys reach the upstream
            st, _, raw, _ = a.gw.chat({"model": "canary-model",
                                       "messages": [{"role": "user", "content": "hi"}]})
            replies.append(raw)
            check(st == 401, "upstream 401 passed on: %d" % st)
        sent = {r["headers"].get("Authorization") for r in up.requests}
        check(sent == {"Bearer " + canary, "Bearer " + canary2}, "keys rotate: %r" % len(sent))
        call("GET", "/admin/channels")
        call("GET", "/admin/channels/canary")
        # PUT with the masked value keeps the stored keys
        st, js, raw = call("PUT", "/admin/channels/canary",
                           dict(body, settings={"base_url": up.url + "/v1", "api_key": "***"}))
        check(st == 200, "PUT with *** %s" % raw)
        up.requests.clear()
        a.gw.chat({"model": "canary-model", "messages": [{"role": "user", "content": "x"}]})
        check(up.requests and up.requests[-1]["headers"]["Authorization"] in (
            "Bearer " + canary, "Bearer " + canary2), "*** kept the stored key")
        # errors about a channel with a literal key do not echo it
        for bad in ({"settings": {"base_url": "ftp://x", "api_key": canary3}},
                    {"settings": {"base_url": up.url, "api_key": canary3, "bogus": canary3}},
                    {"models": ["=" + canary3[:8]], "settings": {"api_key": canary3}},
                    {"plugin": "nosuch", "settings": {"api_key": canary3}}):
            st, js, raw = call("PATCH", "/admin/channels/canary", bad)
            check(st == 400, "bad patch %r -> %d" % (list(bad), st))
        st, js, raw = call("POST", "/admin/channels",
                           {"name": "canary3", "plugin": "openai", "models": ["c3"],
                            "settings": {"base_url": good.url + "/v1", "api_key": canary3}})
        check(st == 201, "second channel %s" % raw)
        call("PATCH", "/admin/channels/canary3", {"enabled": False})
        call("GET", "/admin/metrics")
        call("GET", "/admin/usage/rows")
        call("GET", "/admin/health")
        call("POST", "/admin/reload")
        call("DELETE", "/admin/channels/canary3")
        # the database holds the literal keys: its directory and files are private
        check(stat.S_IMODE(os.stat(a.data).st_mode) == 0o700, "data dir 0700")
        for f in os.listdir(a.data):
            if f.startswith("longmen.db"):
                mode = stat.S_IMODE(os.stat(os.path.join(a.data, f)).st_mode)
                check(mode == 0o600, "%s mode %o" % (f, mode))
    finally:
        a.stop()
        up.close()
        good.close()
    log = a.gw.logtext()
    for c in (canary, canary2, canary3):
        hits = [r[:200] for r in replies if c.encode() in r]
        check(hits == [], "canary in an admin or client reply: %r" % hits[:2])
        check(c not in log, "canary in the log: %s" % [ln for ln in log.splitlines() if c in ln])
    check(re.search(r"admin: channel canary (created|updated)", log), "changes logged")


def test_deleted_literal_key_leaves_no_trace_in_the_db():
    """A literal provider key of a deleted channel is overwritten in the
    database file (secure_delete), not left in a free page."""
    canary = "sk-gone-" + uuid.uuid4().hex
    up = upstream("D")
    a = Admin(env=ENV)
    try:
        body = channel_body("gone", up, ["gone-model"])
        body["settings"]["api_key"] = canary
        write(a, "POST", "/admin/channels", body, 201)
        write(a, "DELETE", "/admin/channels/gone", None, 200)
    finally:
        a.stop()  # the last connection checkpoints the WAL into the file
        up.close()
    found = []
    for name in os.listdir(a.data):
        with open(os.path.join(a.data, name), "rb") as f:
            if canary.encode() in f.read():
                found.append(name)
    check(not found, "the deleted key is still in %s" % found)


def test_shell_client():
    """bin/longmen-admin channel add/list/get/set/disable/enable/rm."""
    up = upstream("S")
    a = Admin(env=ENV)
    cli = os.path.join(ROOT, "bin", "longmen-admin")
    env = dict(os.environ, LONGMEN_ADMIN_URL="http://127.0.0.1:%d" % a.aport,
               LONGMEN_ADMIN_TOKEN=a.token)
    secret = "sk-cli-literal-" + uuid.uuid4().hex

    def sh(*args, ok=True, stdin=None):
        p = subprocess.run(["sh", cli] + list(args), capture_output=True, text=True, env=env,
                           timeout=30, input=stdin)
        check((p.returncode == 0) == ok, "%r -> %d %s %s" % (args, p.returncode, p.stdout,
                                                              p.stderr))
        return json.loads(p.stdout) if p.stdout.strip() else None

    try:
        c = sh("channel", "add", "cli", "--plugin", "openai", "--models", "cli-a,cli-b=up-b",
               "--set", "base_url=%s/v1" % up.url, "--set-stdin", "api_key", "--weight", "3",
               "--price-input", "1.5", stdin=secret + "\n")
        check(c["models"] == ["cli-a", "cli-b=up-b"] and c["weight"] == 3 and
              c["price_input_micro"] == 1500000 and c["settings"]["api_key"] == "***", "add %r" % c)
        check(ask(a, "cli-b")[1] == "S:up-b", "served")
        check(up.requests[-1]["headers"]["Authorization"] == "Bearer " + secret, "stdin secret")
        names = [x["name"] for x in sh("channel", "list")["data"]]
        check(names == ["mock", "cli"], "list %r" % names)
        check(sh("channel", "get", "cli")["name"] == "cli", "get")
        c = sh("channel", "set", "cli", "--models", "cli-c", "--priority", "1")
        check(c["models"] == ["cli-c"] and c["priority"] == 1 and c["weight"] == 3, "set %r" % c)
        c = sh("channel", "set", "cli", "--price", "cli-img 0.04 per_image", "--price", "cli-* 1 2")
        check(c["prices"] == ["cli-img 0.04 per_image", "cli-* 1 2"] and c["models"] == ["cli-c"],
              "prices %r" % c)
        sh("channel", "set", "cli", "--price", "cli-img 1 per_week", ok=False)
        check(sh("channel", "disable", "cli")["enabled"] is False, "disable")
        check(ask(a, "cli-c")[0] == 404, "disabled")
        check(sh("channel", "enable", "cli")["enabled"] is True, "enable")
        check(ask(a, "cli-c")[0] == 200, "enabled")
        sh("channel", "set", "cli", "--set", "bogus=1", ok=False)
        sh("channel", "add", "x/../y", "--plugin", "mock", "--models", "m", ok=False)
        sh("channel", "rm", "mock", ok=False)
        check(sh("channel", "rm", "cli")["deleted"] is True, "rm")
        sh("channel", "get", "cli", ok=False)
    finally:
        a.stop()
        up.close()
    check(secret not in a.gw.logtext(), "secret not logged")


if __name__ == "__main__":
    run([test_create_and_chat, test_update_disable_delete, test_invalid_changes_refused,
         test_file_channels_read_only, test_broken_file, test_survives_restart, test_route_separation,
         test_sql_metacharacters, test_secret_canary, test_deleted_literal_key_leaves_no_trace_in_the_db,
         test_shell_client])
