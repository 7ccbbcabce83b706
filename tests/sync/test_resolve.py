"""Resolving a logged conflict never overwrites a later edit, and happens once."""

from __future__ import annotations

import time

import pytest

from fokha_integration.errors import ValidationError
from fokha_integration.sync import MemorySyncStore, SyncService


async def _service_with_a_conflict() -> tuple[SyncService, int]:
    service = SyncService(MemorySyncStore(), ["notes"])
    await service.start()
    now = int(time.time() * 1000)
    for client, ms, text in (("a", now - 1000, "newer"), ("b", now - 5000, "older")):
        mutation = {
            "mutation_id": 1,
            "collection": "notes",
            "id": "n1",
            "op": "put",
            "data": {"text": text},
            "version": f"{ms:015d}-00000-{client}",
        }
        await service.push({"client_id": client, "mutations": [mutation]})
    [entry] = await service.conflicts()
    return service, entry.conflict_id


async def test_resolve_once() -> None:
    """Keeping the client's version writes it; a second resolve of the entry is refused."""
    service, conflict_id = await _service_with_a_conflict()
    record = await service.resolve(conflict_id, "client")
    assert record.data == {"text": "older"}
    with pytest.raises(ValidationError, match="already resolved"):
        await service.resolve(conflict_id, "server")


async def test_a_later_edit_is_not_overwritten_unless_forced() -> None:
    """A record written after the conflict was logged makes a resolve stale; force= overrides."""
    service, conflict_id = await _service_with_a_conflict()
    await service.put("notes", "n1", {"text": "edited later"})
    with pytest.raises(ValidationError, match="changed since"):
        await service.resolve(conflict_id, "client")
    assert (await service.get("notes", "n1")).data == {"text": "edited later"}
    record = await service.resolve(conflict_id, "client", force=True)
    assert record.data == {"text": "older"}
