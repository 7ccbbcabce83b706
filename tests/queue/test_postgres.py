"""The PostgreSQL outbox beyond the shared suite: takeover, per-key order across owners,
LISTEN/NOTIFY, the transactional outbox, migrations, retention."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.clock import ManualClock
from fokha_integration.errors import BackendUnavailableError, ConfigError, ValidationError
from fokha_integration.models import Direction, Envelope, Signal
from fokha_integration.queue import CallableSink, SignalQueue
from tests.support import free_port, timeout

asyncpg = pytest.importorskip("asyncpg")

from fokha_integration._postgres import MIGRATIONS, PostgresPool, migrate, schema_version  # noqa: E402
from fokha_integration.queue.postgres import (  # noqa: E402
    PostgresOutboxConfig,
    PostgresOutboxStore,
    publish_in_transaction,
)

ROOT = Path(__file__).resolve().parents[2]


def env(key: str = "k", n: int = 0) -> Envelope:
    return Envelope(type="signal", key=key, payload={"n": n})


def store(dsn: str, consumer: str, **kw: Any) -> PostgresOutboxStore:
    config = PostgresOutboxConfig(consumer=consumer, **{"idle_wait": 0, **kw})
    return PostgresOutboxStore(dsn, config=config)


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=str(ROOT),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def expect_line(proc: subprocess.Popen[str], wanted: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != wanted:
        proc.kill()
        _, err = proc.communicate(timeout=timeout(10))
        pytest.fail(f"process said {line!r}, not {wanted!r}; stderr:\n{err}")


async def test_a_dead_owners_entries_are_taken_over_after_its_lease(postgres_dsn: str) -> None:
    """Entries leased by an owner that stops renewing come back to another owner, in
    order, once its lease ran out; not before."""
    a = store(postgres_dsn, "a", lease=30)  # its keeper renews only every 10 s
    b = store(postgres_dsn, "b")
    await a.open(["s"])
    await b.open(["s"])
    try:
        for i in range(3):
            await a.append(env(key=f"k{i}", n=i))
        assert len(await a.fetch("s", limit=10)) == 3
        assert await b.fetch("s", limit=10) == []  # a's lease is live
        # a "dies": its lease is no longer renewed (the row is aged by hand).
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(
                "UPDATE fokha_outbox_owners SET lease_until = now() - interval '1 second'"
                " WHERE name = 'a'"
            )
        finally:
            await conn.close()
        got = await b.fetch("s", limit=10)
        assert [x.envelope.payload["n"] for x in got] == [0, 1, 2]
        assert b.taken_over == 3
    finally:
        await b.close()
        await a.close()


async def test_sigkilled_owner_is_taken_over(postgres_dsn: str) -> None:
    """A process that leased entries is SIGKILLed: another owner gets them after the lease."""
    lister = store(postgres_dsn, "survivor")
    await lister.open(["s"])
    try:
        for i in range(4):
            await lister.append(env(key=f"k{i}", n=i))
        proc = spawn("tests.queue.pg_lease_holder", postgres_dsn, "s", "4")
        try:
            expect_line(proc, "leased")
            assert await lister.fetch("s", limit=10) == []
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout(10))
        got: list[int] = []
        deadline = time.monotonic() + timeout(20)
        while len(got) < 4 and time.monotonic() < deadline:
            got += [x.envelope.payload["n"] for x in await lister.fetch("s", limit=10)]
            if len(got) < 4:
                await asyncio.sleep(0.1)  # polling until the dead owner's lease runs out
        assert got == [0, 1, 2, 3]
        assert lister.taken_over == 4
    finally:
        await lister.close()


async def test_per_key_order_across_owners(postgres_dsn: str) -> None:
    """While one owner holds the oldest entries of a key, another owner gets only other
    keys; once they are acknowledged, the rest of the key moves in order."""
    a, b = store(postgres_dsn, "a"), store(postgres_dsn, "b")
    await a.open(["s"])
    await b.open(["s"])
    try:
        for n in range(4):
            await a.append(env(key="EURUSD", n=n))
        await a.append(env(key="GBPUSD", n=10))
        held = await a.fetch("s", limit=2)
        assert [x.envelope.payload["n"] for x in held] == [0, 1]
        other = await b.fetch("s", limit=10)
        assert [x.envelope.payload["n"] for x in other] == [10]
        await a.release(held[1])  # given back to a: still a's key
        assert await b.fetch("s", limit=10) == []
        assert [x.envelope.payload["n"] for x in await a.fetch("s", limit=1)] == [1]
        for entry in held:
            await a.ack(entry)
        rest = await b.fetch("s", limit=10)
        assert [x.envelope.payload["n"] for x in rest] == [2, 3]
    finally:
        await a.close()
        await b.close()


async def test_notify_wakes_an_idle_fetch_at_once(postgres_dsn: str) -> None:
    """A fetch waiting for entries returns as soon as another store object appends."""
    waiter = store(postgres_dsn, "w", idle_wait=30)
    writer = store(postgres_dsn, "p", listen=False)
    await waiter.open(["s"])
    await writer.open(["s"])
    try:
        started = time.monotonic()
        fetching = asyncio.create_task(waiter.fetch("s", limit=10))
        await asyncio.sleep(0.2)  # let the fetch find nothing and start waiting
        assert not fetching.done()
        await writer.append(env(n=7))
        got = await asyncio.wait_for(fetching, timeout(10))
        assert [x.envelope.payload["n"] for x in got] == [7]
        assert time.monotonic() - started < 5
    finally:
        await waiter.close()
        await writer.close()


async def test_without_listen_an_idle_fetch_answers_at_once(postgres_dsn: str) -> None:
    """With listen=False (or the LISTEN line down) fetch never waits: polling is the fallback."""
    polling = store(postgres_dsn, "p", listen=False, idle_wait=30)
    await polling.open(["s"])
    try:
        started = time.monotonic()
        assert await polling.fetch("s", limit=10) == []
        assert time.monotonic() - started < 5
    finally:
        await polling.close()


async def _positions(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE positions (symbol text PRIMARY KEY, volume float8)")
        await conn.execute("INSERT INTO positions VALUES ('EURUSD', 0)")
    finally:
        await conn.close()


async def test_rollback_delivers_nothing_and_commit_delivers_once(postgres_dsn: str) -> None:
    """publish_in_transaction: a rolled-back transaction leaves no signal; a committed one
    is delivered exactly once; the same id in a later transaction is refused."""
    await _positions(postgres_dsn)
    delivered: list[str] = []
    arrived = asyncio.Event()

    async def deliver(envelope: Envelope) -> None:
        delivered.append(envelope.id)
        arrived.set()

    outbox = store(postgres_dsn, "q", idle_wait=1)
    queue = SignalQueue(store=outbox, sinks=[CallableSink(deliver, name="bot")])
    await queue.start()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        lost = Signal(symbol="EURUSD", direction=Direction.SELL, volume=0.1)
        tx = conn.transaction()
        await tx.start()
        await conn.execute("UPDATE positions SET volume = 1 WHERE symbol = 'EURUSD'")
        assert await publish_in_transaction(conn, lost) is True
        await tx.rollback()  # the bot changes its mind
        kept = Signal(symbol="EURUSD", direction=Direction.BUY, volume=0.1)
        async with conn.transaction():
            await conn.execute("UPDATE positions SET volume = 2 WHERE symbol = 'EURUSD'")
            assert await outbox.publish_in_transaction(conn, kept) is True
        async with conn.transaction():  # a retried transaction: the id is known
            assert await publish_in_transaction(conn, kept) is False
        await asyncio.wait_for(arrived.wait(), timeout(10))
        await queue.wait_idle(timeout=timeout(10))
        assert delivered == [kept.id]
        assert lost.id not in delivered
        with pytest.raises(ValidationError):
            await publish_in_transaction(conn, kept)  # not inside a transaction
    finally:
        await conn.close()
        await queue.close()


async def test_publish_in_transaction_with_no_sink_keeps_the_transaction_usable(
    postgres_dsn: str,
) -> None:
    """With no sink registered the call raises ConfigError and the transaction goes on."""
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await migrate(conn)
        async with conn.transaction():
            with pytest.raises(ConfigError):
                await publish_in_transaction(conn, env())
            assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT count(*) FROM fokha_outbox") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("order", ["publish-first", "update-first"])
async def test_bot_killed_between_statements_emits_no_signal(postgres_dsn: str, order: str) -> None:
    """A bot SIGKILLed between its state update and its publish (either order): neither the
    change nor the signal exists, ever; a bot that commits gets both, once."""
    await _positions(postgres_dsn)
    outbox = store(postgres_dsn, "q")
    await outbox.open(["bot"])
    conn = await asyncpg.connect(postgres_dsn)
    try:
        proc = spawn("tests.queue.pg_bot", postgres_dsn, order)
        try:
            expect_line(proc, "between")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout(10))
        # Wait until the server has noticed and rolled the dead session back.
        deadline = time.monotonic() + timeout(20)
        while await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%'"
        ):
            assert time.monotonic() < deadline, "the killed bot's transaction is still open"
            await asyncio.sleep(0.05)  # polling the server's session list, bounded
        assert await conn.fetchval("SELECT count(*) FROM fokha_outbox") == 0
        assert await outbox.stats("bot") == (0, None)
        assert await conn.fetchval("SELECT volume FROM positions") == 0
        committed = spawn("tests.queue.pg_bot", postgres_dsn, "commit")
        expect_line(committed, "committed")
        committed.wait(timeout(10))
        assert await conn.fetchval("SELECT volume FROM positions") == pytest.approx(0.1)
        [entry] = await outbox.fetch("bot", limit=10)
        assert entry.envelope.id == "sig-eurusd-1"
    finally:
        await conn.close()
        await outbox.close()


async def test_concurrent_migrations_apply_each_step_once(postgres_dsn: str) -> None:
    """Four connections migrating at once: every step applied once; a rerun applies nothing;
    another prefix is independent; a newer schema is refused."""
    conns = [await asyncpg.connect(postgres_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c, "mig_") for c in conns))
        applied = sorted(v for r in results for v in r)
        assert applied == [m[0] for m in MIGRATIONS]
        assert await migrate(conns[0], "mig_") == []
        assert await schema_version(conns[0], "mig_") == MIGRATIONS[-1][0]
        assert await schema_version(conns[0], "other_") == 0
        assert await migrate(conns[0], "other_") == [m[0] for m in MIGRATIONS]
        await conns[0].execute("INSERT INTO mig_schema_version (version, name) VALUES (999, 'x')")
        with pytest.raises(ConfigError):
            await migrate(conns[1], "mig_")
    finally:
        for c in conns:
            await c.close()


async def test_retention_sweep_keeps_pending_and_dead_and_frees_old_ids(postgres_dsn: str) -> None:
    """The sweep deletes delivered rows past retention only; an id is new again after it."""
    clock = ManualClock()
    config = PostgresOutboxConfig(consumer="r", retention=60, idle_wait=0)
    outbox = PostgresOutboxStore(postgres_dsn, config=config, clock=clock)
    await outbox.open(["s"])
    try:
        done, dead, waiting = env(n=1), env(n=2), env(n=3)
        for e in (done, dead, waiting):
            await outbox.append(e)
        first, second, _ = await outbox.fetch("s", limit=2) + [None]  # type: ignore[list-item]
        await outbox.ack(first)
        from fokha_integration.queue import DeadLetter

        letter = DeadLetter(
            sink="s", envelope=dead, reason="max_attempts", detail="x", attempts=(), dead_at=1.0
        )
        await outbox.dead_letter(second, letter)
        assert await outbox.sweep() == 0  # within retention
        assert await outbox.append(done) is False
        clock.advance(61)
        assert await outbox.sweep() == 1  # only the delivered one
        assert await outbox.append(done) is True
        assert await outbox.replay("s") == 1
        got = await outbox.fetch("s", limit=10)
        assert sorted(x.envelope.payload["n"] for x in got) == [1, 2, 3]
    finally:
        await outbox.close()


async def test_unreachable_server_raises_backend_unavailable() -> None:
    """Opening a store on a port where nothing listens raises BackendUnavailableError."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    outbox = PostgresOutboxStore(dsn, limits=PostgresPool(connect_timeout=2))
    with pytest.raises(BackendUnavailableError):
        await outbox.open(["s"])


def test_settings_are_checked() -> None:
    """Bad settings raise ConfigError naming the setting."""
    for kw, name in (
        ({"lease": 0}, "lease"),
        ({"idle_wait": float("nan")}, "idle_wait"),
        ({"listen": 1}, "listen"),
        ({"max_pending": 1.5}, "max_pending"),
    ):
        with pytest.raises(ConfigError, match=name):
            PostgresOutboxConfig(**kw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="prefix"):
        PostgresOutboxStore("postgresql://x/y", prefix="Robert'); DROP TABLE x;--")
    with pytest.raises(ConfigError, match="min_size"):
        PostgresPool(min_size=5, max_size=2)
