"""Value types shared by the sync core, the stores, the server and the client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

__all__ = [
    "Change",
    "ClientInfo",
    "Collection",
    "ConflictEntry",
    "MergeFunction",
    "Mutation",
    "MutationResult",
    "Policy",
    "Record",
    "StoreStatus",
]

Op = Literal["put", "delete"]
Status = Literal["applied", "duplicate", "conflict", "rejected"]


@dataclass(frozen=True, slots=True)
class Record:
    """One record as every replica stores it; ``data`` is ``None`` for a tombstone."""

    collection: str
    id: str
    data: dict[str, Any] | None
    version: str
    deleted: bool = False
    data_json: str | None = field(default=None, compare=False, repr=False)
    """``data`` already encoded (set by the push parser, so stores need not encode again)."""

    def to_wire(self) -> dict[str, Any]:
        """The record as it appears in ``changes`` and ``winner`` on the wire."""
        return {
            "collection": self.collection,
            "id": self.id,
            "data": self.data,
            "version": self.version,
            "deleted": self.deleted,
        }


MergeFunction = Callable[[Record, Record], "dict[str, Any] | None"]
"""``merge(local, remote) -> data`` (``None`` deletes); ``local`` is the server's record."""

Policy = Union[Literal["lww", "server_wins", "client_wins", "field_merge"], MergeFunction]  # noqa: UP007


@dataclass(frozen=True, slots=True)
class Collection:
    """A collection the server syncs and how it resolves conflicts.

    ``policy`` is ``"lww"`` (default: the higher HLC version wins on every replica),
    ``"server_wins"``, ``"client_wins"``, ``"field_merge"`` (keys of both, the newer
    version's value on a shared key) or a ``merge(local, remote) -> data`` callable.
    ``validate`` may raise :class:`~fokha_integration.errors.ValidationError` to reject
    a put permanently (the mutation is answered ``rejected`` and its id still advances).
    """

    name: str
    policy: Policy = "lww"
    validate: Callable[[Mapping[str, Any]], None] | None = None


@dataclass(frozen=True, slots=True)
class Mutation:
    """One client write in a push batch."""

    mutation_id: int
    collection: str
    id: str
    op: Op
    data: dict[str, Any] | None
    version: str
    base_version: str | None = None
    data_json: str | None = field(default=None, compare=False, repr=False)

    def record(self) -> Record:
        """The record this mutation wants to store."""
        deleted = self.op == "delete"
        data = None if deleted else self.data
        return Record(self.collection, self.id, data, self.version, deleted, self.data_json)


@dataclass(frozen=True, slots=True)
class MutationResult:
    """The answer for one mutation (``winner`` with ``conflict``, ``reason`` with ``rejected``)."""

    mutation_id: int
    status: Status
    winner: Record | None = None
    reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The wire form (``winner``/``reason`` only when set)."""
        out: dict[str, Any] = {"mutation_id": self.mutation_id, "status": self.status}
        if self.winner is not None:
            out["winner"] = self.winner.to_wire()
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class ConflictEntry:
    """A resolution that discarded a version: both versions and what was kept."""

    conflict_id: int
    collection: str
    id: str
    policy: str
    server: Record | None
    client: Record
    result: Record
    client_id: str
    created_ms: int
    resolved: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (CLI, API)."""
        return {
            "conflict_id": self.conflict_id,
            "collection": self.collection,
            "id": self.id,
            "policy": self.policy,
            "server": None if self.server is None else self.server.to_wire(),
            "client": self.client.to_wire(),
            "result": self.result.to_wire(),
            "client_id": self.client_id,
            "created_ms": self.created_ms,
            "resolved": self.resolved,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """A record with the server sequence number it was written at."""

    seq: int
    record: Record


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """A client the server knows: its pushes and its acknowledged cursor."""

    client_id: str
    last_mutation_id: int
    ack_seq: int
    last_seen_ms: int


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """A snapshot of a server store."""

    records: int
    tombstones: int
    high_seq: int
    floor: int
    generation: int
    unresolved_conflicts: int
    clients: tuple[ClientInfo, ...] = field(default_factory=tuple)
