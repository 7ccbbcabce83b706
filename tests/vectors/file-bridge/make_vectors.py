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


def upper_crc(data: bytes) -> bytes:
    """The same frame with its crc field in upper-case hex (the spec says lower case)."""
    head, rest = data.split(b"\n", 1)
    return head[:-8] + head[-8:].upper() + b"\n" + rest


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
    # Clarified cases (issue 14): the header before its LF, the check order, UTF-8 and
    # the JSON grammar as every implementation must apply them.
    invalid.update(
        {
            "partial_header_bad_id": (b"FOKHA 1 x:1 5", "incomplete", "incomplete"),
            "header_127_bytes_no_lf": (b"FOKHA 1 " + b"x" * 119, "incomplete", "incomplete"),
            "header_128_bytes_no_lf": (b"FOKHA 1 " + b"x" * 120, "corrupt", "bad_header"),
            "long_header_other_version": (b"FOKHA 2 " + b"x" * 150, "corrupt", "bad_header"),
            "header_non_ascii_id": (frame("x\u00e9", 5, b"{}"), "corrupt", "bad_header"),
            "crc_upper_case_hex": (
                upper_crc(frame("x1", 5, b'{"a":"b"}')),
                "corrupt",
                "bad_header",
            ),
            "seq_21_digits": (frame("x1", 10**20, b"{}"), "corrupt", "bad_header"),
            "utf8_overlong": (frame("x1", 5, b'{"a":"\xc0\xaf"}'), "corrupt", "bad_utf8"),
            "utf8_surrogate": (frame("x1", 5, b'{"a":"\xed\xa0\x80"}'), "corrupt", "bad_utf8"),
            "utf8_truncated_sequence": (frame("x1", 5, b'{"a":"\xe2\x82"}'), "corrupt", "bad_utf8"),
            "json_brace_matched_garbage": (frame("x1", 5, b'{"a":[1,}'), "corrupt", "bad_json"),
            "json_trailing_comma": (frame("x1", 5, b'{"a":1,}'), "corrupt", "bad_json"),
            "json_infinity": (frame("x1", 5, b'{"a":-Infinity}'), "corrupt", "bad_json"),
            "json_single_quotes": (frame("x1", 5, b"{'a':1}"), "corrupt", "bad_json"),
            "json_leading_zero": (frame("x1", 5, b'{"a":01}'), "corrupt", "bad_json"),
            "json_control_char_in_string": (frame("x1", 5, b'{"a":"x\ty"}'), "corrupt", "bad_json"),
            "json_bad_escape": (frame("x1", 5, b'{"a":"\\x"}'), "corrupt", "bad_json"),
            "json_comment": (frame("x1", 5, b'{"a":1/*c*/}'), "corrupt", "bad_json"),
            "json_two_objects": (frame("x1", 5, b"{}{}"), "corrupt", "bad_json"),
            "json_top_level_string": (frame("x1", 5, b'"{}"'), "corrupt", "bad_json"),
            "json_valid_fields_invalid_elsewhere": (
                frame("x1", 5, b'{"body":{},"kind":"order","type":"request","x":[1 2]}'),
                "corrupt",
                "bad_json",
            ),
        }
    )
    for name, (data, result, code) in invalid.items():
        put("invalid", name, data, {"result": result, "code": code})

    extra_valid = {
        "nested_256_levels": ("deep", 1, b'{"a":' + b"[" * 255 + b"]" * 255 + b"}"),
        "duplicate_keys_last_wins": ("dup", 2, b'{"a":1,"a":2}'),
        "braces_inside_strings": (
            "strs",
            3,
            b'{"body":{"note":"}{\\"type\\":\\"x\\""},"type":"message"}',
        ),
        "escaped_surrogate_pair": ("esc", 4, b'{"s":"\\ud83d\\ude80 \\u00e9\\n"}'),
        "seq_above_64_bits": ("big", 18446744073709551616, b"{}"),
        "whitespace_around_payload": ("ws", 6, b' \t\r\n{ "a" : [ ] }\n '),
    }
    for name, (fid, seq, body) in extra_valid.items():
        obj = json.loads(body)
        put("valid", name, frame(fid, seq, body), {"id": fid, "seq": seq, "payload": obj})

    messages()
    names()


def message_frame(name: str, fid: str, seq: int, obj: object) -> bytes:
    body = obj if isinstance(obj, bytes) else payload(obj)
    return frame(fid, seq, body)


def messages() -> None:
    """Message-level vectors (spec 5): a file name, a complete frame, and the verdict of
    the checks made after the claim: ``ok`` or ``bad`` with the reason code."""
    base = {"body": {}, "kind": "order", "sender": "py", "sent_at": 1800000000, "type": "request"}
    reply = {
        "body": {},
        "details": {"ticket": 1},
        "in_reply_to": "req-1",
        "kind": "order",
        "sender": "py",
        "sent_at": 1800000000.5,
        "status": "executed",
        "type": "reply",
    }
    name = "00000000000000000005-py-m1.fkb"

    def without(d: dict[str, object], key: str) -> dict[str, object]:
        return {k: v for k, v in d.items() if k != key}

    cases: dict[str, tuple[str, str, int, object, str, str]] = {
        "ok_request": (name, "m1", 5, base, "ok", ""),
        "ok_reply": (name, "m1", 5, reply, "ok", ""),
        "ok_message_unknown_keys": (name, "m1", 5, {**base, "type": "message", "x": [1]}, "ok", ""),
        "ok_header_seq_unpadded": (name, "m1", 5, base, "ok", ""),
        "ok_seq_above_64_bits": (
            "18446744073709551616-py-m1.fkb",
            "m1",
            18446744073709551616,
            base,
            "ok",
            "",
        ),
        "id_differs_from_name": (name, "m2", 5, base, "bad", "name_mismatch"),
        "seq_differs_from_name": (name, "m1", 6, base, "bad", "name_mismatch"),
        "sender_differs_from_name": (
            name,
            "m1",
            5,
            {**base, "sender": "other"},
            "bad",
            "name_mismatch",
        ),
        "name_checked_before_fields": (
            name,
            "m2",
            5,
            {**base, "type": "x"},
            "bad",
            "name_mismatch",
        ),
        "kind_checked_before_sender_name": (
            name,
            "m1",
            5,
            {**base, "kind": "a b", "sender": "other"},
            "bad",
            "bad_message",
        ),
        "sender_name_checked_before_sent_at": (
            name,
            "m1",
            5,
            {**base, "sender": "other", "sent_at": "x"},
            "bad",
            "name_mismatch",
        ),
        "type_unknown": (name, "m1", 5, {**base, "type": "snapshot"}, "bad", "bad_message"),
        "type_missing": (name, "m1", 5, without(base, "type"), "bad", "bad_message"),
        "kind_with_space": (name, "m1", 5, {**base, "kind": "a b"}, "bad", "bad_message"),
        "kind_too_long": (name, "m1", 5, {**base, "kind": "k" * 65}, "bad", "bad_message"),
        "sender_missing": (name, "m1", 5, without(base, "sender"), "bad", "bad_message"),
        "sender_with_dash": (name, "m1", 5, {**base, "sender": "p-y"}, "bad", "bad_message"),
        "sent_at_string": (name, "m1", 5, {**base, "sent_at": "1800000000"}, "bad", "bad_message"),
        "sent_at_bool": (name, "m1", 5, {**base, "sent_at": True}, "bad", "bad_message"),
        "body_array": (name, "m1", 5, {**base, "body": []}, "bad", "bad_message"),
        "body_missing": (name, "m1", 5, without(base, "body"), "bad", "bad_message"),
        "reply_without_status": (name, "m1", 5, without(reply, "status"), "bad", "bad_message"),
        "reply_unknown_status": (name, "m1", 5, {**reply, "status": "done"}, "bad", "bad_message"),
        "reply_bad_in_reply_to": (
            name,
            "m1",
            5,
            {**reply, "in_reply_to": "a:b"},
            "bad",
            "bad_message",
        ),
        "reply_details_list": (name, "m1", 5, {**reply, "details": [1]}, "bad", "bad_message"),
        "reply_without_details": (name, "m1", 5, without(reply, "details"), "ok", ""),
        "field_text_inside_string": (
            name,
            "m1",
            5,
            {**base, "body": {"x": '","type":"reply'}, "kind": "order"},
            "ok",
            "",
        ),
    }
    for case, (fname, fid, seq, obj, result, code) in cases.items():
        put(
            "messages",
            case,
            message_frame(fname, fid, seq, obj),
            {"name": fname, "result": result, "code": code},
        )


def names() -> None:
    """File-name vectors (spec 3 and 7): whether a reader takes each name, and its parts."""
    entries = [
        ("00000000000000000005-py-m1.fkb", "message", {"seq": 5, "sender": "py", "id": "m1"}),
        (
            "99999999999999999999-ea_2-" + "i" * 64 + ".fkb",
            "message",
            {"seq": 99999999999999999999, "sender": "ea_2", "id": "i" * 64},
        ),
        ("0000000000000000005-py-m1.fkb", "message", None),
        ("00000000000000000005-py-m1.fkbak", "message", None),
        ("00000000000000000005-py-m1.fkb.tmp", "message", None),
        ("00000000000000000005-p-y-m1.fkb", "message", {"seq": 5, "sender": "p", "id": "y-m1"}),
        ("00000000000000000005--m1.fkb", "message", None),
        ("00000000000000000005-py-" + "i" * 65 + ".fkb", "message", None),
        ("00000000000000000005-py-m1.FKB", "message", None),
        ("00000000000000000005-" + "s" * 33 + "-m1.fkb", "message", None),
        ("heartbeat.00000000000000000123.fkb", "snapshot", {"name": "heartbeat", "seq": 123}),
        ("heartbeat.123.fkb", "snapshot", None),
        ("Heartbeat.00000000000000000123.fkb", "snapshot", None),
        ("heart-beat.00000000000000000123.fkb", "snapshot", None),
        ("positions.00000000000000000123.fkbak", "snapshot", None),
    ]
    out = [{"file": f, "kind": k, "parsed": p} for f, k, p in entries]
    (HERE / "names.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
