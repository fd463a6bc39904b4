"""A burst of connections is answered, not reset.

libevhtp's listener hands every accepted connection to a worker through a
small per-worker queue; when a burst outran the workers (about 700 streaming
requests opened at once on 2 workers), libevhtp closed the connections it
could not queue and their clients got a reset with no answer. The front
makes the hand-off wait for room instead (kernel/http/front.c). Here
BURST clients each open a connection and send a streaming request before
any of them reads; the upstream answers each with the SSE head and one
chunk, then holds the stream. Every client must get an HTTP answer (200, or
503 channel_busy if the channel's concurrency cap is reached): none may see
a reset or a close without one."""
import resource
import selectors
import socket
import threading
import time

from lib import KEY, Gateway, check, run

BURST = 1500
WAIT = 60  # seconds for every answer; normal is about 2
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")
CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",' \
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}\n\n'
FIRST = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
BODY = (b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hold"}]}')
REQUEST = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
           + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)


class HoldUpstream:
    """Answers each request with the SSE head and one chunk, then holds the
    connection until close(): one thread, non-blocking sockets."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self.conns = []
        self.stopping = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stopping:
            for k, _ in self.sel.select(0.2):
                if k.data is None:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.conns.append(c)
                    self.sel.register(c, selectors.EVENT_READ, [b""])
                    continue
                try:
                    data = k.fileobj.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(k.fileobj)
                    continue
                k.data[0] += data
                head, sep, rest = k.data[0].partition(b"\r\n\r\n")
                if sep and b"content-length" in head.lower():
                    n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(rest) >= n:
                        self.sel.unregister(k.fileobj)
                        try:
                            k.fileobj.sendall(HEAD + FIRST)
                        except OSError:
                            pass

    def close(self):
        self.stopping = True
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return True
    if hard != resource.RLIM_INFINITY and hard < need:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # inherited by the gateway
    return True


def test_burst_answered_not_reset():
    # the client's and the gateway's sockets (client + upstream each)
    if not raise_fd_limit(3 * BURST + 512):
        print("SKIP test_burst_answered_not_reset: the open-files limit is too low")
        return
    up = HoldUpstream()
    gw = Gateway(channels="""
channel hold {
    plugin openai
    base_url http://127.0.0.1:%d/v1
    api_key sk-up
    models m
}
""" % up.port, extra="log_level warn\n")
    socks = []
    try:
        for _ in range(BURST):  # every request sent before any answer is read
            s = socket.create_connection(("127.0.0.1", gw.port), 30)
            s.sendall(REQUEST)
            socks.append(s)
        sel = selectors.DefaultSelector()
        for i, s in enumerate(socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        answers, failures = {}, {}
        deadline = time.time() + WAIT
        while len(answers) + len(failures) < BURST and time.time() < deadline:
            for k, _ in sel.select(0.5):
                try:
                    data = k.fileobj.recv(4096)
                except OSError as e:
                    failures[k.data] = str(e)
                    sel.unregister(k.fileobj)
                    continue
                if not data:
                    failures[k.data] = "closed with no answer"
                else:
                    answers[k.data] = data[:12]
                sel.unregister(k.fileobj)
        check(not failures, "%d of %d connections failed, e.g. %s"
              % (len(failures), BURST, list(failures.values())[:3]))
        check(len(answers) == BURST, "%d of %d answered within %d s" % (len(answers), BURST, WAIT))
        statuses = set(answers.values())
        check(statuses <= {b"HTTP/1.1 200", b"HTTP/1.1 503"}, "statuses %s" % statuses)
        check(b"HTTP/1.1 200" in statuses, "streams answered: %s" % statuses)
    finally:
        for s in socks:
            s.close()
        code = gw.stop()
        up.close()
    check(code == 0, "gateway exit code %s" % code)


if __name__ == "__main__":
    run([test_burst_answered_not_reset])
