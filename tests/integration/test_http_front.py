"""The HTTP front on raw sockets: request smuggling shapes (IN-6) are
refused, never served, and connections that dribble their headers
(slowloris, IN-7) or sit idle are closed after client_header_timeout,
while a long stream whose client sends nothing more keeps going."""
import socket
import time

from lib import Gateway, Mock, check, chunk, content_of, run, sse_reply

KEYHDR = "Authorization: Bearer sk-test-client-key-0001\r\n"
BODY = b'{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}'
HEAD = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + KEYHDR + "Content-Type: application/json\r\n"
MOCK = "channel m {\n plugin mock\n models mock-1\n}\n"


def exchange(port, raw, wait=2.0):
    """Send raw bytes; return (responses seen, closed by the server, seconds)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(wait)
    s.sendall(raw)
    out, closed, t0 = b"", False, time.time()
    try:
        while True:
            d = s.recv(65536)
            if not d:
                closed = True
                break
            out += d
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed = True
    s.close()
    return out, closed, time.time() - t0


def chunked(body):
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def test_in6_smuggling_shapes_refused():
    gw = Gateway(MOCK)
    try:
        n = len(BODY)
        cases = {
            "CL+TE": (HEAD + "Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % n).encode() + chunked(BODY),
            "two CL": (HEAD + "Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (n, n + 5)).encode() + BODY,
            "two equal CL": (HEAD + "Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (n, n)).encode() + BODY,
            "TE gzip, chunked": (HEAD + "Transfer-Encoding: gzip, chunked\r\n\r\n").encode() + chunked(BODY),
            "TE trailing space": (HEAD + "Transfer-Encoding: chunked \r\n\r\n").encode() + chunked(BODY),
            "TE xchunked": (HEAD + "Transfer-Encoding: xchunked\r\n\r\n").encode() + chunked(BODY),
            "two TE": (HEAD + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
            + chunked(BODY),
            "chunk size 17 digits": (HEAD + "Transfer-Encoding: chunked\r\n\r\n").encode()
            + b"10000000000000000\r\n" + BODY + b"\r\n0\r\n\r\n",
            "obs-fold": (HEAD + "X-A: a\r\n b\r\nContent-Length: %d\r\n\r\n" % n).encode() + BODY,
        }
        for name, raw in cases.items():
            out, closed, secs = exchange(gw.port, raw)
            served = b"HTTP/1.1 200" in out
            check(not served, "%s was served: %r" % (name, out[:80]))
            check(out.startswith(b"HTTP/1.1 400") or (closed and out == b""),
                  "%s: neither 400 nor a closed connection: %r closed=%s" % (name, out[:80], closed))
        out, closed, secs = exchange(gw.port, (HEAD + "Content-Length: %d\r\n\r\n" % n).encode() + BODY, wait=1)
        check(out.startswith(b"HTTP/1.1 200"), "a clean request is served: %r" % out[:80])
        check(gw.proc.poll() is None, "gateway died")
    finally:
        gw.stop()


def test_in7_slow_headers_and_idle_connections_closed():
    gw = Gateway(MOCK, extra="client_header_timeout 1s\n")
    try:
        slow = []
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", gw.port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHo")
            slow.append(s)
        idle = socket.create_connection(("127.0.0.1", gw.port))  # sends nothing at all
        time.sleep(0.5)
        for s in slow:
            s.sendall(b"s")  # a byte now and then does not extend the deadline
        t0 = time.time()
        closed = 0
        for s in slow + [idle]:
            s.settimeout(10)  # the 1 s timeout closes them all long before
            try:
                closed += s.recv(100) == b""
            except ConnectionResetError:
                closed += 1
            except socket.timeout:
                pass
            s.close()
        check(closed == 51, "closed %d of 51 dribbling/idle connections" % closed)
        # keep-alive: idle after an answer is closed too; a fresh request still works
        k = socket.create_connection(("127.0.0.1", gw.port))
        k.settimeout(3)
        k.sendall((HEAD + "Content-Length: %d\r\n\r\n" % len(BODY)).encode() + BODY)
        first = k.recv(65536)
        check(first.startswith(b"HTTP/1.1 200"), first[:60])
        k.settimeout(10)
        closed_idle = False
        try:
            while True:
                d = k.recv(65536)
                if not d:
                    closed_idle = True
                    break
        except socket.timeout:
            pass
        check(closed_idle, "an idle keep-alive connection is closed")
        st, js, raw, _ = gw.chat({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]})
        check(st == 200, "served after the sweep: %s" % raw)
    finally:
        gw.stop()


def test_stalled_body_closed_steady_body_served():
    gw = Gateway(MOCK, extra="client_body_timeout 1s\n")
    try:
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall((HEAD + "Content-Length: %d\r\n\r\n" % len(BODY)).encode() + BODY[:10])
        s.settimeout(10)
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b""
        except socket.timeout:
            got = None
        check(got == b"", "stalled body: the connection is closed, got %r" % got)
        s.close()
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall((HEAD + "Content-Length: %d\r\n\r\n" % len(BODY)).encode())
        for i in range(0, len(BODY), 8):  # the whole body takes ~2.4 s, 0.3 s between pieces
            time.sleep(0.3)
            s.sendall(BODY[i:i + 8])
        s.settimeout(5)
        got = s.recv(65536)
        check(got.startswith(b"HTTP/1.1 200"), "steady body: %r" % got[:60])
        s.close()
    finally:
        gw.stop()


def test_long_quiet_stream_not_cut_by_header_timeout():
    m = Mock()
    m.routes["/v1/chat/completions"] = lambda h, b: sse_reply(
        h, [chunk("w%d " % i) for i in range(6)] + [chunk(finish="stop"), "[DONE]"], delay=0.5)
    gw = Gateway("channel c {\n plugin openai\n base_url %s/v1\n models s\n}\n" % m.url,
                 extra="client_header_timeout 1s\n")
    try:
        st, ev, raw, _ = gw.stream({"model": "s", "stream": True, "messages": [{"role": "user", "content": "x"}]},
                                   timeout=15)
        check(st == 200 and content_of(ev) == "w0 w1 w2 w3 w4 w5 " and ev[-1] == "[DONE]", "stream: %s" % ev)
    finally:
        gw.stop()
        m.close()


run([test_in6_smuggling_shapes_refused, test_in7_slow_headers_and_idle_connections_closed,
     test_stalled_body_closed_steady_body_served,
     test_long_quiet_stream_not_cut_by_header_timeout])
