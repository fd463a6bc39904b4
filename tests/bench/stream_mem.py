#!/usr/bin/env python3
"""Memory per open idle stream: the gateway's VmRSS growth per SSE stream
held open, for make bench (issue #15: goal <= 64 KiB per stream).

The mock upstream (tests/bench/peers/mock, nginx + echo) answers
/hold/v1/chat/completions with the SSE head and one chunk, then holds the
stream for an hour. The gateway (build/longmen, config from
tests/bench/conf.sh) relays to it. After a few streams opened and closed
(warm-up), VmRSS is read ("before"); then --streams client connections each
send one streaming request and wait for the first chunk; once all have it,
VmRSS is read again. Result: (after - before) / streams, in KiB.

  tests/bench/stream_mem.py                     # 1000 streams
  tests/bench/stream_mem.py --streams 200 --out /tmp/mem.md
Stdlib only; needs nginx with the echo module (tests/bench/peers/setup-peers.sh).
Every process started here is stopped by PID."""
import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KEY = "sk-bench-0000000000000000000000000000000000000000"
BODY = (b'{"model":"gpt-4o-mini","stream":true,"messages":'
        b'[{"role":"user","content":"hold this stream open"}]}')


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def wait_port(proc, port, what):
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited during start-up" % what)
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("%s did not listen on %d within 15 s" % (what, port))


def open_streams(port, n, timeout):
    """n connections, each with one streaming request, until every one has
    received its first SSE chunk. Returns the open sockets (caller closes)."""
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Authorization: Bearer " + KEY.encode() + b"\r\n"
           b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
           b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY
    sel = selectors.DefaultSelector()
    socks, got = [], {}
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(req)
            s.setblocking(False)
            socks.append(s)
            got[s] = b""
            sel.register(s, selectors.EVENT_READ)
        pending = set(socks)
        deadline = time.time() + timeout
        while pending and time.time() < deadline:
            for k, _ in sel.select(0.5):
                data = k.fileobj.recv(65536)
                if not data:
                    raise RuntimeError("the gateway closed a stream: %r" % got[k.fileobj][:300])
                got[k.fileobj] += data
                if b"data: " in got[k.fileobj]:
                    if not got[k.fileobj].startswith(b"HTTP/1.1 200"):
                        raise RuntimeError("not 200: %r" % got[k.fileobj][:300])
                    pending.discard(k.fileobj)
                    sel.unregister(k.fileobj)
        if pending:
            raise RuntimeError("%d of %d streams had no first chunk after %d s"
                               % (len(pending), n, timeout))
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "longmen"))
    ap.add_argument("--plugins", default=os.path.join(ROOT, "build", "plugins"))
    ap.add_argument("--out", help="also write the result (markdown) here")
    args = ap.parse_args()
    # Client sockets here, client + upstream sockets in the gateway.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.streams + 256
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit("stream_mem: ulimit -n is %d (hard %d); %d streams need %d"
                     % (soft, hard, args.streams, need))
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # inherited by the gateway
    tmp = tempfile.mkdtemp(prefix="lm-stream-mem-")
    mock_port, gw_port = free_port(), free_port()
    env = dict(os.environ, RUN_DIR=tmp, MOCK_PORT=str(mock_port), MOCK_WORKERS="1")
    mock_conf = os.path.join(tmp, "mock.conf")
    with open(mock_conf, "w") as f:
        subprocess.run([os.path.join(HERE, "peers", "mock", "gen-nginx-mock.sh")],
                       stdout=f, env=env, check=True)
    env = dict(os.environ, BENCH_PORT=str(gw_port), BENCH_PLUGIN_DIR=args.plugins,
               BENCH_UPSTREAM="http://127.0.0.1:%d/hold/v1" % mock_port)
    for k in ("BENCH_LUA", "BENCH_CACHE", "BENCH_OTEL", "BENCH_PLUGIN", "BENCH_DATA_DIR"):
        env.pop(k, None)
    gw_conf = os.path.join(tmp, "gateway.conf")
    with open(gw_conf, "w") as f:
        subprocess.run([os.path.join(HERE, "conf.sh")], stdout=f, env=env, check=True)
    procs = []
    try:
        mock = subprocess.Popen(["nginx", "-c", mock_conf], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(tmp, "mock.out"), "w"))
        procs.append(mock)
        wait_port(mock, mock_port, "mock")
        gw = subprocess.Popen([args.bin, "-c", gw_conf], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(tmp, "gateway.out"), "w"))
        procs.append(gw)
        wait_port(gw, gw_port, "gateway")
        for _ in range(2):  # warm-up: pools, thread arenas, first-use allocations
            for s in open_streams(gw_port, 32, 30):
                s.close()
            time.sleep(0.5)
        before = rss_kb(gw.pid)
        # In batches: a burst of a thousand connects at once measures the
        # accept path, not the memory of streams that are open.
        socks = []
        try:
            while len(socks) < args.streams:
                socks += open_streams(gw_port, min(100, args.streams - len(socks)), 60)
        except BaseException:
            for s in socks:
                s.close()
            raise
        time.sleep(1)
        after = rss_kb(gw.pid)
        if gw.poll() is not None:
            raise RuntimeError("the gateway exited")
        for s in socks:
            s.close()
        per = (after - before) / args.streams
        text = ("memory per open idle stream: %.1f KiB (VmRSS %.1f MiB before, %.1f MiB with "
                "%d open streams)\n" % (per, before / 1024, after / 1024, args.streams))
        sys.stdout.write(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write("%d\t%d\t%d\t%.1f\n" % (args.streams, before, after, per))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
