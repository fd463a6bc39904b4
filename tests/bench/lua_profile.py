#!/usr/bin/env python3
"""lua_profile.py - what a Lua script costs per request and per stage call,
in instructions (valgrind --tool=callgrind), not wall-clock time: counts do
not move when the machine is busy.

For each variant (no script, then each --script) the real binary runs under
callgrind with one worker against a mock upstream in this process (the
shared bench's fixed chat completion, and a 20-chunk SSE stream). After
--warmup requests the counters are zeroed (callgrind_control -z), --requests
requests are sent one after another on one keep-alive connection, and the
counters are dumped (callgrind_control -d). Printed: instructions per
request for each variant, the script's extra instructions per request and
per stage call (stage calls per request as the noop script makes them:
on_request, on_route, on_upstream_request, on_response or one on_event per
event the client receives, on_usage; on_log runs only at log_level info),
and with --top the script variant's top functions (callgrind_annotate),
with --diff the functions whose own instructions per request grow most
from the variant without a script to the script's (where the script's
cost goes, without the kernel's own work that --top also lists).

  tests/bench/lua_profile.py                       # none vs noop, plain and stream
  tests/bench/lua_profile.py --script scripts/route_latency.lua+scripts/pii_mask.lua
  tests/bench/lua_profile.py --top 25 --keep /tmp/prof   # keep callgrind.out files
  tests/bench/lua_profile.py --diff 30 --bin build/longmen-slua   # Lua's own functions named

A script is "noop" (tests/bench/noop.lua), "empty" (a script that defines
no stage), "realistic" (scripts/route_latency.lua + scripts/pii_mask.lua, as
make bench), or paths joined with "+" (all loaded together); stage calls per
request are counted for the noop script's stages. Stdlib only.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
KEY = "sk-bench-0000000000000000000000000000000000000000"

COMPLETION = json.dumps({
    "id": "chatcmpl-mock000000000000000000000001", "object": "chat.completion",
    "created": 1700000000, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {
        "role": "assistant", "refusal": None,
        "content": "Here is a short answer from the mock upstream. It is a fixed response so "
                   "that every benchmark run sees the same bytes: an AI gateway should add as "
                   "little latency as possible, forward headers faithfully, and never buffer a "
                   "streaming response."},
        "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 245, "completion_tokens": 52, "total_tokens": 297,
              "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_mock0001"},
    separators=(",", ":")).encode()

SYSTEM = ("You are a careful assistant for an internal engineering team. Answer concisely, cite "
          "the relevant configuration keys when you mention them, prefer bullet lists for "
          "multi-step answers, and say so plainly when you do not know. Never invent "
          "command-line flags. Keep code blocks short and runnable.")
USER = ("Our service sits behind an AI gateway that speaks the OpenAI chat completions API. We "
        "see p99 latency spikes of about 40 ms during deploys, while p50 stays flat. The gateway "
        "keeps a pool of upstream connections, retries once on 502/503, and streams responses "
        "with server-sent events. Which metrics should we export to tell gateway overhead apart "
        "from provider latency, and how should we size the connection pool for roughly 2,000 "
        "requests per second with a mean upstream latency of 800 ms?")


def request_body(stream):
    b = {"model": "gpt-4o-mini",
         "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
         "temperature": 0.2, "top_p": 1, "max_tokens": 256, "n": 1, "user": "bench-user-0001",
         "metadata": {"team": "platform", "purpose": "gateway-benchmark"}, "stream": stream}
    if stream:
        b["stream_options"] = {"include_usage": True}
    return json.dumps(b).encode()


def sse_events(chunks=20):
    pre = ('{"id":"chatcmpl-mock000000000000000000000001","object":"chat.completion.chunk",'
           '"created":1700000000,"model":"gpt-4o-mini-2024-07-18",'
           '"system_fingerprint":"fp_mock0001","choices":[{"index":0,"delta":{')
    post = '},"logprobs":null,"finish_reason":null}]}'
    words = "the quick brown fox jumps over a lazy dog while gateways stream".split()
    ev = [pre + '"role":"assistant","content":"","refusal":null' + post]
    ev += [pre + '"content":"%s "' % words[i % len(words)] + post for i in range(chunks)]
    ev.append(pre[:pre.index('"choices"')] + '"choices":[{"index":0,"delta":{},"logprobs":null,'
              '"finish_reason":"stop"}],"usage":{"prompt_tokens":245,"completion_tokens":%d,'
              '"total_tokens":%d}}' % (chunks, 245 + chunks))
    return [("data: %s\n\n" % e).encode() for e in ev] + [b"data: [DONE]\n\n"]


class Upstream:
    """The mock upstream: a completion, or an SSE stream when asked."""

    def __init__(self):
        events = sse_events()

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if b'"stream":true' in body.replace(b" ", b""):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for e in events:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(e), e))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(COMPLETION)))
                self.end_headers()
                self.wfile.write(COMPLETION)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/v1" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def script_lines(script, tmp):
    if script == "none":
        return ""
    if script == "noop":
        return "script bench-noop %s\n" % os.path.join(HERE, "noop.lua")
    if script == "realistic":  # as tests/bench/conf.sh
        script = "scripts/route_latency.lua+scripts/pii_mask.lua"
        return "".join("script bench-lua%d %s\n" % (i, os.path.join(ROOT, p))
                       for i, p in enumerate(script.split("+")))
    if script == "empty":
        path = os.path.join(tmp, "empty.lua")
        with open(path, "w") as f:
            f.write("-- defines no stage\nlocal x = 1\n")
        return "script bench-empty %s\n" % path
    return "".join("script bench-lua%d %s\n" % (i, os.path.abspath(p))
                   for i, p in enumerate(script.split("+")))


def write_conf(tmp, port, upstream, script):
    path = os.path.join(tmp, "lm.conf")
    with open(path, "w") as f:
        # valgrind runs code ~50x slower: the wall-clock deadline would
        # stop a real script (the instruction budget still holds)
        f.write("listen 127.0.0.1:%d\nworkers 1\nplugin_dir %s\nlog_level warn\n"
                "lua_deadline 2000ms\n"
                "key bench-wrk %s\nchannel mock-upstream {\n    plugin openai\n"
                "    base_url %s\n    models gpt-4o-mini\n}\n%s"
                % (port, os.path.join(ROOT, "build", "plugins"), KEY, upstream,
                   script_lines(script, tmp)))
    return path


def send(port, stream, n):
    """n requests on one keep-alive connection; returns data events seen."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = request_body(stream)
    events = 0
    for _ in range(n):
        c.request("POST", "/v1/chat/completions", body,
                  {"Content-Type": "application/json", "Authorization": "Bearer " + KEY})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("status %d: %r" % (r.status, data[:300]))
        if stream:
            events += sum(1 for line in data.split(b"\n")
                          if line.startswith(b"data: ") and line != b"data: [DONE]")
    c.close()
    return events


def callgrind_control(pid, opt):
    subprocess.run(["callgrind_control", opt, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile(args, upstream, script, stream, tmp):
    """Instructions over args.requests requests, the dump file, events/req."""
    port = free_port()
    conf = write_conf(tmp, port, upstream.url, script)
    out = os.path.join(tmp, "cg.%s.%s" % (re.sub(r"\W", "_", script),
                                         "stream" if stream else "plain"))
    log = open(out + ".log", "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                             args.bin, "-c", conf],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("longmen did not start: see " + out + ".log")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        send(port, stream, args.warmup)
        callgrind_control(proc.pid, "-z")
        events = send(port, stream, args.requests)
        callgrind_control(proc.pid, "-d")
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    dumps = sorted(f for f in os.listdir(tmp) if f.startswith(os.path.basename(out) + ".")
                   and re.search(r"\.\d+$", f))
    if not dumps:
        raise RuntimeError("no callgrind dump for " + out)
    dump = os.path.join(tmp, dumps[0])
    with open(dump) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    return int(m.group(1)), dump, events / args.requests


def top(dump, n):
    r = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100",
                        dump], capture_output=True, text=True)
    rows = [l for l in r.stdout.splitlines() if re.match(r"^\s*[\d,]+ \(", l)]
    return "\n".join(rows[:n + 1])


def self_costs(dump):
    """Own instructions per function (callgrind_annotate, exclusive)."""
    r = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100",
                        dump], capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[.*\])?$", line)
        if m and "PROGRAM TOTALS" not in m.group(2):
            name = re.sub(r"^.*/", "", m.group(2))
            out[name] = out.get(name, 0) + int(m.group(1).replace(",", ""))
    return out


def diff(base_dump, dump, n, requests, total):
    a, b = self_costs(base_dump), self_costs(dump)
    # the thread's entry points show the whole run as their own: left out
    rows = sorted(((b.get(k, 0) - a.get(k, 0)) / requests, k) for k in set(a) | set(b)
                  if b.get(k, 0) < total * 0.9)
    return "\n".join("%9.0f  %s" % (d, k) for d, k in reversed(rows[-n:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--script", action="append",
                    help='"noop" (default), "empty", or PATH[+PATH...]; repeatable')
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--mode", choices=["plain", "stream", "both"], default="both")
    ap.add_argument("--top", type=int, default=0, help="show the N top functions")
    ap.add_argument("--diff", type=int, default=0,
                    help="show the N functions whose own instructions per request grow most "
                    "with the script")
    ap.add_argument("--keep", help="copy the callgrind dumps to this folder")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "longmen"),
                    help="the gateway binary (e.g. one linked with liblua5.4.a, whose "
                    "symbol table names Lua's internal functions)")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind not found (apt-get install valgrind)")
    scripts = args.script or ["noop"]
    modes = [False, True] if args.mode == "both" else [args.mode == "stream"]
    upstream = Upstream()
    tmp = tempfile.mkdtemp(prefix="lm-luaprof-")
    print("| mode | script | instr/request | extra instr/request | stage calls/request "
          "| extra instr/stage call |")
    print("|---|---|---:|---:|---:|---:|")
    try:
        run_all(args, scripts, modes, upstream, tmp)
    finally:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for f in os.listdir(tmp):
                shutil.copy(os.path.join(tmp, f), args.keep)
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(args, scripts, modes, upstream, tmp):
    for stream in modes:
        base, base_dump, _ = profile(args, upstream, "none", stream, tmp)
        mode = "stream" if stream else "plain"
        print("| %s | none | %d | - | - | - |" % (mode, base / args.requests), flush=True)
        for s in scripts:
            ir, dump, events = profile(args, upstream, s, stream, tmp)
            extra = (ir - base) / args.requests
            calls = 4 + events if stream else 5  # see the module comment
            print("| %s | %s | %d | %d | %d | %d |" % (mode, s, ir / args.requests, extra, calls,
                                                      extra / calls), flush=True)
            if args.top:
                print("\ntop functions (self), %s %s:\n%s\n" % (mode, s, top(dump, args.top)))
            if args.diff:
                print("\nextra instructions per request by function (self), %s %s:\n%s\n"
                      % (mode, s, diff(base_dump, dump, args.diff, args.requests, ir)))


if __name__ == "__main__":
    main()
