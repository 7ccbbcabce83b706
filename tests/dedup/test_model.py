"""Property tests: the memory backend against a reference model; the Redis value parser."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fokha_integration import BackendError, ManualClock
from fokha_integration.dedup import (
    ClaimStatus,
    DedupCache,
    MemoryDedupBackend,
    SQLiteDedupBackend,
)

KEYS = st.sampled_from(["a", "b", "c"])
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("claim"),
            KEYS,
            st.sampled_from([None, "f1", "f2"]),
            st.sampled_from([None, 5.0]),
        ),
        st.tuples(st.just("many"), st.lists(KEYS, max_size=4)),
        st.tuples(st.just("commit"), KEYS, st.booleans()),
        st.tuples(st.just("release"), KEYS, st.booleans()),
        st.tuples(st.just("forget"), KEYS),
        st.tuples(st.just("advance"), st.sampled_from([1.0, 4.0, 6.0, 30.0])),
    ),
    max_size=40,
)
TTL = 10.0


@dataclass
class Entry:
    expires: float
    token: str | None
    result: bytes | None
    fp: str | None


def status_of(entry: Entry, fp: str | None) -> ClaimStatus:
    if fp is not None and entry.fp is not None and entry.fp != fp:
        return ClaimStatus.CONFLICT
    if entry.token is not None and entry.result is None:
        return ClaimStatus.IN_FLIGHT
    return ClaimStatus.DUPLICATE


async def play(ops: list[tuple[object, ...]], sqlite_path: Path | None = None) -> None:
    clock = ManualClock()
    backend = (
        MemoryDedupBackend(clock=clock)
        if sqlite_path is None
        else SQLiteDedupBackend(sqlite_path, clock=clock, sweep_interval=None)
    )
    cache = DedupCache(backend, clock=clock, ttl_by_type={"signal": TTL})
    try:
        await _play(cache, clock, ops)
    finally:
        await cache.close()


async def _play(cache: DedupCache, clock: ManualClock, ops: list[tuple[object, ...]]) -> None:
    model: dict[str, Entry] = {}
    tokens: dict[str, str | None] = {}
    now = 0.0

    def live(key: str) -> Entry | None:
        entry = model.get(key)
        return entry if entry is not None and entry.expires > now else None

    for op in ops:
        kind = op[0]
        if kind == "claim":
            _, key, fp, lease = op
            answer = await cache.claim(key, fingerprint=fp, lease=lease)  # type: ignore[arg-type]
            entry = live(key)  # type: ignore[arg-type]
            if entry is None:
                assert answer.status is ClaimStatus.FIRST
                assert (answer.token is not None) == (lease is not None)
                span = lease if lease is not None else TTL
                model[key] = Entry(now + span, answer.token, None, fp)  # type: ignore[index, operator, arg-type]
                tokens[key] = answer.token  # type: ignore[index]
            else:
                assert answer.status is status_of(entry, fp)  # type: ignore[arg-type]
                assert answer.result == entry.result
        elif kind == "many":
            keys: list[str] = op[1]  # type: ignore[assignment]
            answers = await cache.claim_many(keys)
            for key, answer in zip(keys, answers, strict=True):
                entry = live(key)
                if entry is None:
                    assert answer.status is ClaimStatus.FIRST
                    model[key] = Entry(now + TTL, None, None, None)
                    tokens[key] = None
                else:
                    assert answer.status is status_of(entry, None)
        elif kind == "commit":
            _, key, with_token = op
            token = tokens.get(key) if with_token else None  # type: ignore[call-overload]
            done = await cache.commit(key, b"r", token=token)  # type: ignore[arg-type]
            entry = live(key)  # type: ignore[arg-type]
            expected = entry is None or token is None or entry.token == token
            assert done == expected
            if done:
                keep = entry if entry is not None else Entry(0, token, None, None)
                model[key] = Entry(now + TTL, keep.token, b"r", keep.fp)  # type: ignore[index]
        elif kind == "release":
            _, key, with_token = op
            token = tokens.get(key) if with_token else None  # type: ignore[call-overload]
            done = await cache.release(key, token=token)  # type: ignore[arg-type]
            entry = live(key)  # type: ignore[arg-type]
            expected = (
                entry is not None
                and entry.result is None
                and (token is None or entry.token == token)
            )
            assert done == expected
            if done:
                del model[key]  # type: ignore[arg-type]
        elif kind == "forget":
            key = op[1]  # type: ignore[assignment]
            assert await cache.forget(key) == (live(key) is not None)
            model.pop(key, None)
        else:
            clock.advance(op[1])  # type: ignore[arg-type]
            now += op[1]  # type: ignore[operator]
        for key in ("a", "b", "c"):
            assert await cache.seen(key) == (live(key) is not None)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_memory_backend_matches_the_model(ops: list[tuple[object, ...]]) -> None:
    """Any sequence of claims, batches, commits, releases, forgets, time steps obeys the model."""
    asyncio.run(play(ops))


@settings(max_examples=20, deadline=None)
@given(OPS)
def test_sqlite_backend_matches_the_model(ops: list[tuple[object, ...]]) -> None:
    """The SQLite backend follows the same model (wall time from a manual clock)."""
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(play(ops, Path(folder) / "model.db"))


@example(b"1|x|2|c|||")
@given(
    st.binary(max_size=200)
    | st.lists(st.binary(max_size=8), min_size=6, max_size=6).map(lambda p: b"|".join([b"1", *p]))
    | st.lists(
        st.binary(max_size=12) | st.sampled_from([b"1", b"1.5", b"l", b"d"]), max_size=9
    ).map(b"|".join)
)
def test_redis_value_parser_never_crashes(raw: bytes) -> None:
    """Any stored bytes either parse or raise BackendError — never anything else."""
    pytest.importorskip("redis")
    from fokha_integration.dedup.redis import _parse

    with contextlib.suppress(BackendError):
        _parse(raw)
