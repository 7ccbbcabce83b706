"""Crash test: server and client processes SIGKILLed at random while pushing over loopback HTTP.

``FOKHA_SYNC_CRASH_N`` sets the number of mutations (300 for ``make test``, 10,000 under
``make test-all``, the issue's full run).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fokha_integration.sync import SyncService, SyncStore
from tests.support import free_port, size, timeout

from .crash_worker import KEYS, open_store

N = size("FOKHA_SYNC_CRASH_N", 300, 10_000)
BATCH = 50
ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str) -> subprocess.Popen[str]:
    """A worker process."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sync.crash_worker", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def start_server(spec: str, port: int) -> subprocess.Popen[str]:
    """A server process, once it serves."""
    proc = spawn("server", spec, str(port))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY"
    return proc


def run_chaos(spec: str, tmp_path: Path, seed: int) -> dict[str, int]:
    """Push N mutations while killing server and client at random; the kill counts."""
    rng = random.Random(seed)
    port = free_port()
    url = f"http://127.0.0.1:{port}/sync"
    log = tmp_path / "dups.log"
    client_args = ("client", str(tmp_path / "client.db"), url, str(N), str(BATCH), str(log))
    server = start_server(spec, port)
    client = spawn(*client_args)
    kills = {"server": 0, "client": 0}
    try:
        while True:
            try:
                client.wait(rng.uniform(0.1, 0.6))
            except subprocess.TimeoutExpired:
                pass
            else:
                assert client.stdout is not None
                if client.returncode == 0 and "DONE" in client.stdout.read():
                    break
                raise AssertionError(f"client exited with {client.returncode}")
            if rng.random() < 0.5:
                server.send_signal(signal.SIGKILL)
                server.wait()
                kills["server"] += 1
                server = start_server(spec, port)
            else:
                client.send_signal(signal.SIGKILL)
                client.wait()
                kills["client"] += 1
                client = spawn(*client_args)
    finally:
        for proc in (server, client):
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout(10))
    per_life: dict[str, int] = {}
    for line in log.read_text().splitlines():
        pid, dups = line.split()
        per_life[pid] = max(per_life.get(pid, 0), int(dups))
    kills["duplicates"] = sum(per_life.values())
    return kills


async def verify(store: SyncStore) -> None:
    """Every mutation applied exactly once, no row lost."""
    svc = SyncService(store, ["w"])
    await svc.start()
    try:
        status = await svc.status()
        [client] = status.clients
        assert client.last_mutation_id == N
        assert status.high_seq == N  # one write per applied mutation: none applied twice
        assert status.unresolved_conflicts == 0
        for k in range(KEYS):
            last = max((i for i in range(N) if i % KEYS == k), default=None)
            rec = await svc.get("w", f"k{k}")
            if last is None:
                assert rec is None
            else:
                assert rec is not None
                assert rec.data == {"i": last}
    finally:
        await svc.close()


def report(kind: str, kills: dict[str, int]) -> None:
    """Print what the run did (shown with -s)."""
    resumes = kills["server"] + kills["client"]
    print(
        f"\ncrash[{kind}] N={N} kills={kills} resent-duplicates={kills['duplicates']} "
        f"(<= {BATCH} x {resumes + 1} allowed)"
    )


@pytest.mark.slow
def test_crash_sqlite(tmp_path: Path) -> None:
    """SQLite server: exactly once under random SIGKILLs of server and client."""
    spec = f"sqlite:{tmp_path / 'server.db'}"
    kills = run_chaos(spec, tmp_path, seed=1)
    report("sqlite", kills)
    assert kills["duplicates"] <= BATCH * (kills["server"] + kills["client"] + 1)
    asyncio.run(verify(open_store(spec)))


@pytest.mark.slow
def test_crash_postgres(tmp_path: Path, postgres_dsn: str) -> None:
    """PostgreSQL server: exactly once under random SIGKILLs of server and client."""
    pytest.importorskip("asyncpg")
    spec = f"postgres:{postgres_dsn}"
    kills = run_chaos(spec, tmp_path, seed=2)
    report("postgres", kills)
    assert kills["duplicates"] <= BATCH * (kills["server"] + kills["client"] + 1)
    asyncio.run(verify(open_store(spec)))
