"""Integration test helpers: a scriptable mock upstream, a running longmen,
and small HTTP clients. Stdlib only. Every test prints PASS/FAIL lines."""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("O", "build"))
PLUGIN_DIR = os.path.join(ROOT, os.environ.get("PLUGIN_DIR", os.path.join(BUILD, "plugins")))
TEST_PLUGIN_DIR = os.path.join(BUILD, "test-plugins")
KEY = "sk-test-client-key-0001"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Mock:
    """An upstream on 127.0.0.1. `routes[path]` is a function(handler, body)
    that writes the whole response. Every request is recorded."""

    def __init__(self):
        self.routes = {}
        self.requests = []
        self.events = []  # ("closed", path, time) when a streaming write failed
        self.lock = threading.Lock()
        mock = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with mock.lock:
                    mock.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body, "method": "POST"})
                fn = mock.routes.get(self.path.split("?")[0])
                if fn is None:
                    return json_reply(self, 404, {"error": {"message": "no route", "type": "x"}})
                try:
                    fn(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    with mock.lock:
                        mock.events.append(("closed", self.path, time.time()))

            do_GET = do_POST

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                # A client (the gateway) that hung up is expected in these tests;
                # a traceback on stderr would interleave with the PASS lines.
                if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    return
                super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last_json(self):
        return json.loads(self.requests[-1]["body"])

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def json_reply(h, status, obj, headers=None):
    data = json.dumps(obj).encode() if not isinstance(obj, (bytes, str)) else (
        obj.encode() if isinstance(obj, str) else obj)
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


def sse_reply(h, events, delay=0.0, raw=None, close_after=False):
    """Send SSE events (dicts or strings) chunked, optionally paced."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    if close_after:
        h.send_header("Connection", "close")
    h.end_headers()
    parts = raw if raw is not None else [
        "data: %s\n\n" % (e if isinstance(e, str) else json.dumps(e)) for e in events]
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
        h.wfile.flush()
        if delay:
            time.sleep(delay)
    if close_after:  # cut: no terminating chunk
        h.wfile.flush()
        h.close_connection = True
        return
    h.wfile.write(b"0\r\n\r\n")
    h.wfile.flush()


def chunk(content=None, finish=None, role=None, tool_calls=None, cid="chatcmpl-up"):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {"id": cid, "object": "chat.completion.chunk", "created": 1700000000, "model": "up-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def usage_chunk(p, c, cid="chatcmpl-up"):
    return {"id": cid, "object": "chat.completion.chunk", "created": 1700000000, "model": "up-model",
            "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer")


def sanitizer_report(text):
    """The sanitizer lines in a log (empty when clean)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(m in line for m in SANITIZER_MARKS):
            return "\n".join(lines[i:i + 40])
    return ""


class Gateway:
    """A running longmen with a generated config."""

    def __init__(self, channels="", extra="", workers=2, plugin_dir=None, env=None):
        self.port = free_port()
        # A store turns the admin API on, by default on port 8081: give it a
        # free port so that tests (and parallel runs) never clash on it.
        if "data_dir" in extra and "admin_listen" not in extra + channels:
            extra = "admin_listen 127.0.0.1:%d\n%s" % (free_port(), extra)
        self.dir = tempfile.mkdtemp(prefix="lm-it-")
        self.conf = os.path.join(self.dir, "longmen.conf")
        with open(self.conf, "w") as f:
            f.write("listen 127.0.0.1:%d\nworkers %d\nplugin_dir %s\nkey test %s\nlog_level info\n%s\n%s\n"
                    % (self.port, workers, plugin_dir or PLUGIN_DIR, KEY, extra, channels))
        self.log = open(os.path.join(self.dir, "longmen.log"), "w+")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen([os.path.join(BUILD, "longmen"), "-c", self.conf],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=e)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("longmen exited: " + self.logtext())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("longmen did not start: " + self.logtext())

    def logtext(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self, sig=15, timeout=15):
        """Stop the gateway; fail if it printed a sanitizer report."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        report = sanitizer_report(self.logtext())
        if report:
            raise AssertionError("sanitizer report from longmen:\n" + report)
        return self.proc.returncode

    def request(self, method, path, body=None, key=KEY, headers=None, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = "Bearer " + key
        h.update(headers or {})
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            js = json.loads(raw)
        except ValueError:
            js = None
        return r.status, js, raw, dict(r.getheaders())

    def chat(self, body, **kw):
        return self.request("POST", "/v1/chat/completions", body, **kw)

    def stream(self, body, key=KEY, timeout=10):
        """Returns (status, list of data payloads as strings, raw)."""
        st, js, raw, hdrs = self.chat(body, key=key, timeout=timeout)
        events = []
        if st == 200:
            for block in raw.decode().split("\n\n"):
                for line in block.split("\n"):
                    if line.startswith("data: "):
                        events.append(line[6:])
        return st, events, raw, hdrs


def sse_json(events):
    return [json.loads(e) for e in events if e != "[DONE]"]


def content_of(events):
    out = ""
    for e in sse_json(events):
        for c in e.get("choices", []):
            out += (c.get("delta") or {}).get("content") or ""
    return out


_results = {"passed": 0, "failed": 0}


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def run(tests):
    """Run test functions; print PASS/FAIL lines; exit 1 on any failure."""
    only = sys.argv[1:]
    for t in tests:
        name = t.__name__
        if only and name not in only:
            continue
        try:
            t()
            print("PASS", name, flush=True)
            _results["passed"] += 1
        except Exception as e:  # noqa: BLE001 - report every failure the same way
            print("FAIL %s: %s" % (name, e), flush=True)
            traceback.print_exc(file=sys.stdout)
            _results["failed"] += 1
    sys.exit(1 if _results["failed"] else 0)


def admin_call(port, token, method, path, body=None, timeout=10):
    """One admin API call with the admin token: (status, parsed JSON or None)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data else None)


def admin_key(port, token, name, quota):
    """A new store key made through the admin API: its secret."""
    st, k = admin_call(port, token, "POST", "/admin/keys", {"name": name, "quota": quota})
    check(st == 201, "key: %s %s" % (st, k))
    return k["secret"] if "secret" in k else k["key"]


def ledger_rows(port, token, request_id, wait=10, settle=0.3):
    """The ledger rows of one request once they have landed (within `wait`
    seconds; [] after): read again `settle` seconds after the first shows,
    so a second (double) row would be there too."""
    deadline = time.time() + wait
    while time.time() < deadline:
        st, js = admin_call(port, token, "GET", "/admin/usage/rows?limit=200")
        rows = [r for r in js["data"] if r["request_id"] == request_id] if st == 200 else []
        if rows:
            time.sleep(settle)
            st, js = admin_call(port, token, "GET", "/admin/usage/rows?limit=200")
            return [r for r in js["data"] if r["request_id"] == request_id]
        time.sleep(0.05)
    return []


def request_log(admin, query="", want=None, timeout=10):
    """GET /admin/requests?query through admin(method, path) -> (status,
    JSON); waits (request-log writers are asynchronous) until `want` rows
    are there when want is given, at most `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        st, js = admin("GET", "/admin/requests" + ("?" + query if query else ""))
        check(st == 200, "admin/requests: %s %s" % (st, js))
        if want is None or len(js["data"]) >= want or time.time() > deadline:
            return js
        time.sleep(0.1)
