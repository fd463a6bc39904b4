"""otlp_pb.py - a small stdlib-only decoder of OTLP/protobuf trace exports
(opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest) into the
shape OTLP/JSON has, so tests read both the same way: ids as lowercase hex,
64-bit integers as decimal strings, attribute values as
{"stringValue"|"intValue"|"boolValue"|"doubleValue"|"arrayValue": ...}.
Only the fields Longmen writes are kept; the others are skipped."""
import struct


def _varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if not c & 0x80:
            return v, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(b):
    """(field number, wire type, value) for each field of one message."""
    i, out = 0, []
    while i < len(b):
        key, i = _varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(b, i)
        elif wire == 1:
            v, i = struct.unpack_from("<Q", b, i)[0], i + 8
        elif wire == 2:
            n, i = _varint(b, i)
            if i + n > len(b):
                raise ValueError("length beyond the message")
            v, i = bytes(b[i:i + n]), i + n
        elif wire == 5:
            v, i = struct.unpack_from("<I", b, i)[0], i + 4
        else:
            raise ValueError("wire type %d" % wire)
        out.append((num, wire, v))
    if i != len(b):
        raise ValueError("truncated")
    return out


def _int64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def any_value(b):
    for num, wire, v in fields(b):
        if num == 1:
            return {"stringValue": v.decode("utf-8")}  # strict: invalid UTF-8 raises
        if num == 2:
            return {"boolValue": bool(v)}
        if num == 3:
            return {"intValue": str(_int64(v))}
        if num == 4:
            return {"doubleValue": struct.unpack("<d", struct.pack("<Q", v))[0]}
        if num == 5:
            return {"arrayValue": {"values": [any_value(x) for n, _, x in fields(v) if n == 1]}}
    return {}


def key_value(b):
    kv = {}
    for num, _, v in fields(b):
        if num == 1:
            kv["key"] = v.decode("utf-8")
        elif num == 2:
            kv["value"] = any_value(v)
    return kv


def span(b):
    s = {"attributes": []}
    for num, _, v in fields(b):
        if num == 1:
            s["traceId"] = v.hex()
        elif num == 2:
            s["spanId"] = v.hex()
        elif num == 4:
            s["parentSpanId"] = v.hex()
        elif num == 5:
            s["name"] = v.decode("utf-8")
        elif num == 6:
            s["kind"] = v
        elif num == 7:
            s["startTimeUnixNano"] = str(v)
        elif num == 8:
            s["endTimeUnixNano"] = str(v)
        elif num == 9:
            s["attributes"].append(key_value(v))
        elif num == 15:
            s["status"] = {"code": dict((n, x) for n, _, x in fields(v)).get(3, 0)}
    return s


def export_request(body):
    """An ExportTraceServiceRequest's bytes as an OTLP/JSON-shaped dict."""
    out = {"resourceSpans": []}
    for num, _, rs in fields(body):
        if num != 1:
            continue
        r = {"resource": {"attributes": []}, "scopeSpans": []}
        for n, _, v in fields(rs):
            if n == 1:
                r["resource"]["attributes"] = [key_value(x) for k, _, x in fields(v) if k == 1]
            elif n == 2:
                ss = {"scope": {}, "spans": []}
                for k, _, x in fields(v):
                    if k == 1:
                        ss["scope"] = {"name": dict((a, y) for a, _, y in fields(x)).get(1, b"").decode()}
                    elif k == 2:
                        ss["spans"].append(span(x))
                r["scopeSpans"].append(ss)
        out["resourceSpans"].append(r)
    return out
