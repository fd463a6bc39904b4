"""Flow control and lifecycle: a slow reader pauses the upstream instead of
buffering without bound; SIGTERM drains in-flight streams."""
import json
import os
import socket
import threading
import time

from lib import KEY, Gateway, Mock, check, chunk, run

mock = Mock()
state = {"written": 0}


def big_stream(h, b):
    """~16 MiB of SSE as fast as the socket takes it; counts bytes written."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    payload = "x" * 4000
    ev = ("data: %s\n\n" % json.dumps(chunk(payload))).encode()
    frame = b"%x\r\n%s\r\n" % (len(ev), ev)
    state["written"] = 0
    for _ in range(4000):
        h.wfile.write(frame)
        state["written"] += len(ev)
    h.wfile.write(b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n"))
    h.wfile.write(b"0\r\n\r\n")
    h.wfile.flush()


def slow_stream(h, b):
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for i in range(10):
        ev = ("data: %s\n\n" % json.dumps(chunk("w%d " % i))).encode()
        h.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        h.wfile.flush()
        time.sleep(0.15)
    ev = b"data: [DONE]\n\n"
    h.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ev), ev))
    h.wfile.flush()


mock.routes["/v1/big/chat/completions"] = big_stream
mock.routes["/v1/slow/chat/completions"] = slow_stream

CHANNELS = """
channel big {
    plugin openai
    base_url %s/v1/big
    models big
}
channel slow {
    plugin openai
    base_url %s/v1/slow
    models slow
}
""" % (mock.url, mock.url)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_stream(port, model):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": "go"}]}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
              b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (KEY.encode(), len(body), body))
    return s


def read_all(s, timeout=30):
    s.settimeout(timeout)
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        got = s.recv(1 << 20)
        if not got:
            break
        data += got
    return data


def test_slow_reader_pauses_upstream():
    gw = Gateway(channels=CHANNELS, extra="stream_buffer 256k\n", workers=1)
    try:
        base = rss_kib(gw.proc.pid)
        s = open_stream(gw.port, "big")
        first = s.recv(4096)  # headers and a first chunk, then stop reading
        time.sleep(1.5)
        written = state["written"]
        grown = rss_kib(gw.proc.pid) - base
        check(written < 8 * 1024 * 1024,
              "upstream was not paused: %d bytes written while the client read nothing" % written)
        # ASan's quarantine and shadow memory make RSS meaningless there.
        check(os.environ.get("LM_SANITIZER") or grown < 8 * 1024,
              "gateway RSS grew %d KiB while the client stalled" % grown)
        data = first + read_all(s)
        s.close()
        # 4000 events, the finish the kernel adds (the upstream sent none), [DONE]
        check(data.count(b"data: ") == 4002 and b"data: [DONE]" in data,
              "after resuming, every event arrives (%d)" % data.count(b"data: "))
        check(data.count(b'"finish_reason":"stop"') == 1, "one synthesised finish")
    finally:
        gw.stop()


def test_sigterm_drains_inflight_streams():
    gw = Gateway(channels=CHANNELS, extra="drain_timeout 10s\n")
    results = []

    def client():
        s = open_stream(gw.port, "slow")
        results.append(read_all(s))
        s.close()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    gw.proc.send_signal(15)
    time.sleep(0.3)
    refused = False
    try:
        socket.create_connection(("127.0.0.1", gw.port), timeout=1).close()
    except OSError:
        refused = True
    for t in threads:
        t.join(20)
    try:  # the drain ends the process by itself; a second signal would skip it
        gw.proc.wait(15)
    except Exception:  # noqa: BLE001
        pass
    rc = gw.stop()
    check(refused, "new connections are refused once draining")
    check(len(results) == 3, "all streams returned")
    for data in results:
        check(data.count(b"data: [DONE]") == 1 and b"w9 " in data, "stream finished: %r" % data[-200:])
    check(rc == 0, "exit code %s" % rc)


def test_drain_timeout_bounds_shutdown():
    gw = Gateway(channels=CHANNELS, extra="drain_timeout 200ms\n")
    s = open_stream(gw.port, "slow")
    s.recv(4096)
    t = time.time()
    gw.proc.send_signal(15)
    gw.proc.wait(10)
    s.settimeout(5)
    rest = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            rest += d
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    took = time.time() - t
    # the stream needs 1.5 s to reach w9: a drain that waited for it would deliver w9
    check(b"w9 " not in rest, "the 200 ms drain cut the slow stream: %r" % rest[-200:])
    check(took < 9, "stopped %.2fs after SIGTERM with a 200 ms drain" % took)
    gw.stop()


run([test_slow_reader_pauses_upstream, test_sigterm_drains_inflight_streams,
     test_drain_timeout_bounds_shutdown])
