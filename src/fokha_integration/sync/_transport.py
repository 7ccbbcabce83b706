"""How a :class:`SyncClient` reaches the server: a small transport protocol and its HTTP form."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from ..errors import BackendUnavailableError

__all__ = ["HttpTransport", "Transport"]


class Transport(Protocol):
    """Posts a JSON body to ``pull`` or ``push``; returns ``(status, body)``.

    Raises :class:`~fokha_integration.errors.BackendUnavailableError` when the
    server cannot be reached (the client retries later).
    """

    async def post(self, route: str, body: bytes) -> tuple[int, bytes]:
        """One request."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class HttpTransport:
    """Protocol v1 over HTTP: ``POST {base_url}/v1/{route}`` with an optional bearer token.

    ``token`` is a string or a callable returning the current one. Redirects are
    never followed.
    """

    def __init__(
        self, base_url: str, *, token: str | Callable[[], str] | None = None, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._session: object | None = None

    async def post(self, route: str, body: bytes) -> tuple[int, bytes]:
        """One POST; transport failures become :class:`BackendUnavailableError`."""
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        session = self._session
        assert isinstance(session, aiohttp.ClientSession)
        headers = {"Content-Type": "application/json"}
        token = self._token() if callable(self._token) else self._token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with session.post(
                f"{self.base_url}/v1/{route}", data=body, headers=headers, allow_redirects=False
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise BackendUnavailableError("http", f"{route}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Close the HTTP session."""
        import aiohttp

        session, self._session = self._session, None
        if isinstance(session, aiohttp.ClientSession):
            await session.close()
