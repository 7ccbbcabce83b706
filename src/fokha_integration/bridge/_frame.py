"""The file-bridge frame (protocol v1, ``docs/protocols/file-bridge.md`` section 4).

Sans-I/O: bytes in, a :class:`Frame` or a typed error out. :func:`decode_frame` tells
an **incomplete** frame (a prefix that may still become valid: "not ready yet") from a
**corrupt** one, so the reader can wait for a slow writer and move only what stays
broken to ``bad/``. This module reads no files and knows nothing of folders.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

from ..errors import FrameError

__all__ = [
    "END_MARKER",
    "MAGIC",
    "MAX_FRAME_BYTES",
    "MAX_HEADER_BYTES",
    "VERSION",
    "CorruptFrameError",
    "Frame",
    "IncompleteFrameError",
    "decode_frame",
    "encode_frame",
    "frame_crc",
    "valid_id",
]

MAGIC = b"FOKHA"
VERSION = 1
END_MARKER = b"\nEND\n"
MAX_HEADER_BYTES = 128
MAX_FRAME_BYTES = 1 << 20
"""Default bound on a whole frame file (1 MiB); a reader refuses bigger ones."""

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdef")
_PREFIX = MAGIC + b" "


def valid_id(value: object) -> bool:
    """Whether ``value`` is a valid bridge message id (1..64 of ``[A-Za-z0-9_-]``)."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


class IncompleteFrameError(FrameError):
    """The bytes are a prefix of a frame that may still become valid (not ready yet)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("incomplete", detail)


class CorruptFrameError(FrameError):
    """The bytes can never become a valid frame; ``code`` says which check failed."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A checked frame: its id, sequence number, raw payload and the decoded object."""

    id: str
    seq: int
    payload: bytes
    data: dict[str, Any]


def frame_crc(header_prefix: bytes, payload: bytes) -> int:
    """CRC-32 (zlib/IEEE) over the header up to the crc field, then the payload."""
    return zlib.crc32(payload, zlib.crc32(header_prefix)) & 0xFFFFFFFF


def encode_frame(frame_id: str, seq: int, payload: bytes) -> bytes:
    """The bytes of a v1 frame carrying ``payload`` (UTF-8 JSON object text)."""
    if not valid_id(frame_id):
        raise CorruptFrameError("bad_header", f"invalid id {frame_id!r}")
    if not 0 <= seq < 10**20:
        raise CorruptFrameError("bad_header", f"seq out of range: {seq}")
    prefix = b"%s %d %s %d %d " % (MAGIC, VERSION, frame_id.encode("ascii"), seq, len(payload))
    crc = frame_crc(prefix, payload)
    return b"%s%08x\n%s%s" % (prefix, crc, payload, END_MARKER)


def _digits(field: bytes, max_len: int) -> bool:
    return 0 < len(field) <= max_len and all(b in _DIGITS for b in field)


def _refuse_constant(name: str) -> Any:
    # NaN / Infinity are not JSON: refused while parsing, with the frame's own error.
    raise CorruptFrameError("bad_json", f"{name} is not JSON")


def decode_frame(data: bytes, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """Check ``data`` (a whole file) and return the frame.

    Raises :class:`IncompleteFrameError` for a prefix that may still become a frame
    and :class:`CorruptFrameError` (with ``code`` as in the spec) otherwise.
    """
    if len(data) > max_frame_bytes:
        raise CorruptFrameError("too_large", f"{len(data)} bytes > {max_frame_bytes}")
    newline = data.find(b"\n", 0, MAX_HEADER_BYTES)
    if newline < 0:
        head = data[:MAX_HEADER_BYTES]
        if not (_PREFIX.startswith(head) or head.startswith(_PREFIX)):
            raise CorruptFrameError("bad_magic", "not a FOKHA frame")
        if len(data) >= MAX_HEADER_BYTES:
            raise CorruptFrameError("bad_header", "no end of header line within 128 bytes")
        raise IncompleteFrameError("header line not complete")
    header = data[:newline]
    fields = header.split(b" ")
    if fields[0] != MAGIC:
        raise CorruptFrameError("bad_magic", "not a FOKHA frame")
    if len(fields) < 2 or fields[1] != b"%d" % VERSION:
        version = fields[1][:16].decode("ascii", "replace") if len(fields) > 1 else ""
        raise CorruptFrameError("unsupported_version", f"version {version!r}")
    if len(fields) != 6:
        raise CorruptFrameError("bad_header", f"{len(fields)} header fields, expected 6")
    _, _, raw_id, raw_seq, raw_len, raw_crc = fields
    try:
        frame_id = raw_id.decode("ascii")
    except UnicodeDecodeError:
        raise CorruptFrameError("bad_header", "id is not ASCII") from None
    if not valid_id(frame_id):
        raise CorruptFrameError("bad_header", "invalid id")
    if not _digits(raw_seq, 20):
        raise CorruptFrameError("bad_header", "invalid seq")
    if not _digits(raw_len, 10):
        raise CorruptFrameError("bad_header", "invalid length")
    if len(raw_crc) != 8 or not all(b in _HEX for b in raw_crc):
        raise CorruptFrameError("bad_header", "invalid crc field")
    length = int(raw_len)
    total = newline + 1 + length + len(END_MARKER)
    if total > max_frame_bytes:
        raise CorruptFrameError("too_large", f"frame of {total} bytes > {max_frame_bytes}")
    if len(data) < total:
        raise IncompleteFrameError(f"{len(data)} of {total} bytes")
    payload = data[newline + 1 : newline + 1 + length]
    prefix_len = len(header) - len(raw_crc)
    if frame_crc(data[:prefix_len], payload) != int(raw_crc, 16):
        raise CorruptFrameError("bad_crc", "checksum mismatch")
    if data[newline + 1 + length : total] != END_MARKER:
        raise CorruptFrameError("bad_end_marker", "end marker missing")
    if len(data) > total:
        raise CorruptFrameError("trailing_data", f"{len(data) - total} bytes after the end")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFrameError("bad_utf8", str(exc)) from None
    if text.startswith("\ufeff"):
        raise CorruptFrameError("bad_utf8", "byte order mark")
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise CorruptFrameError("bad_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise CorruptFrameError("bad_json", "payload is not a JSON object")
    return Frame(frame_id, int(raw_seq), payload, obj)
