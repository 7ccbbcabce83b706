"""`fokha queue`: stats, dead letters and replay on a real SQLite outbox file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fokha_integration.models import Envelope
from fokha_integration.queue import AttemptRecord, DeadLetter, SQLiteOutboxStore
from tests.support import timeout


def fokha(*args: str) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "fokha_integration.cli", "queue", *args],
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=True,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


async def test_queue_command_lists_and_replays_dead_letters(tmp_path: Path) -> None:
    """The command shows a dead letter with its reason, replays it, and stats see it pending."""
    path = tmp_path / "outbox.db"
    store = SQLiteOutboxStore(path)
    await store.open(["webhook", "ea"])
    e = Envelope(type="signal", key="k1", payload={"symbol": "EURUSD"})
    await store.append(e)
    (entry,) = await store.fetch("webhook", limit=5)
    attempt = AttemptRecord(1, 1.0, 0.1, "DeliveryFailedError: 503")
    await store.dead_letter(entry, DeadLetter("webhook", e, "max_attempts", "503", (attempt,), 2.0))
    await store.close()

    (listed,) = fokha("dead-letters", "--sqlite", str(path))
    assert (listed["id"], listed["sink"], listed["reason"], listed["attempts"]) == (
        e.id,
        "webhook",
        "max_attempts",
        1,
    )
    stats = {row["sink"]: row for row in fokha("stats", "--sqlite", str(path))}
    assert stats["webhook"]["pending"] == 0 and stats["webhook"]["dead_letters"] == 1
    assert stats["ea"]["pending"] == 1
    assert fokha("replay", "--sqlite", str(path), "--sink", "webhook") == [{"replayed": 1}]
    stats = {row["sink"]: row for row in fokha("stats", "--sqlite", str(path))}
    assert stats["webhook"]["pending"] == 1 and stats["webhook"]["dead_letters"] == 0
