"""Crash tests: delivering processes SIGKILLed at random moments lose and duplicate nothing.

Sizes are tunable: FOKHA_QUEUE_CRASH_SIGNALS (default 2500, 5000 under make test-all;
20% of them duplicates).
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from fokha_integration.http import generate_webhook_secret
from fokha_integration.models import Direction, Signal
from fokha_integration.queue import OutboxStore, SignalQueue, SQLiteOutboxStore
from tests.support import free_port, size, timeout

N = size("FOKHA_QUEUE_CRASH_SIGNALS", 2500, 5000)
ROOT = Path(__file__).resolve().parents[2]
SINKS = ["file", "webhook"]

pytestmark = pytest.mark.slow


async def spawn(*args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *args,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout(30))
    assert line.strip() == b"ready", line
    return proc


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


def read_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line]


def workload(rng: random.Random) -> tuple[list[Signal], set[str]]:
    """N publications, 20% of them repeats of earlier signals (same id and content)."""
    uniques = [
        Signal(symbol=f"SYM{i % 25}", direction=Direction.BUY, volume=0.1)
        for i in range(N - N // 5)
    ]
    out: list[Signal] = []
    for i, s in enumerate(uniques):
        out.append(s)
        if i % 4 == 3:
            out.append(rng.choice(uniques[: i + 1]))
    return out, {s.id for s in uniques}


async def run_scenario(
    tmp_path: Path,
    store: OutboxStore,
    location: str,
    kind: str,
    *,
    killed_consumer_prefix: str,
    survivor: bool,
) -> dict[str, int]:
    rng = random.Random(1234)
    secret = generate_webhook_secret()
    port = free_port()
    hook_out = tmp_path / "webhook.ids"
    file_out = tmp_path / "file.ids"
    receiver = await spawn("tests.queue.receiver", str(port), secret, str(hook_out))
    url = f"http://127.0.0.1:{port}/hook"

    def worker_args(consumer: str) -> tuple[str, ...]:
        stats = tmp_path / f"stats-{consumer}"
        return (
            "tests.queue.crash_worker",
            kind,
            location,
            url,
            secret,
            str(file_out),
            str(stats),
            consumer,
        )

    await store.open(SINKS)
    producer = SignalQueue(store=store)
    items, unique_ids = workload(rng)
    results = {"accepted": 0, "duplicate": 0, "conflict": 0}
    kills = 0
    steady = await spawn(*worker_args("steady")) if survivor else None
    done = asyncio.Event()

    async def chaos() -> None:
        nonlocal kills
        n = 0
        while not done.is_set():
            n += 1
            proc = await spawn(*worker_args(f"{killed_consumer_prefix}{n}"))
            await asyncio.sleep(rng.uniform(0.05, 0.5))  # a random moment to kill at
            await kill(proc)
            kills += 1

    chaos_task = asyncio.create_task(chaos())
    try:
        for s in items:
            r = await producer.publish(s)
            results[r.status] += 1
        # let the chaos continue a little after the last publish, then stop it
        while kills < 3:
            await asyncio.sleep(0.05)  # polling the kill counter
        done.set()
        await chaos_task
        final = await spawn(*worker_args(f"{killed_consumer_prefix}final"))
        deadline = time.monotonic() + timeout(120)
        while time.monotonic() < deadline:
            if set(read_ids(file_out)) >= unique_ids and set(read_ids(hook_out)) >= unique_ids:
                break
            await asyncio.sleep(0.1)  # polling the receivers' files, bounded
        await kill(final)
        if steady is not None:
            await kill(steady)
    finally:
        done.set()
        chaos_task.cancel()
        await kill(receiver)
        await producer.close()

    assert results == {"accepted": len(unique_ids), "duplicate": N - len(unique_ids), "conflict": 0}
    for path in (file_out, hook_out):
        got = read_ids(path)
        # Each receiver dedups by envelope id: it sees every unique signal exactly once,
        # and nothing that was not published.
        assert set(got) == unique_ids, f"{path.name}: missing {len(unique_ids - set(got))}"
    reclaimed = sum(
        int(p.read_text() or 0) for p in tmp_path.glob("stats-*") if not p.name.endswith(".tmp")
    )
    return {
        "kills": kills,
        "file_redeliveries": len(read_ids(file_out)) - len(unique_ids),
        "webhook_redeliveries": len(read_ids(hook_out)) - len(unique_ids),
        "reclaimed": reclaimed,
    }


async def test_sqlite_outbox_survives_sigkill_of_the_delivering_process(tmp_path: Path) -> None:
    """SQLite store: a producer publishes N signals (20% repeats) while the delivering
    process is SIGKILLed and restarted; each receiver sees each unique signal once."""
    db = tmp_path / "outbox.db"
    stats = await run_scenario(
        tmp_path,
        SQLiteOutboxStore(db),
        str(db),
        "sqlite",
        killed_consumer_prefix="w",
        survivor=False,
    )
    print("sqlite crash test:", stats)
    assert stats["kills"] >= 3


async def test_redis_streams_reclaims_the_pending_entries_of_a_killed_consumer(
    tmp_path: Path, redis_url: str
) -> None:
    """Redis Streams: two delivering processes, one SIGKILLed again and again; its pending
    entries are reclaimed with XAUTOCLAIM and every unique signal is delivered."""
    from fokha_integration.queue.redis import RedisStreamsStore

    stats = await run_scenario(
        tmp_path,
        RedisStreamsStore(redis_url),
        redis_url,
        "redis",
        killed_consumer_prefix="victim",
        survivor=True,
    )
    print("redis crash test:", stats)
    assert stats["kills"] >= 3
    assert stats["reclaimed"] > 0
