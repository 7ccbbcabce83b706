"""A Hypothesis state machine drives the memory and SQLite stores against a simple model."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fokha_integration.models import Envelope
from fokha_integration.queue import (
    DeadLetter,
    MemoryOutboxStore,
    OutboxEntry,
    OutboxStore,
    SQLiteOutboxStore,
    _sqlite,
)

SINKS = ("a", "b")


class StoreMachine(RuleBasedStateMachine):
    """Model: per sink, the set of pending ids, the leased ones, and the dead ones."""

    def make_store(self) -> OutboxStore:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store = self.make_store()
        self.run(self.store.open(list(SINKS)))
        self.envs: list[Envelope] = []
        self.pending: dict[str, set[str]] = {s: set() for s in SINKS}
        self.leased: dict[str, dict[str, OutboxEntry]] = {s: {} for s in SINKS}
        self.dead: dict[str, set[str]] = {s: set() for s in SINKS}
        self.unseen: set[str] = set()  # rows another store appended (see the subclass)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()

    @rule(n=st.integers(min_value=0, max_value=1000))
    def append_new(self, n: int) -> None:
        e = Envelope(type="signal", key=f"k{len(self.envs)}", payload={"n": n})
        assert self.run(self.store.append(e)) is True
        self.envs.append(e)
        for s in SINKS:
            self.pending[s].add(e.id)

    @precondition(lambda self: self.envs)
    @rule(data=st.data())
    def append_known_id(self, data: st.DataObject) -> None:
        e = data.draw(st.sampled_from(self.envs))
        if any(e.id in self.pending[s] for s in SINKS):
            assert self.run(self.store.append(e)) is False

    @rule(sink=st.sampled_from(SINKS), limit=st.integers(min_value=1, max_value=5))
    def fetch(self, sink: str, limit: int) -> None:
        got = self.run(self.store.fetch(sink, limit=limit))
        free = self.pending[sink] - set(self.leased[sink])
        ids = [x.envelope.id for x in got]
        assert len(ids) == len(set(ids))
        assert set(ids) <= free
        assert len(ids) <= limit
        # All that is free is handed out, up to the limit; only rows another store
        # appended since the last rescan may wait for the next one.
        assert len(ids) >= min(limit, len(free - self.unseen))
        # Oldest first: nothing free that was appended before a handed-out row is left
        # behind (per-key order depends on it), whichever store appended it.
        in_order = [e.id for e in self.envs if e.id in free]
        assert ids == in_order[: len(ids)], (ids, in_order)
        for x in got:
            self.leased[sink][x.envelope.id] = x

    @precondition(lambda self: any(self.leased.values()))
    @rule(data=st.data(), action=st.sampled_from(["ack", "release", "dead"]))
    def finish(self, data: st.DataObject, action: str) -> None:
        sink = data.draw(st.sampled_from([s for s in SINKS if self.leased[s]]))
        ident = data.draw(st.sampled_from(sorted(self.leased[sink])))
        entry = self.leased[sink].pop(ident)
        if action == "ack":
            self.run(self.store.ack(entry))
            self.pending[sink].discard(ident)
        elif action == "release":
            self.run(self.store.release(entry))
        else:
            letter = DeadLetter(sink, entry.envelope, "max_attempts", "", (), 0.0)
            self.run(self.store.dead_letter(entry, letter))
            self.pending[sink].discard(ident)
            self.dead[sink].add(ident)

    @rule(sink=st.sampled_from(SINKS))
    def replay(self, sink: str) -> None:
        count = self.run(self.store.replay(sink))
        assert count == len(self.dead[sink])
        self.pending[sink] |= self.dead[sink]
        self.dead[sink] = set()

    @invariant()
    def counts_match(self) -> None:
        for s in SINKS:
            count, oldest = self.run(self.store.stats(s))
            assert count == len(self.pending[s])
            assert (oldest is None) == (count == 0)
            dead = self.run(self.store.dead_letters(s, limit=10_000))
            assert {d.envelope.id for d in dead} == self.dead[s]


class MemoryStoreMachine(StoreMachine):
    def make_store(self) -> OutboxStore:
        return MemoryOutboxStore()


class SQLiteStoreMachine(StoreMachine):
    def make_store(self) -> OutboxStore:
        self._dir = tempfile.TemporaryDirectory()
        return SQLiteOutboxStore(Path(self._dir.name) / "sm.db")

    def teardown(self) -> None:
        super().teardown()
        self._dir.cleanup()


class SQLiteSharedFileMachine(SQLiteStoreMachine):
    """The SQLite store with a second store publishing into the same file (another
    process, as the docs allow), and real time replaced: rows this store appended are
    handed over from memory, the other store's rows are found by the rescan that runs
    at least every ``_RESCAN_EVERY`` seconds — never lost, never handed out twice."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._patched = _sqlite._monotonic
        _sqlite._monotonic = lambda: self.now
        super().__init__()
        self.other = SQLiteOutboxStore(Path(self._dir.name) / "sm.db")
        self.run(self.other.open(list(SINKS)))

    def teardown(self) -> None:
        self.run(self.other.close())
        _sqlite._monotonic = self._patched
        super().teardown()

    @rule(n=st.integers(min_value=0, max_value=1000))
    def append_elsewhere(self, n: int) -> None:
        e = Envelope(type="signal", key=f"o{len(self.envs)}", payload={"n": n})
        assert self.run(self.other.append(e)) is True
        self.envs.append(e)
        self.unseen.add(e.id)
        for s in SINKS:
            self.pending[s].add(e.id)

    @rule()
    def time_passes(self) -> None:
        self.now += 2 * _sqlite._RESCAN_EVERY
        self.unseen = set()

    @rule(sink=st.sampled_from(SINKS))
    def everything_is_found_after_a_rescan(self, sink: str) -> None:
        self.time_passes()
        got = self.run(self.store.fetch(sink, limit=10_000))
        free = self.pending[sink] - set(self.leased[sink])
        assert sorted(x.envelope.id for x in got) == sorted(free)
        for x in got:
            self.leased[sink][x.envelope.id] = x


TestMemoryStoreMachine = MemoryStoreMachine.TestCase
TestMemoryStoreMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestSQLiteStoreMachine = SQLiteStoreMachine.TestCase
TestSQLiteStoreMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
TestSQLiteSharedFileMachine = SQLiteSharedFileMachine.TestCase
TestSQLiteSharedFileMachine.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None
)
