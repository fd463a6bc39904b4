"""Whole answers written at once by the front's gate (lm_gate_reply_now):
the bytes a socket does not take go back to libevent's path, so a large
non-stream answer to a slow reader arrives whole; keep-alive and pipelined
requests on one connection keep their order after answers written at once."""
import json
import socket
import time

from lib import KEY, Gateway, Mock, check, json_reply, run

AUTH = "Authorization: Bearer %s\r\n" % KEY
CONF = "channel up {\n plugin openai\n base_url %s/v1\n models gpt-x\n}\n"


def answer(text):
    return {"id": "chatcmpl-w", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}


def request(content="hi"):
    body = json.dumps({"model": "gpt-x", "messages": [{"role": "user", "content": content}]})
    return ("POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n%sContent-Type: application/json"
            "\r\nContent-Length: %d\r\n\r\n%s" % (AUTH, len(body), body)).encode()


def read_answer(s, buf=b""):
    """One HTTP answer with a Content-Length from s; (status, body, rest)."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        check(d, "connection closed in a head")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    n = [int(v.split(":", 1)[1]) for v in lines if v.lower().startswith("content-length:")]
    check(n, "no Content-Length in %r" % lines[0])
    while len(rest) < n[0]:
        d = s.recv(65536)
        check(d, "connection closed after %d of %d body bytes" % (len(rest), n[0]))
        rest += d
    return int(lines[0].split()[1]), rest[:n[0]], rest[n[0]:]


def test_large_answer_to_a_slow_reader_arrives_whole():
    mock = Mock()
    text = "y" * (3 * 1024 * 1024)  # far more than the socket buffers hold
    mock.routes["/v1/chat/completions"] = lambda h, b: json_reply(h, 200, answer(text))
    gw = Gateway(CONF % mock.url)
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.connect(("127.0.0.1", gw.port))
        s.settimeout(30)
        s.sendall(request())
        time.sleep(0.5)  # the gateway's write stops part way: the rest waits for the socket
        status, body, _ = read_answer(s)
        check(status == 200, "status %d" % status)
        check(json.loads(body)["choices"][0]["message"]["content"] == text, "content differs")
        s.sendall(request())  # the connection is still good for the next request
        status, body, _ = read_answer(s)
        check(status == 200 and len(body) > len(text), "second answer %d" % status)
        s.close()
    finally:
        gw.stop()


def test_keepalive_and_pipelined_answers_in_order():
    mock = Mock()
    mock.routes["/v1/chat/completions"] = lambda h, b: json_reply(
        h, 200, answer("echo " + json.loads(b)["messages"][0]["content"]))
    gw = Gateway(CONF % mock.url)
    try:
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        rest = b""
        for i in range(5):  # one after another on one connection
            s.sendall(request("k%d" % i))
            status, body, rest = read_answer(s, rest)
            check(status == 200, "status %d" % status)
            check(json.loads(body)["choices"][0]["message"]["content"] == "echo k%d" % i,
                  "answer %d out of order" % i)
        s.sendall(b"".join(request("p%d" % i) for i in range(4)))  # pipelined
        for i in range(4):
            status, body, rest = read_answer(s, rest)
            check(json.loads(body)["choices"][0]["message"]["content"] == "echo p%d" % i,
                  "pipelined answer %d out of order" % i)
        bad = b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
        s.sendall(bad)  # an error answer (no key) takes the same write path
        status, body, rest = read_answer(s, rest)
        check(status == 401 and b'"error"' in body, "error answer %d %r" % (status, body[:80]))
        s.close()
    finally:
        gw.stop()


run([test_large_answer_to_a_slow_reader_arrives_whole, test_keepalive_and_pipelined_answers_in_order])
