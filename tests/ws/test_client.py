"""WebSocketClient against scripted peers: watchdog, gap recovery, retry-after, dedup."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from fokha_integration.errors import ClosedError
from fokha_integration.ws import (
    ClientState,
    LocalBroker,
    StateEvent,
    WebSocketClient,
    WebSocketServer,
)
from tests.support import timeout

Script = Callable[[ServerConnection, int], Awaitable[None]]


class ScriptedPeer:
    """A real websockets server whose behaviour per connection is a test script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.received: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        async with self.changed:
            self.changed.notify_all()
        await self.script(ws, self.connections)

    async def recv(self, ws: ServerConnection) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
        self.received.append(frame)
        async with self.changed:
            self.changed.notify_all()
        return frame

    async def wait_for(self, cond: Callable[[], bool]) -> None:
        async def _wait() -> None:
            async with self.changed:
                await self.changed.wait_for(cond)

        await asyncio.wait_for(_wait(), timeout(10))


async def _welcome(peer: ScriptedPeer, ws: ServerConnection, heartbeat: float) -> None:
    hello = await peer.recv(ws)
    await ws.send(json.dumps({"type": "welcome", "id": hello["id"], "heartbeat": heartbeat}))


def _ack(rid: int) -> str:
    channels = [{"channel": "signals.a", "mode": "all"}]
    return json.dumps({"type": "ack", "id": rid, "op": "subscribe", "channels": channels})


def _msg(seq: int, kind: str = "update", **extra: Any) -> str:
    return json.dumps(
        {"type": "message", "channel": "signals.a", "epoch": "E", "seq": seq, "kind": kind,
         "ts": 0.0, "sent": 0.0, "data": {"n": seq}, **extra}
    )  # fmt: skip


async def test_heartbeat_watchdog_reconnects_from_a_silent_server() -> None:
    """A server that goes silent (no frames, no heartbeats) is dropped and redialled."""

    async def script(ws: ServerConnection, n: int) -> None:
        await _welcome(peer, ws, heartbeat=0.1)
        await ws.wait_closed()

    peer = ScriptedPeer(script)
    async with serve(peer.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = WebSocketClient(f"ws://127.0.0.1:{port}/", backoff=(0.01, 0.05))
        await client.connect()
        await peer.wait_for(lambda: peer.connections >= 2)
        assert client.close_code == 4005
        await client.close()


async def test_sequence_jump_and_heartbeat_trigger_recovery_with_since() -> None:
    """A jump from seq 1 to 3 makes the client resubscribe with since seq 1, and the
    replayed messages arrive once, in order, with the duplicate dropped."""

    async def script(ws: ServerConnection, n: int) -> None:
        await _welcome(peer, ws, heartbeat=30)
        sub = await peer.recv(ws)
        await ws.send(_ack(sub["id"]))
        await ws.send(_msg(1))
        await ws.send(_msg(3))  # seq 2 went missing
        resub = await peer.recv(ws)
        assert resub["channels"] == [{"channel": "signals.a", "since": {"epoch": "E", "seq": 1}}]
        await ws.send(_ack(resub["id"]))
        for seq in (2, 3, 3, 4):  # the replay, a duplicate, then live
            await ws.send(_msg(seq))
        await ws.wait_closed()

    peer = ScriptedPeer(script)
    async with serve(peer.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with WebSocketClient(f"ws://127.0.0.1:{port}/") as client:
            await client.subscribe("signals.a")
            got = [await client.next_message(timeout(5)) for _ in range(4)]
            assert [m.seq for m in got] == [1, 2, 3, 4]
            assert client.gaps_detected == 1


async def test_drain_retry_after_delays_the_reconnect() -> None:
    """After a drain notice with retry_after 0.4 the client waits at least that long."""
    events: list[StateEvent] = []
    srv = WebSocketServer(broker=LocalBroker())
    await srv.start()
    client = WebSocketClient(srv.url, backoff=(0.01, 0.02), on_state=events.append)
    await client.connect()
    await srv.close(drain=0.1, retry_after=0.4)
    reconnecting = [e for e in events if e.state is ClientState.RECONNECTING]
    assert reconnecting, events
    assert reconnecting[0].code == 4000
    assert reconnecting[0].delay is not None
    assert reconnecting[0].delay >= 0.4
    await client.close()
    assert client.state is ClientState.CLOSED


async def test_on_message_callback_gets_every_message_in_order() -> None:
    """With on_message, messages arrive in the callback (sync or async), in order, with
    duplicates dropped, and a callback that raises does not break the connection."""
    got: list[int] = []
    done = asyncio.Event()

    async def on_message(msg: Any) -> None:
        got.append(msg.seq)
        if msg.seq == 2:
            raise RuntimeError("an application bug")
        if len(got) == 5:
            done.set()

    async with WebSocketServer(broker=LocalBroker()) as srv:
        client = WebSocketClient(srv.url, on_message=on_message)
        await client.connect()
        await client.subscribe("signals.cb", mode="all")
        for i in range(5):
            await srv.publish("signals.cb", {"i": i})
        await asyncio.wait_for(done.wait(), timeout(5))
        assert got == [1, 2, 3, 4, 5]
        assert client.positions["signals.cb"].seq == 5
        await client.close()


async def test_close_does_not_wait_for_a_handshake_that_never_comes() -> None:
    """close() while the client is still opening (the peer accepted TCP and never
    answers the handshake) returns at once instead of after open_timeout."""
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = WebSocketClient(f"ws://127.0.0.1:{port}/", open_timeout=60.0)
    connecting = asyncio.create_task(client.connect(timeout=60.0))
    try:
        await asyncio.wait_for(accepted.wait(), timeout(5))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.close()  # before the fix: the whole 60 s open_timeout
        assert loop.time() - started < timeout(5)
        assert client.state is ClientState.CLOSED
        with pytest.raises(ClosedError):
            await asyncio.wait_for(connecting, timeout(5))
    finally:
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
