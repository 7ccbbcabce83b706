"""One store suite over memory, SQLite and PostgreSQL, driven through SyncService."""

from __future__ import annotations

from typing import Any

import pytest

from fokha_integration.errors import BackendUnavailableError
from fokha_integration.sync import Collection, MutationGapError, SyncConfig, SyncService
from fokha_integration.sync._core import Cursor

from .conftest import Wall

T0 = 1_700_000_000_000


def v(ms: int, node: str = "c1") -> str:
    """A version at T0 + ms."""
    return f"{T0 + ms:015d}-00000-{node}"


def put(mid: int, rid: str, ms: int, coll: str = "w", **data: Any) -> dict[str, Any]:
    """A put mutation."""
    return {
        "mutation_id": mid,
        "collection": coll,
        "id": rid,
        "op": "put",
        "data": data or {"m": mid},
        "version": v(ms),
    }


def delete(mid: int, rid: str, ms: int) -> dict[str, Any]:
    """A delete mutation."""
    return {
        "mutation_id": mid,
        "collection": "w",
        "id": rid,
        "op": "delete",
        "data": None,
        "version": v(ms),
    }


async def service(store: Any, wall: Wall, **cfg: Any) -> SyncService:
    """A started service over ``store``."""
    svc = SyncService(
        store, ["w", Collection("sw", "server_wins")], config=SyncConfig(**cfg), wall=wall
    )
    await svc.start()
    return svc


async def pull_all(
    svc: SyncService, client: str, cursor: str | None, limit: int = 1000
) -> tuple[dict[str, Any], str, int]:
    """Pull every page; (records by id incl. tombstones, cursor, resets seen)."""
    import json

    seen: dict[str, Any] = {}
    resets = 0
    while True:
        status, body = await svc.handle(
            "pull",
            json.dumps(
                {"client_id": client, "collections": ["w"], "cursor": cursor, "limit": limit}
            ).encode(),
        )
        assert status == 200, body
        page = json.loads(body)
        if page["reset_required"]:
            resets += 1
            seen.clear()
        for ch in page["changes"]:
            seen[ch["id"]] = ch
        cursor = page["cursor"]
        if not page["has_more"]:
            return seen, cursor, resets


async def test_push_pull_and_duplicates(store: Any, wall: Wall) -> None:
    """Applied once, answered duplicate on re-push, pulled with a cursor that resumes."""
    svc = await service(store, wall)
    body = {"client_id": "c1", "mutations": [put(1, "a", 1), put(2, "b", 2)]}
    results, last = await svc.push(body)
    assert [r.status for r in results] == ["applied", "applied"]
    assert last == 2
    again, last = await svc.push(body)
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    assert last == 2
    seen, cursor, _ = await pull_all(svc, "c2", None, limit=1)
    assert set(seen) == {"a", "b"}
    await svc.push({"client_id": "c1", "mutations": [put(3, "a", 3, n=9)]})
    newer, _, _ = await pull_all(svc, "c2", cursor)
    assert list(newer) == ["a"]
    assert newer["a"]["data"] == {"n": 9}
    assert svc.stats().duplicates == 2


async def test_gap_and_failure_apply_nothing(store: Any, wall: Wall) -> None:
    """A gap is refused whole; a store failure mid-transaction leaves nothing behind."""
    svc = await service(store, wall)
    await svc.push({"client_id": "c1", "mutations": [put(1, "a", 1)]})
    with pytest.raises(MutationGapError):
        await svc.push({"client_id": "c1", "mutations": [put(3, "b", 3)]})

    def broken(last: int, current: Any) -> Any:
        raise BackendUnavailableError("test", "disk went away")

    with pytest.raises(BackendUnavailableError):
        await store.push("c1", [("w", "z")], broken)
    assert await svc.get("w", "b") is None
    status = await svc.status()
    assert [c.last_mutation_id for c in status.clients] == [1]
    results, last = await svc.push({"client_id": "c1", "mutations": [put(2, "b", 2)]})
    assert last == 2
    assert results[0].status == "applied"


async def test_conflict_log_and_resolve(store: Any, wall: Wall) -> None:
    """A discarded version is logged with both sides and can be resolved to a new version."""
    svc = await service(store, wall)
    await svc.push({"client_id": "c1", "mutations": [put(1, "a", 5, coll="sw", x=1)]})
    results, _ = await svc.push({"client_id": "c2", "mutations": [put(1, "a", 9, coll="sw", x=2)]})
    assert results[0].status == "conflict"
    assert results[0].winner is not None
    assert results[0].winner.data == {"x": 1}
    [entry] = await svc.conflicts()
    assert entry.client.data == {"x": 2}
    assert entry.server is not None
    rec = await svc.resolve(entry.conflict_id, "client")
    assert rec.data == {"x": 2}
    assert await svc.conflicts() == []
    got = await svc.get("sw", "a")
    assert got is not None
    assert got.version == rec.version


async def test_compaction_and_exactly_one_reset(store: Any, wall: Wall) -> None:
    """Tombstones below every ack go; a client behind the floor resets once and converges."""
    svc = await service(store, wall, horizon=60.0)
    await svc.push(
        {"client_id": "w1", "mutations": [put(1, "a", 1), put(2, "b", 2), put(3, "c", 3)]}
    )
    _, lagging_cursor, _ = await pull_all(svc, "laggard", None)
    await svc.push({"client_id": "w1", "mutations": [delete(4, "a", 4), delete(5, "b", 5)]})
    _, cursor, _ = await pull_all(svc, "reader", None)
    await pull_all(svc, "reader", cursor)  # acknowledges the cursor after the deletes
    assert await svc.compact() == 0  # the laggard has not seen the tombstones yet
    wall.t += 120  # the laggard falls silent past the horizon
    await pull_all(svc, "reader", cursor)
    assert await svc.compact() == 2
    status = await svc.status()
    assert status.tombstones == 0
    seen, _, resets = await pull_all(svc, "laggard", lagging_cursor)
    assert resets == 1
    assert set(seen) == {"c"}
    assert svc.stats().resets == 1


async def test_reset_cursor_is_stable(store: Any, wall: Wall) -> None:
    """The cursor handed with reset_required never asks for a reset again (no loop)."""
    svc = await service(store, wall, horizon=1.0)
    await svc.push(
        {"client_id": "w1", "mutations": [put(1, "a", 1), delete(2, "a", 2), put(3, "b", 3)]}
    )
    wall.t += 10
    assert await svc.compact() == 1
    import json

    _, body = await svc.handle(
        "pull",
        json.dumps(
            {"client_id": "x", "collections": ["w"], "cursor": Cursor(store.epoch, 0).encode()}
        ).encode(),
    )
    page = json.loads(body)
    assert page["reset_required"] is True
    seen, _, resets = await pull_all(svc, "x", page["cursor"], limit=1)
    assert resets == 0
    assert set(seen) == {"b"}


async def test_clock_persists_across_restart(
    store_kind: str, tmp_path: Any, request: Any, wall: Wall
) -> None:
    """A restarted service never issues a version at or below one it issued before."""
    if store_kind == "memory":
        pytest.skip("the memory store does not survive a restart")
    from .conftest import make_store

    first = make_store(store_kind, tmp_path, request)
    svc = await service(first, wall)
    rec = await svc.put("w", "a", {"n": 1})
    await svc.close()
    wall.t -= 3600  # the host clock stepped back during the restart
    second = make_store(store_kind, tmp_path, request)  # the same file / database
    svc2 = await service(second, wall)
    later = await svc2.put("w", "b", {"n": 2})
    assert later.version > rec.version
    assert await svc2.get("w", "a") == rec
    await svc2.close()


async def test_postgres_notify_reaches_other_processes(
    tmp_path: Any, request: Any, wall: Wall
) -> None:
    """A commit through one PostgreSQL store is announced to a listener on another."""
    pytest.importorskip("asyncpg")
    import asyncio

    from .conftest import make_store

    writer_store = make_store("postgres", tmp_path, request)
    listener_store = make_store("postgres", tmp_path, request)
    heard: asyncio.Queue[list[str]] = asyncio.Queue()
    svc = await service(writer_store, wall)
    await listener_store.open()
    try:
        await listener_store.listen(heard.put_nowait)
        await svc.push({"client_id": "c1", "mutations": [put(1, "a", 1)]})
        await svc.put("sw", "b", {"n": 1})
        assert await asyncio.wait_for(heard.get(), 10) == ["w"]
        assert await asyncio.wait_for(heard.get(), 10) == ["sw"]
    finally:
        await listener_store.close()
        await svc.close()


async def test_far_future_version_is_rejected_and_counted(store: Any, wall: Wall) -> None:
    """A pushed version an hour ahead is rejected (id advances), counted, and moves no clock."""
    svc = await service(store, wall)
    future = put(1, "a", 0)
    future["version"] = f"{int(wall.t * 1000) + 3_600_000:015d}-00000-c1"
    results, last = await svc.push({"client_id": "c1", "mutations": [future, put(2, "b", 1)]})
    assert [r.status for r in results] == ["rejected", "applied"]
    assert last == 2
    assert svc.stats().refused_skew == 1
    rec = await svc.put("w", "c", {"n": 1})
    assert rec.version < future["version"]


async def test_pull_pages_are_cut_to_the_response_budget(store: Any, wall: Wall) -> None:
    """Large records page by bytes as well as by count, and every record still arrives."""
    svc = await service(store, wall, max_response_bytes=1024)
    big = "x" * 300
    await svc.push(
        {"client_id": "w1", "mutations": [put(i + 1, f"r{i}", i + 1, blob=big) for i in range(10)]}
    )
    import json

    cursor = None
    seen: set[str] = set()
    pages = 0
    while True:
        status, body = await svc.handle(
            "pull",
            json.dumps(
                {"client_id": "r", "collections": ["w"], "cursor": cursor, "limit": 100}
            ).encode(),
        )
        assert status == 200
        assert len(body) < 2048
        page = json.loads(body)
        seen.update(c["id"] for c in page["changes"])
        cursor = page["cursor"]
        pages += 1
        if not page["has_more"]:
            break
    assert seen == {f"r{i}" for i in range(10)}
    assert pages >= 4


async def test_ack_is_what_the_client_stored(store: Any, wall: Wall) -> None:
    """A pull with an explicit ack records that (never more than the cursor), not the cursor."""
    import json

    svc = await service(store, wall)
    await svc.push({"client_id": "w1", "mutations": [put(i + 1, f"r{i}", i + 1) for i in range(4)]})

    async def pull(cursor: str | None, ack: str | None = None, limit: int = 2) -> dict[str, Any]:
        body: dict[str, Any] = {
            "client_id": "p",
            "collections": ["w"],
            "cursor": cursor,
            "limit": limit,
        }
        if ack is not None:
            body["ack"] = ack
        status, raw = await svc.handle("pull", json.dumps(body).encode())
        assert status == 200, raw
        return json.loads(raw)  # type: ignore[no-any-return]

    def acked() -> int:
        return {c.client_id: c.ack_seq for c in status.clients}["p"]

    first = await pull(None)
    status_code, raw = await svc.handle(
        "pull",
        json.dumps(
            {"client_id": "p", "collections": ["w"], "cursor": first["cursor"], "ack": 5}
        ).encode(),
    )
    assert (status_code, json.loads(raw)["field"]) == (400, "ack")
    third = await pull(first["cursor"], ack=Cursor(store.epoch, 0).encode())
    status = await svc.status()
    assert acked() == 0
    await pull(third["cursor"], ack=first["cursor"])
    status = await svc.status()
    assert acked() == Cursor.decode(first["cursor"]).seq
