"""Authentication and per-channel authorisation for the WebSocket server.

An :class:`Authenticator` turns the token of a ``hello`` frame into a
:class:`Principal` or raises :class:`AuthError` with one of the documented codes
(``auth_missing``, ``auth_invalid``, ``auth_expired``). The built-in
:class:`TokenAuthenticator` issues and checks HMAC-SHA256 signed, expiring tokens::

    v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "v1." + payload part))>

with the payload ``{"sub": subject, "exp": unix seconds, "ch": [patterns] | absent}``.
Signatures are compared in constant time; the payload is parsed only after the
signature checked out.

An authoriser is a callable ``(principal, channel, action) -> bool`` (or an
awaitable of bool); ``action`` is ``"subscribe"`` or ``"publish"``. The default,
:func:`token_channels`, allows the channel patterns the token carries (``fnmatch``
style, ``prices.*``) and everything when the token carries none.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, ProtocolError
from ._protocol import ErrorCode

__all__ = [
    "AuthError",
    "Authenticator",
    "Authorizer",
    "Principal",
    "TokenAuthenticator",
    "token_channels",
]

_PREFIX = "v1."
_MAX_TOKEN = 4096


class AuthError(ProtocolError):
    """A token was refused. ``code`` is ``auth_missing``, ``auth_invalid`` or ``auth_expired``."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(code.value, detail)
        self.error_code = code


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is connected: ``subject``, the channel patterns the token allows (``None``: any)."""

    subject: str
    channels: tuple[str, ...] | None = None
    expires_at: float | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False)


@runtime_checkable
class Authenticator(Protocol):
    """Turns a hello token (``None`` when the client sent none) into a :class:`Principal`."""

    async def authenticate(self, token: str | None) -> Principal:
        """The principal, or raise :class:`AuthError`."""
        ...


Authorizer = Callable[[Principal, str, str], bool | Awaitable[bool]]
"""``(principal, channel, action) -> bool`` (may be async); ``action``: subscribe/publish."""


def token_channels(principal: Principal, channel: str, action: str) -> bool:
    """Allow what the token's channel patterns match (everything when it has none)."""
    if principal.channels is None:
        return True
    return any(fnmatch.fnmatchcase(channel, pattern) for pattern in principal.channels)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _unb64(text: str) -> bytes:
    """Strict base64url without padding: any character outside the alphabet is refused.

    (``urlsafe_b64decode`` drops non-alphabet characters, which made tokens malleable:
    ``sig`` and ``s!ig`` decoded to the same bytes.)
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise binascii.Error("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:
        # Non-canonical trailing bits: another spelling of the same bytes.
        raise binascii.Error("not canonical base64url")
    return raw


class TokenAuthenticator:
    """HMAC-SHA256 signed expiring tokens (see the module docstring for the format).

    ``secret`` must be at least 32 bytes. ``leeway`` seconds of clock skew are
    tolerated on expiry. Time comes from ``clock`` (wall time).
    """

    def __init__(
        self, secret: bytes | str, *, clock: Clock = SYSTEM_CLOCK, leeway: float = 0.0
    ) -> None:
        if not isinstance(secret, (str, bytes, bytearray)):
            raise ConfigError("secret", "must be str or bytes", type(secret).__name__)
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < 32:
            raise ConfigError("secret", "must be at least 32 bytes", f"{len(key)} bytes")
        self._key = key
        self._clock = clock
        self._leeway = _validate.non_negative("leeway", leeway)

    def _sign(self, signing_input: bytes) -> bytes:
        return hmac.new(self._key, signing_input, hashlib.sha256).digest()

    def issue(self, subject: str, *, ttl: float, channels: Sequence[str] | None = None) -> str:
        """A token for ``subject`` valid for ``ttl`` seconds, limited to ``channels`` patterns."""
        _validate.string("subject", subject)
        # A NaN or infinite ttl would make a token that never expires.
        ttl = _validate.positive("ttl", ttl)
        if channels is not None and (
            isinstance(channels, str) or not all(isinstance(c, str) for c in channels)
        ):
            raise ConfigError("channels", "must be a sequence of patterns", channels)
        payload: dict[str, Any] = {"sub": subject, "exp": round(self._clock.time() + ttl, 3)}
        if channels is not None:
            payload["ch"] = list(channels)
        part = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signing_input = f"{_PREFIX}{part}".encode("ascii")
        return f"{_PREFIX}{part}.{_b64(self._sign(signing_input))}"

    def verify(self, token: str | None) -> Principal:
        """Check ``token`` synchronously; the principal or :class:`AuthError`."""
        if token is None or token == "":
            raise AuthError(ErrorCode.AUTH_MISSING, "a token is required")
        if len(token) > _MAX_TOKEN or not token.startswith(_PREFIX) or token.count(".") != 2:
            raise AuthError(ErrorCode.AUTH_INVALID, "malformed token")
        _, part, sig_text = token.split(".")
        try:
            signature = _unb64(sig_text)
        except (binascii.Error, ValueError):
            raise AuthError(ErrorCode.AUTH_INVALID, "malformed signature") from None
        expected = self._sign(f"{_PREFIX}{part}".encode("ascii", "replace"))
        if not hmac.compare_digest(signature, expected):
            raise AuthError(ErrorCode.AUTH_INVALID, "bad signature")
        try:
            payload = json.loads(_unb64(part))
        except (binascii.Error, ValueError):
            raise AuthError(ErrorCode.AUTH_INVALID, "malformed payload") from None
        if not isinstance(payload, dict):
            raise AuthError(ErrorCode.AUTH_INVALID, "malformed payload")
        sub, exp, ch = payload.get("sub"), payload.get("exp"), payload.get("ch")
        if not isinstance(sub, str) or isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise AuthError(ErrorCode.AUTH_INVALID, "payload lacks sub/exp")
        if ch is not None and not (isinstance(ch, list) and all(isinstance(c, str) for c in ch)):
            raise AuthError(ErrorCode.AUTH_INVALID, "'ch' must be a list of patterns")
        if not math.isfinite(exp):
            # Never issued by us; a forged-but-signed payload with a leaked key or an
            # older build that let ttl=inf through: refuse rather than never expire.
            raise AuthError(ErrorCode.AUTH_INVALID, "'exp' must be finite")
        if self._clock.time() > exp + self._leeway:
            raise AuthError(ErrorCode.AUTH_EXPIRED, "token expired")
        return Principal(sub, None if ch is None else tuple(ch), float(exp), payload)

    async def authenticate(self, token: str | None) -> Principal:
        """:meth:`verify` as the :class:`Authenticator` protocol wants it."""
        return self.verify(token)
