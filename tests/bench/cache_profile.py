#!/usr/bin/env python3
"""cache_profile.py - what the response cache (docs/cache.md) costs and
saves per request, in instructions (valgrind --tool=callgrind): counts do
not move when the machine is busy.

The real binary runs under callgrind with one worker against lua_profile.py's
mock upstream (its fixed chat completion, and a 20-chunk SSE stream), once
per variant:
  off   no cache rule: every request goes upstream (the baseline)
  miss  `cache on`: every request differs (a counter in the user message),
        so each is looked up, sent upstream and stored
  hit   `cache on`: the same request each time, answered from the cache
After --warmup requests the counters are zeroed, --requests requests are
sent one after another on one keep-alive connection, and the counters are
dumped. Printed: instructions per request per variant and mode (plain and
stream). `cache_sampled on` is set because the shared bench body samples
at temperature 0.2.

  tests/bench/cache_profile.py                 # plain and stream
  tests/bench/cache_profile.py --mode plain --requests 100 --top 20
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

CACHE = "cache on models gpt-4o-mini\ncache_sampled on\n"


def write_conf(tmp, port, upstream, variant):
    path = lp.write_conf(tmp, port, upstream, "none")
    with open(path, "a") as f:
        f.write(CACHE if variant != "off" else "")
    return path


def body(stream, i, variant):
    b = json.loads(lp.request_body(stream))
    if variant != "hit":
        b["messages"][-1]["content"] += " (request %d)" % i
    return json.dumps(b).encode()


def send(port, stream, n, variant, start):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    seen = {}
    for i in range(start, start + n):
        c.request("POST", "/v1/chat/completions", body(stream, i, variant),
                  {"Content-Type": "application/json", "Authorization": "Bearer " + lp.KEY})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("status %d: %r" % (r.status, data[:300]))
        h = r.getheader("X-Longmen-Cache") or "-"
        seen[h] = seen.get(h, 0) + 1
    c.close()
    return seen


def profile(args, upstream, variant, stream, tmp):
    port = lp.free_port()
    conf = write_conf(tmp, port, upstream.url, variant)
    out = os.path.join(tmp, "cg.%s.%s" % (variant, "stream" if stream else "plain"))
    log = open(out + ".log", "w")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                             args.bin, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
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
        send(port, stream, args.warmup, variant, 0)
        lp.callgrind_control(proc.pid, "-z")
        seen = send(port, stream, args.requests, variant, args.warmup)
        lp.callgrind_control(proc.pid, "-d")
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
    want = {"off": "-", "miss": "miss", "hit": "hit"}[variant]
    if seen.get(want) != args.requests:
        raise RuntimeError("%s: expected every answer to say %s, got %s" % (variant, want, seen))
    dumps = sorted(f for f in os.listdir(tmp) if f.startswith(os.path.basename(out) + ".")
                   and re.search(r"\.\d+$", f))
    dump = os.path.join(tmp, dumps[0])
    with open(dump) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    return int(m.group(1)), dump


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--mode", choices=["plain", "stream", "both"], default="both")
    ap.add_argument("--top", type=int, default=0, help="show the N top functions of a miss and a hit")
    ap.add_argument("--bin", default=os.path.join(lp.ROOT, "build", "longmen"))
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind not found (apt-get install valgrind)")
    modes = [False, True] if args.mode == "both" else [args.mode == "stream"]
    upstream = lp.Upstream()
    tmp = tempfile.mkdtemp(prefix="lm-cacheprof-")
    print("| mode | off (no cache) instr/request | miss instr/request | hit instr/request |")
    print("|---|---:|---:|---:|")
    try:
        for stream in modes:
            ir, dumps = {}, {}
            for v in ("off", "miss", "hit"):
                ir[v], dumps[v] = profile(args, upstream, v, stream, tmp)
            print("| %s | %d | %d | %d |" % ("stream" if stream else "plain",
                                             ir["off"] / args.requests, ir["miss"] / args.requests,
                                             ir["hit"] / args.requests), flush=True)
            for v in ("miss", "hit") if args.top else ():
                print("\ntop functions (self), %s:\n%s\n" % (v, lp.top(dumps[v], args.top)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
