"""The audio endpoints through the real binary against a mock upstream:
/v1/audio/transcriptions and /v1/audio/translations (multipart uploads sent
upstream byte for byte, NULs and CRLFs inside the file intact, only the
model part replaced when the channel maps it, with the channel's key),
/v1/audio/speech (the audio answer streamed back as it arrives, with the
upstream's Content-Type), the bad paths (no file, no model, unknown model,
too large: 413 without reading it all, a key without quota, an upstream 500
going to the next channel) and the ledger rows (per_second from the
answer's duration, per_1m_chars from speech's input), and stream=true
transcriptions (OpenAI's SSE transcript events passed through as they
come, billed from the done event's usage, a client leaving mid-stream
billed what it was sent, an upstream error before the stream an OpenAI
error)."""
import http.client
import json
import os
import re
import socket
import tempfile
import threading
import time

from lib import Gateway, Mock, admin_call, admin_key, check, free_port, json_reply, ledger_rows, run

TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
WAIT = 10
MAX = 256 * 1024  # audio_max_bytes in this test

up = Mock()
gw = None
admin_port = None
token = None
secret = None
broke = None

# a "file" with every byte value, NULs, CRLFs and a fake delimiter prefix inside
AUDIO = bytes(range(256)) * 8 + b"\r\n--not-the-boundary\r\n\x00\x00RIFF\r\n\r\n" + bytes(range(255, -1, -1))
SPEECH = [b"ID3\x00\x01\r\n" + bytes(range(200)), b"\xff\xfb\x00\r\n\r\n" * 50]
speech_gate = threading.Event()
speech_waited = {"timeout": None}
# stream=true transcripts: OpenAI's SSE events, the usage in the done event
DELTAS = ["hello", " wörld", " again"]
TOKENS_USAGE = {"type": "tokens", "input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
transcript_gate = threading.Event()
transcript_waited = {"timeout": None}


def form(fields, file_bytes=AUDIO, boundary="----lmTestBoundary7MA4YWxk", filename="a.wav"):
    out = b""
    for name, value in fields:
        out += b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (
            boundary.encode(), name.encode(), value.encode())
    if file_bytes is not None:
        out += (b"--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
                b"Content-Type: audio/wav\r\n\r\n" % (boundary.encode(), filename.encode()))
        out += file_bytes + b"\r\n"
    out += b"--%s--\r\n" % boundary.encode()
    return out, "multipart/form-data; boundary=%s" % boundary


def field(body, name):
    m = re.search(b'name="%s"\r\n\r\n(.*?)\r\n--' % name.encode(), body, re.S)
    return m.group(1).decode() if m else None


def sse_event(obj):
    return b"data: %s\n\n" % json.dumps(obj).encode()


def transcript_events(usage):
    out = [sse_event({"type": "transcript.text.delta", "delta": d}) for d in DELTAS]
    done = {"type": "transcript.text.done", "text": "".join(DELTAS)}
    if usage:
        done["usage"] = usage
    return out + [sse_event(done)]


def transcribe_stream(h, body):
    model, prompt = field(body, "model"), field(body, "prompt")
    if prompt == "BAD":
        return json_reply(h, 400, {"error": {"message": "bad audio", "type": "invalid_request_error",
                                             "code": "invalid_value"}})
    if prompt == "FAIL":
        return json_reply(h, 500, {"error": {"message": "boom", "type": "server_error"}})
    if prompt == "LATE":
        time.sleep(1.0)  # the client hangs up before the first event
    usage = {"type": "duration", "seconds": 12} if model == "whisper-1" else TOKENS_USAGE
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for i, ev in enumerate(transcript_events(usage)):
        try:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            h.wfile.flush()
        except OSError:
            return
        if i == 0 and prompt == "GATE":
            # the client must hold the first delta before the next is made
            transcript_waited["timeout"] = not transcript_gate.wait(WAIT)
        if i == 0 and prompt == "STALL":
            time.sleep(1.0)  # mid-stream: the client hangs up meanwhile
    h.wfile.write(b"0\r\n\r\n")


def transcribe(h, body):
    fmt = field(body, "response_format") or "json"
    if field(body, "stream") == "true":
        return transcribe_stream(h, body)
    if field(body, "prompt") == "SLOW":
        time.sleep(1.0)  # the client hangs up meanwhile
    if field(body, "prompt") == "FAIL":
        return json_reply(h, 500, {"error": {"message": "boom", "type": "server_error"}})
    if fmt == "text":
        data = b"hello world\n"
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        return h.wfile.write(data)
    if fmt == "verbose_json":
        return json_reply(h, 200, {"task": "transcribe", "language": "english", "duration": 3.2,
                                   "text": "hello world", "segments": []})
    if fmt == "srt":  # no duration anywhere: nothing billed
        return json_reply(h, 200, "1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    json_reply(h, 200, {"text": "hello world", "usage": {"type": "duration", "seconds": 12}})


def speech(h, body):
    req = json.loads(body)
    if req["input"] == "FAIL":
        return json_reply(h, 500, {"error": {"message": "boom", "type": "server_error"}})
    if req["model"] == "tts-late":
        time.sleep(1.0)  # the client hangs up before the first audio byte
    h.send_response(200)
    h.send_header("Content-Type", "audio/mpeg")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for i, part in enumerate(SPEECH):
        h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        h.wfile.flush()
        if i == 0 and req["input"] == "stream me":
            # the client must hold the first part before the second is made
            speech_waited["timeout"] = not speech_gate.wait(WAIT)
        if i == 0 and req["model"] == "tts-stall":
            time.sleep(1.0)  # mid-audio: the client hangs up meanwhile
    h.wfile.write(b"0\r\n\r\n")


def down(h, body):
    json_reply(h, 500, {"error": {"message": "upstream broke", "type": "server_error"}})


up.routes["/a1/audio/transcriptions"] = transcribe
up.routes["/a1/audio/translations"] = transcribe
up.routes["/a1/audio/speech"] = speech
up.routes["/bad/audio/transcriptions"] = down
up.routes["/bad/audio/speech"] = down


def setup():
    global gw, admin_port, token, secret, broke
    admin_port = free_port()
    data_dir = tempfile.mkdtemp(prefix="lm-audio-")
    gw = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\naudio_max_bytes %d\nmax_body_size 64k\n"
                 % (data_dir, admin_port, MAX), channels="""
channel a1 {
    plugin openai
    base_url %s/a1
    api_key sk-up-a1
    models whisper-1 tts-1 whisper-alias=whisper-up whisper-slow tts-late tts-stall gpt-4o-transcribe
    price gpt-4o-transcribe 2.5 10
    price whisper-1 0.006 per_second
    price whisper-slow 0.006 per_second
    price whisper-up 0.006 per_second
    price tts-1 15 per_1m_chars
    price tts-late 15 per_1m_chars
    price tts-stall 15 per_1m_chars
}
channel bad {
    plugin openai
    base_url %s/bad
    api_key sk-up-bad
    models whisper-fo tts-fo
}
channel good {
    plugin openai
    base_url %s/a1
    api_key sk-up-good
    models whisper-fo tts-fo
    priority 1
}
""" % (up.url, up.url, up.url))
    token = TOKEN_RE.search(gw.logtext()).group(1)
    secret = admin_key(admin_port, token, "au", "10")
    broke = admin_key(admin_port, token, "broke", "0")


def rows_for(request_id, settle=0.3):
    return ledger_rows(admin_port, token, request_id, WAIT, settle)


def rss_kib():
    with open("/proc/%d/status" % gw.proc.pid) as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


def upload(path, body, ctype, key=None):
    return gw.request("POST", path, body, key=key or secret, headers={"Content-Type": ctype})


def test_transcription_forwarded_byte_exact():
    up.requests.clear()
    body, ct = form([("model", "whisper-1"), ("language", "en")])
    st, js, raw, hdrs = upload("/v1/audio/transcriptions", body, ct)
    check(st == 200 and js["text"] == "hello world", "answer %s %s" % (st, raw))
    sent = up.requests[-1]
    check(sent["path"] == "/a1/audio/transcriptions", "path %s" % sent["path"])
    check(sent["body"] == body, "the upstream got the client's exact body (%d vs %d bytes)"
          % (len(sent["body"]), len(body)))
    check(sent["headers"].get("Authorization") == "Bearer sk-up-a1", "channel key %s" % sent["headers"])
    check(sent["headers"].get("Content-Type") == ct, "content type %s" % sent["headers"].get("Content-Type"))
    check("channel=a1" in hdrs.get("X-Longmen-Route", ""), "route %s" % hdrs)
    rows = rows_for(hdrs["X-Request-Id"])
    # 12 s at 0.006 per second = 0.072 = 72000 micro
    check(len(rows) == 1 and rows[0]["api"] == "audio" and rows[0]["channel"] == "a1"
          and rows[0]["model_asked"] == "whisper-1" and rows[0]["cost_micro"] == 72000
          and rows[0]["status"] == 200, "ledger %s" % rows)


def test_translation_text_and_verbose():
    up.requests.clear()
    body, ct = form([("model", "whisper-1"), ("response_format", "text")])
    st, js, raw, hdrs = upload("/v1/audio/translations", body, ct)
    check(st == 200 and raw == b"hello world\n", "text answer %s %r" % (st, raw))
    check(hdrs.get("Content-Type", "").startswith("text/plain"), "content type %s" % hdrs)
    check(up.requests[-1]["path"] == "/a1/audio/translations", "path %s" % up.requests[-1]["path"])
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 0, "no duration, nothing billed: %s" % rows)
    body, ct = form([("model", "whisper-1"), ("response_format", "verbose_json")])
    st, js, raw, hdrs = upload("/v1/audio/transcriptions", body, ct)
    check(st == 200 and js["duration"] == 3.2, "verbose %s %s" % (st, raw))
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 19200, "3.2 s billed: %s" % rows)


def test_model_mapped_in_the_form():
    up.requests.clear()
    body, ct = form([("model", "whisper-alias"), ("prompt", "names: Zoë")])
    st, js, raw, hdrs = upload("/v1/audio/transcriptions", body, ct)
    check(st == 200, "status %s %s" % (st, raw))
    sent = up.requests[-1]["body"]
    check(sent == body.replace(b"\r\n\r\nwhisper-alias\r\n", b"\r\n\r\nwhisper-up\r\n"),
          "only the model part changed")
    check(AUDIO in sent, "file bytes intact")
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["model_served"] == "whisper-up" and rows[0]["cost_micro"] == 72000,
          "ledger %s" % rows)


def test_bad_forms():
    cases = [
        (form([("model", "whisper-1")], file_bytes=None), 400, "file"),
        (form([("language", "en")]), 400, "model"),
        (form([("model", "whisper-1"), ("response_format", "mp3")]), 400, "response_format"),
        (form([("model", "whisper-1"), ("temperature", "hot")]), 400, "temperature"),
        (form([("model", "no-such-model")]), 404, "no-such-model"),
    ]
    for (body, ct), status, word in cases:
        st, js, raw, _ = upload("/v1/audio/transcriptions", body, ct)
        check(st == status and js and word in js["error"]["message"] and js["error"]["type"],
              "%s -> %s %s" % (word, st, raw))
    st, js, raw, _ = upload("/v1/audio/transcriptions", b'{"model":"whisper-1"}', "application/json")
    check(st == 400 and "multipart" in js["error"]["message"], "json body %s %s" % (st, raw))
    st, js, raw, _ = upload("/v1/audio/transcriptions", b"--x\r\nno head end", "multipart/form-data; boundary=x")
    check(st == 400 and js["error"]["code"] == "invalid_multipart", "truncated %s %s" % (st, raw))
    st, js, raw, _ = gw.request("GET", "/v1/audio/transcriptions", key=secret)
    check(st == 405, "GET %s" % st)
    st, js, raw, _ = upload("/v1/audio/transcriptions", *form([("model", "whisper-1")]), key="sk-wrong-key-123")
    check(st == 401, "bad key %s" % st)


def test_too_large_413_without_reading_it_all():
    # the declared length is over audio_max_bytes: refused from the head, and
    # the connection is not kept reading megabytes
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    head = ("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n\r\n"
            % (secret, 100 * 1024 * 1024))
    s.sendall(head.encode() + b"--b\r\n" + b"x" * 1000)
    data = b""
    while b"\r\n\r\n" not in data or len(data) < 200:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    check(data.startswith(b"HTTP/1.1 413"), "413 first: %r" % data[:80])
    check(b"audio_max_bytes" in data and b'"error"' in data, "OpenAI error shape: %r" % data[-200:])
    rss0 = rss_kib()
    sent, closed, deadline = 0, False, time.time() + 3 * WAIT
    try:  # nothing is buffered: the gate discards for a bounded time and byte
        # count (its lingering close: 5 s, 64 MiB), then closes the connection
        while time.time() < deadline:
            s.sendall(b"y" * 65536)
            sent += 65536
    except OSError:
        closed = True
    s.close()
    check(closed, "the connection of a refused body was closed (after %d bytes)" % sent)
    if not os.environ.get("LM_SANITIZER"):  # ASan keeps freed memory in quarantine
        check(rss_kib() - rss0 < 32 * 1024, "the gateway did not keep the body: RSS %d -> %d KiB"
              % (rss0, rss_kib()))
    # under max_body_size's 64k? no: an upload between 64k and audio_max_bytes is fine
    body, ct = form([("model", "whisper-1")], file_bytes=AUDIO * 60)
    check(64 * 1024 < len(body) < MAX, "size %d" % len(body))
    up.requests.clear()
    st, js, raw, _ = upload("/v1/audio/transcriptions", body, ct)
    check(st == 200 and up.requests[-1]["body"] == body, "a 100k upload passes %s %s" % (st, raw))
    # chunked (no length): cut at audio_max_bytes too
    body, ct = form([("model", "whisper-1")], file_bytes=AUDIO * 200)
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=WAIT)
    try:
        c.request("POST", "/v1/audio/transcriptions", body=iter([body[i:i + 8192] for i in range(0, len(body), 8192)]),
                  headers={"Authorization": "Bearer " + secret, "Content-Type": ct,
                           "Transfer-Encoding": "chunked"}, encode_chunked=True)
        r = c.getresponse()
        st = r.status
        r.read()
    except OSError:
        st = "closed"
    c.close()
    check(st in (413, "closed"), "chunked over the cap: %s" % st)
    st, js, raw, _ = gw.chat({"model": "whisper-1", "messages": [{"role": "user", "content": "x" * 70000}]})
    check(st == 413 and "max_body_size" in js["error"]["message"], "chat keeps max_body_size: %s %s" % (st, raw))


def test_chunked_upload_byte_exact():
    # no Content-Length: the pieces are copied into the request's buffer
    body, ct = form([("model", "whisper-1")], file_bytes=AUDIO * 90)
    check(64 * 1024 < len(body) < MAX, "size %d" % len(body))
    up.requests.clear()
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=WAIT)
    c.request("POST", "/v1/audio/transcriptions", body=iter([body[i:i + 7001] for i in range(0, len(body), 7001)]),
              headers={"Authorization": "Bearer " + secret, "Content-Type": ct}, encode_chunked=True)
    r = c.getresponse()
    raw = r.read()
    c.close()
    check(r.status == 200 and up.requests and up.requests[-1]["body"] == body,
          "a chunked upload arrives whole upstream: %s %s" % (r.status, raw[:200]))


def test_key_without_quota():
    up.requests.clear()
    st, js, raw, _ = upload("/v1/audio/transcriptions", *form([("model", "whisper-1")]), key=broke)
    check(st == 429 and js["error"]["code"] == "insufficient_quota", "transcription %s %s" % (st, raw))
    st, js, raw, _ = gw.request("POST", "/v1/audio/speech", {"model": "tts-1", "input": "hi", "voice": "alloy"},
                                key=broke)
    check(st == 429 and js["error"]["code"] == "insufficient_quota", "speech %s %s" % (st, raw))
    check(not up.requests, "nothing went upstream")


def test_upstream_500_goes_to_next_channel():
    up.requests.clear()
    body, ct = form([("model", "whisper-fo")])
    st, js, raw, hdrs = upload("/v1/audio/transcriptions", body, ct)
    check(st == 200 and js["text"] == "hello world", "answer %s %s" % (st, raw))
    paths = [r["path"] for r in up.requests]
    check(paths == ["/bad/audio/transcriptions", "/a1/audio/transcriptions"], "tries %s" % paths)
    check(all(r["body"] == body for r in up.requests), "both attempts sent the same bytes")
    check(up.requests[1]["headers"]["Authorization"] == "Bearer sk-up-good", "second channel's key")
    rows = rows_for(hdrs["X-Request-Id"])
    check(sorted((r["channel"], r["status"]) for r in rows) == [("bad", 500), ("good", 200)], "rows %s" % rows)
    # every channel failing: the OpenAI error shape
    body, ct = form([("model", "whisper-1"), ("prompt", "FAIL")])
    st, js, raw, _ = upload("/v1/audio/transcriptions", body, ct)
    check(st >= 500 and js["error"]["message"], "upstream error %s %s" % (st, raw))


def test_speech_streamed_byte_exact():
    up.requests.clear()
    speech_gate.clear()
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=WAIT)
    text = "stream me"
    c.request("POST", "/v1/audio/speech", body=json.dumps({"model": "tts-1", "input": text, "voice": "alloy"}),
              headers={"Authorization": "Bearer " + secret, "Content-Type": "application/json"})
    r = c.getresponse()
    check(r.status == 200 and r.getheader("Content-Type") == "audio/mpeg", "head %s %s" % (r.status, r.getheaders()))
    first = r.read(len(SPEECH[0]))  # arrives while the upstream still holds the rest
    speech_gate.set()
    rest = r.read()
    rid = r.getheader("X-Request-Id")
    c.close()
    check(first == SPEECH[0] and rest == SPEECH[1], "byte-exact audio")
    check(speech_waited["timeout"] is False, "the first part reached the client before the upstream went on")
    sent = up.last_json()
    check(sent == {"model": "tts-1", "input": text, "voice": "alloy"}, "speech body %s" % sent)
    check(up.requests[-1]["headers"]["Authorization"] == "Bearer sk-up-a1", "channel key")
    rows = rows_for(rid)
    # 9 code points at 15 per 1M chars = 135 micro
    check(len(rows) == 1 and rows[0]["api"] == "audio" and rows[0]["cost_micro"] == 135
          and rows[0]["model_asked"] == "tts-1", "ledger %s" % rows)
    st, js, raw, hdrs = gw.request("POST", "/v1/audio/speech", {"model": "tts-1", "input": "héllo wörld ✓", "voice": "a"},
                                   key=secret)
    check(st == 200 and raw == SPEECH[0] + SPEECH[1], "whole %s" % st)
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 195, "13 code points: %s" % rows)


def test_speech_failover_and_bad_bodies():
    up.requests.clear()
    st, js, raw, hdrs = gw.request("POST", "/v1/audio/speech", {"model": "tts-fo", "input": "x", "voice": "a"},
                                   key=secret)
    check(st == 200 and raw == SPEECH[0] + SPEECH[1] and hdrs.get("Content-Type") == "audio/mpeg",
          "failover %s %s" % (st, hdrs))
    check([r["path"] for r in up.requests] == ["/bad/audio/speech", "/a1/audio/speech"], "tries")
    for body, word in [({"model": "tts-1", "voice": "a"}, "input"), ({"input": "x"}, "model"),
                       ({"model": "tts-1", "input": "x", "speed": "fast"}, "speed"), ("[1]", "JSON object")]:
        st, js, raw, _ = gw.request("POST", "/v1/audio/speech", body, key=secret)
        check(st == 400 and word in js["error"]["message"], "%s -> %s %s" % (word, st, raw))
    st, js, raw, _ = gw.request("POST", "/v1/audio/speech", {"model": "tts-1", "input": "FAIL", "voice": "a"},
                                key=secret)
    check(st >= 500 and js["error"]["type"], "upstream 500 %s %s" % (st, raw))


def test_client_gone_upload_still_billed():
    body, ct = form([("model", "whisper-slow"), ("prompt", "SLOW")])
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    s.sendall(("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (secret, ct, len(body))).encode() + body)
    time.sleep(0.3)
    s.close()
    deadline, rows = time.time() + WAIT, []
    while time.time() < deadline and not rows:
        st, js = admin_call(admin_port, token, "GET", "/admin/usage/rows?limit=200")
        rows = [r for r in js["data"] if r["model_asked"] == "whisper-slow"]
        time.sleep(0.1)
    check(len(rows) == 1 and rows[0]["client_aborted"] in (1, True) and rows[0]["cost_micro"] == 72000,
          "the answer is billed from its duration: %s" % rows)


def rows_of_model(model, keep=lambda r: True):
    deadline, rows = time.time() + WAIT, []
    while time.time() < deadline and not rows:
        st, js = admin_call(admin_port, token, "GET", "/admin/usage/rows?limit=200")
        rows = [r for r in js["data"] if r["model_asked"] == model and keep(r)]
        time.sleep(0.1)
    time.sleep(0.3)  # no second row may follow
    st, js = admin_call(admin_port, token, "GET", "/admin/usage/rows?limit=200")
    return [r for r in js["data"] if r["model_asked"] == model and keep(r)]


def speech_raw(model, text):
    body = json.dumps({"model": model, "input": text, "voice": "a"}).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    s.sendall(("POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (secret, len(body))).encode()
              + body)
    return s


def test_speech_client_gone_before_audio_billed():
    # The provider has the input and bills its characters: a client that
    # leaves before the first audio byte is billed like a chat stream left
    # before its first event (499, client_aborted).
    s = speech_raw("tts-late", "late speech")  # 11 code points at 15 per 1M = 165 micro
    time.sleep(0.3)
    s.close()
    rows = rows_of_model("tts-late")
    check(len(rows) == 1 and rows[0]["client_aborted"] in (1, True) and rows[0]["cost_micro"] == 165
          and rows[0]["status"] == 499, "billed on abort: %s" % rows)


def test_speech_client_gone_mid_audio_billed():
    s = speech_raw("tts-stall", "stall speech")  # 12 code points = 180 micro
    got, deadline = b"", time.time() + WAIT
    while SPEECH[0] not in got and time.time() < deadline:
        got += s.recv(65536)
    s.close()  # the upstream holds the rest
    check(b" 200 " in got.split(b"\r\n", 1)[0] and SPEECH[0] in got, "first part %r" % got[:80])
    rows = rows_of_model("tts-stall")
    check(len(rows) == 1 and rows[0]["client_aborted"] in (1, True) and rows[0]["cost_micro"] == 180,
          "billed mid-audio: %s" % rows)


def test_transcription_streamed():
    up.requests.clear()
    transcript_gate.clear()
    body, ct = form([("model", "gpt-4o-transcribe"), ("stream", "true"), ("prompt", "GATE")])
    c = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=WAIT)
    c.request("POST", "/v1/audio/transcriptions", body=body,
              headers={"Authorization": "Bearer " + secret, "Content-Type": ct})
    r = c.getresponse()
    check(r.status == 200 and r.getheader("Content-Type", "").startswith("text/event-stream"),
          "head %s %s" % (r.status, r.getheaders()))
    want = transcript_events(TOKENS_USAGE)
    first = r.read(len(want[0]))  # arrives while the upstream holds the rest
    transcript_gate.set()
    rest = r.read()
    rid = r.getheader("X-Request-Id")
    c.close()
    check(first == want[0] and rest == b"".join(want[1:]), "events unchanged: %r %r" % (first, rest))
    check(transcript_waited["timeout"] is False, "the first delta reached the client before the upstream went on")
    check(up.requests[-1]["body"] == body, "the form went upstream as it was")
    rows = rows_for(rid)
    # 100 input tokens at 2.5 per 1M + 20 output at 10 per 1M = 250 + 200 micro
    check(len(rows) == 1 and rows[0]["prompt_tokens"] == 100 and rows[0]["completion_tokens"] == 20
          and rows[0]["cost_micro"] == 450 and rows[0]["status"] == 200
          and rows[0]["client_aborted"] in (0, False), "billed from the done event's tokens: %s" % rows)
    # seconds in the done event: per_second as for a whole answer
    body, ct = form([("model", "whisper-1"), ("stream", "true")])
    st, js, raw, hdrs = upload("/v1/audio/transcriptions", body, ct)
    check(st == 200 and raw == b"".join(transcript_events({"type": "duration", "seconds": 12})),
          "seconds stream %s %r" % (st, raw))
    rows = rows_for(hdrs["X-Request-Id"])
    check(len(rows) == 1 and rows[0]["cost_micro"] == 72000, "12 s billed: %s" % rows)


def test_transcription_stream_client_gone_mid_stream():
    body, ct = form([("model", "gpt-4o-transcribe"), ("stream", "true"), ("prompt", "STALL")])
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    s.sendall(("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (secret, ct, len(body))).encode() + body)
    got, deadline = b"", time.time() + WAIT
    while b"transcript.text.delta" not in got and time.time() < deadline:
        got += s.recv(65536)
    s.close()  # the upstream holds the rest
    check(b" 200 " in got.split(b"\r\n", 1)[0] and b'"hello"' in got, "first delta %r" % got[:200])
    rows = rows_of_model("gpt-4o-transcribe", lambda r: r["client_aborted"] in (1, True))
    # what was delivered: "hello" = 2 tokens (4 code points a token) at 10 per 1M
    check(len(rows) == 1 and rows[0]["completion_tokens"] == 2 and rows[0]["cost_micro"] == 20,
          "billed what was delivered: %s" % rows)


def test_transcription_stream_client_gone_before_first_event():
    # like a whole answer whose client left: read to its end, billed from the done event
    body, ct = form([("model", "gpt-4o-transcribe"), ("stream", "true"), ("prompt", "LATE")])
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=WAIT)
    s.sendall(("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (secret, ct, len(body))).encode() + body)
    time.sleep(0.3)
    s.close()
    rows = rows_of_model("gpt-4o-transcribe", lambda r: r["client_aborted"] in (1, True) and r["prompt_tokens"])
    check(len(rows) == 1 and rows[0]["prompt_tokens"] == 100 and rows[0]["cost_micro"] == 450,
          "billed from the done event: %s" % rows)


def test_transcription_stream_upstream_error():
    for prompt, status, code in [("BAD", 400, "invalid_value"), ("FAIL", 502, "upstream_error")]:
        body, ct = form([("model", "whisper-1"), ("stream", "true"), ("prompt", prompt)])
        st, js, raw, hdrs = upload("/v1/audio/transcriptions", body, ct)
        check(st == status and js and js["error"]["message"] and js["error"]["type"]
              and (code is None or js["error"]["code"] == code)
              and not hdrs.get("Content-Type", "").startswith("text/event-stream"),
              "%s -> %s %s" % (prompt, st, raw))


def test_models_list_audio():
    st, js, raw, _ = gw.request("GET", "/v1/models/whisper-1", key=secret)
    check(st == 200 and {"audio_transcriptions", "audio_translations", "audio_speech"} <= set(js["endpoints"]),
          "endpoints %s" % raw)


def test_clean_shutdown():
    check(gw.stop() == 0, "exit code")


if __name__ == "__main__":
    setup()
    run([test_transcription_forwarded_byte_exact, test_translation_text_and_verbose,
         test_model_mapped_in_the_form, test_bad_forms, test_too_large_413_without_reading_it_all,
         test_chunked_upload_byte_exact, test_key_without_quota, test_upstream_500_goes_to_next_channel, test_speech_streamed_byte_exact,
         test_speech_failover_and_bad_bodies, test_client_gone_upload_still_billed,
         test_speech_client_gone_before_audio_billed, test_speech_client_gone_mid_audio_billed,
         test_transcription_streamed, test_transcription_stream_client_gone_mid_stream,
         test_transcription_stream_client_gone_before_first_event,
         test_transcription_stream_upstream_error, test_models_list_audio, test_clean_shutdown])
    up.close()
