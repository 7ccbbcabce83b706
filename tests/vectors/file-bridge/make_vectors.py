"""Writes the file-bridge v1 test vectors (run once; the outputs are checked in).

Frames are assembled here byte by byte with zlib's CRC-32, not with the library's
encoder, so the vectors check the codec rather than echo it. Re-run only on purpose:
``python tests/vectors/file-bridge/make_vectors.py``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def frame(
    fid: str,
    seq: int,
    payload: bytes,
    *,
    version: str = "1",
    length: int | None = None,
    crc: int | None = None,
    end: bytes = b"\nEND\n",
) -> bytes:
    n = len(payload) if length is None else length
    prefix = f"FOKHA {version} {fid} {seq} {n} ".encode()
    value = zlib.crc32(prefix + payload) & 0xFFFFFFFF if crc is None else crc
    return prefix + f"{value:08x}\n".encode() + payload + end


def put(kind: str, name: str, data: bytes, meta: dict[str, object]) -> None:
    folder = HERE / kind
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.fkb").write_bytes(data)
    (folder / f"{name}.json").write_text(
        json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def payload(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def main() -> None:
    order = {
        "body": {"direction": "BUY", "symbol": "EURUSD", "volume": 0.1},
        "kind": "order",
        "sender": "py",
        "sent_at": 1800000000.5,
        "type": "request",
    }
    reply = {
        "body": {},
        "details": {"message": "done", "retcode": 10009, "ticket": 123456},
        "in_reply_to": "01J0000000000000000000ORDR",
        "kind": "order",
        "sender": "ea",
        "sent_at": 1800000000.75,
        "status": "executed",
        "type": "reply",
    }
    unicode_msg = {
        "body": {"note": "€ 1.0842 — تداول — 取引 — 🚀", "symbol": "XAUUSD.m"},
        "kind": "note",
        "sender": "py",
        "sent_at": 1800000001,
        "type": "message",
    }
    snap = {
        "body": {"instance": "01J00000000000000000000INS", "time": 1800000002.0},
        "kind": "heartbeat",
        "sender": "ea",
        "sent_at": 1800000002.0,
        "type": "snapshot",
    }
    valid = {
        "request_order": ("01J0000000000000000000ORDR", 1800000000500000, payload(order), order),
        "reply_executed": ("01J0000000000000000000REPL", 1800000000750000, payload(reply), reply),
        "message_unicode": ("note-1", 7, payload(unicode_msg), unicode_msg),
        "snapshot_heartbeat": (
            "heartbeat-1800000002000000",
            1800000002000000,
            payload(snap),
            snap,
        ),
        "pretty_printed_payload": (
            "a",
            0,
            json.dumps({"body": {"x": [1, 2]}, "type": "message"}, indent=2).encode(),
            {"body": {"x": [1, 2]}, "type": "message"},
        ),
        "empty_object": ("Z_9-z", 99999999999999999999, b"{}", {}),
    }
    for name, (fid, seq, body, obj) in valid.items():
        put("valid", name, frame(fid, seq, body), {"id": fid, "seq": seq, "payload": obj})

    good = frame("x1", 5, payload(order))
    p = payload(order)
    invalid: dict[str, tuple[bytes, str, str]] = {
        "empty_file": (b"", "incomplete", "incomplete"),
        "truncated_header": (good[:20], "incomplete", "incomplete"),
        "truncated_payload": (good[: good.index(b"\n") + 10], "incomplete", "incomplete"),
        "truncated_end_marker": (good[:-2], "incomplete", "incomplete"),
        "garbage": (b'{"type":"request","kind":"order"}', "corrupt", "bad_magic"),
        "utf16_text": (
            "FOKHA 1 x 1 2 00000000\n{}\nEND\n".encode("utf-16"),
            "corrupt",
            "bad_magic",
        ),
        "other_version": (frame("x1", 5, p, version="2"), "corrupt", "unsupported_version"),
        "bad_crc": (frame("x1", 5, p, crc=0x12345678), "corrupt", "bad_crc"),
        "bad_end_marker": (frame("x1", 5, p, end=b"\nEDN\n"), "corrupt", "bad_end_marker"),
        "trailing_data": (good + b"more", "corrupt", "trailing_data"),
        "non_utf8_payload": (frame("x1", 5, b'{"a":"\xff\xfe"}'), "corrupt", "bad_utf8"),
        "bom_payload": (frame("x1", 5, b"\xef\xbb\xbf{}"), "corrupt", "bad_utf8"),
        "not_json": (frame("x1", 5, b"{not json}"), "corrupt", "bad_json"),
        "json_array": (frame("x1", 5, b"[1,2,3]"), "corrupt", "bad_json"),
        "nan_in_json": (frame("x1", 5, b'{"a":NaN}'), "corrupt", "bad_json"),
        "oversized_length": (frame("x1", 5, p, length=2_000_000), "corrupt", "too_large"),
        "seq_not_digits": (
            b"FOKHA 1 x1 5a 2 00000000\n{}\nEND\n",
            "corrupt",
            "bad_header",
        ),
        "id_with_colon": (frame("x:1", 5, b"{}"), "corrupt", "bad_header"),
        "header_too_long": (b"FOKHA " + b"1" * 200, "corrupt", "bad_header"),
        "extra_header_field": (
            b"FOKHA 1 x1 5 2 00000000 extra\n{}\nEND\n",
            "corrupt",
            "bad_header",
        ),
    }
    for name, (data, result, code) in invalid.items():
        put("invalid", name, data, {"result": result, "code": code})


if __name__ == "__main__":
    main()
