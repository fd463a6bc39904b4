#!/usr/bin/env python3
"""path_profile.py - what one request costs on the gateway's own path, in
instructions (valgrind --tool=callgrind): counts do not move when the
machine is busy, so a change to the relay path can be measured on a shared
box where `make bench` cannot.

The real binary runs under callgrind with one worker against lua_profile.py's
loopback mock upstream, once per scenario:
  plain       non-stream chat completion through the openai plugin
  stream      the same with stream:true and include_usage (20 content chunks)
  governance  plain, with data_dir, prices and a virtual key with rpm/tpm/quota
              (key check, limits, reservation, ledger row per request)
  qwen        plain through the qwen plugin (DashScope-native, translated
              both ways) against a DashScope-shaped answer from the same mock
After --warmup requests the counters are zeroed, --requests requests are
sent one after another on one keep-alive connection, the counters are
dumped, and instructions per request are printed.

  tests/bench/path_profile.py                          # every scenario
  tests/bench/path_profile.py --scenario plain --top 25
  tests/bench/path_profile.py --scenario governance --threads   # worker and writer apart
Stdlib only; needs valgrind."""
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import lua_profile as lp  # noqa: E402  the mock upstream, bodies and callgrind helpers

SCENARIOS = ("plain", "stream", "governance", "qwen")
TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
QW_PATH = "/api/v1/services/aigc/text-generation/generation"
QW_ANSWER = json.dumps({
    "output": {"choices": [{"finish_reason": "stop", "message": {
        "role": "assistant", "content": json.loads(lp.COMPLETION)["choices"][0]["message"]
        ["content"]}}]},
    "usage": {"input_tokens": 245, "output_tokens": 52, "total_tokens": 297},
    "request_id": "req-mock-000000000001"}, separators=(",", ":")).encode()


def qwen_upstream():
    """The shared mock, answering DashScope's generation path too."""
    up = lp.Upstream()
    handler = up.server.RequestHandlerClass
    plain_post = handler.do_POST

    def do_post(self):
        if self.path != QW_PATH:
            return plain_post(self)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(QW_ANSWER)))
        self.end_headers()
        self.wfile.write(QW_ANSWER)
    handler.do_POST = do_post
    return up


def write_conf(tmp, port, admin_port, url, scenario):
    root = url[:-len("/v1")]
    path = os.path.join(tmp, "lm.%s.conf" % scenario)
    with open(path, "w") as f:
        f.write("listen 127.0.0.1:%d\nworkers 1\nplugin_dir %s\nlog_level warn\n"
                % (port, os.path.join(lp.ROOT, "build", "plugins")))
        if scenario == "governance":
            data = os.path.join(tmp, "data")
            os.makedirs(data, exist_ok=True)
            f.write("data_dir %s\nadmin_listen 127.0.0.1:%d\n" % (data, admin_port))
        else:
            f.write("key bench-wrk %s\n" % lp.KEY)
        if scenario == "qwen":
            f.write("channel mock-qwen {\n    plugin qwen\n    base_url %s\n"
                    "    api_key sk-qwen-bench\n    models gpt-4o-mini\n}\n" % root)
        else:
            f.write("channel mock-upstream {\n    plugin openai\n    base_url %s\n"
                    "    models gpt-4o-mini\n    price_input 1\n    price_output 1\n}\n" % url)
    return path


def admin_key(admin_port, logpath):
    deadline = time.time() + 60
    m = None
    while m is None and time.time() < deadline:
        with open(logpath) as f:
            m = TOKEN_RE.search(f.read())
        time.sleep(0.2)
    if m is None:
        raise RuntimeError("no admin token in " + logpath)
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=120)
    body = {"name": "bench", "quota": "1000", "rpm": 1000000, "tpm": 1000000000}
    c.request("POST", "/admin/keys", json.dumps(body),
              {"Authorization": "Bearer " + m.group(1), "Content-Type": "application/json"})
    r = c.getresponse()
    js = json.loads(r.read())
    if r.status != 201:
        raise RuntimeError("create key: %d %s" % (r.status, js))
    return js.get("secret") or js.get("key")


def send(port, key, stream, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = lp.request_body(stream)
    for _ in range(n):
        c.request("POST", "/v1/chat/completions", body,
                  {"Content-Type": "application/json", "Authorization": "Bearer " + key})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("status %d: %r" % (r.status, data[:300]))
    c.close()


def wait_port(proc, port, log):
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("longmen did not start: see " + log)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)


def profile(args, upstream, scenario, tmp):
    port, admin_port = lp.free_port(), lp.free_port()
    conf = write_conf(tmp, port, admin_port, upstream.url, scenario)
    out = os.path.join(tmp, "cg." + scenario)
    log = open(out + ".log", "w")
    vg = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
    if args.threads:
        vg.append("--separate-threads=yes")
    proc = subprocess.Popen(vg + [args.bin, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    stream = scenario == "stream"
    try:
        wait_port(proc, port, out + ".log")
        key = lp.KEY
        if scenario == "governance":
            wait_port(proc, admin_port, out + ".log")
            key = admin_key(admin_port, out + ".log")
        send(port, key, stream, args.warmup)
        lp.callgrind_control(proc.pid, "-z")
        send(port, key, stream, args.requests)
        lp.callgrind_control(proc.pid, "-d")
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    dumps = sorted(f for f in os.listdir(tmp) if f.startswith(os.path.basename(out) + ".")
                   and re.search(r"\.\d+(-\d+)?$", f))
    if not dumps:
        raise RuntimeError("no callgrind dump for " + out)
    counts = []  # one dump, or one per thread with --threads
    for d in dumps:
        with open(os.path.join(tmp, d)) as f:
            m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
        counts.append((int(m.group(1)), os.path.join(tmp, d)))
    if args.threads:
        print("  %s per thread: %s" % (scenario, ", ".join(
            "%s %d" % (d.rsplit(".", 1)[1], ir / args.requests) for ir, d in counts
            if ir >= args.requests)), flush=True)
    return sum(c for c, _ in counts), max(counts)[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", action="append", choices=SCENARIOS)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--top", type=int, default=0, help="show the N top functions (self)")
    ap.add_argument("--threads", action="store_true",
                    help="count each thread apart (the worker; with governance the store's "
                    "writer); --top then shows the busiest thread")
    ap.add_argument("--keep", help="copy the callgrind dumps to this folder")
    ap.add_argument("--bin", default=os.path.join(lp.ROOT, "build", "longmen"))
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind not found (apt-get install valgrind)")
    upstream = qwen_upstream()
    tmp = tempfile.mkdtemp(prefix="lm-pathprof-")
    print("| scenario | instr/request |")
    print("|---|---:|")
    try:
        for s in args.scenario or SCENARIOS:
            ir, dump = profile(args, upstream, s, tmp)
            print("| %s | %d |" % (s, ir / args.requests), flush=True)
            if args.top:
                print("\ntop functions (self), %s:\n%s\n" % (s, lp.top(dump, args.top)))
    finally:
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for f in os.listdir(tmp):
                if os.path.isfile(os.path.join(tmp, f)):
                        shutil.copy(os.path.join(tmp, f), args.keep)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
