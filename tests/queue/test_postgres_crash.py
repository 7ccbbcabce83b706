"""Crash test on the PostgreSQL outbox: two delivering processes, one SIGKILLed 4-5 times.

A producer publishes N signals (20 % of them repeats) into the outbox while two
delivering processes share it: a steady one, and a victim SIGKILLed at random
moments and restarted under a new name (so its leases must run out and be taken
over, not handed back). Every unique signal must reach each sink (a file sink and
a real webhook receiver process), nothing else may, and after dedup by envelope
id each sink must see each order key's signals in publish order.

Size: FOKHA_PG_CRASH_SIGNALS (default 1000; the acceptance run uses 5000).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from fokha_integration.http import generate_webhook_secret
from fokha_integration.models import Direction, Signal
from fokha_integration.queue import SignalQueue
from tests.queue.test_crash import kill, read_ids, spawn
from tests.support import free_port, timeout

asyncpg = pytest.importorskip("asyncpg")

from fokha_integration.queue.postgres import PostgresOutboxStore  # noqa: E402

N = int(os.environ.get("FOKHA_PG_CRASH_SIGNALS", "1000"))
SINKS = ["file", "webhook"]

pytestmark = pytest.mark.slow


def workload(rng: random.Random) -> tuple[list[Signal], list[Signal]]:
    """N publications over 25 symbols, 20 % of them repeats; and the unique ones in order."""
    uniques = [
        Signal(symbol=f"SYM{i % 25}", direction=Direction.BUY, volume=0.1)
        for i in range(N - N // 5)
    ]
    out: list[Signal] = []
    for i, s in enumerate(uniques):
        out.append(s)
        if i % 4 == 3:
            out.append(rng.choice(uniques[: i + 1]))
    return out, uniques


def taken_over(folder: Path) -> int:
    """Entries the delivering processes took over from dead owners (their own counts)."""
    return sum(int(p.read_text() or 0) for p in folder.glob("*.taken"))


def order_violations(delivered: list[str], uniques: list[Signal]) -> int:
    """First deliveries of each id, per symbol, that came before an earlier-published one."""
    symbol = {s.id: s.symbol for s in uniques}
    rank = {s.id: i for i, s in enumerate(uniques)}
    seen: set[str] = set()
    last: dict[str, int] = {}
    bad = 0
    for ident in delivered:
        if ident in seen:
            continue
        seen.add(ident)
        sym = symbol[ident]
        if rank[ident] < last.get(sym, -1):
            bad += 1
        last[sym] = max(rank[ident], last.get(sym, -1))
    return bad


async def test_two_processes_one_killed_repeatedly_deliver_every_signal_once_in_order(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """Every unique signal reaches each sink (once after dedup by id), nothing else does,
    per-key order holds at each sink, and the killed process's leases are taken over."""
    rng = random.Random(4321)
    secret = generate_webhook_secret()
    port = free_port()
    hook_out, file_out = tmp_path / "webhook.ids", tmp_path / "file.ids"
    receiver = await spawn("tests.queue.receiver", str(port), secret, str(hook_out))
    url = f"http://127.0.0.1:{port}/hook"

    def worker(consumer: str) -> tuple[str, ...]:
        return ("tests.queue.pg_crash_worker", postgres_dsn, url, secret, str(file_out), consumer)

    store = PostgresOutboxStore(postgres_dsn)
    await store.open(SINKS)
    producer = SignalQueue(store=store)
    items, uniques = workload(rng)
    unique_ids = {s.id for s in uniques}
    results = {"accepted": 0, "duplicate": 0, "conflict": 0}
    kills = 0
    steady = await spawn(*worker("steady"))
    watcher = await asyncpg.connect(postgres_dsn)
    final = None
    try:

        async def publish(chunk: list[Signal]) -> None:
            for s in chunk:
                results[(await producer.publish(s)).status] += 1

        # Five rounds: a victim starts, a fifth of the signals is published while both
        # processes deliver, and the victim is SIGKILLed at a random moment after it
        # holds leases (so there is always something of its to take over).
        rounds = 5
        for i in range(rounds):
            victim = await spawn(*worker(f"victim{i}"))
            chunk = items[i * len(items) // rounds : (i + 1) * len(items) // rounds]
            publishing = asyncio.create_task(publish(chunk))
            deadline = time.monotonic() + timeout(30)
            while not await watcher.fetchval(
                "SELECT count(*) FROM fokha_outbox_pending WHERE owner = $1", f"victim{i}"
            ):
                if publishing.done() and time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)  # polling the database for the victim's leases
            await asyncio.sleep(rng.uniform(0.0, 0.2))  # a random moment to kill at
            await kill(victim)
            kills += 1
            await publishing
        final = await spawn(*worker("final"))
        deadline = time.monotonic() + timeout(180)
        while time.monotonic() < deadline:
            if set(read_ids(file_out)) >= unique_ids and set(read_ids(hook_out)) >= unique_ids:
                break
            await asyncio.sleep(0.1)  # polling the receivers' files, bounded
        while not taken_over(tmp_path) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # polling the workers' takeover counts, bounded
    finally:
        await watcher.close()
        for proc in (final, steady, receiver):
            if proc is not None:
                await kill(proc)
        await producer.close()

    assert results == {"accepted": len(unique_ids), "duplicate": N - len(unique_ids), "conflict": 0}
    assert 4 <= kills <= 5
    for path in (file_out, hook_out):
        got = read_ids(path)
        assert set(got) == unique_ids, f"{path.name}: missing {len(unique_ids - set(got))}"
        assert order_violations(got, uniques) == 0, path.name
    taken = taken_over(tmp_path)
    assert taken > 0  # the victims' leases ran out and were taken over
    print(
        f"postgres crash test: N={N} kills={kills} taken_over={taken}"
        f" file_redeliveries={len(read_ids(file_out)) - len(unique_ids)}"
        f" webhook_redeliveries={len(read_ids(hook_out)) - len(unique_ids)}"
    )
