"""A blocking wrapper of :class:`FileBridge` for scripts that do not use asyncio.

:class:`SyncFileBridge` runs a private event loop in a background thread; its
methods block the calling thread until the bridge has done the work. Incoming
messages (without a handler) are queued for :meth:`SyncFileBridge.get`.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from .. import _validate as check
from ..errors import ConfigError, OperationTimeoutError
from ._bridge import FileBridge, Message, Reply, ReplyStatus, Snapshot

__all__ = ["SyncFileBridge"]

T = TypeVar("T")


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SyncFileBridge:
    """Blocking file bridge: ``send``, ``request``, ``get``, snapshots, ``peer_alive``.

    Takes the same keyword arguments as :class:`FileBridge` except ``handler``: a
    received message is returned by :meth:`get`. A one-way message is acknowledged
    (its file removed) only when the caller asks for the next one with :meth:`get`,
    so a script that dies or closes while working on it gets it again on the next
    start (at least once; the id says it is a repeat). A request received this way must be
    answered with :meth:`reply`: the reader waits for that answer (``failed`` is
    sent if the bridge is closed first), and later messages wait behind it.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, root: Any, *, inbox_size: int = 1000, **kwargs: Any) -> None:
        if "handler" in kwargs:
            raise ConfigError("handler", "SyncFileBridge takes no handler; call get()", True)
        inbox_size = check.integer("inbox_size", inbox_size, minimum=1)
        self._inbox: queue.Queue[Message] = queue.Queue(maxsize=inbox_size)
        self._replies: dict[str, Reply] = {}
        self._waiting: dict[str, threading.Event] = {}
        # One-way messages handed out by get() and not yet acknowledged (resolved on
        # the bridge loop by the next get(); cancelled by close(), which leaves the
        # file for redelivery).
        self._acks: dict[str, asyncio.Future[None]] = {}
        self._handed: str | None = None

        async def handler(message: Message) -> Reply | None:
            event = threading.Event()
            if not message.is_request:
                ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._acks[message.id] = ack
                try:
                    await asyncio.to_thread(self._inbox.put, message)
                    await ack
                finally:
                    self._acks.pop(message.id, None)
                return None
            self._waiting[message.id] = event
            await asyncio.to_thread(self._inbox.put, message)
            await asyncio.to_thread(event.wait)
            self._waiting.pop(message.id, None)
            return self._replies.pop(
                message.id, Reply(ReplyStatus.FAILED, {"message": "no reply given"})
            )

        self._closed = False
        # Built here, in the caller's thread: bad settings raise before a thread exists.
        self.bridge = FileBridge(root, handler=handler, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._run(self.bridge.start())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> SyncFileBridge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, kind: str, body: Mapping[str, Any], *, id: str | None = None) -> str:
        """Send a one-way message; returns its id."""
        return self._run(self.bridge.send(kind, body, id=id))

    def request(self, kind: str, body: Mapping[str, Any], **kwargs: Any) -> Reply:
        """Send a request and block until its reply (see :meth:`FileBridge.request`)."""
        return self._run(self.bridge.request(kind, body, **kwargs))

    def get(self, timeout: float | None = None) -> Message:
        """The next incoming message; raises :class:`OperationTimeoutError` after ``timeout``.

        Asking for the next message acknowledges the previous one-way message.
        """
        if self._handed is not None:
            ack = self._acks.get(self._handed)
            self._handed = None
            if ack is not None:
                self._loop.call_soon_threadsafe(_resolve, ack)
        try:
            message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise OperationTimeoutError("SyncFileBridge.get", timeout or 0.0) from None
        if not message.is_request:
            self._handed = message.id
        return message

    def reply(self, message: Message, status: ReplyStatus | str, **details: Any) -> None:
        """Answer a request returned by :meth:`get`."""
        event = self._waiting.get(message.id)
        if event is None:
            raise ConfigError("message", "no such request is waiting for a reply", message.id)
        self._replies[message.id] = Reply(ReplyStatus(status), details)
        event.set()

    def write_snapshot(self, name: str, body: Mapping[str, Any]) -> None:
        """Publish a snapshot (see :meth:`FileBridge.write_snapshot`)."""
        self._run(self.bridge.write_snapshot(name, body))

    def read_snapshot(self, name: str) -> Snapshot | None:
        """The peer's newest snapshot ``name`` or ``None``."""
        return self.bridge.read_snapshot(name)

    def peer_alive(self, max_age: float = 5.0) -> bool:
        """Whether the peer's heartbeat is fresh."""
        return self.bridge.peer_alive(max_age)

    def close(self) -> None:
        """Close the bridge and stop the background loop."""
        if self._closed:
            return
        self._closed = True
        for event in list(self._waiting.values()):
            event.set()
        for ack in list(self._acks.values()):
            # Not acknowledged: the file stays in cur/ and is delivered again next start.
            self._loop.call_soon_threadsafe(ack.cancel)
        try:
            self._run(self.bridge.close(), timeout=10)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
