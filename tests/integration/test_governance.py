"""Governance through the real binary: virtual keys from the admin API
authenticate the data plane; quotas are reserved atomically (QB-1), settled
to the ledger exactly, rate limits answer 429 with Retry-After, aborted
streams are billed for what was received, and each row is committed before
the last byte."""
import json
import os
import re
import socket
import sqlite3
import tempfile
import threading
import time

from lib import admin_call, Gateway, Mock, check, chunk, free_port, json_reply, run, sse_reply, usage_chunk

mock = Mock()
TOKEN_RE = re.compile(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)")
PLAIN = {"id": "c", "object": "chat.completion", "created": 1, "model": "up",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                      "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 10, "completion_tokens": 1000, "total_tokens": 1010}}


def answer(h, b):
    if json.loads(b).get("stream"):
        sse_reply(h, [chunk("a"), chunk("b"), chunk(finish="stop"), usage_chunk(10, 1000), "[DONE]"])
    else:
        json_reply(h, 200, PLAIN)


def slow_stream(h, b):
    if json.loads(b)["messages"][0]["content"].startswith("late"):
        time.sleep(1.5)  # the client leaves before the first byte
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for i in range(100):
        ev = ("data: %s\n\n" % json.dumps(chunk("tok%03d " % i))).encode()  # 7 chars ~ 2 tokens
        h.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        h.wfile.flush()
        time.sleep(0.02)
    h.wfile.write(b"0\r\n\r\n")


mock.routes["/v1/chat/completions"] = answer
mock.routes["/slow/chat/completions"] = slow_stream
mock.routes["/bad/chat/completions"] = lambda h, b: json_reply(h, 500, {"error": {"message": "down"}})


class Env:
    def __init__(self, data_dir=None):
        self.dir = data_dir or tempfile.mkdtemp(prefix="lm-gov-")
        self.admin_port = free_port()
        # price: 1.0 per 1M input and 1.0 per 1M output tokens -> 1000+1000 tokens = 2000 micro
        self.gw = Gateway(extra="data_dir %s\nadmin_listen 127.0.0.1:%d\nprice top-* 2 2\n"
                                % (self.dir, self.admin_port),
                          channels="""
channel up {
    plugin openai
    base_url %s/v1
    models m
    price_input 1
    price_output 1
}
channel slow {
    plugin openai
    base_url %s/slow
    models s
    price_input 1
    price_output 1
}
channel badf {
    plugin openai
    base_url %s/bad
    models f dead
    price_input 1
    price_output 1
}
channel goodf {
    plugin openai
    base_url %s/v1
    models f
    priority 1
    price_input 1
    price_output 1
}
channel permodel {
    plugin openai
    base_url %s/v1
    models cheap expensive=up-expensive-2025 top-m
    price cheap 1 1
    price up-expensive-* 10 30 5 0.001
}
""" % (mock.url, mock.url, mock.url, mock.url, mock.url))
        m = TOKEN_RE.search(self.gw.logtext())
        check(m or data_dir, "admin token printed")
        self.token = m.group(1) if m else None

    def admin(self, method, path, body=None):
        return admin_call(self.admin_port, self.token, method, path, body, timeout=10)

    def new_key(self, **fields):
        body = {"name": "k%d" % time.time_ns(), "quota": "unlimited"}
        body.update(fields)
        st, js = self.admin("POST", "/admin/keys", body)
        check(st == 201, "create key: %s %s" % (st, js))
        return js

    def db(self):
        return sqlite3.connect(os.path.join(self.dir, "longmen.db"), timeout=10)


def secret_of(k):
    return k.get("secret") or k.get("key")


def test_virtual_key_on_the_data_plane():
    env = Env()
    try:
        k = env.new_key(quota="1")
        st, js, raw, _ = env.gw.chat({"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                     key=secret_of(k))
        check(st == 200, raw)
        st, js, raw, _ = env.gw.chat({"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                     key=secret_of(k) + "x")
        check(st == 401, raw)
        kid = k.get("id") or k["key_record"]["id"] if "key_record" in k else k.get("id")
        st, js = env.admin("PATCH", "/admin/keys/%s" % kid, {"enabled": False})
        check(st == 200, js)
        st, js, raw, _ = env.gw.chat({"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                     key=secret_of(k))
        check(st == 401, "disabled key: %s" % raw)
        k2 = env.new_key(models=["other"])
        st, js, raw, _ = env.gw.chat({"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                     key=secret_of(k2))
        check(st == 403 and js["error"]["code"] == "model_not_allowed", raw)
    finally:
        env.gw.stop()


def test_qb1_parallel_quota_exact():
    env = Env()
    try:
        for rep in range(5):
            # worst case per request: prompt (body bytes / 4 = 20) + max_tokens 1000 at
            # 1 per 1M tokens = 1020 micro-units; the actual cost is 10 + 1000 = 1010.
            # The quota holds exactly 10 worst cases.
            k = env.new_key(quota="%.6f" % (1020 * 10 / 1e6))
            secret = secret_of(k)
            body = {"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "x"}]}
            barrier = threading.Barrier(40)
            results = []

            def go():
                barrier.wait()
                try:
                    st, js, raw, _ = env.gw.chat(body, key=secret, timeout=20)
                    results.append(st)
                except Exception as e:  # noqa: BLE001
                    results.append(repr(e))

            threads = [threading.Thread(target=go) for _ in range(40)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            ok = results.count(200)
            check(all(r in (200, 429) for r in results), "only 200/429: %s" % results)
            check(1 <= ok <= 10, "admitted %d (> 10 would overspend)" % ok)
            time.sleep(0.3)
            with env.db() as db:
                kid = db.execute("select id from keys where name=?", (k["name"],)).fetchone()[0]
                used = db.execute("select used from keys where id=?", (kid,)).fetchone()[0]
                rows, total = db.execute("select count(*), coalesce(sum(cost),0) from usage where key_id=?",
                                         (kid,)).fetchone()
            check(rows == ok and total == used == 1010 * ok and used <= 10200,
                  "rep %d: rows %d, ledger %d, used %d, admitted %d" % (rep, rows, total, used, ok))
    finally:
        env.gw.stop()


def test_rate_limit_429_retry_after():
    env = Env()
    try:
        k = env.new_key(rpm=3)
        codes = []
        for _ in range(5):
            st, js, raw, hdrs = env.gw.chat({"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                            key=secret_of(k))
            codes.append(st)
            if st == 429:
                check(js["error"]["code"] == "rate_limit_exceeded" and int(hdrs.get("Retry-After", 0)) >= 1,
                      "429 shape: %s %s" % (hdrs, raw))
        check(codes == [200, 200, 200, 429, 429], codes)
    finally:
        env.gw.stop()


def test_stream_row_committed_before_done_and_usage():
    env = Env()
    try:
        k = env.new_key()
        st, ev, raw, _ = env.gw.stream({"model": "m", "stream": True,
                                        "messages": [{"role": "user", "content": "x"}]}, key=secret_of(k))
        check(st == 200 and ev[-1] == "[DONE]", raw)
        with env.db() as db:
            row = db.execute("select prompt_tokens, completion_tokens, cost, client_aborted from usage "
                             "order by id desc limit 1").fetchone()
        check(row == (10, 1000, 1010, 0), "row visible right after [DONE]: %s" % (row,))
    finally:
        env.gw.stop()


def test_aborted_stream_billed_for_what_was_received():
    env = Env()
    try:
        k = env.new_key()
        s = socket.create_connection(("127.0.0.1", env.gw.port))
        body = json.dumps({"model": "s", "stream": True, "messages": [{"role": "user", "content": "go"}]}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (secret_of(k).encode(), len(body), body))
        got = b""
        while got.count(b"tok") < 30:
            got += s.recv(65536)
        s.close()
        delivered = got.count(b"tok")
        time.sleep(1.0)
        with env.db() as db:
            rows = db.execute("select completion_tokens, client_aborted from usage").fetchall()
        check(len(rows) == 1 and rows[0][1] == 1, "one aborted row: %s" % rows)
        completion = rows[0][0]
        # each event carries "tokNNN " (7 chars) -> about 2 tokens; bounded by what was received
        check(delivered * 7 // 4 - 2 <= completion <= 100 * 7 // 4 + 2,
              "billed %d tokens for %d delivered events" % (completion, delivered))
    finally:
        env.gw.stop()


def test_usage_via_admin_api():
    env = Env()
    try:
        k = env.new_key()
        for _ in range(3):
            env.gw.chat({"model": "m", "messages": [{"role": "user", "content": "x"}]}, key=secret_of(k))
        time.sleep(0.3)
        st, js = env.admin("GET", "/admin/usage?group_by=model")
        check(st == 200 and "m" in json.dumps(js), "usage by model: %s" % js)
    finally:
        env.gw.stop()


def test_db1_kill9_no_lost_or_duplicate_rows():
    env = Env()
    k = env.new_key(quota="100")
    secret = secret_of(k)
    done, stop = [], threading.Event()
    lock = threading.Lock()

    def client():
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        while not stop.is_set():
            try:
                st, js, raw, hdrs = env.gw.chat(body, key=secret, timeout=5)
                if st == 200 and js and js.get("choices"):
                    with lock:
                        done.append(hdrs.get("X-Request-Id"))
            except Exception:  # noqa: BLE001 - the gateway is being killed
                pass

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    env.gw.proc.kill()  # kill -9 under load
    env.gw.proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    check(len(done) > 20, "load ran: %d complete responses" % len(done))
    env2 = Env(data_dir=env.dir)  # restart on the same store
    try:
        with env2.db() as db:
            kid = db.execute("select id from keys where name=?", (k["name"],)).fetchone()[0]
            rows = dict(db.execute("select request_id, count(*) from usage where key_id=? "
                                   "group by request_id", (kid,)).fetchall())
            used, total = db.execute("select used, (select coalesce(sum(cost),0) from usage "
                                     "where key_id=?) from keys where id=?", (kid, kid)).fetchone()
        missing = [rid for rid in done if rows.get(rid) != 1]
        check(not missing, "%d complete responses without exactly one row: %s" % (len(missing), missing[:3]))
        check(all(n == 1 for n in rows.values()), "no duplicate rows")
        check(used == total, "balance = initial - sum(rows): used %d, ledger %d" % (used, total))
        st, js, raw, _ = env2.gw.chat({"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                      key=secret)
        check(st == 200, "the key still works after the restart: %s" % raw)
    finally:
        env2.gw.stop()


def test_group_commit_many_rows_exact_then_kill9():
    """Many clients at once: the writer commits their rows in shared
    transactions; every answer has exactly one row, the key's used is the
    ledger's sum (on disk and as the admin API reports it). Then kill -9
    under the same load: after the restart no answered request lacks its
    row, none is doubled, and used still equals the ledger (a row and its
    charge commit together or not at all)."""
    env = Env()
    k = env.new_key(quota="1000")
    secret = secret_of(k)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    done, lock, stop = [], threading.Lock(), threading.Event()

    def client(n):
        for _ in range(n):
            if stop.is_set():
                return
            try:
                st, js, raw, hdrs = env.gw.chat(body, key=secret, timeout=10)
                if st == 200 and js and js.get("choices"):
                    with lock:
                        done.append(hdrs.get("X-Request-Id"))
            except Exception:  # noqa: BLE001 - the gateway is being killed (second round)
                pass

    def ledger(db, kid):
        rows = dict(db.execute("select request_id, count(*) from usage where key_id=? "
                               "group by request_id", (kid,)).fetchall())
        used, total = db.execute("select used, (select coalesce(sum(cost),0) from usage "
                                 "where key_id=?) from keys where id=?", (kid, kid)).fetchone()
        return rows, used, total

    try:
        threads = [threading.Thread(target=client, args=(8,)) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        check(len(done) == 24 * 8, "all answered: %d of %d" % (len(done), 24 * 8))
        st, js = env.admin("GET", "/admin/keys/%s" % k["id"])
        with env.db() as db:
            kid = db.execute("select id from keys where name=?", (k["name"],)).fetchone()[0]
            rows, used, total = ledger(db, kid)
        check(sorted(rows) == sorted(done) and all(n == 1 for n in rows.values()),
              "one row per answer: %d rows for %d answers" % (len(rows), len(done)))
        check(used == total == 1010 * len(done), "used %d, ledger %d, answers %d" % (used, total, len(done)))
        check(st == 200 and round(float(js.get("used", -1)) * 1e6) == used,
              "admin view of used: %s %s" % (st, js.get("used")))

        before = len(done)
        threads = [threading.Thread(target=client, args=(1000,)) for _ in range(16)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        env.gw.proc.kill()  # kill -9 while batches are in flight
        env.gw.proc.wait()
        stop.set()
        for t in threads:
            t.join(15)
        check(len(done) > before + 16, "second load ran: %d answers" % (len(done) - before))
    finally:
        stop.set()
        env.gw.stop()  # already killed unless a check failed first
    env2 = Env(data_dir=env.dir)
    try:
        with env2.db() as db:
            rows, used, total = ledger(db, kid)
        missing = [rid for rid in done if rows.get(rid) != 1]
        check(not missing, "%d answers without exactly one row: %s" % (len(missing), missing[:3]))
        check(all(n == 1 for n in rows.values()), "no duplicate rows")
        check(used == total, "used %d = ledger %d after the crash" % (used, total))
    finally:
        env2.gw.stop()


def test_qb7_every_attempt_has_a_row_only_the_answer_is_billed():
    env = Env()
    try:
        k = env.new_key(quota="1")
        st, js, raw, hdrs = env.gw.chat({"model": "f", "messages": [{"role": "user", "content": "x"}]},
                                        key=secret_of(k))
        check(st == 200 and "attempts=2" in hdrs.get("X-Longmen-Route", ""), "fallback: %s %s" % (st, hdrs))
        rid = hdrs.get("X-Request-Id")
        st2, js2, raw2, hdrs2 = env.gw.chat({"model": "dead", "messages": [{"role": "user", "content": "x"}]},
                                            key=secret_of(k))
        check(st2 == 502, "all failed: %s" % raw2)
        rid2 = hdrs2.get("X-Request-Id")
        time.sleep(0.3)
        with env.db() as db:
            rows = db.execute("select attempt, channel, status, cost from usage where request_id = ? "
                              "order by attempt", (rid,)).fetchall()
            failed = db.execute("select attempt, channel, status, cost from usage where request_id = ?",
                                (rid2,)).fetchall()
            used = db.execute("select used from keys where id = ?", (k["id"],)).fetchone()[0]
        check(rows == [(1, "badf", 500, 0), (2, "goodf", 200, 1010)], "rows %s" % rows)
        check(failed == [(1, "badf", 500, 0)], "failed request row %s" % failed)
        check(used == 1010, "only the answer is billed: used %s" % used)
    finally:
        env.gw.stop()


def test_prices_per_model():
    """price lines: per upstream model on the channel (globs, cached and
    per-request prices), then the top-level price lines."""
    env = Env()
    try:
        k = env.new_key(quota="10")
        rids = {}
        for m in ("cheap", "expensive", "top-m"):
            st, js, raw, hdrs = env.gw.chat({"model": m, "messages": [{"role": "user", "content": "x"}]},
                                            key=secret_of(k))
            check(st == 200, raw)
            rids[m] = hdrs.get("X-Request-Id")
        time.sleep(0.3)
        with env.db() as db:
            cost = {m: db.execute("select cost from usage where request_id = ?", (rid,)).fetchone()[0]
                    for m, rid in rids.items()}
        # usage: 10 prompt + 1000 completion tokens; prices per 1M tokens
        check(cost == {"cheap": 10 * 1 + 1000 * 1, "expensive": 10 * 10 + 1000 * 30 + 1000,
                       "top-m": 10 * 2 + 1000 * 2}, "costs %s" % cost)
    finally:
        env.gw.stop()


def test_stream_left_before_first_event_bills_the_prompt():
    """A client that hangs up before the first event has already had its
    prompt sent (and billed by the provider): the attempt gets an aborted
    row billing the estimated prompt, not nothing."""
    env = Env()
    try:
        k = env.new_key()
        s = socket.create_connection(("127.0.0.1", env.gw.port))
        body = json.dumps({"model": "s", "stream": True,
                           "messages": [{"role": "user", "content": "late " + "word " * 400}]}).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                  % (secret_of(k).encode(), len(body), body))
        time.sleep(0.4)
        s.close()
        rows = []
        deadline = time.time() + 10
        while not rows and time.time() < deadline:
            time.sleep(0.1)
            with env.db() as db:
                rows = db.execute("select prompt_tokens, completion_tokens, cost, client_aborted, status "
                                  "from usage").fetchall()
        check(len(rows) == 1, "one row for the attempt: %s" % rows)
        prompt, completion, cost, aborted, status = rows[0]
        check(300 <= prompt <= 2000 and completion == 0 and cost == prompt and aborted == 1 and status == 499,
              "prompt estimate billed, marked aborted: %s" % (rows[0],))
        time.sleep(1.5)  # the upstream's late answer changes nothing
        with env.db() as db:
            check(db.execute("select count(*) from usage").fetchone()[0] == 1, "still one row")
    finally:
        env.gw.stop()


run([test_prices_per_model, test_group_commit_many_rows_exact_then_kill9, test_qb7_every_attempt_has_a_row_only_the_answer_is_billed, test_virtual_key_on_the_data_plane, test_db1_kill9_no_lost_or_duplicate_rows, test_qb1_parallel_quota_exact, test_rate_limit_429_retry_after,
     test_stream_row_committed_before_done_and_usage, test_aborted_stream_billed_for_what_was_received,
     test_usage_via_admin_api, test_stream_left_before_first_event_bills_the_prompt])
