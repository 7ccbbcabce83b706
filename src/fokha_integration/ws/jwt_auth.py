"""A JWT authenticator for the WebSocket hello (the ``[jwt]`` extra, PyJWT).

``JWTAuthenticator(key, algorithms=("HS256",))`` checks signature, ``exp``/``nbf``
(with ``leeway``), and ``aud``/``iss`` when configured. The ``sub`` claim becomes the
principal's subject; an optional ``channels`` claim (a list of ``fnmatch`` patterns)
limits what it may subscribe to under the default authoriser. The algorithm list is
fixed by the server, never taken from the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ._auth import AuthError, Principal
from ._protocol import ErrorCode

__all__ = ["JWTAuthenticator"]

try:
    import jwt as _jwt
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("JWTAuthenticator needs PyJWT: pip install 'fokha-integration[jwt]'") from exc


class JWTAuthenticator:
    """Checks JSON Web Tokens with PyJWT (see the module docstring)."""

    def __init__(
        self,
        key: str | bytes,
        *,
        algorithms: Sequence[str] = ("HS256",),
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 0.0,
    ) -> None:
        if not algorithms or any(a.lower() == "none" for a in algorithms):
            raise ConfigError("algorithms", "give at least one real signing algorithm", algorithms)
        self._key = key
        self._algorithms = list(algorithms)
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of a valid token, or :class:`AuthError`."""
        if not token:
            raise AuthError(ErrorCode.AUTH_MISSING, "a token is required")
        try:
            claims: dict[str, Any] = _jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"]},
            )
        except _jwt.ExpiredSignatureError:
            raise AuthError(ErrorCode.AUTH_EXPIRED, "token expired") from None
        except _jwt.InvalidTokenError as exc:
            raise AuthError(ErrorCode.AUTH_INVALID, f"invalid token: {exc}") from None
        channels = claims.get("channels")
        if channels is not None and not (
            isinstance(channels, list) and all(isinstance(c, str) for c in channels)
        ):
            raise AuthError(ErrorCode.AUTH_INVALID, "'channels' must be a list of patterns")
        return Principal(
            str(claims["sub"]),
            None if channels is None else tuple(channels),
            float(claims["exp"]),
            claims,
        )
