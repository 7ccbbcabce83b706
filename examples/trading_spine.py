"""The whole spine: dedup → durable outbox → the app (WebSocket) and the EA (files).

Run ``python examples/trading_spine.py [MQL5_FILES_FOLDER]``. Without a folder it
uses a temporary one and starts the bundled EA emulator in its place, so the
example runs anywhere; with the folder of a real terminal (``MQL5/Files/fokha`` or
``Common/Files/fokha``) the shipped ``FokhaBridgeExample.mq5`` answers instead.
The WebSocket server listens on a free port and prints its URL: Flutter or browser
clients subscribe to the ``signals`` channel there.

Signals already delivered are never sent again: each signal's id is derived from
what it means (the day, the symbol, the direction) rather than drawn at random,
the id is the dedup key, and the dedup cache and the outbox are SQLite files in
the working directory. A second run the same day answers ``duplicate`` for both.
An order re-sent after a crash is answered from the EA's journal instead of
trading twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from fokha_integration import (
    DedupCache,
    Direction,
    FileBridge,
    FileBridgeSink,
    Signal,
    SignalQueue,
    SQLiteOutboxStore,
    WebSocketServer,
    WebSocketSink,
)
from fokha_integration.bridge.emulator import EAEmulator
from fokha_integration.dedup import SQLiteDedupBackend


async def main(folder: Path | None) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            await stack.enter_async_context(EAEmulator(folder))
            print(f"no terminal folder given: the EA emulator answers in {folder}")
        server = await stack.enter_async_context(WebSocketServer(port=0))
        print(f"WebSocket server on {server.url} (channel 'signals')")
        bridge = await stack.enter_async_context(FileBridge(folder))
        cache = await stack.enter_async_context(
            # Remember signals for a day, so a rerun today is recognised.
            DedupCache(
                backend=SQLiteDedupBackend("fokha-dedup.db"), ttl_by_type={"signal": 86400.0}
            )
        )
        queue = await stack.enter_async_context(
            SignalQueue(
                dedup=cache,
                store=SQLiteOutboxStore("fokha-outbox.db"),
                sinks=[WebSocketSink(server, channel="signals"), FileBridgeSink(bridge)],
            )
        )
        # Same id and same content on a rerun: the queue fingerprints the content, so a
        # signal whose id comes back with different fields would be a "conflict".
        day = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        today = day.strftime("%Y%m%d")
        for symbol, direction in (("EURUSD", Direction.BUY), ("XAUUSD", Direction.SELL)):
            signal = Signal(
                id=f"spine-{today}-{symbol}-{direction.value}",  # stable: the dedup key
                symbol=symbol,
                direction=direction,
                volume=0.1,
                strategy="example",
                created_at=day,
            )
            result = await queue.publish(signal)
            print(f"{symbol} {direction.value}: {result.status}")
        await queue.wait_idle(timeout=30)
        for name, metrics in (await queue.metrics()).items():
            print(f"sink {name}: {metrics.delivered} delivered, {metrics.dead_lettered} dead")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
