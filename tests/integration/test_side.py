"""Side values (ABI 1.1) through the real gateway: a channel whose requests
need a token fetched over HTTP (tests/plugins/sidecar.c). One fetch serves
every request and worker waiting on it; a refused token is refreshed and
the request retried once; failures reach the waiting clients and are not
retried by every request; a value near its end is refreshed in the
background; a client leaving while it waits costs nothing."""
import threading
import time

from lib import TEST_PLUGIN_DIR, Gateway, Mock, check, content_of, json_reply, run, sse_reply

MODEL = "side-model"


class TokenUpstream:
    """/token hands out tok-1, tok-2, ... (optionally slowly or failing);
    /chat accepts only the current token."""

    def __init__(self, ttl=3600, delay=0.0):
        self.mock = Mock()
        self.ttl = ttl
        self.delay = delay
        self.fail_token = False
        self.issued = 0
        self.current = None
        self.refuse_all = False
        self.lock = threading.Lock()
        self.mock.routes["/token"] = self.token
        self.mock.routes["/chat"] = self.chat

    def token(self, h, body):
        time.sleep(self.delay)
        if self.fail_token:
            return json_reply(h, 500, {"error": "down"})
        with self.lock:
            self.issued += 1
            self.current = "tok-%d" % self.issued
            tok = self.current
        json_reply(h, 200, {"token": tok, "ttl": self.ttl})

    def chat(self, h, body):
        auth = h.headers.get("Authorization", "")
        with self.lock:
            ok = not self.refuse_all and auth == "Bearer %s" % self.current
        if not ok:
            return json_reply(h, 401, {"error": {"message": "bad token", "type": "auth"}})
        import json
        req = json.loads(body)
        if req.get("stream"):
            return sse_reply(h, [{"id": "c1", "object": "chat.completion.chunk", "created": 1,
                                  "model": MODEL, "choices": [{"index": 0, "delta": {"content": "hi"},
                                                               "finish_reason": "stop"}]},
                                 "[DONE]"])
        json_reply(h, 200, {"id": "c1", "object": "chat.completion", "created": 1, "model": MODEL,
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": auth[7:]},
                                         "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    def calls(self, path):
        return sum(1 for r in self.mock.requests if r["path"] == path)


def gateway(up, workers=2):
    return Gateway("channel side {\n plugin sidecar\n base_url %s\n models %s\n}\n" % (up.mock.url, MODEL),
                   workers=workers, plugin_dir=TEST_PLUGIN_DIR)


def ask(gw, timeout=10):
    return gw.chat({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=timeout)


def parallel(fn, n):
    out = [None] * n

    def one(i):
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001
            out[i] = e
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    return out


def test_one_fetch_shared_by_concurrent_requests():
    up = TokenUpstream(delay=0.4)
    gw = gateway(up)
    try:
        res = parallel(lambda: ask(gw), 20)
        statuses = [r[0] if isinstance(r, tuple) else r for r in res]
        check(all(s == 200 for s in statuses), "statuses %s" % statuses)
        check(up.calls("/token") == 1, "token fetched %d times" % up.calls("/token"))
        check(all(r[1]["choices"][0]["message"]["content"] == "tok-1" for r in res), "token sent")
        st, js, _, _ = ask(gw)
        check(st == 200 and up.calls("/token") == 1, "cached: %d fetches" % up.calls("/token"))
        check("tok-1" not in gw.logtext(), "the token is in the log")
    finally:
        gw.stop()
        up.mock.close()


def test_refused_token_refreshed_once_and_retried():
    up = TokenUpstream()
    gw = gateway(up)
    try:
        check(ask(gw)[0] == 200, "first")
        with up.lock:
            up.current = "rotated"  # the provider revoked tok-1
        res = parallel(lambda: ask(gw), 10)
        check(all(isinstance(r, tuple) and r[0] == 200 for r in res), "statuses %s" % [r[0] for r in res])
        check(up.calls("/token") == 2, "one refresh for all: %d fetches" % up.calls("/token"))
        check(all(r[1]["choices"][0]["message"]["content"] == "tok-2" for r in res), "new token used")
    finally:
        gw.stop()
        up.mock.close()


def test_token_refused_twice_gives_the_error():
    up = TokenUpstream()
    gw = gateway(up)
    try:
        up.refuse_all = True
        st, js, _, _ = ask(gw)
        check(st == 401 and js["error"]["code"] == "token_rejected", "got %s %s" % (st, js))
        check(up.calls("/chat") == 2, "chat attempts %d (one retry)" % up.calls("/chat"))
        check(up.calls("/token") == 2, "token fetches %d" % up.calls("/token"))
    finally:
        gw.stop()
        up.mock.close()


def test_failed_fetch_reaches_waiters_and_is_held():
    up = TokenUpstream(delay=0.3)
    up.fail_token = True
    gw = gateway(up)
    try:
        res = parallel(lambda: ask(gw), 8)
        check(all(isinstance(r, tuple) and r[0] == 401 for r in res), "statuses %s" % res)
        check(res[0][1]["error"]["code"] == "token_fetch_failed", "error %s" % res[0][1])
        check(up.calls("/token") == 1, "fetches %d" % up.calls("/token"))
        st, js, _, _ = ask(gw)  # within a second: the held error, no new fetch
        check(st == 401 and up.calls("/token") == 1, "held: %s, %d fetches" % (st, up.calls("/token")))
        time.sleep(1.1)
        up.fail_token = False
        st, js, _, _ = ask(gw)
        check(st == 200 and up.calls("/token") == 2, "recovered: %s, %d" % (st, up.calls("/token")))
    finally:
        gw.stop()
        up.mock.close()


def test_background_refresh_before_expiry():
    up = TokenUpstream(ttl=2)
    gw = gateway(up, workers=1)
    try:
        st, js, _, _ = ask(gw)
        check(st == 200 and js["choices"][0]["message"]["content"] == "tok-1", "first")
        time.sleep(1.9)  # past 90% of 2 s, before expiry
        st, js, _, _ = ask(gw)
        check(st == 200, "status %s" % st)
        deadline = time.time() + 3
        while up.calls("/token") < 2 and time.time() < deadline:
            time.sleep(0.05)
        check(up.calls("/token") == 2, "background fetches %d" % up.calls("/token"))
        time.sleep(0.1)
        st, js, _, _ = ask(gw)
        check(st == 200 and js["choices"][0]["message"]["content"] == "tok-2", "new token %s" % js)
    finally:
        gw.stop()
        up.mock.close()


def test_expired_value_fetched_again():
    up = TokenUpstream(ttl=1)
    gw = gateway(up, workers=1)
    try:
        check(ask(gw)[0] == 200, "first")
        time.sleep(1.2)
        st, js, _, _ = ask(gw)
        check(st == 200 and js["choices"][0]["message"]["content"] == "tok-2", "after expiry %s" % js)
    finally:
        gw.stop()
        up.mock.close()


def test_client_leaves_while_waiting_and_stream_after_wait():
    up = TokenUpstream(delay=0.8)
    gw = gateway(up)
    try:
        for _ in range(3):
            try:
                ask(gw, timeout=0.2)
            except OSError:
                pass
        time.sleep(1.0)
        st, events, _, _ = gw.stream({"model": MODEL, "stream": True,
                                      "messages": [{"role": "user", "content": "hi"}]})
        check(st == 200 and content_of(events) == "hi" and events[-1] == "[DONE]", "stream %s" % events)
        check(gw.proc.poll() is None, "gateway died")
        check(up.calls("/token") == 1, "fetches %d" % up.calls("/token"))
    finally:
        gw.stop()
        up.mock.close()


if __name__ == "__main__":
    run([test_one_fetch_shared_by_concurrent_requests, test_refused_token_refreshed_once_and_retried,
         test_token_refused_twice_gives_the_error, test_failed_fetch_reaches_waiters_and_is_held,
         test_background_refresh_before_expiry, test_expired_value_fetched_again,
         test_client_leaves_while_waiting_and_stream_after_wait])
