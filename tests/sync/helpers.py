"""Shared helpers for the sync tests: a loopback server and an in-process transport."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from fokha_integration.sync import SyncService
from fokha_integration.sync._app import sync_app


class LoopbackServer:
    """``sync_app(service)`` mounted at /sync on 127.0.0.1, a free port."""

    def __init__(self, service: SyncService, **app_kwargs: Any) -> None:
        self.service = service
        self._kwargs = app_kwargs
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL of the mounted sub-application."""
        return f"http://127.0.0.1:{self.port}/sync"

    async def start(self) -> None:
        """Bind and serve."""
        root = web.Application()
        root.add_subapp("/sync", sync_app(self.service, **self._kwargs))
        self._runner = web.AppRunner(root)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class DirectTransport:
    """An in-process transport through :meth:`SyncService.handle`, with faults on demand.

    ``fault(route)`` returns ``None`` (deliver), ``"drop_request"`` (never reaches
    the server), ``"drop_response"`` (applied, answer lost) or ``"duplicate"``
    (delivered twice, the second answer returned).
    """

    def __init__(
        self, service: SyncService, fault: Callable[[str], str | None] = lambda r: None
    ) -> None:
        self.service = service
        self.fault = fault
        self.partitioned = False

    async def post(self, route: str, body: bytes) -> tuple[int, bytes]:
        """Deliver (or not) one request."""
        from fokha_integration.errors import BackendUnavailableError

        if self.partitioned:
            raise BackendUnavailableError("test", "partitioned")
        fault = self.fault(route)
        if fault == "drop_request":
            raise BackendUnavailableError("test", "request lost")
        answer = await self.service.handle(route, body)
        if fault == "drop_response":
            raise BackendUnavailableError("test", "response lost")
        if fault == "duplicate":
            answer = await self.service.handle(route, body)
        return answer

    async def close(self) -> None:
        """Nothing to release."""
