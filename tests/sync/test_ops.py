"""Operations: the ``fokha sync`` command, metrics and the HealthMonitor check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fokha_integration.cli import main
from fokha_integration.health import HealthStatus, ProbeContext
from fokha_integration.sync import Collection, SyncService, sync_check
from fokha_integration.sync.sqlite import SQLiteSyncStore

T0 = 1_700_000_000_000


def put(mid: int, rid: str, ms: int, **data: object) -> dict[str, object]:
    """A put mutation on collection sw."""
    return {
        "mutation_id": mid,
        "collection": "sw",
        "id": rid,
        "op": "put",
        "data": data,
        "version": f"{T0 + ms:015d}-00000-c",
    }


async def seeded(path: Path) -> SyncService:
    """A started SQLite service with one conflict logged."""
    svc = SyncService(
        SQLiteSyncStore(path), [Collection("sw", "server_wins")], wall=lambda: T0 / 1000 + 1
    )
    await svc.start()
    await svc.push({"client_id": "a", "mutations": [put(1, "x", 1, v=1)]})
    await svc.push({"client_id": "b", "mutations": [put(1, "x", 2, v=2)]})
    return svc


async def test_cli_status_conflicts_resolve_compact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status, conflicts, resolve and compact print JSON and act on the store."""
    db = tmp_path / "s.db"
    await (await seeded(db)).close()

    def run(*argv: str) -> object:
        capsys.readouterr()
        assert main(["sync", *argv, "--sqlite", str(db)]) == 0
        return json.loads(capsys.readouterr().out)

    # The CLI runs its own event loop: call it from a worker thread.
    import asyncio

    status = await asyncio.to_thread(run, "status")
    assert status["unresolved_conflicts"] == 1  # type: ignore[index]
    [entry] = await asyncio.to_thread(run, "conflicts")  # type: ignore[misc]
    assert entry["client"]["data"] == {"v": 2}
    resolved = await asyncio.to_thread(
        run, "resolve", str(entry["conflict_id"]), "--choose", "client"
    )
    assert resolved["data"] == {"v": 2}  # type: ignore[index]
    assert await asyncio.to_thread(run, "conflicts") == []
    assert await asyncio.to_thread(run, "compact") == {"removed_tombstones": 0}


async def test_metrics_and_health_check(tmp_path: Path) -> None:
    """Metrics report lag and conflicts; the check warns past its thresholds."""
    svc = await seeded(tmp_path / "s.db")
    try:
        m = await svc.metrics()
        assert m.unresolved_conflicts == 1
        assert m.lag == {"a": 1, "b": 1}  # pushed, never pulled
        assert m.stats.conflicts == 1
        ctx = ProbeContext()
        ok = await sync_check(svc).probe(ctx)
        assert ok.status is HealthStatus.PASS
        warn = await sync_check(svc, max_conflicts=0).probe(ctx)
        assert warn.status is HealthStatus.WARN
        assert "unresolved" in warn.output
        await ctx.close()
    finally:
        await svc.close()
