"""Shared setup for the inbound-API tests (/v1/messages, /v1/responses):
a gateway with an admin listener (for the ledger), Anthropic requests and
SSE parsing, ledger rows, a raw-socket client that leaves mid-stream, and
scripted Anthropic / Responses upstreams.
"""
import json
import re
import socket
import tempfile
import time

from lib import KEY, Gateway, admin_call, check, free_port


class AdminGateway(Gateway):
    """A Gateway with a data_dir and an admin listener; .admin holds the token."""

    def __init__(self, channels, env=None, workers=2, extra=""):
        self.admin_port = free_port()
        super().__init__(channels=channels, env=env, workers=workers,
                         extra="data_dir %s\nadmin_listen 127.0.0.1:%d\n%s"
                         % (tempfile.mkdtemp(prefix="lm-inb-"), self.admin_port, extra))
        self.admin = re.search(r"admin token \(shown once\): (lmadm-[A-Za-z0-9_-]+)", self.logtext()).group(1)

    def msgs(self, body, headers=None, timeout=10, path="/v1/messages"):
        h = {"anthropic-version": "2023-06-01", "x-api-key": KEY}
        h.update(headers or {})
        return self.request("POST", path, body, key=None, headers=h, timeout=timeout)

    def usage_rows(self, rid, want=1):
        """The request's ledger rows once `want` are written (bounded wait)."""
        deadline = time.time() + 10
        while True:
            st, js = admin_call(self.admin_port, self.admin, "GET", "/admin/usage/rows?limit=100")
            check(st == 200, "admin usage %d" % st)
            rows = [r for r in js["data"] if r["request_id"] == rid]
            if len(rows) >= want or time.time() > deadline:
                return sorted(rows, key=lambda r: r["attempt"])
            time.sleep(0.05)

    def leave_mid_stream(self, path, body, marker, count, headers=None):
        """POST a stream on a raw socket, read until `marker` was seen `count`
        times, hang up; returns (request id, bytes received)."""
        data = json.dumps(body)
        h = {"Authorization": "Bearer " + KEY, "anthropic-version": "2023-06-01"}
        h.update(headers or {})
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
                   "Content-Length: %d\r\n\r\n%s" % (path, "".join("%s: %s\r\n" % kv for kv in h.items()),
                                                     len(data), data)).encode())
        got = b""
        while got.count(marker) < count:
            b = s.recv(65536)
            check(b, "stream ended early: %r" % got[-300:])
            got += b
        s.close()
        rid = [ln.split(b":", 1)[1].strip().decode() for ln in got.split(b"\r\n")
               if ln.lower().startswith(b"x-request-id:")][0]
        return rid, got


def events_of(raw):
    """[(event name, data dict)] of an SSE body (bytes or str)."""
    out = []
    text = raw.decode() if isinstance(raw, bytes) else raw
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        if data and data != "[DONE]":
            d = json.loads(data)
            out.append((name or d.get("type"), d))
    return out


def msgs_text(evs, kind="text_delta", field="text"):
    return "".join(d["delta"].get(field, "") for n, d in evs
                   if n == "content_block_delta" and d["delta"]["type"] == kind)


def msgs_usage(evs):
    """message_start's usage updated by the last message_delta's."""
    u = {}
    for n, d in evs:
        if n == "message_start":
            u.update(d["message"].get("usage") or {})
        elif n == "message_delta":
            u.update(d.get("usage") or {})
    return u


# ---- scripted Anthropic answers (what a Claude upstream sends) ----

def ant_event(d):
    return "event: %s\ndata: %s\n\n" % (d["type"], json.dumps(d))


def ant_stream(text_parts, model, in_tok=25, out_tok=None, thinking=None, tool=None, stop="end_turn"):
    """Anthropic's event sequence, as SSE text blocks (one per event)."""
    evs = [{"type": "message_start", "message": {
        "id": "msg_up1", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": in_tok, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 1}}}]
    idx = 0
    if thinking:
        evs.append({"type": "content_block_start", "index": idx,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
        evs.append({"type": "content_block_delta", "index": idx,
                    "delta": {"type": "thinking_delta", "thinking": thinking}})
        evs.append({"type": "content_block_delta", "index": idx,
                    "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}})
        evs.append({"type": "content_block_stop", "index": idx})
        idx += 1
    evs.append({"type": "content_block_start", "index": idx, "content_block": {"type": "text", "text": ""}})
    evs.append({"type": "ping"})
    for p in text_parts:
        evs.append({"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": p}})
    evs.append({"type": "content_block_stop", "index": idx})
    if tool:
        idx += 1
        evs.append({"type": "content_block_start", "index": idx, "content_block": {
            "type": "tool_use", "id": tool[0], "name": tool[1], "input": {}}})
        evs.append({"type": "content_block_delta", "index": idx,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(tool[2])}})
        evs.append({"type": "content_block_stop", "index": idx})
    evs.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": out_tok if out_tok is not None else 5 * len(text_parts)}})
    evs.append({"type": "message_stop"})
    return [ant_event(e) for e in evs]


def ant_message(text, model, in_tok=25, out_tok=7, tool=None, stop="end_turn", cache_read=3):
    content = [{"type": "text", "text": text}]
    if tool:
        content.append({"type": "tool_use", "id": tool[0], "name": tool[1], "input": tool[2]})
    return {"id": "msg_up2", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": in_tok, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read,
                      "output_tokens": out_tok}}


def ant_error(etype, msg):
    return {"type": "error", "error": {"type": etype, "message": msg}}


# ---- scripted Responses answers (what an upstream /v1/responses sends) ----

def resp_event(d):
    return "event: %s\ndata: %s\n\n" % (d["type"], json.dumps(d))


def resp_object(text, model, in_tok=11, out_tok=6, status="completed"):
    return {"id": "resp_up1", "object": "response", "created_at": 1, "status": status, "model": model,
            "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": in_tok, "input_tokens_details": {"cached_tokens": 2},
                      "output_tokens": out_tok, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": in_tok + out_tok}}


def resp_stream(parts, model, in_tok=11, out_tok=6):
    """The Responses API's event sequence for a text answer."""
    full = "".join(parts)
    base = resp_object("", model, in_tok, out_tok, status="in_progress")
    base["output"], base["usage"] = [], None
    evs = [{"type": "response.created", "sequence_number": 0, "response": base},
           {"type": "response.in_progress", "sequence_number": 1, "response": base},
           {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
            "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}},
           {"type": "response.content_part.added", "sequence_number": 3, "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}]
    for i, p in enumerate(parts):
        evs.append({"type": "response.output_text.delta", "sequence_number": 4 + i, "item_id": "msg_1",
                    "output_index": 0, "content_index": 0, "delta": p})
    n = 4 + len(parts)
    evs += [{"type": "response.output_text.done", "sequence_number": n, "item_id": "msg_1", "output_index": 0,
             "content_index": 0, "text": full},
            {"type": "response.completed", "sequence_number": n + 1,
             "response": resp_object(full, model, in_tok, out_tok)}]
    return [resp_event(e) for e in evs]
