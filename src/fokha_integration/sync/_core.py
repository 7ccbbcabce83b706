"""The sans-I/O sync core: request parsing, cursors, conflict resolution, push planning.

Nothing here reads a clock, a file or a socket. The stores call :func:`plan_push`
inside their write transaction with the rows they read; the server calls
:func:`parse_push` / :func:`parse_pull` on decoded JSON bodies. Every refusal is a
:class:`~fokha_integration.errors.ValidationError` whose ``field`` is the JSON path
(``"mutations[3].data"``), so the HTTP layer can name it in a problem+json reply.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import _validate
from ..errors import ProtocolError, ValidationError
from ._hlc import ClockSkewError, HybridClock, parse_version
from ._types import Collection, ConflictEntry, Mutation, MutationResult, Record

__all__ = [
    "Cursor",
    "Limits",
    "MutationGapError",
    "PullRequest",
    "PushPlan",
    "Resolution",
    "changes_checksum",
    "parse_pull",
    "parse_push",
    "plan_push",
    "resolve",
]

_ID_CHARS = 256
# The stored encoding (the same as _store.dumps; _store imports this module).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_CLIENT_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a client may send (every one is checked before anything is applied)."""

    max_mutations: int = 1000
    max_record_bytes: int = 65_536
    max_pull_limit: int = 5000
    max_collections: int = 64

    def __post_init__(self) -> None:
        _validate.integer("max_mutations", self.max_mutations, minimum=1)
        _validate.integer("max_record_bytes", self.max_record_bytes, minimum=64)
        _validate.integer("max_pull_limit", self.max_pull_limit, minimum=1)
        _validate.integer("max_collections", self.max_collections, minimum=1)


class MutationGapError(ProtocolError):
    """A push skipped mutation ids; nothing of the batch was applied."""

    def __init__(self, expected: int, got: int, index: int = 0) -> None:
        self.expected = expected
        self.got = got
        self.index = index
        super().__init__("mutation_gap", f"expected mutation_id {expected}, got {got}")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A pull position: the store epoch, the last seq seen, the snapshot generation if any."""

    epoch: str
    seq: int
    snapshot: int | None = None

    def encode(self) -> str:
        """The opaque string clients store and send back."""
        tail = "" if self.snapshot is None else f".s{self.snapshot}"
        return f"{self.epoch}.{self.seq}{tail}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor; :class:`ValidationError` on ``cursor``."""
        parts = text.split(".")
        bad = ValidationError("cursor", "not a cursor this server issued", text)
        if len(parts) not in (2, 3) or not parts[0].isalnum() or not parts[1].isdigit():
            raise bad
        snap = None
        if len(parts) == 3:
            if not parts[2].startswith("s") or not parts[2][1:].isdigit():
                raise bad
            snap = int(parts[2][1:])
        try:
            return cls(parts[0], int(parts[1]), snap)
        except ValueError:  # digits beyond int's string limit
            raise bad from None

    def needs_reset(self, epoch: str, floor: int, generation: int) -> bool:
        """Whether changes this cursor has not seen were compacted away (or the store changed)."""
        if self.epoch != epoch:
            return True
        if self.snapshot is not None and self.snapshot == generation:
            return False  # a re-snapshot in progress, no compaction since it began
        return self.seq < floor


def _is_json_object(value: Any) -> bool:
    return isinstance(value, dict)


def _check_json(value: Any, path: str, depth: int = 0) -> None:
    if depth > 32:
        raise ValidationError(path, "nested too deeply", None)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(path, "must be a finite number", value)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)


def _string(body: Mapping[str, Any], key: str, path: str, max_len: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValidationError(path, "must be a non-empty string", value)
    if len(value) > max_len:
        raise ValidationError(path, f"must be at most {max_len} characters", value[:64])
    return value


def _int(value: Any, path: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(path, "must be an integer", value)
    if value < minimum:
        raise ValidationError(path, f"must be >= {minimum}", value)
    return value


def _object(body: Any, path: str = "body") -> Mapping[str, Any]:
    if not _is_json_object(body):
        raise ValidationError(path, "must be a JSON object", type(body).__name__)
    return body  # type: ignore[no-any-return]


def _unknown_keys(body: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in body:
        if key not in allowed:
            name = (
                f"{prefix}{key}"
                if key.isidentifier()
                else f"{prefix.rstrip('.')}[{json.dumps(key)}]"
            )
            raise ValidationError(name, "unknown field", None)


_PUSH_KEYS = frozenset({"client_id", "mutations"})
_MUTATION_KEYS = frozenset(
    {"mutation_id", "collection", "id", "op", "data", "version", "base_version"}
)
_PULL_KEYS = frozenset({"client_id", "collections", "cursor", "limit", "ack"})


def parse_push(
    body: Any, collections: Mapping[str, Collection], limits: Limits
) -> tuple[str, list[Mutation]]:
    """Check a whole push body; ``(client_id, mutations)`` or :class:`ValidationError`."""
    obj = _object(body)
    _unknown_keys(obj, _PUSH_KEYS, "")
    client_id = _string(obj, "client_id", "client_id", _CLIENT_ID_CHARS)
    raw = obj.get("mutations")
    if not isinstance(raw, list):
        raise ValidationError("mutations", "must be an array", type(raw).__name__)
    if len(raw) > limits.max_mutations:
        raise ValidationError("mutations", f"at most {limits.max_mutations} per push", len(raw))
    out: list[Mutation] = []
    previous = 0
    for i, item in enumerate(raw):
        p = f"mutations[{i}]"
        m = _object(item, p)
        _unknown_keys(m, _MUTATION_KEYS, f"{p}.")
        mid = _int(m.get("mutation_id"), f"{p}.mutation_id", 1)
        if mid <= previous:
            raise ValidationError(f"{p}.mutation_id", "must be strictly increasing", mid)
        previous = mid
        coll = _string(m, "collection", f"{p}.collection", 64)
        if coll not in collections:
            raise ValidationError(f"{p}.collection", "unknown collection", coll)
        rid = _string(m, "id", f"{p}.id", _ID_CHARS)
        op = m.get("op")
        if op not in ("put", "delete"):
            raise ValidationError(f"{p}.op", "must be 'put' or 'delete'", op)
        data = m.get("data")
        if op == "put":
            if not _is_json_object(data):
                raise ValidationError(f"{p}.data", "must be a JSON object for a put", data)
            _check_json(data, f"{p}.data")
            data_json = _ENCODER.encode(data)
            size = len(data_json.encode())
            if size > limits.max_record_bytes:
                raise ValidationError(
                    f"{p}.data", f"at most {limits.max_record_bytes} bytes encoded", size
                )
        elif data is not None:
            raise ValidationError(f"{p}.data", "must be null for a delete", "object")
        else:
            data_json = None
        version = m.get("version")
        parse_version(version, f"{p}.version")
        base = m.get("base_version")
        if base is not None:
            parse_version(base, f"{p}.base_version")
        mutation = Mutation(mid, coll, rid, op, data, version, base, data_json)  # type: ignore[arg-type]
        out.append(mutation)
    return client_id, out


@dataclass(frozen=True, slots=True)
class PullRequest:
    """A checked pull body."""

    client_id: str
    collections: tuple[str, ...]
    cursor: Cursor | None
    limit: int
    ack: Cursor | None = None


def parse_pull(body: Any, collections: Mapping[str, Collection], limits: Limits) -> PullRequest:
    """Check a whole pull body; a :class:`PullRequest` or :class:`ValidationError`."""
    obj = _object(body)
    _unknown_keys(obj, _PULL_KEYS, "")
    client_id = _string(obj, "client_id", "client_id", _CLIENT_ID_CHARS)
    names = obj.get("collections")
    if not isinstance(names, list) or not names:
        raise ValidationError("collections", "must be a non-empty array", names)
    if len(names) > limits.max_collections:
        raise ValidationError("collections", f"at most {limits.max_collections}", len(names))
    for i, name in enumerate(names):
        if not isinstance(name, str) or name not in collections:
            raise ValidationError(f"collections[{i}]", "unknown collection", name)
    raw_cursor = obj.get("cursor")
    cursor = None
    if raw_cursor is not None:
        if not isinstance(raw_cursor, str) or len(raw_cursor) > 128:
            raise ValidationError("cursor", "must be a string or null", raw_cursor)
        cursor = Cursor.decode(raw_cursor)
    raw_ack = obj.get("ack")
    ack = None
    if raw_ack is not None:
        if not isinstance(raw_ack, str) or len(raw_ack) > 128:
            raise ValidationError("ack", "must be a string or null", raw_ack)
        try:
            ack = Cursor.decode(raw_ack)
        except ValidationError:
            raise ValidationError("ack", "not a cursor this server issued", raw_ack) from None
    limit = obj.get("limit", 1000)
    _int(limit, "limit", 1)
    if limit > limits.max_pull_limit:
        raise ValidationError("limit", f"must be <= {limits.max_pull_limit}", limit)
    return PullRequest(client_id, tuple(dict.fromkeys(names)), cursor, limit, ack)


def changes_checksum(changes: Iterable[tuple[str, str, str, bool]]) -> str:
    """SHA-256 (hex) over ``collection \x1f id \x1f version \x1f deleted \n`` per change.

    ``changes`` are ``(collection, id, version, deleted)`` tuples, in page order.
    """
    text = "".join(f"{c}\x1f{i}\x1f{v}\x1f{int(d)}\n" for c, i, v, d in changes)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Resolution:
    """One decision: the record to store (if any), the winner, whether a version was discarded."""

    store: Record | None
    winner: Record
    conflicted: bool


def _policy_name(policy: object) -> str:
    return policy if isinstance(policy, str) else "custom"


def resolve(
    policy: object,
    current: Record | None,
    incoming: Record,
    base_version: str | None,
    mint: Callable[[], str],
) -> Resolution:
    """Decide between the server's ``current`` record and an ``incoming`` write.

    A write is *concurrent* when the client did not see ``current`` (``base_version``
    differs); only then does a policy other than LWW matter and only then, or when
    the incoming write loses, is a version discarded (a conflict). ``mint`` gives a
    fresh server version for results that are neither input (merges, forced wins).
    """
    if current is None:
        return Resolution(incoming, incoming, False)
    if current.version == incoming.version:
        return Resolution(None, current, False)
    concurrent = base_version != current.version
    newer_incoming = incoming.version > current.version
    if not concurrent or policy == "lww":
        if newer_incoming:
            return Resolution(incoming, incoming, concurrent)
        return Resolution(None, current, True)
    if policy == "server_wins":
        return Resolution(None, current, True)
    if policy == "client_wins":
        kept = incoming if newer_incoming else replace(incoming, version=mint())
        return Resolution(kept, kept, True)
    if policy == "field_merge":
        if current.deleted or incoming.deleted:
            return resolve("lww", current, incoming, base_version, mint)
        old, new = (current, incoming) if newer_incoming else (incoming, current)
        merged = {**(old.data or {}), **(new.data or {})}
        kept = Record(current.collection, current.id, merged, mint(), False)
        return Resolution(kept, kept, True)
    if callable(policy):
        data = policy(current, incoming)
        if data is not None and not isinstance(data, dict):
            raise ValidationError("merge", "a merge function must return a dict or None", data)
        kept = Record(current.collection, current.id, data, mint(), data is None)
        return Resolution(kept, kept, True)
    raise ValidationError("policy", "unknown conflict policy", policy)


@dataclass(slots=True)
class PushPlan:
    """What one push batch does, computed inside the store's transaction."""

    results: list[MutationResult] = field(default_factory=list)
    writes: list[Record] = field(default_factory=list)
    conflicts: list[ConflictEntry] = field(default_factory=list)
    last_mutation_id: int = 0
    clock: str = ""


def plan_push(
    client_id: str,
    last_mutation_id: int,
    mutations: Sequence[Mutation],
    current: Mapping[tuple[str, str], Record],
    collections: Mapping[str, Collection],
    clock: HybridClock,
    now_ms: int,
) -> PushPlan:
    """Apply Replicache's rules to a batch (see docs/protocols/sync.md, "Push").

    ``mutation_id <= last_mutation_id`` is a duplicate (answered, not applied); the
    first new id must be ``last + 1`` (else :class:`MutationGapError`, nothing
    applied); a permanently invalid mutation (validator refused it, clock skew) is
    ``rejected`` and still advances the id.
    """
    plan = PushPlan(last_mutation_id=last_mutation_id)
    seen: dict[tuple[str, str], Record] = dict(current)
    for index, m in enumerate(mutations):
        if m.mutation_id <= plan.last_mutation_id:
            plan.results.append(MutationResult(m.mutation_id, "duplicate"))
            continue
        if m.mutation_id != plan.last_mutation_id + 1:
            raise MutationGapError(plan.last_mutation_id + 1, m.mutation_id, index)
        plan.last_mutation_id = m.mutation_id
        coll = collections[m.collection]
        try:
            clock.observe(parse_version(m.version))
            if m.op == "put" and coll.validate is not None:
                assert m.data is not None
                coll.validate(m.data)
        except ClockSkewError as exc:
            plan.results.append(
                MutationResult(m.mutation_id, "rejected", reason=f"clock_skew: {exc.reason}")
            )
            continue
        except ValidationError as exc:
            plan.results.append(MutationResult(m.mutation_id, "rejected", reason=f"invalid: {exc}"))
            continue
        key = (m.collection, m.id)
        cur = seen.get(key)
        incoming = m.record()

        def mint() -> str:
            return clock.now().encode()

        try:
            res = resolve(coll.policy, cur, incoming, m.base_version, mint)
        except ValidationError as exc:
            plan.results.append(MutationResult(m.mutation_id, "rejected", reason=f"merge: {exc}"))
            continue
        if res.store is not None:
            seen[key] = res.store
            plan.writes.append(res.store)
        if res.conflicted:
            plan.conflicts.append(
                ConflictEntry(
                    0,
                    m.collection,
                    m.id,
                    _policy_name(coll.policy),
                    cur,
                    incoming,
                    res.winner,
                    client_id,
                    now_ms,
                )
            )
            plan.results.append(MutationResult(m.mutation_id, "conflict", winner=res.winner))
        else:
            plan.results.append(MutationResult(m.mutation_id, "applied"))
    plan.clock = clock.last.encode()
    return plan
