"""The HTTP front against hostile framing, on raw sockets (the hardening
issue's part 1): a request head parses the same whatever its TCP
segmentation (IN-12), head limits answer 414/431 and memory stays bounded
(IN-4), pipelined requests are answered in order, control bytes in a head
are 400 (IN-5), and a body over max_body_size is a 413 the client can read
(IN-3), with Expect: 100-continue too. The admin listener gets the same."""
import json
import os
import socket
import time

from lib import KEY, Gateway, Mock, check, chunk, run, sse_reply

MOCK = "channel m {\n plugin mock\n models mock-1 echo-*\n}\n"
AUTH = "Authorization: Bearer %s\r\n" % KEY


class Conn:
    """A client socket with a read buffer, so pipelined answers that arrive
    in one read are still taken one at a time."""

    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.settimeout(timeout)
        self.buf = b""

    def sendall(self, data):
        self.s.sendall(data)

    def close(self):
        self.s.close()

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def response(self):
        """One Content-Length framed response: (status, headers, body), or
        (0, {}, b"") when the connection closed or timed out first."""
        try:
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, rest = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            hdrs = {}
            for ln in lines[1:]:
                k, v = ln.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
            n = int(hdrs.get("content-length", "0"))
            self.buf = rest
            while len(self.buf) < n:
                self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
            return int(lines[0].split()[1]), hdrs, body
        except (socket.timeout, ConnectionResetError, EOFError):
            return 0, {}, b""


def conn(port, timeout=10):
    return Conn(port, timeout)


def read_response(c):
    return c.response()


def split_send(port, raw, cut):
    """raw in two writes, cut bytes first, a pause between so they reach
    the gateway as two reads; returns the first response."""
    s = conn(port)
    try:
        s.sendall(raw[:cut])
        time.sleep(0.004)
        s.sendall(raw[cut:])
        return read_response(s)
    finally:
        s.close()


def cuts(n):
    """Every offset of a short head; for long ones the first and last 64,
    every 61st, and both sides of the 4 KiB / 8 KiB buffer edges."""
    if n <= 256:
        return range(1, n)
    pts = set(range(1, 64)) | set(range(n - 64, n)) | set(range(64, n, 61))
    for edge in (4096, 8192):
        pts |= {c for c in range(edge - 4, edge + 5) if 0 < c < n}
    return sorted(pts)


def test_in12_split_heads_parse_the_same():
    gw = Gateway(MOCK)
    try:
        for idlen in (10, 4090, 7900):
            mid = "echo-" + "abcdefghij" * (idlen // 10)
            raw = ("GET /v1/models/%s HTTP/1.1\r\nHost: a\r\n%s\r\n" % (mid, AUTH)).encode()
            bad = []
            for c in cuts(len(raw)):
                st, _, body = split_send(gw.port, raw, c)
                got = json.loads(body).get("id") if st == 200 else None
                if st != 200 or got != mid:
                    bad.append((c, st, len(got or "")))
            check(not bad, "id of %d chars: %d cuts differ, e.g. %s" % (len(mid), len(bad), bad[:5]))
        body = b'{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}'
        raw = ("POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n%sContent-Type: application/json\r\n"
               "Content-Length: %d\r\n\r\n" % (AUTH, len(body))).encode() + body
        bad = [c for c in range(1, len(raw)) if split_send(gw.port, raw, c)[0] != 200]
        check(not bad, "chat split at %d of %d offsets is not served: %s" % (len(bad), len(raw), bad[:10]))
        for idlen in (8300, 16000):
            raw = ("GET /v1/models/echo-%s HTTP/1.1\r\nHost: a\r\n%s\r\n" % ("x" * idlen, AUTH)).encode()
            sts = {split_send(gw.port, raw, c)[0] for c in cuts(len(raw))[::7]}
            check(sts == {414}, "a %d-byte request line: %s" % (len(raw), sts))
        check(gw.proc.poll() is None, "gateway alive")
    finally:
        gw.stop()


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def test_in4_head_limits_and_bounded_memory():
    gw = Gateway(MOCK)
    try:
        cases = [("request line > 8 KiB", "GET /%s HTTP/1.1\r\n\r\n" % ("a" * 8300), 414),
                 ("one header > 8 KiB", "GET /healthz HTTP/1.1\r\nX-Big: %s\r\n\r\n" % ("b" * 9000), 431),
                 ("101 headers", "GET /healthz HTTP/1.1\r\n%s\r\n" % "".join(
                     "X-%d: v\r\n" % i for i in range(101)), 431),
                 ("33 KiB of headers", "GET /healthz HTTP/1.1\r\n%s\r\n" % "".join(
                     "X-%d: %s\r\n" % (i, "v" * 4000) for i in range(9)), 431)]
        for name, raw, want in cases:
            s = conn(gw.port)
            s.sendall(raw.encode())
            st, hdrs, body = read_response(s)
            js = json.loads(body) if body else {}
            check(st == want and js.get("error", {}).get("type") == "invalid_request_error" and
                  hdrs.get("connection") == "close", "%s: %d %r" % (name, st, body[:120]))
            s.close()
        check(gw.proc.poll() is None, "gateway alive")
        # headers that never end: the gateway answers 431 after 32 KiB and
        # stops buffering; memory returns to where it was
        base = rss_anon_kib(gw.proc.pid)
        socks = []
        for _ in range(4):
            s = conn(gw.port, timeout=2)
            s.sendall(b"GET / HTTP/1.1\r\n")
            socks.append(s)
        chunk = ("X-Fill: %s\r\n" % ("z" * 1000)).encode() * 64
        sent = 0
        for _ in range(40):  # up to ~2.6 MiB per connection while the gateway answers
            for s in socks:
                try:
                    s.sendall(chunk)
                    sent += len(chunk)
                except OSError:
                    pass
        peak = rss_anon_kib(gw.proc.pid)
        answers = []
        for s in socks:
            st, _, _ = read_response(s)
            answers.append(st)
            s.close()
        time.sleep(0.5)
        after = rss_anon_kib(gw.proc.pid)
        check(answers == [431] * 4, "endless headers answered %s" % answers)
        if not os.environ.get("LM_SANITIZER"):  # ASan's quarantine keeps freed memory
            check(peak - base < 16 * 1024,
                  "RssAnon grew %d KiB for %d KiB of headers" % (peak - base, sent // 1024))
            check(after - base < 8 * 1024, "RssAnon %d KiB above its baseline after close" % (after - base))
    finally:
        gw.stop()


def test_pipelined_requests_answered_in_order():
    gw = Gateway(MOCK)
    try:
        s = conn(gw.port)
        body = b'{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}'
        post = ("POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n%sContent-Length: %d\r\n\r\n"
                % (AUTH, len(body))).encode() + body
        get = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        models = ("GET /v1/models/echo-z HTTP/1.1\r\nHost: a\r\n%s\r\n" % AUTH).encode()
        s.sendall(get + post + get + models + get)
        seen = []
        for _ in range(5):
            st, hdrs, b = read_response(s)
            if st == 0:
                break
            seen.append((st, b[:80]))
        statuses = [x[0] for x in seen]
        check(statuses == [200] * 5, "five pipelined requests answered: %s" % seen)
        check(b"status" in seen[0][1] and b"chat.completion" in seen[1][1] and b"echo-z" in seen[3][1],
              "in order: %s" % seen)
        s.close()
    finally:
        gw.stop()


def test_in5_control_bytes_in_a_head_are_400():
    gw = Gateway(MOCK)
    try:
        for name, hdr in (("NUL", b"Authorization: Bearer " + KEY.encode() + b"\x00junk"),
                          ("\\x01", b"X-A: a\x01b"), ("DEL", b"X-A: a\x7fb"),
                          ("NUL in a name", b"X-\x00A: b")):
            s = conn(gw.port)
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: a\r\n" + hdr + b"\r\n\r\n")
            st, _, body = read_response(s)
            check(st == 400 and b"invalid_header" in body, "%s: %d %r" % (name, st, body[:100]))
            s.close()
        s = conn(gw.port)
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: a\r\nX-A: a\tb\r\n" + AUTH.encode() + b"\r\n")
        check(read_response(s)[0] == 200, "a tab in a value is fine")
        s.close()
    finally:
        gw.stop()


def test_in3_oversized_body_gets_a_readable_413():
    gw = Gateway(MOCK, extra="max_body_size 1m\n")
    try:
        big = b"x" * (9 * 1024 * 1024)
        # a client that writes the whole body before reading (curl --data-binary)
        s = conn(gw.port, timeout=20)
        s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n%sContent-Length: %d\r\n\r\n"
                   % (AUTH, len(big))).encode())
        try:
            s.sendall(big)
        except OSError:
            pass  # the gateway may stop reading once it has answered
        st, hdrs, body = read_response(s)
        check(st == 413 and b"request_too_large" in body, "Content-Length over the limit: %d %r" % (st, body[:100]))
        s.close()
        # Expect: 100-continue: 413 at once, never 100 Continue
        s = conn(gw.port)
        s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n%sContent-Length: %d\r\n"
                   "Expect: 100-continue\r\n\r\n" % (AUTH, len(big))).encode())
        st, _, body = read_response(s)
        check(st == 413, "Expect: 100-continue with a 9 MiB body: %d" % st)
        s.close()
        # chunked: 413 once the data passes the limit
        s = conn(gw.port, timeout=20)
        s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n%sTransfer-Encoding: chunked\r\n\r\n"
                   % AUTH).encode())
        piece = b"%x\r\n%s\r\n" % (64 * 1024, b"y" * 64 * 1024)
        try:
            for _ in range(40):
                s.sendall(piece)
        except OSError:
            pass
        st, _, body = read_response(s)
        check(st == 413, "chunked over the limit: %d %r" % (st, body[:100]))
        s.close()
        # http.client, as the official SDKs send
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
        try:
            c.request("POST", "/v1/chat/completions", body=big,
                      headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
            r = c.getresponse()
            status, data = r.status, r.read()
        except (ConnectionResetError, BrokenPipeError) as e:
            status, data = 0, repr(e).encode()
        check(status == 413 and b"request_too_large" in data, "http.client: %d %r" % (status, data[:100]))
        c.close()
        st, _, _ = split_send(gw.port, ("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n").encode(), 5)
        check(st == 200 and gw.proc.poll() is None, "still serving")
    finally:
        gw.stop()


def test_ft6_client_that_stops_reading_is_cut_off():
    """A stream whose client reads nothing is closed after
    client_send_timeout (the upstream is cancelled); a client that reads
    slowly but steadily is not."""
    mock = Mock()
    text = "x" * 2000  # 4000 of these: more than the kernel socket buffers hold
    mock.routes["/v1/chat/completions"] = lambda h, b: sse_reply(
        h, [chunk(text) for _ in range(4000)] + [chunk(finish="stop"), "[DONE]"])
    gw = Gateway("channel up {\n plugin openai\n base_url %s/v1\n models gpt-x\n}\n" % mock.url,
                 extra="client_send_timeout 2s\nstream_buffer 16k\n")
    body = json.dumps({"model": "gpt-x", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = ("POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n%sContent-Length: %d\r\n\r\n"
           % (AUTH, len(body))).encode() + body
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(req)
        line = "client_send_timeout"
        deadline = time.time() + 20
        while time.time() < deadline and line not in gw.logtext():
            time.sleep(0.2)
        check(line in gw.logtext(), "the stalled client was cut off")
        s.settimeout(10)
        got, closed = 0, False
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    closed = True
                    break
                got += len(d)
        except (ConnectionResetError, socket.timeout) as e:
            closed = isinstance(e, ConnectionResetError)
        s.close()
        check(closed and got < 4000 * 2000, "closed after %d bytes" % got)
        check("upstream transfer cancelled" in gw.logtext(), "the upstream was cancelled")
        # a slow but steady reader gets the whole stream
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(req)
        s.settimeout(20)
        data = b""
        while b"[DONE]" not in data[-64:]:
            d = s.recv(8192)
            if not d:
                break
            data += d
            time.sleep(0.002)
        s.close()
        check(b"data: [DONE]" in data, "a slow reader is served to the end (%d bytes)" % len(data))
    finally:
        gw.stop()


run([test_in12_split_heads_parse_the_same, test_ft6_client_that_stops_reading_is_cut_off, test_in4_head_limits_and_bounded_memory,
     test_pipelined_requests_answered_in_order, test_in5_control_bytes_in_a_head_are_400,
     test_in3_oversized_body_gets_a_readable_413])
