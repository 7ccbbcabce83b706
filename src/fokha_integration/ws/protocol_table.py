"""The WebSocket protocol v1 as plain data: ops, frame types, error codes, close codes.

This module is the one table the rest is built from or checked against:

* the sans-I/O core (:mod:`._protocol`) builds its :class:`ErrorCode` and
  :class:`CloseCode` enums and its reconnect rule from it;
* ``docs/protocols/websocket.md`` carries the same tables, and a test fails when
  the page and this module drift apart;
* the JSON Schemas under ``docs/protocols/schemas/ws/`` enumerate the same ops,
  frame types and codes (checked by a test);
* code generators for other languages (the Dart client) read it.

It imports nothing but the standard library and nothing of this package, so a
generator can load it on its own (``runpy.run_path`` works). It is data, not
behaviour: no I/O, no classes with logic.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "CLIENT_OPS",
    "CLOSE_CODES",
    "ERROR_CODES",
    "MESSAGE_KINDS",
    "PROTOCOL_VERSION",
    "SERVER_FRAME_TYPES",
    "CloseCodeSpec",
    "ErrorCodeSpec",
    "OpSpec",
]

PROTOCOL_VERSION: Final = 1
"""The protocol version spoken (``protocol`` in ``hello`` and ``welcome``)."""


class OpSpec(NamedTuple):
    """One client command: its ``op``, whether ``id`` is required, and its reply types."""

    op: str
    id_required: bool
    replies: tuple[str, ...]


class ErrorCodeSpec(NamedTuple):
    """One ``code`` of an ``error`` frame.

    ``temporary``: retrying the same request later may succeed. ``close``: the close
    code that follows the error frame (``None``: the connection stays open).
    """

    code: str
    temporary: bool
    close: int | None
    when: str


class CloseCodeSpec(NamedTuple):
    """One WebSocket close code and what a client does after it.

    ``reconnect``: whether a client reconnects (with backoff). ``reason``: the close
    reason the server sends with it (``""`` for codes the server never sends itself);
    clients switch on the code only, the reason is for logs.
    """

    code: int
    name: str
    reconnect: bool
    reason: str
    meaning: str


CLIENT_OPS: Final[tuple[OpSpec, ...]] = (
    OpSpec("hello", True, ("welcome", "error")),
    OpSpec("subscribe", True, ("ack", "error")),
    OpSpec("unsubscribe", True, ("ack", "error")),
    OpSpec("ping", False, ("pong", "error")),
    OpSpec("publish", True, ("ack", "error")),
)
"""The commands a client sends, in the order the spec lists them."""

SERVER_FRAME_TYPES: Final[tuple[str, ...]] = (
    "welcome",
    "ack",
    "message",
    "heartbeat",
    "pong",
    "drain",
    "error",
)
"""Every ``type`` the server sends (clients ignore unknown types)."""

MESSAGE_KINDS: Final[tuple[str, ...]] = ("update", "snapshot", "conflated", "gap")
"""Every ``kind`` of a ``message`` frame."""

ERROR_CODES: Final[tuple[ErrorCodeSpec, ...]] = (
    ErrorCodeSpec("bad_json", False, None, "the frame is not JSON"),
    ErrorCodeSpec("bad_frame", False, None, "the JSON is not an object"),
    ErrorCodeSpec("unknown_op", False, None, "`op` is not one of the five"),
    ErrorCodeSpec(
        "bad_field",
        False,
        None,
        "a field is missing or has the wrong type/size (in `hello`: then close 4502)",
    ),
    ErrorCodeSpec("binary_not_supported", False, None, "a binary frame"),
    ErrorCodeSpec("not_authenticated", False, None, "a command before `hello`"),
    ErrorCodeSpec("already_authenticated", False, None, "a second `hello`"),
    ErrorCodeSpec("unsupported_version", False, 4503, "`protocol` is an integer other than 1"),
    ErrorCodeSpec("auth_missing", False, 4500, "no token"),
    ErrorCodeSpec("auth_invalid", False, 4500, "malformed or forged token"),
    ErrorCodeSpec(
        "auth_expired", False, 4501, "expired token (at `hello`, or later on a live connection)"
    ),
    ErrorCodeSpec("forbidden", False, None, "the principal may not use this channel"),
    ErrorCodeSpec("bad_channel", False, None, "a string that is not a valid channel name"),
    ErrorCodeSpec("too_many_channels", False, None, "over `max_channels` per connection"),
    ErrorCodeSpec("publish_not_allowed", False, None, "client publishing is off"),
    ErrorCodeSpec(
        "rate_limited", True, None, "over the inbound rate (the last one before close 4002 too)"
    ),
    ErrorCodeSpec("unavailable", True, None, "the broker/history/authenticator is unreachable"),
    ErrorCodeSpec("internal", True, None, "a server bug"),
)
"""Every error code the server sends, in the spec's order."""

CLOSE_CODES: Final[tuple[CloseCodeSpec, ...]] = (
    CloseCodeSpec(1000, "NORMAL", True, "", "normal closure"),
    CloseCodeSpec(1001, "GOING_AWAY", True, "", "going away"),
    CloseCodeSpec(1002, "PROTOCOL_ERROR", False, "", "WebSocket protocol error"),
    CloseCodeSpec(1003, "UNSUPPORTED_DATA", False, "", "unsupported data"),
    CloseCodeSpec(1006, "ABNORMAL", True, "", "dropped without a close frame"),
    CloseCodeSpec(1007, "INVALID_DATA", False, "", "invalid frame payload (e.g. not UTF-8)"),
    CloseCodeSpec(1008, "POLICY_VIOLATION", False, "", "policy violation"),
    CloseCodeSpec(1009, "MESSAGE_TOO_BIG", False, "", "a frame over `max_frame_bytes`"),
    CloseCodeSpec(1010, "MANDATORY_EXTENSION", False, "", "mandatory extension"),
    CloseCodeSpec(
        1011, "INTERNAL_ERROR", True, "", "server error, or no pong to a WebSocket ping in time"
    ),
    CloseCodeSpec(1012, "SERVICE_RESTART", True, "", "service restart"),
    CloseCodeSpec(1013, "TRY_AGAIN_LATER", True, "", "try again later"),
    CloseCodeSpec(1014, "BAD_GATEWAY", True, "", "bad gateway"),
    CloseCodeSpec(
        4000, "DRAINING", True, "draining", "draining for shutdown (after `retry_after`)"
    ),
    CloseCodeSpec(
        4001,
        "SLOW_CONSUMER",
        True,
        "slow_consumer",
        "write buffer stayed over the high watermark for the grace time",
    ),
    CloseCodeSpec(
        4002, "RATE_LIMITED", True, "rate_limited", "kept flooding after `rate_limited` errors"
    ),
    CloseCodeSpec(4003, "HELLO_TIMEOUT", True, "hello_timeout", "no `hello` in time"),
    CloseCodeSpec(
        4004,
        "TOO_MANY_CONNECTIONS",
        True,
        "too_many_connections",
        "too many connections on this node",
    ),
    CloseCodeSpec(
        4005, "SERVER_ERROR", True, "heartbeat_watchdog", "heartbeat watchdog (sent by clients)"
    ),
    CloseCodeSpec(
        4500, "AUTH_FAILED", False, "auth_failed", "authentication failed (missing/invalid token)"
    ),
    CloseCodeSpec(
        4501, "TOKEN_EXPIRED", False, "token_expired", "token expired (reconnect with a new one)"
    ),
    CloseCodeSpec(4502, "PROTOCOL_VIOLATION", False, "protocol_violation", "a malformed `hello`"),
    CloseCodeSpec(
        4503,
        "UNSUPPORTED_VERSION",
        False,
        "unsupported_version",
        "unsupported protocol version",
    ),
)
"""Every close code the spec names. Codes not listed: 4000-4499 reconnect, 4500-4999
do not, other codes reconnect."""
