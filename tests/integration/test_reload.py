"""Hot reload (SIGHUP / longmen -s reload): streams in flight finish on the
generation they started with, new requests get the new plugin, the old
plugin's fini runs once after its last request, broken plugins are refused
with the old generation serving, and reloads under load fail nothing."""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

from lib import BUILD, KEY, PLUGIN_DIR, TEST_PLUGIN_DIR, Gateway, Mock, check, chunk, content_of, json_reply, run

mock = Mock()


def slow_stream(h, b):
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for i in range(8):
        ev = ("data: %s\n\n" % json.dumps(chunk("t%d" % i))).encode()
        h.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        h.wfile.flush()
        time.sleep(0.1)
    ev = b"data: [DONE]\n\n"
    h.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev))
    h.wfile.flush()


mock.routes["/v1/chat/completions"] = slow_stream
mock.routes["/plain/chat/completions"] = lambda h, b: json_reply(h, 200, {
    "id": "p", "object": "chat.completion", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def install(src, plugin_dir, name="verplug"):
    """Deploy like an operator: write a new file, then rename it into place."""
    tmp = os.path.join(plugin_dir, ".%s.so.tmp" % name)
    shutil.copy(os.path.join(TEST_PLUGIN_DIR, src), tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, os.path.join(plugin_dir, name + ".so"))


def setup_gateway(extra_channels=""):
    d = tempfile.mkdtemp(prefix="lm-reload-")
    os.chmod(d, 0o755)
    install("verplug_v1.so", d)
    fini_log = os.path.join(d, "fini.log")
    pid_file = os.path.join(d, "longmen.pid")
    gw = Gateway(plugin_dir=d, extra="pid_file %s\n" % pid_file, channels="""
channel v {
    plugin verplug
    base_url %s/v1
    fini_log %s
    models vm
}
channel p {
    plugin verplug
    base_url %s/plain
    models pm
}
%s""" % (mock.url, fini_log, mock.url, extra_channels))
    return gw, d, fini_log


def stream_body():
    return {"model": "vm", "stream": True, "messages": [{"role": "user", "content": "x"}]}


def reload_cmd(gw):
    p = subprocess.run([os.path.join(BUILD, "longmen"), "-s", "reload", "-c", gw.conf],
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 0, "longmen -s reload: %s" % (p.stdout + p.stderr))


def wait_log(gw, text, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in gw.logtext():
            return True
        time.sleep(0.05)
    return False


def test_reload_midstream_keeps_old_generation():
    gw, d, fini_log = setup_gateway()
    results, done_at = [], []
    try:
        def client():
            st, ev, raw, _ = gw.stream(stream_body(), timeout=20)
            results.append((st, ev))
            done_at.append(time.time())

        base = len(mock.requests)
        threads = [threading.Thread(target=client) for _ in range(100)]
        for t in threads:
            t.start()
        deadline = time.time() + 10  # reload once every stream reached the upstream on v1
        while time.time() < deadline and len(mock.requests) < base + 100:
            time.sleep(0.01)
        install("verplug_v2.so", d)
        reload_cmd(gw)
        check(wait_log(gw, "reloaded: generation 2"), "no reload in log: " + gw.logtext()[-1500:])
        st, ev, raw, _ = gw.stream(stream_body())
        check(st == 200 and content_of(ev).startswith("v2:t0"), "new request on v2: %r" % content_of(ev))
        for t in threads:
            t.join(30)
        check(len(results) == 100, "all streams returned")
        for st, ev in results:
            text = content_of(ev)
            check(st == 200 and ev[-1] == "[DONE]" and "error" not in "".join(ev), "clean stream")
            check(text == "".join("v1:t%d" % i for i in range(8)), "old stream stayed on v1: %r" % text)
        check(wait_log(gw, "generation 1 retired"), "generation 1 not retired")
        with open(fini_log) as f:
            lines = [l.split() for l in f.read().splitlines()]
        v1 = [l for l in lines if l[1] == "v1"]
        check(len(v1) == 1, "fini of v1 ran once: %s" % lines)
        check(int(v1[0][2]) / 1000.0 >= max(done_at) - 0.05,
              "fini ran after the last v1 stream (%.3f < %.3f)" % (int(v1[0][2]) / 1000.0, max(done_at)))
        check(not any(l[1] == "v2" for l in lines), "v2 still loaded: %s" % lines)
    finally:
        gw.stop()
    with open(fini_log) as f:
        check(sum(1 for l in f if l.startswith("fini v2")) == 1, "v2 fini once at exit")


def test_broken_reloads_keep_serving():
    gw, d, fini_log = setup_gateway()
    try:
        cases = [("bad_abi.so", "built for ABI 2.0"), ("no_entry.so", "no entry point"),
                 ("fails_init.so", 'unknown setting "base_url" for plugin fails_init'), ("no_stream_cb.so", "lacks parse_event")]
        for n, (src, why) in enumerate(cases):
            install(src, d)
            gw.proc.send_signal(1)
            check(wait_log(gw, why), "%s: no refusal in log" % src)
            st, ev, raw, _ = gw.stream(stream_body())
            check(st == 200 and content_of(ev).startswith("v1:"), "%s: old generation serves" % src)
        os.chmod(os.path.join(d, "verplug.so"), 0o666)  # world-writable
        install("verplug_v2.so", d)
        os.chmod(os.path.join(d, "verplug.so"), 0o666)
        gw.proc.send_signal(1)
        check(wait_log(gw, "world-writable"), "world-writable refused")
        with open(gw.conf, "a") as f:
            f.write("bogus_directive 1\n")
        gw.proc.send_signal(1)
        check(wait_log(gw, "unknown directive \"bogus_directive\""), "config error reported")
        st, ev, raw, _ = gw.stream(stream_body())
        check(st == 200 and content_of(ev).startswith("v1:"), "still generation 1")
        check("reloaded: generation" not in gw.logtext(), "no generation was swapped in")
    finally:
        gw.stop()


def test_add_and_remove_channel_by_reload():
    gw, d, fini_log = setup_gateway()
    try:
        body = {"model": "mock-x", "messages": [{"role": "user", "content": "hi"}]}
        check(gw.chat(body)[0] == 404, "not served yet")
        shutil.copy(os.path.join(PLUGIN_DIR, "mock.so"), os.path.join(d, "mock.so"))
        with open(gw.conf, "a") as f:
            f.write("channel m {\n plugin mock\n models mock-x\n}\n")
        gw.proc.send_signal(1)
        check(wait_log(gw, "reloaded: generation 2"), "reload")
        st, js, raw, _ = gw.chat(body)
        check(st == 200 and "Hello from Longmen" in raw.decode(), raw)
        with open(gw.conf) as f:
            text = f.read()
        with open(gw.conf, "w") as f:
            f.write(text.replace("channel m {\n plugin mock\n models mock-x\n}\n", ""))
        gw.proc.send_signal(1)
        check(wait_log(gw, "reloaded: generation 3"), "reload 3")
        check(gw.chat(body)[0] == 404, "removed")
    finally:
        gw.stop()


def test_reload_every_second_under_load():
    duration = float(os.environ.get("LM_PL3_SECONDS", "60"))
    gw, d, fini_log = setup_gateway()
    stop = time.time() + duration
    stats = {"ok": 0, "fail": [], "reloads": 0}
    lock = threading.Lock()

    def client(stream):
        while time.time() < stop:
            try:
                if stream:
                    st, ev, raw, _ = gw.stream(stream_body(), timeout=20)
                    good = st == 200 and ev and ev[-1] == "[DONE]" and "error" not in raw.decode()
                    text = content_of(ev)
                    # one generation per request: every delta carries the same tag
                    good = good and text in ["".join("v%d:t%d" % (v, i) for i in range(8))
                                             for v in (1, 2)]
                else:
                    st, js, raw, _ = gw.chat({"model": "pm", "messages": [{"role": "user", "content": "x"}]},
                                             timeout=20)
                    good = st == 200 and js["choices"][0]["message"]["content"] in ("v1:ok", "v2:ok")
                with lock:
                    if good:
                        stats["ok"] += 1
                    else:
                        stats["fail"].append(raw[:300] if not stream else raw[-300:])
            except Exception as e:  # noqa: BLE001
                with lock:
                    stats["fail"].append(repr(e))

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        version = 1
        while time.time() < stop - 0.5:
            time.sleep(1)
            version = 3 - version
            install("verplug_v%d.so" % version, d)
            gw.proc.send_signal(1)
            stats["reloads"] += 1
        for t in threads:
            t.join(30)
    finally:
        rc = gw.stop()
    check(not stats["fail"], "%d failed requests, first: %s" % (len(stats["fail"]), stats["fail"][:2]))
    check(stats["ok"] > 50 and stats["reloads"] >= duration - 2,
          "ok=%d reloads=%d" % (stats["ok"], stats["reloads"]))
    check(rc == 0, "exit %s" % rc)


def test_signal_without_provider_keys():
    """-s reload and -s stop need only pid_file: a shell without the env:
    provider keys the config names can still signal the gateway."""
    d = tempfile.mkdtemp(prefix="lm-reload-")
    pid_file = os.path.join(d, "longmen.pid")
    gw = Gateway(extra="pid_file %s\n" % pid_file, env={"LM_TEST_UNSET_VAR": "sk-upstream-secret"},
                 channels="""
channel o {
    plugin openai
    base_url %s/plain
    api_key env:LM_TEST_UNSET_VAR
    models om
}
""" % mock.url)
    try:
        env = {k: v for k, v in os.environ.items() if k != "LM_TEST_UNSET_VAR"}
        p = subprocess.run([os.path.join(BUILD, "longmen"), "-s", "reload", "-c", gw.conf],
                           capture_output=True, text=True, timeout=10, env=env)
        check(p.returncode == 0, "longmen -s reload without the key: %s" % (p.stdout + p.stderr))
        check(wait_log(gw, "reloaded: generation 2"), "no reload in log: " + gw.logtext()[-1500:])
        st, js, raw, _ = gw.chat({"model": "om", "messages": [{"role": "user", "content": "x"}]})
        check(st == 200, "after reload: %s %r" % (st, raw[:300]))
        # -t still resolves: a config check must notice the missing key.
        p = subprocess.run([os.path.join(BUILD, "longmen"), "-t", "-c", gw.conf],
                           capture_output=True, text=True, timeout=10, env=env)
        check(p.returncode != 0 and "LM_TEST_UNSET_VAR" in p.stderr, "-t: %s" % (p.stdout + p.stderr))
        p = subprocess.run([os.path.join(BUILD, "longmen"), "-s", "stop", "-c", gw.conf],
                           capture_output=True, text=True, timeout=10, env=env)
        check(p.returncode == 0, "longmen -s stop without the key: %s" % (p.stdout + p.stderr))
        gw.proc.wait(15)
        check(gw.proc.returncode == 0, "exit %s" % gw.proc.returncode)
    finally:
        gw.stop()


run([test_reload_midstream_keeps_old_generation, test_broken_reloads_keep_serving,
     test_add_and_remove_channel_by_reload, test_reload_every_second_under_load,
     test_signal_without_provider_keys])
