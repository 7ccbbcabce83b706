"""A signal producer that never sends the same signal twice, even across restarts.

Run it twice within the same minute: the second run's signals are rejected as
duplicates, because the claims live in an SQLite file, not in memory. (The key
holds the minute — a tumbling window — so a run in the next minute is new.)

    python examples/dedup_signals.py /tmp/dedup.sqlite3
    python examples/dedup_signals.py /tmp/dedup.sqlite3   # all DUPLICATE now
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timezone

from fokha_integration import (
    ClaimStatus,
    DedupCache,
    Direction,
    Signal,
    SQLiteDedupBackend,
    signal_key,
)


async def send_to_ea(signal: Signal) -> None:
    """Stand-in for the real delivery (a FileBridge, a WebSocket, a webhook)."""
    print(f"  -> sent {signal.symbol} {signal.direction.value} {signal.volume}")


async def main(path: str) -> None:
    now = datetime.now(timezone.utc)
    signals = [
        Signal(symbol="EURUSD", direction=Direction.BUY, volume=0.1, created_at=now),
        Signal(symbol="XAUUSD", direction=Direction.SELL, volume=0.02, created_at=now),
    ]
    async with DedupCache(SQLiteDedupBackend(path)) as cache:
        for signal in signals:
            key = signal_key(signal.symbol, signal.direction, signal.created_at)
            answer = await cache.claim(key)  # type="signal": remembered for 300 s
            if answer.status is ClaimStatus.FIRST:
                await send_to_ea(signal)
            else:
                first = datetime.fromtimestamp(answer.first_seen, tz=timezone.utc)
                print(f"  xx {key}: {answer.status.name} (first seen {first:%H:%M:%S} UTC)")
        print(f"stats: {cache.stats()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "dedup.sqlite3"))
