"""The whole spine with real parts: DedupCache (SQLite) → SignalQueue → a real
WebSocketServer with a real client, and a real FileBridge with the EA emulator."""

from __future__ import annotations

from pathlib import Path

from fokha_integration import (
    DedupCache,
    Direction,
    FileBridge,
    Signal,
    SignalQueue,
    WebSocketClient,
    WebSocketServer,
)
from fokha_integration.bridge import PollConfig
from fokha_integration.bridge.emulator import EAEmulator
from fokha_integration.dedup import SQLiteDedupBackend
from fokha_integration.queue import FileBridgeSink, WebSocketSink
from fokha_integration.resilience import RetryPolicy
from tests.support import timeout

FAST = RetryPolicy(attempts=3, initial=0.01, max_delay=0.05, deadline=None)
POLL = PollConfig(busy=0.001, idle=0.01)


async def test_signals_reach_the_app_and_the_ea_once_and_refusals_are_dead_letters(
    tmp_path: Path,
) -> None:
    """Duplicates stop at the DedupCache; the EA trades each once; its refusal is dead-lettered."""
    cache = DedupCache(backend=SQLiteDedupBackend(tmp_path / "dedup.db"))
    root = tmp_path / "bridge"
    async with (
        WebSocketServer(port=0) as server,
        EAEmulator(root, poll=POLL, max_volume=1.0) as ea,
        FileBridge(root, poll=POLL) as bridge,
    ):
        client = WebSocketClient(server.url)
        await client.connect(timeout=timeout(5))
        await client.subscribe("signals")
        sinks = [
            WebSocketSink(server, channel="signals"),
            FileBridgeSink(bridge, reply_timeout=timeout(5)),
        ]
        good = [Signal(symbol=s, direction=Direction.BUY, volume=0.1) for s in ("EURUSD", "GBPUSD")]
        too_big = Signal(symbol="XAUUSD", direction=Direction.SELL, volume=5.0)
        async with SignalQueue(dedup=cache, sinks=sinks, retry=FAST) as queue:
            results = [await queue.publish(s) for s in (*good, too_big, good[0], good[1])]
            await queue.wait_idle(timeout=timeout(10))
            dead = await queue.dead_letters()
            received = [await client.next_message(timeout(5)) for _ in range(3)]
        await client.close()
    await cache.close()

    assert [r.status for r in results] == ["accepted"] * 3 + ["duplicate"] * 2
    assert [m.data["id"] for m in received] == [good[0].id, good[1].id, too_big.id]
    assert ea.executed == 2
    assert sorted(p["comment"] for p in ea.server.positions.values()) == sorted(s.id for s in good)
    assert [(d.sink, d.reason) for d in dead] == [("file_bridge", "rejected")]
    assert "invalid volume" in dead[0].detail
