"""JWTAuthenticator (the [jwt] extra): valid, expired, forged, restricted tokens on a server."""

from __future__ import annotations

import time

import pytest

from tests.ws.support import RawClient

jwt = pytest.importorskip("jwt")

from fokha_integration.ws import WebSocketServer  # noqa: E402
from fokha_integration.ws.jwt_auth import JWTAuthenticator  # noqa: E402

KEY = "jwt-test-key-0123456789abcdef-0123456789"


def _token(key: str = KEY, **claims: object) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 60, **claims}
    return str(jwt.encode(body, key, algorithm="HS256"))


@pytest.mark.parametrize(
    ("token", "code", "close"),
    [
        (None, "auth_missing", 4500),
        (_token(exp=int(time.time()) - 10), "auth_expired", 4501),
        (_token(key="another-key-0123456789abcdef-0123456789"), "auth_invalid", 4500),
        ("not.a.jwt", "auth_invalid", 4500),
    ],
)
async def test_bad_jwts_are_refused(token: str | None, code: str, close: int) -> None:
    """Missing, expired, forged and malformed JWTs get the documented error and close code."""
    async with WebSocketServer(authenticator=JWTAuthenticator(KEY)) as srv:
        c = await RawClient.open(srv.url)
        reply = await c.hello(token)
        assert reply["code"] == code
        assert await c.closed_with() == close


async def test_jwt_channels_claim_limits_subscriptions() -> None:
    """A valid JWT with a channels claim may read prices.* but not signals.*."""
    async with WebSocketServer(authenticator=JWTAuthenticator(KEY)) as srv:
        c = await RawClient.open(srv.url)
        welcome = await c.hello(_token(channels=["prices.*"]))
        assert welcome["user"] == "alice"
        assert (await c.request("subscribe", channels=["prices.EURUSD"]))["type"] == "ack"
        assert (await c.request("subscribe", channels=["signals.x"]))["code"] == "forbidden"
        await c.close()


def test_alg_none_is_not_accepted() -> None:
    """The server never lets a token pick the 'none' algorithm."""
    with pytest.raises(ValueError, match="algorithm"):
        JWTAuthenticator(KEY, algorithms=("none",))
