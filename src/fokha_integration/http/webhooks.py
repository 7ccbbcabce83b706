"""Standard Webhooks signing and verification (https://www.standardwebhooks.com/).

A sender adds three headers: ``webhook-id`` (stable across retries, so receivers
dedup on it), ``webhook-timestamp`` (integer Unix seconds of this attempt) and
``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")).
The secret is written ``whsec_`` + base64(key bytes). Several space-separated
signatures may be sent (key rotation); one match is enough.

:func:`verify_webhook` is for receivers: it checks the timestamp against a
tolerance (replay protection) and compares signatures in constant time. This module
does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Mapping

from ..errors import ConfigError, ProtocolError

__all__ = [
    "WebhookVerificationError",
    "generate_webhook_secret",
    "sign_webhook",
    "verify_webhook",
    "webhook_headers",
]

_PREFIX = "whsec_"
MAX_SIGNATURE_HEADER = 4096
"""Longest ``webhook-signature`` header a receiver looks at (bounds the work)."""


class WebhookVerificationError(ProtocolError):
    """A received webhook failed verification.

    ``code`` is ``"missing_header"``, ``"bad_timestamp"``, ``"stale_timestamp"`` or
    ``"bad_signature"``.
    """


def generate_webhook_secret(nbytes: int = 32) -> str:
    """A new random secret in the ``whsec_<base64>`` form."""
    if not 24 <= nbytes <= 64:
        raise ConfigError("nbytes", "must be in 24..64", nbytes)
    return _PREFIX + base64.b64encode(os.urandom(nbytes)).decode("ascii")


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        if not secret:
            raise ConfigError("secret", "must not be empty", None)
        return secret
    text = secret[len(_PREFIX) :] if secret.startswith(_PREFIX) else secret
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("secret", "must be whsec_ followed by base64", "<redacted>") from None
    if not key:
        raise ConfigError("secret", "must not be empty", None)
    return key


def sign_webhook(msg_id: str, timestamp: int, body: bytes, secret: str | bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def webhook_headers(
    msg_id: str, body: bytes, secret: str | bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for sending ``body`` now (or at ``timestamp``)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_webhook(msg_id, ts, body, secret),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        for k, v in headers.items():
            if k.lower() == name:
                value = v
                break
    if value is None or value == "":
        raise WebhookVerificationError("missing_header", f"no {name} header")
    return value


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> str:
    """Check a received webhook; returns its ``webhook-id`` or raises.

    Raises :class:`WebhookVerificationError` when a header is missing, the
    timestamp is not an integer or is more than ``tolerance`` seconds from ``now``
    (wall time; default: the system clock), or no ``v1`` signature matches. The
    comparison is constant-time.
    """
    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp")
    raw_sig = _header(headers, "webhook-signature")
    if len(raw_ts) > 20 or not (raw_ts.isascii() and raw_ts.isdigit()):  # '²' is a digit too
        raise WebhookVerificationError("bad_timestamp", "webhook-timestamp is not an integer")
    ts = int(raw_ts)
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise WebhookVerificationError("stale_timestamp", f"timestamp {ts} is out of tolerance")
    if len(raw_sig) > MAX_SIGNATURE_HEADER:
        raise WebhookVerificationError("bad_signature", "webhook-signature header too long")
    expected = sign_webhook(msg_id, ts, body, secret).encode("ascii")
    matched = False
    for candidate in raw_sig.split(" "):
        if not candidate.startswith("v1,"):
            continue
        # Check every candidate (no early exit) so timing says nothing about which matched.
        if hmac.compare_digest(candidate.encode("utf-8", "replace"), expected):
            matched = True
    if not matched:
        raise WebhookVerificationError("bad_signature", "no matching v1 signature")
    return msg_id
