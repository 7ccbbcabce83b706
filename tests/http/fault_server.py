"""A real aiohttp server on 127.0.0.1 that misbehaves on request, for the ApiClient tests.

Routes (any method):

- ``/status/{code}``: answers ``code``; query ``retry_after=<s>`` adds ``Retry-After``
  in seconds, ``retry_date=<s>`` as an HTTP-date that many seconds ahead, ``ok_after=<n>``
  answers 200 from the n+1-th hit on;
- ``/hang``: never answers (until the server stops);
- ``/reset``: promises 1,000 bytes, sends 10 and drops the connection;
- ``/big-pending``: promises 100,000 bytes, sends 10 and waits (until the server stops);
- ``/slow-headers?delay=<s>``: answers after ``delay`` seconds;
- ``/auth``: 401 unless ``Authorization: Bearer <valid token>``.

Every hit is recorded with its method, path, ``Idempotency-Key`` and arrival time
(wall clock), so tests count attempts and measure the gaps between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.support import free_port


@dataclass(frozen=True)
class Hit:
    """One request as the server saw it."""

    method: str
    path: str
    key: str | None
    at: float
    body: bytes


@dataclass
class FaultServer:
    """The server's record and knobs."""

    hits: list[Hit] = field(default_factory=list)
    valid_token: str = "t0"
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    url: str = ""

    def count(self, path: str) -> int:
        """How many requests reached ``path``."""
        return sum(1 for h in self.hits if h.path == path)

    async def _record(self, request: web.Request) -> None:
        self.hits.append(
            Hit(
                request.method,
                request.path,
                request.headers.get("Idempotency-Key"),
                time.time(),
                await request.read(),
            )
        )

    async def status(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        code = int(request.match_info["code"])
        ok_after = request.query.get("ok_after")
        if ok_after is not None and self.count(request.path) > int(ok_after):
            return web.json_response({"ok": True, "hits": self.count(request.path)})
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        if "retry_date" in request.query:
            when = time.time() + float(request.query["retry_date"])
            headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
        if code >= 400:
            body = b'{"type":"/problems/test","title":"test problem","status":%d}' % code
            return web.Response(
                status=code, body=body, headers=headers, content_type="application/problem+json"
            )
        return web.Response(status=code, headers=headers, text="ok")

    async def hang(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        await self.stop.wait()
        return web.Response(status=200)

    async def reset(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        response = web.StreamResponse(status=200, headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"0123456789")
        assert request.transport is not None
        request.transport.abort()
        return response

    async def big_pending(self, request: web.Request) -> web.StreamResponse:
        """Declares a 100 kB body, sends 10 bytes of it and waits (until the server stops)."""
        await self._record(request)
        response = web.StreamResponse(status=200, headers={"Content-Length": "100000"})
        await response.prepare(request)
        await response.write(b"0123456789")
        await self.stop.wait()
        return response

    async def slow_headers(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), float(request.query.get("delay", "1")))
        return web.Response(status=200, text="late")

    async def auth(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if request.headers.get("Authorization") != f"Bearer {self.valid_token}":
            return web.Response(status=401)
        return web.Response(status=200, text="in")

    async def start(self) -> None:
        """Serve on a free port."""
        app = web.Application()
        app.router.add_route("*", "/status/{code}", self.status)
        app.router.add_route("*", "/hang", self.hang)
        app.router.add_route("*", "/reset", self.reset)
        app.router.add_route("*", "/slow-headers", self.slow_headers)
        app.router.add_route("*", "/big-pending", self.big_pending)
        app.router.add_route("*", "/auth", self.auth)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        """Stop serving (releases hung handlers first)."""
        self.stop.set()
        if self.runner is not None:
            await self.runner.cleanup()
