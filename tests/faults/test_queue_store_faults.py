"""Store faults under the queue: failing acknowledgements, a full disk, a database
file deleted while open, cancelled and timed-out publishes. Each test asserts the
invariant (every accepted signal delivered once or dead-lettered with a reason; no
redelivery storm; the event loop never blocked > 100 ms)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from fokha_integration.dedup import DedupCache
from fokha_integration.dedup.sqlite import SQLiteDedupBackend
from fokha_integration.errors import BackendError, FokhaError
from fokha_integration.models import Envelope
from fokha_integration.queue import (
    DeadLetter,
    OutboxEntry,
    OutboxStore,
    PublishResult,
    SignalQueue,
    SQLiteOutboxStore,
)
from fokha_integration.resilience import RetryPolicy
from tests.faults._lag import LoopLagSampler
from tests.faults._queue_support import Ledger, check_invariant, make_store
from tests.support import timeout

ATTEMPTS = 3
FAST = RetryPolicy(attempts=ATTEMPTS, initial=0.001, max_delay=0.005, deadline=None)


def envelopes(n: int, prefix: str = "k") -> list[Envelope]:
    return [
        Envelope(type="signal", key=f"{prefix}{i}", payload={"symbol": f"S{i % 4}", "n": i})
        for i in range(n)
    ]


class FailingAcks:
    """An outbox store wrapper whose acknowledgements fail with ENOSPC while ``failing``.

    Only the :class:`OutboxStore` methods are offered (no fast path), so every ack
    goes through the injected fault.
    """

    def __init__(self, inner: OutboxStore) -> None:
        self.inner = inner
        self.failing = True
        self.failed_acks = 0
        self.acks_failed = asyncio.Event()  # set once enough acks failed
        self.wanted_failures = 0

    async def open(self, sinks: Sequence[str]) -> None:
        await self.inner.open(sinks)

    async def close(self) -> None:
        await self.inner.close()

    async def append(self, envelope: Envelope) -> bool:
        return await self.inner.append(envelope)

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        return await self.inner.fetch(sink, limit=limit)

    async def ack(self, entry: OutboxEntry) -> None:
        if self.failing:
            self.failed_acks += 1
            if self.failed_acks >= self.wanted_failures:
                self.acks_failed.set()
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        await self.inner.ack(entry)

    async def release(self, entry: OutboxEntry) -> None:
        await self.inner.release(entry)

    async def dead_letter(self, entry: OutboxEntry, letter: DeadLetter) -> None:
        await self.inner.dead_letter(entry, letter)

    async def dead_letters(self, sink: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        return await self.inner.dead_letters(sink, limit=limit)

    async def replay(self, sink: str | None = None, refs: Sequence[str] | None = None) -> int:
        return await self.inner.replay(sink, refs)

    async def stats(self, sink: str) -> tuple[int, float | None]:
        return await self.inner.stats(sink)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_failing_acks_do_not_redeliver_in_a_hot_loop(
    kind: str, tmp_path: Path, loop_lag: LoopLagSampler
) -> None:
    """While acks fail (disk full after publish) each entry reaches the sink once;
    once acks work again everything settles, with no extra delivery."""
    ledger = Ledger()
    store = FailingAcks(make_store(kind, tmp_path))
    store.wanted_failures = 50  # ack attempts seen failing before the disk "recovers"
    async with SignalQueue(store=store, sinks=[ledger.sink("a")], retry=FAST) as q:
        accepted = [(await q.publish(e)).id for e in envelopes(10)]
        await asyncio.wait_for(store.acks_failed.wait(), timeout(10))
        assert ledger.total("a") <= 10 * ATTEMPTS, ledger.calls
        store.failing = False
        await q.wait_idle(timeout=timeout(10))
        await check_invariant(q, ledger, accepted, attempts=ATTEMPTS)
    assert ledger.total("a") == 10


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (needs root); skips elsewhere unless CI=true.

    Not smaller: SQLite's write-ahead log alone grows to 4 MiB before its automatic
    checkpoint, and a disk smaller than that is filled by the log itself."""
    mount = tmp_path / "small"
    mount.mkdir()
    ok = (
        os.geteuid() == 0
        and shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
            capture_output=True,
        ).returncode
        == 0
    )
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot mount a size-limited tmpfs under CI (needs root)")
        pytest.skip("mounting a size-limited tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path: Path) -> None:
    """Write to ``path`` until the file system is full."""
    with path.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())


async def test_a_full_disk_neither_loses_nor_storms(
    small_tmpfs: Path, loop_lag: LoopLagSampler
) -> None:
    """On a real full disk (tmpfs) publishes fail visibly, every accepted signal is
    delivered exactly once, and nothing is redelivered in a loop; freeing space
    lets everything settle."""
    ledger = Ledger()
    gate = asyncio.Event()

    async def held(envelope: Envelope) -> None:
        await gate.wait()

    store = SQLiteOutboxStore(small_tmpfs / "outbox.db")
    accepted: list[str] = []
    refused = 0
    async with SignalQueue(store=store, sinks=[ledger.sink("a", held)], retry=FAST) as q:
        for env in envelopes(200):
            try:
                accepted.append((await q.publish(env)).id)
            except FokhaError:
                refused += 1
        _fill(small_tmpfs / "filler")
        for env in envelopes(20, prefix="late"):
            try:
                accepted.append((await q.publish(env)).id)
            except FokhaError:
                refused += 1
        assert refused > 0, "the disk never filled"
        gate.set()
        # Every accepted signal reaches the sink while the disk is full.
        deadline = asyncio.get_running_loop().time() + timeout(10)
        while ledger.total("a") < len(accepted):
            assert asyncio.get_running_loop().time() < deadline, "deliveries stalled"
            await asyncio.sleep(0.01)  # polling the ledger: no event on a plain counter
        (small_tmpfs / "filler").unlink()
        await q.wait_idle(timeout=timeout(15))
        await check_invariant(q, ledger, accepted, attempts=ATTEMPTS)
    assert max(ledger.calls["a"].values()) == 1


async def test_a_deleted_database_file_fails_loudly(tmp_path: Path) -> None:
    """Deleting the SQLite outbox file while it is open makes publish raise a
    BackendError instead of accepting signals a restart would lose."""
    path = tmp_path / "outbox.db"
    store = SQLiteOutboxStore(path, file_check_interval=0.05)
    async with SignalQueue(store=store, sinks=[Ledger().sink("a")]) as q:
        await q.publish(envelopes(1)[0])
        for name in os.listdir(tmp_path):
            (tmp_path / name).unlink()
        deadline = asyncio.get_running_loop().time() + timeout(5)
        failure: BaseException | None = None
        for env in envelopes(10_000, prefix="after"):
            try:
                await q.publish(env)
            except BackendError as exc:
                failure = exc
                break
            assert asyncio.get_running_loop().time() < deadline, "the deletion went unnoticed"
            await asyncio.sleep(0.005)  # let the file check come round
        assert failure is not None
        assert "deleted" in str(failure)


async def _publish_until_settled(q: SignalQueue, env: Envelope) -> PublishResult:
    """Publish like a careful producer: again while the answer is in_flight."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(10)
    while True:
        result = await q.publish(env)
        if not result.in_flight:
            return result
        assert loop.time() < deadline, f"{env.key} stayed in flight"
        await asyncio.sleep(0.05)  # a producer's retry pause, not a synchronisation


@pytest.mark.parametrize("cut", ["cancel", "wait_for"])
async def test_cancelled_publishes_lose_nothing(
    cut: str, tmp_path: Path, loop_lag: LoopLagSampler
) -> None:
    """Publishes cancelled (or timed out) at every point, then repeated, deliver
    every signal exactly once (SQLite dedup: the claim lands in a thread)."""
    ledger = Ledger()
    dedup = DedupCache(SQLiteDedupBackend(tmp_path / "dedup.db", sweep_interval=None))
    store = SQLiteOutboxStore(tmp_path / "outbox.db")
    envs = envelopes(60)
    async with SignalQueue(
        dedup=dedup, store=store, sinks=[ledger.sink("a")], retry=FAST, claim_lease=0.3
    ) as q:
        for i, env in enumerate(envs):
            task = asyncio.create_task(q.publish(env))
            if cut == "cancel":
                for _ in range(i % 6):
                    await asyncio.sleep(0)  # cut the publish at a different await each time
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, FokhaError):
                    await task
            else:
                with contextlib.suppress(asyncio.TimeoutError, FokhaError):
                    await asyncio.wait_for(task, 0.0005 * (i % 5))
        results = [await _publish_until_settled(q, env) for env in envs]
        await q.wait_idle(timeout=timeout(10))
        await check_invariant(q, ledger, [e.id for e in envs], attempts=ATTEMPTS)
    assert all(r.status in ("accepted", "duplicate") for r in results)
    await dedup.close()
