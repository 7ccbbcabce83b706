"""Standard Webhooks signing and verification (https://www.standardwebhooks.com/).

A sender adds three headers: ``webhook-id`` (stable across retries, so receivers
dedup on it), ``webhook-timestamp`` (integer Unix seconds of this attempt) and
``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")).
The secret is written ``whsec_`` + base64(key bytes). Several space-separated
signatures may be sent (key rotation); one match is enough.

:func:`verify_webhook` is for receivers: it checks the timestamp against a
tolerance and compares signatures in constant time. It keeps no state, so on its own
it cannot refuse a replay inside the tolerance window: use
:func:`~fokha_integration.http.webhook_receiver` (a replay cache on
:class:`~fokha_integration.dedup.DedupCache`) for that. Secrets shorter than
:data:`MIN_SECRET_BYTES` are refused. This module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError, ProtocolError, ValidationError

__all__ = [
    "MIN_SECRET_BYTES",
    "WebhookSecret",
    "WebhookVerificationError",
    "generate_webhook_secret",
    "sign_webhook",
    "verify_webhook",
    "webhook_headers",
]

_PREFIX = "whsec_"
MAX_SIGNATURE_HEADER = 4096
"""Longest ``webhook-signature`` header a receiver looks at (bounds the work)."""
MAX_ID_LENGTH = 256
"""Longest ``webhook-id`` accepted (it keys the replay cache)."""
MIN_SECRET_BYTES = 16
"""Shortest key accepted (128 bits): ``"password"`` or a 3-byte key is refused.

:func:`generate_webhook_secret` makes 32 bytes; the Standard Webhooks spec
recommends 24 to 64."""

WebhookSecret = str | bytes
"""A ``whsec_<base64>`` string, bare base64, or the raw key bytes."""


class WebhookVerificationError(ProtocolError):
    """A received webhook failed verification.

    ``code`` is ``"missing_header"``, ``"bad_header"``, ``"bad_timestamp"``,
    ``"stale_timestamp"`` or ``"bad_signature"``.
    """


def generate_webhook_secret(nbytes: int = 32) -> str:
    """A new random secret in the ``whsec_<base64>`` form."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 24 <= nbytes <= 64:
        raise ConfigError("nbytes", "must be an integer in 24..64", nbytes)
    return _PREFIX + base64.b64encode(os.urandom(nbytes)).decode("ascii")


@functools.lru_cache(maxsize=64)
def _key_of_text(text: str) -> bytes:
    body = text[len(_PREFIX) :] if text.startswith(_PREFIX) else text
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("secret", "must be whsec_ followed by base64", "<redacted>") from None
    return key


def _key(secret: object) -> bytes:
    """The key bytes of one secret; ConfigError (the secret itself never shown) when unfit."""
    if isinstance(secret, (bytes, bytearray)):
        key = bytes(secret)
    elif isinstance(secret, str):
        key = _key_of_text(secret)
    else:
        raise ConfigError("secret", "must be a whsec_ string or bytes", type(secret).__name__)
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            "secret", f"must hold at least {MIN_SECRET_BYTES} bytes of key", f"{len(key)} bytes"
        )
    return key


def _keys(secret: object) -> tuple[bytes, ...]:
    """One key, or several (rotation: any of them may have signed)."""
    if isinstance(secret, (str, bytes, bytearray)):
        return (_key(secret),)
    if isinstance(secret, Sequence) and secret:
        return tuple(_key(one) for one in secret)
    raise ConfigError("secret", "must be a secret or a non-empty list of secrets", None)


def _sign_with(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def _encodable(text: str) -> bool:
    """Whether ``text`` is UTF-8 encodable (undecodable header bytes arrive as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_body(body: object) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise ValidationError("body", "must be the raw body as bytes", type(body).__name__)


def sign_webhook(msg_id: str, timestamp: int, body: bytes, secret: WebhookSecret) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for one message."""
    if not isinstance(msg_id, str) or not 0 < len(msg_id) <= MAX_ID_LENGTH:
        raise ValidationError("msg_id", f"must be a string of 1..{MAX_ID_LENGTH} characters", None)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise ValidationError("timestamp", "must be integer Unix seconds", timestamp)
    return "v1," + _sign_with(_key(secret), msg_id, timestamp, _check_body(body)).decode("ascii")


def webhook_headers(
    msg_id: str, body: bytes, secret: WebhookSecret, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for sending ``body`` now (or at ``timestamp``)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_webhook(msg_id, ts, body, secret),
    }


def _header(headers: Mapping[str, Any], name: str) -> str:
    value = headers.get(name)
    if value is None:
        for k, v in headers.items():
            if isinstance(k, str) and k.lower() == name:
                value = v
                break
    if value is None or value == "":
        raise WebhookVerificationError("missing_header", f"no {name} header")
    if not isinstance(value, str):
        raise WebhookVerificationError("bad_header", f"{name} is not text")
    return value


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: WebhookSecret | Sequence[WebhookSecret],
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> str:
    """Check a received webhook; returns its ``webhook-id`` or raises.

    Raises :class:`WebhookVerificationError` when a header is missing or not ASCII,
    the timestamp is not an integer or is more than ``tolerance`` seconds from
    ``now`` (wall time; default: the system clock), or no ``v1`` signature matches
    any of the secrets (pass several during a rotation). The comparison is
    constant-time. A ``body`` that is not bytes raises
    :class:`~fokha_integration.errors.ValidationError`, headers that are not a
    mapping too; an unfit secret (missing, malformed, shorter than
    :data:`MIN_SECRET_BYTES`) raises :class:`~fokha_integration.errors.ConfigError`.

    Stateless: a replay inside the tolerance passes. Receivers need a replay cache
    keyed by the id (:func:`~fokha_integration.http.webhook_receiver` has one).
    """
    keys = _keys(secret)
    raw = _check_body(body)
    if not isinstance(headers, Mapping):
        raise ValidationError("headers", "must be a mapping of header names to values", None)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not 0 <= tolerance < float("inf")
    ):
        raise ConfigError("tolerance", "must be a finite number of seconds >= 0", tolerance)
    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp")
    raw_sig = _header(headers, "webhook-signature")
    if len(msg_id) > MAX_ID_LENGTH or not _encodable(msg_id):
        raise WebhookVerificationError("bad_header", "webhook-id is too long or not text")
    if len(raw_ts) > 20 or not (raw_ts.isascii() and raw_ts.isdigit()):  # '²' is a digit too
        raise WebhookVerificationError("bad_timestamp", "webhook-timestamp is not an integer")
    ts = int(raw_ts)
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise WebhookVerificationError("stale_timestamp", f"timestamp {ts} is out of tolerance")
    if len(raw_sig) > MAX_SIGNATURE_HEADER:
        raise WebhookVerificationError("bad_signature", "webhook-signature header too long")
    expected = [_sign_with(key, msg_id, ts, raw) for key in keys]
    candidates = [
        c[3:].encode("utf-8", "replace") for c in raw_sig.split(" ") if c.startswith("v1,")
    ]
    matched = False
    # Check every pair (no early exit) so timing says nothing about which matched.
    for candidate in candidates:
        for signature in expected:
            if hmac.compare_digest(candidate, signature):
                matched = True
    if not matched:
        raise WebhookVerificationError("bad_signature", "no matching v1 signature")
    return msg_id
