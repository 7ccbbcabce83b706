"""Helpers for the WebSocket tests: a raw protocol client and a TCP proxy that can cut links."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import timeout

SECRET = "test-secret-0123456789abcdef-0123456789"


class RawClient:
    """A plain websockets connection speaking the protocol frame by frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = 0

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> RawClient:
        ws = await connect(url, open_timeout=timeout(5), compression=None, **kwargs)
        return cls(ws)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, wait: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout(wait))
        frame = json.loads(raw)
        assert isinstance(frame, dict)
        return frame

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a command and return the first reply that is not a message/heartbeat."""
        self._ids += 1
        await self.send({"op": op, "id": self._ids, **fields})
        while True:
            frame = await self.recv()
            if frame["type"] not in ("message", "heartbeat"):
                return frame

    async def hello(self, token: str | None) -> dict[str, Any]:
        return await self.request("hello", token=token, client={"name": "raw", "version": "0"})

    async def messages(self, count: int, wait: float = 5.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < count:
            frame = await self.recv(wait)
            if frame["type"] == "message":
                out.append(frame)
        return out

    async def closed_with(self, wait: float = 5.0) -> int | None:
        """Read until the server closes; the close code it sent."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout(wait))
        rcvd = self.ws.protocol.close_rcvd
        return None if rcvd is None else rcvd.code

    async def close(self) -> None:
        await self.ws.close()


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream``; ``cut()`` drops every link,
    ``refuse`` makes it close new connections at once (the server looks down)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.refuse = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.close()
            return
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_writer)

    def cut(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
