"""The whole spine: dedup → durable outbox → the app (WebSocket) and the EA (files).

Run ``python examples/trading_spine.py [MQL5_FILES_FOLDER]``. Without a folder it
uses a temporary one and starts the bundled EA emulator in its place, so the
example runs anywhere; with the folder of a real terminal (``MQL5/Files/fokha`` or
``Common/Files/fokha``) the shipped ``FokhaBridgeExample.mq5`` answers instead.
Flutter or browser clients subscribe to the ``signals`` channel on ws://127.0.0.1:8765/.

Signals already delivered are never sent again (the dedup cache and the outbox are
SQLite files next to the script's working directory), and an order re-sent after a
crash is answered from the EA's journal instead of trading twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
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
        server = await stack.enter_async_context(WebSocketServer(port=8765))
        bridge = await stack.enter_async_context(FileBridge(folder))
        cache = await stack.enter_async_context(
            DedupCache(backend=SQLiteDedupBackend("fokha-dedup.db"))
        )
        queue = await stack.enter_async_context(
            SignalQueue(
                dedup=cache,
                store=SQLiteOutboxStore("fokha-outbox.db"),
                sinks=[WebSocketSink(server, channel="signals"), FileBridgeSink(bridge)],
            )
        )
        for symbol, direction in (("EURUSD", Direction.BUY), ("XAUUSD", Direction.SELL)):
            signal = Signal(symbol=symbol, direction=direction, volume=0.1, strategy="example")
            result = await queue.publish(signal)
            print(f"{symbol} {direction.value}: {result.status}")
        await queue.wait_idle(timeout=30)
        for name, metrics in (await queue.metrics()).items():
            print(f"sink {name}: {metrics.delivered} delivered, {metrics.dead_lettered} dead")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
