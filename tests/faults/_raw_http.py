"""A raw HTTP/1.1 client over a real socket, for headers no well-behaved client would send.

aiohttp's client refuses to send non-UTF-8 or control bytes in header values; a
hostile client does not ask. :func:`raw_request` writes the bytes as given and
reads the status line (and the rest until the server closes).
"""

from __future__ import annotations

import asyncio

from tests.support import timeout

__all__ = ["MALFORMED_HEADERS", "raw_request"]


MALFORMED_HEADERS: dict[str, bytes] = {
    "auth_latin1": b"Authorization: Bearer caf\xe9\r\n",
    "auth_invalid_utf8": b"Authorization: Bearer \xff\xfe\xfd\r\n",
    "auth_empty_bearer": b"Authorization: Bearer \r\n",
    "auth_bearer_spaces": b"Authorization: Bearer      \r\n",
    "auth_no_scheme": b"Authorization: \xc3\x28\r\n",
    "auth_twice": b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n",
    "auth_huge": b"Authorization: Bearer " + b"A" * 7000 + b"\r\n",
    "idempotency_key_invalid_utf8": b"Idempotency-Key: \xff\xfe\r\n",
    "idempotency_key_empty": b"Idempotency-Key: \r\n",
    "idempotency_key_huge": b"Idempotency-Key: " + b"k" * 4000 + b"\r\n",
    "webhook_headers_invalid_utf8": (
        b"webhook-id: \xff\r\nwebhook-timestamp: \xfe\r\nwebhook-signature: v1,\xfd\r\n"
    ),
    "content_type_invalid_utf8": b"Content-Type: application/\xffjson\r\n",
    "accept_invalid_utf8": b"Accept: \xff/\xfe\r\n",
}
"""Header lines (with CRLF) a hostile client might send; each must never cause a 5xx."""


async def raw_request(
    port: int, method: str, path: str, header_lines: bytes = b"", body: bytes = b""
) -> int:
    """Send one request with ``header_lines`` verbatim; the status code of the answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout(5))
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        ).encode("ascii")
        writer.write(head + header_lines + b"\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout(10))
        await asyncio.wait_for(reader.read(), timeout(10))
    finally:
        writer.close()
    parts = status_line.split(b" ")
    assert len(parts) >= 2 and parts[0].startswith(b"HTTP/1."), status_line
    return int(parts[1])
