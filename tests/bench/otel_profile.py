#!/usr/bin/env python3
"""otel_profile.py - what OpenTelemetry tracing (docs/observability.md)
costs per request, in instructions (valgrind --tool=callgrind): counts do
not move when the machine is busy.

The real binary runs under callgrind with one worker against lua_profile.py's
mock upstream (its fixed chat completion, and a 20-chunk SSE stream), once
per variant:
  off  no otel_endpoint: the baseline (the trace hooks are branches)
  on   otel_endpoint to a live mock OTLP collector on loopback, every
       request sampled: ids, a traceparent upstream, one record per request
       queued and serialised (on the exporter thread)
After --warmup requests the counters are zeroed, --requests requests are
sent one after another on one keep-alive connection; the script then waits
for the exporter's next flush (1 s) so its serialisation and POSTs are in
the count, and dumps the counters. Printed: instructions per request for
every thread together, for the worker thread alone and for the exporter's
thread alone (--separate-threads), per variant and mode (plain and stream),
and the difference.

  tests/bench/otel_profile.py                  # plain and stream
  tests/bench/otel_profile.py --mode plain --requests 100 --top 20
Stdlib only; needs valgrind."""
import argparse
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
sys.path.insert(0, HERE)
import lua_profile as lp  # noqa: E402  the mock upstream, bodies and callgrind helpers


class Collector:
    """A mock OTLP/HTTP collector: accepts every export, counts them."""

    def __init__(self):
        self.posts = 0
        col = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                col.posts += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/v1/traces" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def profile(args, upstream, collector, variant, stream, tmp):
    port = lp.free_port()
    conf = lp.write_conf(tmp, port, upstream.url, "none")
    if variant == "on":
        with open(conf, "a") as f:
            f.write("otel_endpoint %s\notel_timeout 10s\n" % collector.url)
    out = os.path.join(tmp, "cg.%s.%s" % (variant, "stream" if stream else "plain"))
    log = open(out + ".log", "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                             "--callgrind-out-file=" + out, args.bin, "-c", conf],
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
        lp.send(port, stream, args.warmup)
        time.sleep(args.settle)  # the warm-up's spans leave before the count starts
        lp.callgrind_control(proc.pid, "-z")
        lp.send(port, stream, args.requests)
        time.sleep(args.settle)  # the exporter's next flush is in the count
        lp.callgrind_control(proc.pid, "-d")
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    # one dump per thread (cg.X.pid.1-NN): the exporter is the one that ran
    # exporter_main, the worker the busiest of the others
    dumps = sorted(f for f in os.listdir(tmp) if f.startswith(os.path.basename(out) + ".")
                   and re.search(r"\.\d+-\d+$", f))
    total, worker, exporter, wdump, edump = 0, 0, 0, None, None
    for name in dumps:
        with open(os.path.join(tmp, name)) as f:
            text = f.read()
        m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        n = int(m.group(1)) if m else 0
        total += n
        if re.search(r"^fn=\(\d+\) exporter_main", text, re.M):
            exporter, edump = exporter + n, os.path.join(tmp, name)
        elif n > worker:  # the busiest other thread: the only worker (workers 1)
            worker, wdump = n, os.path.join(tmp, name)
    return {"total": total, "worker": worker, "exporter": exporter}, (wdump, edump)


def self_costs(dump):
    """{function: self instructions} of one callgrind dump."""
    r = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=no", "--threshold=100",
                        dump], capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(.*?)(?: \[.*\])?$", line)
        if m and "PROGRAM TOTALS" not in m.group(2):
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return out


def diff(off_dump, on_dump, n, requests):
    """The n functions whose self cost grew most with tracing on, per request."""
    a, b = self_costs(off_dump), self_costs(on_dump)
    rows = sorted(((b.get(k, 0) - a.get(k, 0)) / requests, k) for k in set(a) | set(b))
    return "\n".join("%8.0f  %s" % (d, k) for d, k in reversed(rows[-n:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--mode", choices=["plain", "stream", "both"], default="both")
    ap.add_argument("--top", type=int, default=0, help="show the N top functions with tracing on")
    ap.add_argument("--keep", help="copy the callgrind dumps to this folder")
    ap.add_argument("--diff", type=int, default=0,
                    help="show the N functions of the worker thread that grew most")
    ap.add_argument("--settle", type=float, default=2.5)
    ap.add_argument("--bin", default=os.path.join(lp.ROOT, "build", "longmen"))
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind not found (apt-get install valgrind)")
    modes = [False, True] if args.mode == "both" else [args.mode == "stream"]
    upstream = lp.Upstream()
    collector = Collector()
    tmp = tempfile.mkdtemp(prefix="lm-otelprof-")
    print("| mode | thread | off instr/request | on instr/request | on - off |")
    print("|---|---|---:|---:|---:|")
    try:
        for stream in modes:
            ir, dumps = {}, {}
            for v in ("off", "on"):
                ir[v], dumps[v] = profile(args, upstream, collector, v, stream, tmp)
            for th in ("total", "worker", "exporter"):
                off, on = ir["off"][th] / args.requests, ir["on"][th] / args.requests
                print("| %s | %s | %d | %d | %s |" % (
                    "stream" if stream else "plain", th, off, on,
                    "%+.1f%%" % (100.0 * (on - off) / off) if th != "exporter" else "%+d" % (on - off)),
                    flush=True)
            if args.diff:
                print("\nworker thread, instructions/request added by tracing (self):\n%s\n"
                      % diff(dumps["off"][0], dumps["on"][0], args.diff, args.requests))
            if args.top:
                print("\ntop functions (self), worker thread, on:\n%s\n"
                      % lp.top(dumps["on"][0], args.top))
                if dumps["on"][1]:
                    print("top functions (self), exporter thread, on:\n%s\n"
                          % lp.top(dumps["on"][1], args.top))
        if collector.posts == 0:
            sys.exit("the collector received nothing: tracing was not on")
    finally:
        if args.keep:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
