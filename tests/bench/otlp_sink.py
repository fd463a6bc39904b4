#!/usr/bin/env python3
"""otlp_sink.py PORT - a live OTLP/HTTP collector for make bench's tracing
run: accepts every POST /v1/traces, counts the spans it received (printed on
SIGTERM) and answers 200 {}. OTLP/protobuf bodies (the default) are walked
down to the spans with tests/integration/otlp_pb.py, JSON ones counted by
their "spanId" keys. Stdlib only; loopback only."""
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import otlp_pb  # noqa: E402

spans = 0
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global spans
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Type") == "application/x-protobuf":
            n = sum(1 for _, _, rs in otlp_pb.fields(body) for f, _, ss in otlp_pb.fields(rs)
                    if f == 2 for k, _, _ in otlp_pb.fields(ss) if k == 2)
        else:
            n = body.count(b'"spanId"')
        with lock:
            spans += n
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink)

    def stop(*_):
        print("otlp sink: %d spans received" % spans, file=sys.stderr, flush=True)
        threading.Thread(target=srv.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    srv.serve_forever()


main()
