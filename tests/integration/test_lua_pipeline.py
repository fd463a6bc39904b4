"""Lua policy stages through the real binary: rewrite, reject, route,
upstream headers, events, responses, errors/fallback, limits, logs, reload
with a broken script, and the shipped scripts."""
import json
import os
import re
import subprocess
import tempfile
import time

from lib import BUILD, KEY, PLUGIN_DIR, ROOT, Gateway, Mock, check, chunk, content_of, json_reply, run, \
    sse_reply, usage_chunk

mock = Mock()
PLAIN = {"id": "c", "object": "chat.completion", "created": 1, "model": "up",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello world"},
                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def answer(h, b):
    req = json.loads(b)
    if req.get("stream"):
        sse_reply(h, [chunk("hello"), chunk(" world"), chunk(finish="stop"), usage_chunk(3, 2), "[DONE]"])
    else:
        json_reply(h, 200, PLAIN)


mock.routes["/a/chat/completions"] = answer
mock.routes["/b/chat/completions"] = answer
mock.routes["/down/chat/completions"] = lambda h, b: json_reply(h, 503, {"error": {"message": "down"}})


def slow_answer(h, b):
    time.sleep(0.15)
    answer(h, b)


mock.routes["/slow/chat/completions"] = slow_answer

SCRIPT = r'''
function on_request(req)
  if req.messages[1].content == "reject me" then
    return lm.reject(403, "not allowed by policy", "policy_block")
  end
  if req.messages[1].content == "crash" then error("boom") end
  if req.messages[1].content == "spin" then while true do end end
  if req.model == "alias-x" then req.model = "m" end
  table.insert(req.messages, 1, {role = "system", content = "Be nice."})
  req.params.temperature = 0.1
end
function on_route(req, candidates)
  if req.messages[2].content == "prefer b" then
    local names = {}
    for i = #candidates, 1, -1 do names[#names + 1] = candidates[i].name end
    return names
  end
end
function on_upstream_request(req, up)
  up.headers["X-Policy"] = "checked-" .. up.channel
end
function on_event(ev)
  local d = ev.choices[1] and ev.choices[1].delta
  if d and d.content then d.content = string.upper(d.content) end
end
function on_response(body)
  body.choices[1].message.content = body.choices[1].message.content .. " (checked)"
end
function on_log(record)
  record.policy = "v1"
end
'''


def write(d, name, text):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def make_gw(script_text=SCRIPT, extra_scripts=""):
    d = tempfile.mkdtemp(prefix="lm-lua-")
    path = write(d, "policy.lua", script_text)
    gw = Gateway(extra="script policy %s\n%s" % (path, extra_scripts), channels="""
channel a {
    plugin openai
    base_url %s/a
    models m
}
channel b {
    plugin openai
    base_url %s/b
    models m
    priority 1
}
channel down {
    plugin openai
    base_url %s/down
    models fo
}
channel a2 {
    plugin openai
    base_url %s/a
    models fo
    priority 1
}
""" % (mock.url, mock.url, mock.url, mock.url))
    return gw, d, path


def body(text, model="m", **kw):
    b = {"model": model, "messages": [{"role": "user", "content": text}]}
    b.update(kw)
    return b


def test_stages_through_the_gateway():
    gw, d, path = make_gw()
    try:
        st, js, raw, _ = gw.chat(body("hi", model="alias-x"))
        check(st == 200, raw)
        up = mock.requests[-1]
        sent = json.loads(up["body"])
        check(sent["model"] == "m" and sent["messages"][0] == {"role": "system", "content": "Be nice."}
              and sent["temperature"] == 0.1, "on_request rewrite: %s" % sent)
        check(up["path"].startswith("/a/") and up["headers"].get("X-Policy") == "checked-a",
              "on_upstream_request header: %s" % up["headers"])
        check(js["choices"][0]["message"]["content"] == "hello world (checked)", "on_response: %s" % raw)
        st, ev, raw, _ = gw.stream(body("hi", stream=True))
        check(st == 200 and content_of(ev) == "HELLO WORLD" and ev[-1] == "[DONE]", "on_event: %s" % raw)
        st, js, raw, _ = gw.chat(body("prefer b"))
        check(st == 200 and mock.requests[-1]["path"].startswith("/b/"), "on_route picked b")
        check('"policy":"v1"' in gw.logtext(), "on_log fields are logged")
    finally:
        gw.stop()


def test_reject_error_and_limits():
    gw, d, path = make_gw()
    try:
        n = len(mock.requests)
        st, js, raw, _ = gw.chat(body("reject me"))
        check(st == 403 and js["error"]["code"] == "policy_block" and
              js["error"]["message"] == "not allowed by policy", raw)
        st, js, raw, _ = gw.chat(body("crash"))
        check(st == 500 and js["error"]["code"] == "script_error" and "lua-" in js["error"]["message"], raw)
        check("boom" not in raw.decode(), "script message stays in the log")
        errid = js["error"]["message"].split("error id ")[1].rstrip(")")
        check(errid in gw.logtext() and "boom" in gw.logtext(), "error id in the log")
        t = time.time()
        st, js, raw, _ = gw.chat(body("spin"))
        check(st == 500 and js["error"]["code"] == "script_error" and time.time() - t < 10.0,
              "infinite loop stopped within the budget: %s" % raw)
        check(len(mock.requests) == n, "nothing reached the upstream")
        st, js, raw, _ = gw.chat(body("hi"))
        check(st == 200, "the worker still serves after the limit hit")
    finally:
        gw.stop()


def test_fallback_and_on_error_retry():
    gw, d, path = make_gw()
    try:
        st, js, raw, _ = gw.chat(body("hi", model="fo"))
        check(st == 200 and js["choices"][0]["message"]["content"].startswith("hello world"), raw)
        paths = [r["path"] for r in mock.requests[-2:]]
        check(paths[0].startswith("/down/") and paths[1].startswith("/a/"), "fell back: %s" % paths)
        check("trying channel a2" in gw.logtext(), "fallback logged")
    finally:
        gw.stop()
    script = SCRIPT + '''
function on_error(err)
  err.message = "mapped: " .. err.message
end
'''
    gw, d, path = make_gw(script)
    try:
        mock.routes["/a/chat/completions"] = lambda h, b: json_reply(h, 400, {"error": {"message": "bad"}})
        st, js, raw, _ = gw.chat(body("hi"))
        check(st == 400 and js["error"]["message"] == "mapped: bad", "on_error maps: %s" % raw)
    finally:
        mock.routes["/a/chat/completions"] = answer
        gw.stop()


def test_reload_with_broken_script_keeps_old():
    gw, d, path = make_gw()
    try:
        write(d, "policy.lua", "function on_request(req)\n  this is not lua\nend\n")
        gw.proc.send_signal(1)
        deadline = time.time() + 5
        while time.time() < deadline and "reload failed" not in gw.logtext():
            time.sleep(0.05)
        check("reload failed" in gw.logtext() and "policy.lua:2" in gw.logtext(), gw.logtext()[-800:])
        st, js, raw, _ = gw.chat(body("hi"))
        check(st == 200 and js["choices"][0]["message"]["content"].endswith("(checked)"), "old scripts")
        write(d, "policy.lua", SCRIPT.replace("(checked)", "(v2)"))
        gw.proc.send_signal(1)
        deadline = time.time() + 5
        while time.time() < deadline and "reloaded: generation 2" not in gw.logtext():
            time.sleep(0.05)
        st, js, raw, _ = gw.chat(body("hi"))
        check(st == 200 and js["choices"][0]["message"]["content"].endswith("(v2)"), "new scripts: %s" % raw)
    finally:
        gw.stop()


def test_shipped_scripts_load():
    d = tempfile.mkdtemp(prefix="lm-ship-")
    lines = ["listen 127.0.0.1:%d" % 1, "plugin_dir %s" % PLUGIN_DIR,
             "channel m {\n plugin mock\n models mock-1\n}"]
    for f in sorted(os.listdir(os.path.join(ROOT, "scripts"))):
        if f.endswith(".lua"):
            lines.append("script %s %s" % (f[:-4], os.path.join(ROOT, "scripts", f)))
    conf = write(d, "c.conf", "\n".join(lines) + "\n")
    p = subprocess.run([os.path.join(BUILD, "longmen"), "-t", "-c", conf], capture_output=True,
                       text=True, timeout=20)
    check(p.returncode == 0, p.stdout + p.stderr)
    bad = write(d, "bad.conf", "\n".join(lines[:3]) + "\nscript x %s\n" % write(d, "x.lua", "os.execute('id')\n"))
    p = subprocess.run([os.path.join(BUILD, "longmen"), "-t", "-c", bad], capture_output=True,
                       text=True, timeout=20)
    check(p.returncode == 1 and "x.lua" in p.stdout + p.stderr, p.stdout + p.stderr)


def test_pii_mask_script_end_to_end():
    d = tempfile.mkdtemp(prefix="lm-pii-")
    gw = Gateway(extra="script pii %s\n" % os.path.join(ROOT, "scripts", "pii_mask.lua"), channels="""
channel a {
    plugin openai
    base_url %s/a
    models m
}""" % mock.url)
    try:
        st, js, raw, _ = gw.chat(body("call me at 13812345678 or mail a.b@example.com"))
        sent = mock.requests[-1]["body"].decode()
        check(st == 200 and "13812345678" not in sent and "a.b@example.com" not in sent, sent)
    finally:
        gw.stop()


def test_pii_mask_long_prompts_and_every_field():
    """pii_mask.lua masks what the provider reads: names, tool-call arguments,
    text parts of any type, http image URLs (never a data: URL), and a
    ~100 KiB prompt within the default instruction and memory budgets (the
    deadline is raised so a busy or sanitizer machine cannot fail it: the
    budgets are the deterministic part)."""
    gw = Gateway(extra="lua_deadline 2s\nscript pii %s\n" % os.path.join(ROOT, "scripts", "pii_mask.lua"),
                 channels=CHAN_A)
    try:
        prose = ("In 2024 the gateway served 1500 requests per second across 12 regions; "
                 "page 37 lists the 95th percentile. 用户的请求经过网关转发到模型服务。 ")
        parts, n = [], 0
        while n < 100 * 1024:
            parts.append(prose if len(parts) % 40 else "mail x.y@corp.example.cn or 13812345678 ")
            n += len(parts[-1].encode())
        text = "".join(parts)
        st, js, raw, _ = gw.chat(body(text))
        sent = json.loads(mock.requests[-1]["body"])["messages"][0]["content"]
        check(st == 200, "100 KiB prompt: %d %s" % (st, raw[:200]))
        check("13812345678" not in sent and "x.y@corp.example.cn" not in sent and
              sent.count("[PHONE]") == sent.count("[EMAIL]") > 10, "masked in a long prompt")
        check("In 2024 the gateway served 1500 requests" in sent, "numbers that are not PII stay")
        req = {"model": "m", "messages": [
            {"role": "user", "name": "13912345678", "content": [
                {"type": "text", "text": "id 110101199003074512, +86 139-1234-5678"},
                {"type": "input_text", "text": "me@example.com"},
                {"type": "image_url", "image_url": {"url": "https://img.example.com/u/me@example.com.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,13812345678AAAA"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "lookup", "arguments": "{\"phone\": \"138 1234 5678\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "owner: a.b@example.com"},
            {"role": "user", "content": "order abc110101199003074512 is not an ID"}]}
        st, js, raw, _ = gw.chat(req)
        check(st == 200, raw)
        out = json.loads(mock.requests[-1]["body"])["messages"]
        check(out[0]["name"] == "[PHONE]", "name: %r" % out[0].get("name"))
        c = out[0]["content"]
        check(c[0]["text"] == "id [ID], [PHONE]" and c[1]["text"] == "[EMAIL]", "text parts: %r" % c[:2])
        check("me@example.com" not in c[2]["image_url"]["url"], "http image URL: %r" % c[2])
        check(c[3]["image_url"]["url"] == "data:image/png;base64,13812345678AAAA", "data: URL kept")
        args = json.loads(out[1]["tool_calls"][0]["function"]["arguments"])
        check(args == {"phone": "[PHONE]"}, "tool-call arguments: %r" % args)
        check(out[2]["content"] == "owner: [EMAIL]", "tool result: %r" % out[2]["content"])
        check(out[3]["content"] == "order abc110101199003074512 is not an ID", out[3]["content"])
    finally:
        gw.stop()


def test_script_reload_under_load_never_mixes():
    tag = 'function on_event(ev)\n  local d = ev.choices[1] and ev.choices[1].delta\n' \
          '  if d and d.content then d.content = d.content .. "[%d]" end\nend\n'
    d = tempfile.mkdtemp(prefix="lm-pl9-")
    path = write(d, "tag.lua", tag % 1)
    gw = Gateway(extra="script tag %s\n" % path, channels="""
channel a {
    plugin openai
    base_url %s/a
    models m
}""" % mock.url)
    stop = time.time() + float(os.environ.get("LM_PL9_SECONDS", "10"))
    seen, bad = {}, []

    def client():
        while time.time() < stop:
            try:
                st, ev, raw, _ = gw.stream(body("hi", stream=True), timeout=10)
                text = content_of(ev)
                if st == 200 and text in ("hello[1] world[1]", "hello[2] world[2]") and ev[-1] == "[DONE]":
                    seen[text[5:8]] = seen.get(text[5:8], 0) + 1
                else:
                    bad.append((st, text))
            except Exception as e:  # noqa: BLE001
                bad.append(repr(e))

    import threading
    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        v = 1
        while time.time() < stop - 0.3:
            time.sleep(0.5)
            v = 3 - v
            tmp = write(d, "tag.lua.new", tag % v)
            os.rename(tmp, path)
            gw.proc.send_signal(1)
        for t in threads:
            t.join(20)
    finally:
        gw.stop()
    check(not bad, "failed or mixed requests: %s" % bad[:3])
    check(len(seen) == 2 and sum(seen.values()) > 20, "both generations served: %s" % seen)


CHAN_A = """
channel a {
    plugin openai
    base_url %s/a
    models m
}""" % mock.url

# The client's bytes, formatted the way no serializer would write them: a
# gateway that forwards them as they are (raw passthrough) is visible.
RAW_REQ = (b'{ "messages" : [ {"role":"user", "content":"hi \\u00e9, order 12345678901234567890"} ],\n'
           b'  "model":"m", "temperature": 0.50, "n": 1, "user": null }')


def script_gw(text):
    d = tempfile.mkdtemp(prefix="lm-lazy-")
    return Gateway(extra="script s %s\n" % write(d, "s.lua", text), channels=CHAN_A)


def normalized(events):
    """Events as JSON with the per-request id and time blanked. As JSON, not text: without
    an on_event the upstream's chunk bytes go out as they are (ABI 1.4 emit_raw), with one
    the chunks take the tree path and are written compactly."""
    out = []
    for e in events:
        j = json.loads(e) if e != "[DONE]" else e
        if isinstance(j, dict):
            j.update(id="", created=0)
        out.append(j)
    return out


def sent_as_is(sent, what):
    check(sent == RAW_REQ, "%s: the upstream did not get the client's bytes: %r" % (what, sent))


def test_noop_script_changes_nothing():
    """Every stage defined, none touching its data: the upstream gets the client's bytes and
    the client gets exactly what a gateway without scripts sends."""
    plain = Gateway(channels=CHAN_A)
    noop = Gateway(extra="script noop %s\n" % os.path.join(ROOT, "scripts", "noop.lua"),
                   channels=CHAN_A)
    try:
        outs = []
        for gw in (plain, noop):
            st, js, raw, _ = gw.chat(RAW_REQ)
            check(st == 200, raw)
            sent = mock.requests[-1]["body"]
            st, ev, sraw, _ = gw.stream(body("hi", stream=True, stream_options={"include_usage": True}))
            check(st == 200 and ev[-1] == "[DONE]", sraw)
            outs.append((raw, sent, normalized(ev)))
        (p_raw, p_sent, p_ev), (n_raw, n_sent, n_ev) = outs
        check(p_sent == RAW_REQ, "without scripts the client's bytes go through: %r" % p_sent)
        sent_as_is(n_sent, "noop.lua")
        check(n_raw == p_raw, "response bytes differ:\n%r\n%r" % (p_raw, n_raw))
        check(n_ev == p_ev, "stream events differ:\n%s\n%s" % (p_ev, n_ev))
    finally:
        plain.stop()
        noop.stop()


def test_reading_the_request_keeps_it():
    """A script that reads every field (and writes values back unchanged) is no rewrite."""
    gw = script_gw("""
function on_request(req)
  local n = 0
  for k, v in pairs(req.params) do n = n + 1 end
  for _, m in ipairs(req.messages) do m.content = m.content .. "" end
  req.params.temperature = req.params.temperature
  req.meta.params = n
end
""")
    try:
        st, js, raw, _ = gw.chat(RAW_REQ)
        check(st == 200, raw)
        sent_as_is(mock.requests[-1]["body"], "read-only script")
    finally:
        gw.stop()


def test_changing_messages_turns_raw_passthrough_off():
    gw = script_gw("""
function on_request(req)
  req.messages[1].content = req.messages[1].content .. "!"
end
""")
    try:
        st, js, raw, _ = gw.chat(RAW_REQ)
        check(st == 200, raw)
        sent = mock.requests[-1]["body"]
        want = json.loads(RAW_REQ)
        want["messages"][0]["content"] += "!"
        del want["user"]  # a rewrite drops null parameters, as it always did
        check(sent != RAW_REQ and json.loads(sent) == want, "rewritten request: %r" % sent)
    finally:
        gw.stop()


def test_on_event_rewrites_only_what_it_touches():
    """Only the first event is looked at (and rewritten); the others go out as the same events
    a gateway without scripts sends."""
    plain = Gateway(channels=CHAN_A)
    gw = script_gw("""
function on_event(ev)
  lm.ctx.n = (lm.ctx.n or 0) + 1
  if lm.ctx.n == 1 then
    local d = ev.choices[1].delta
    d.content = string.upper(d.content)
  end
end
""")
    try:
        st, p_ev, raw, _ = plain.stream(body("hi", stream=True))
        check(st == 200, raw)
        st, ev, raw, _ = gw.stream(body("hi", stream=True))
        check(st == 200 and content_of(ev) == "HELLO world", raw)
        check(normalized(ev[1:]) == normalized(p_ev[1:]),
              "untouched events differ:\n%s\n%s" % (p_ev, ev))
        check(ev[0] != p_ev[0] and json.loads(ev[0])["choices"][0]["delta"]["content"] == "HELLO",
              "first event: %s" % ev[0])
    finally:
        plain.stop()
        gw.stop()


def test_pii_mask_without_pii_keeps_the_request():
    """pii_mask.lua reads every message and writes each one back: with nothing to mask that is
    no rewrite."""
    gw = Gateway(extra="script pii %s\n" % os.path.join(ROOT, "scripts", "pii_mask.lua"),
                 channels=CHAN_A)
    try:
        st, js, raw, _ = gw.chat(RAW_REQ)
        check(st == 200, raw)
        sent_as_is(mock.requests[-1]["body"], "pii_mask.lua, nothing to mask")
    finally:
        gw.stop()


def test_route_latency_sees_live_figures_and_usage_sees_prices():
    """scripts/route_latency.lua through the binary: once both channels have
    latency samples the fast one wins, and the expensive one over max_price
    is never used; on_usage gets the serving channel's real prices."""
    d = tempfile.mkdtemp(prefix="lm-live-")
    usage_script = write(d, "u.lua", """
function on_usage(usage, price, charge)
  lm.log("info", string.format("usage-price in=%d out=%d req=%d", price.input, price.output, price.per_request))
end
""")
    chans = ("channel slow {\n plugin openai\n base_url %s/slow\n models lat\n price_input 1\n price_output 1\n}\n"
             "channel fast {\n plugin openai\n base_url %s/a\n models lat\n price_input 1\n price_output 1\n}\n"
             "channel pricey {\n plugin openai\n base_url %s/b\n models lat\n price_input 90\n price_output 90\n"
             " price_per_request 0.000007\n}\n" % (mock.url, mock.url, mock.url))
    gw = Gateway(extra="route_strategy round_robin\n"
                       "script route %s {\n args {\"max_price\": 10000000}\n}\nscript price %s\n"
                       % (os.path.join(ROOT, "scripts", "route_latency.lua"), usage_script),
                 channels=chans)
    try:
        served = []
        for _ in range(12):
            st, js, raw, hdrs = gw.chat({"model": "lat", "messages": [{"role": "user", "content": "x"}]})
            check(st == 200, raw)
            served.append(re.search(r"channel=(\w+)", hdrs.get("X-Longmen-Route", "")).group(1))
        check("pricey" not in served, "over max_price: %s" % served)
        check(served[-6:] == ["fast"] * 6, "the fast channel wins once measured: %s" % served)
        prices = set(re.findall(r"usage-price (in=\d+ out=\d+ req=\d+)", gw.logtext()))
        check("in=1000000 out=1000000 req=0" in prices, "on_usage saw the channel's prices: %s" % prices)
    finally:
        gw.stop()


def test_upstream_credentials_hidden_from_scripts():
    """up.headers and up.url show credentials as [redacted]: a script that
    logs up leaks no provider key; the upstream still gets the real key, a
    header handed back as [redacted] keeps it, and one a script sets wins."""
    secret = "sk-provider-secret-0123456789abcdef"
    d = tempfile.mkdtemp(prefix="lm-lua-")
    path = write(d, "s.lua", r'''
function on_upstream_request(req, up)
  local names = {}
  for k, v in pairs(up.headers) do names[#names + 1] = k .. "=" .. v end
  table.sort(names)
  lm.log("warn", "up " .. up.url .. " " .. table.concat(names, ";"))
  up.headers["X-Seen-Auth"] = up.headers["Authorization"] or "none"
  if req.messages[1].content == "override" then up.headers["Authorization"] = "Bearer script-set" end
end
''')
    gw = Gateway(extra="script s %s\n" % path, env={"LMT_UP_SECRET": secret}, channels="""
channel a {
    plugin openai
    base_url %s/a
    api_key env:LMT_UP_SECRET
    models m
}""" % mock.url)
    try:
        st, js, raw, _ = gw.chat(body("hi"))
        check(st == 200, raw)
        h = mock.requests[-1]["headers"]
        check(h.get("Authorization") == "Bearer " + secret, "upstream got %r" % h.get("Authorization"))
        check(h.get("X-Seen-Auth") == "[redacted]", "the script saw %r" % h.get("X-Seen-Auth"))
        st, js, raw, _ = gw.chat(body("override"))
        check(st == 200 and mock.requests[-1]["headers"].get("Authorization") == "Bearer script-set",
              "a header the script sets wins: %r" % mock.requests[-1]["headers"].get("Authorization"))
        log = gw.logtext()
        check("Authorization=[redacted]" in log, "the script's log line: %s" % log[-800:])
        check(secret not in log, "the provider key reached the log")
    finally:
        gw.stop()


run([test_route_latency_sees_live_figures_and_usage_sees_prices, test_stages_through_the_gateway, test_noop_script_changes_nothing, test_reading_the_request_keeps_it,
     test_changing_messages_turns_raw_passthrough_off, test_on_event_rewrites_only_what_it_touches,
     test_pii_mask_without_pii_keeps_the_request, test_script_reload_under_load_never_mixes, test_reject_error_and_limits, test_fallback_and_on_error_retry,
     test_reload_with_broken_script_keeps_old, test_shipped_scripts_load, test_pii_mask_script_end_to_end,
     test_pii_mask_long_prompts_and_every_field, test_upstream_credentials_hidden_from_scripts])
