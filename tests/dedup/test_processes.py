"""Across processes: concurrent claims from 4 processes, and claims that survive SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fokha_integration.dedup import ClaimStatus, DedupBackend, DedupCache, SQLiteDedupBackend
from tests.support import size, timeout

WORKER = Path(__file__).with_name("_worker.py")
KEYS = size("FOKHA_DEDUP_PROCESS_KEYS", 2_000, 10_000)


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(WORKER.parents[2])},
    )


def expect_line(proc: subprocess.Popen[str], wanted: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != wanted:
        proc.kill()
        _, err = proc.communicate(timeout=timeout(10))
        pytest.fail(f"worker said {line!r}, not {wanted!r}; stderr:\n{err}")


def run_concurrent_claims(kind: str, target: str, namespace: str) -> None:
    modes = ["single", "batch", "single", "batch"]
    procs = [
        spawn("claim", kind, target, namespace, str(KEYS), str(seed), mode)
        for seed, mode in enumerate(modes)
    ]
    try:
        for proc in procs:
            expect_line(proc, "ready")
        for proc in procs:  # start them together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        won: list[int] = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout(90))
            assert proc.returncode == 0, err
            won.extend(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len(won) == KEYS  # FIRST exactly KEYS times in total ...
    assert sorted(won) == list(range(KEYS))  # ... once for every key


def kill_holder_then_check(kind: str, target: str, namespace: str, new: DedupBackend) -> None:
    proc = spawn("hold", kind, target, namespace, "100")
    try:
        expect_line(proc, "claimed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout(10))
    assert proc.returncode == -signal.SIGKILL

    async def check() -> None:
        async with DedupCache(new) as cache:
            results = await cache.claim_many([f"k{i}" for i in range(100)])
            assert all(r.status is ClaimStatus.DUPLICATE for r in results)
            replay = await cache.claim("order-1")
            assert replay.status is ClaimStatus.DUPLICATE
            assert replay.result == b"ticket-42"
            assert (await cache.claim("k100")).status is ClaimStatus.FIRST

    asyncio.run(check())


@pytest.mark.slow
def test_sqlite_four_processes_claim_each_key_once(tmp_path: Path) -> None:
    """4 processes claiming the same 10,000 keys on one SQLite file: each key FIRST once."""
    run_concurrent_claims("sqlite", str(tmp_path / "shared.sqlite3"), "-")


@pytest.mark.slow
@pytest.mark.redis
def test_redis_four_processes_claim_each_key_once(redis_url: str) -> None:
    """4 processes claiming the same 10,000 keys on one Redis: each key FIRST once."""
    run_concurrent_claims("redis", redis_url, "xproc")


def test_sqlite_claims_survive_sigkill(tmp_path: Path) -> None:
    """A process claims and commits, is SIGKILLed; a new process sees DUPLICATE and the result."""
    path = tmp_path / "restart.sqlite3"
    kill_holder_then_check("sqlite", str(path), "-", SQLiteDedupBackend(path))


@pytest.mark.redis
def test_redis_claims_survive_sigkill(redis_url: str) -> None:
    """A process claims and commits on Redis, is SIGKILLed; a new process sees DUPLICATE."""
    from fokha_integration.dedup.redis import RedisDedupBackend

    kill_holder_then_check(
        "redis", redis_url, "restart", RedisDedupBackend(redis_url, namespace="restart")
    )
