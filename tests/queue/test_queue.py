"""SignalQueue behaviour: dedup, per-sink delivery, retry, dead letters, expiry, ordering."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fokha_integration.clock import ManualClock
from fokha_integration.errors import BackendError
from fokha_integration.models import Direction, Envelope, Signal
from fokha_integration.queue import (
    CallableSink,
    DeliveryFailedError,
    DeliveryResult,
    FileBridgeSink,
    MemoryOutboxStore,
    OutboxEntry,
    SignalQueue,
    SinkConfig,
    WebSocketSink,
)
from fokha_integration.resilience import BreakerConfig, CircuitBreaker, RetryPolicy
from tests.support import timeout

FAST = RetryPolicy(attempts=4, initial=0.001, max_delay=0.005, deadline=None)


def sig(**kw: Any) -> Signal:
    return Signal(symbol=kw.pop("symbol", "EURUSD"), direction=Direction.BUY, volume=0.1, **kw)


class Recorder:
    """A sink body that records what arrived and can fail on demand."""

    def __init__(self, fail_times: int = 0, status: int | None = None) -> None:
        self.got: list[Envelope] = []
        self.calls = 0
        self.fail_times = fail_times
        self.status = status

    async def __call__(self, envelope: Envelope) -> DeliveryResult | None:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise DeliveryFailedError("down", status=self.status)
        self.got.append(envelope)
        return None


async def test_publish_dedups_and_reports_conflicts() -> None:
    """A repeated key is a duplicate; the same key with other content is a conflict."""
    rec = Recorder()
    async with SignalQueue(sinks=[CallableSink(rec, name="a")]) as q:
        s = sig()
        first = await q.publish(s)
        again = await q.publish(s)
        other = await q.publish(sig(), key=s.id)
        assert (first.status, again.status, other.status) == ("accepted", "duplicate", "conflict")
        assert first.accepted and first.id == s.id
        await q.wait_idle(timeout=timeout(5))
    assert [e.id for e in rec.got] == [s.id]


async def test_every_sink_gets_every_signal_once() -> None:
    """Two sinks each receive every accepted signal exactly once."""
    a, b = Recorder(), Recorder()
    sinks = [CallableSink(a, name="a"), CallableSink(b, name="b", guarantee="at_most_once")]
    async with SignalQueue(sinks=sinks) as q:
        ids = [(await q.publish(sig())).id for _ in range(200)]
        await q.wait_idle(timeout=timeout(5))
        m = await q.metrics()
    assert sorted(e.id for e in a.got) == sorted(ids)
    assert sorted(e.id for e in b.got) == sorted(ids)
    assert m["a"].delivered == 200 and m["a"].pending == 0


async def test_at_least_once_retries_with_the_same_id_and_counts() -> None:
    """A failing at-least-once sink is retried; the id is stable and attempt grows."""
    rec = Recorder(fail_times=2)
    q = SignalQueue(sinks=[CallableSink(rec, name="a")], retry=FAST)
    async with q:
        s = sig()
        await q.publish(s)
        await q.wait_idle(timeout=timeout(5))
        m = await q.metrics()
    assert [e.id for e in rec.got] == [s.id]
    assert rec.got[0].attempt == 2
    assert m["a"].retried == 2 and m["a"].delivered == 1


async def test_dead_letter_after_max_attempts_then_replay() -> None:
    """Past max attempts the entry is dead-lettered with its history; replay delivers it."""
    rec = Recorder(fail_times=4)
    async with SignalQueue(sinks=[CallableSink(rec, name="a")], retry=FAST) as q:
        s = sig()
        await q.publish(s)
        await q.wait_idle(timeout=timeout(5))
        (dead,) = await q.dead_letters("a")
        assert dead.reason == "max_attempts"
        assert [a.attempt for a in dead.attempts] == [1, 2, 3, 4]
        assert "down" in dead.attempts[-1].error
        assert rec.got == []
        assert await q.replay_dead_letters("a") == 1
        await q.wait_idle(timeout=timeout(5))
        assert [e.id for e in rec.got] == [s.id]
        assert await q.dead_letters() == []
        assert (await q.metrics())["a"].dead_lettered == 1


async def test_a_client_error_is_not_retried() -> None:
    """A 4xx-like failure (status not retryable) is dead-lettered after one attempt."""
    rec = Recorder(fail_times=10, status=400)
    async with SignalQueue(sinks=[CallableSink(rec, name="a")], retry=FAST) as q:
        await q.publish(sig())
        await q.wait_idle(timeout=timeout(5))
        (dead,) = await q.dead_letters()
    assert dead.reason == "not_retryable" and len(dead.attempts) == 1 and rec.calls == 1


async def test_a_refusal_is_dead_lettered_without_retry() -> None:
    """A sink returning DeliveryResult(ok=False) dead-letters the entry as rejected."""
    calls = 0

    async def refuse(envelope: Envelope) -> DeliveryResult:
        nonlocal calls
        calls += 1
        return DeliveryResult(ok=False, reason="rejected", detail="no margin")

    async with SignalQueue(sinks=[CallableSink(refuse, name="ea")], retry=FAST) as q:
        await q.publish(sig())
        await q.wait_idle(timeout=timeout(5))
        (dead,) = await q.dead_letters()
    assert (dead.reason, dead.detail, calls) == ("rejected", "rejected: no margin", 1)


async def test_expired_signals_never_reach_an_execution_sink() -> None:
    """An expired signal is dead-lettered as expired for the execution sink only."""
    ea, app = Recorder(), Recorder()
    sinks = [CallableSink(ea, name="ea", execution=True), CallableSink(app, name="app")]
    async with SignalQueue(sinks=sinks) as q:
        now = datetime.now(timezone.utc)
        stale = sig(created_at=now - timedelta(seconds=10), expires_at=now - timedelta(seconds=1))
        fresh = sig(expires_at=now + timedelta(hours=1))
        await q.publish(stale)
        await q.publish(fresh)
        await q.wait_idle(timeout=timeout(5))
        dead = await q.dead_letters()
    assert [e.id for e in ea.got] == [fresh.id]
    assert sorted(e.id for e in app.got) == sorted([stale.id, fresh.id])
    assert [(d.sink, d.reason, d.envelope.id) for d in dead] == [("ea", "expired", stale.id)]


async def test_a_signal_expiring_during_retries_is_not_executed() -> None:
    """A signal that expires while its execution sink is failing is dead-lettered as expired."""
    from fokha_integration.clock import ManualClock

    clock = ManualClock(wall=datetime.now(timezone.utc).timestamp())
    rec = Recorder(fail_times=100)
    policy = RetryPolicy(
        attempts=50, initial=1.0, max_delay=1.0, jitter="none", deadline=None, clock=clock
    )
    q = SignalQueue(sinks=[CallableSink(rec, name="ea", execution=True)], retry=policy, clock=clock)
    async with q:
        s = sig(expires_at=datetime.now(timezone.utc) + timedelta(seconds=3))
        await q.publish(s)
        await clock.wait_for_sleepers(1, timeout=timeout(5))
        await clock.run_until_idle()
        await q.wait_idle(timeout=timeout(5))
        (dead,) = await q.dead_letters()
    assert dead.reason == "expired"
    assert 1 <= rec.calls <= 4


async def test_at_most_once_is_never_retried() -> None:
    """An at-most-once sink is called once per entry even when it fails."""
    rec = Recorder(fail_times=1)
    async with SignalQueue(
        sinks=[CallableSink(rec, name="live", guarantee="at_most_once")], retry=FAST
    ) as q:
        await q.publish(sig())
        await q.wait_idle(timeout=timeout(5))
        (dead,) = await q.dead_letters()
    assert rec.calls == 1 and dead.reason == "at_most_once_failed"


async def test_per_key_order_is_kept_while_keys_run_in_parallel() -> None:
    """Envelopes of one symbol arrive in publish order; other symbols are not held up."""
    seen: dict[str, list[int]] = defaultdict(list)
    gate = asyncio.Event()
    fast_done = asyncio.Event()

    async def deliver(envelope: Envelope) -> None:
        symbol, n = envelope.payload["symbol"], envelope.payload["n"]
        if symbol == "SLOW" and n == 0:
            await gate.wait()
        seen[symbol].append(n)
        if symbol == "FAST" and len(seen["FAST"]) == 5:
            fast_done.set()

    async with SignalQueue(sinks=[CallableSink(deliver, name="a")], max_in_flight=8) as q:
        for n in range(5):
            for symbol in ("SLOW", "FAST"):
                e = Envelope(type="tick", key=f"{symbol}-{n}", payload={"symbol": symbol, "n": n})
                await q.publish(e)
        # every FAST entry is delivered while SLOW's first one is stuck
        await asyncio.wait_for(fast_done.wait(), timeout(5))
        assert seen["SLOW"] == []
        gate.set()
        await q.wait_idle(timeout=timeout(5))
    assert seen["SLOW"] == [0, 1, 2, 3, 4]
    assert seen["FAST"] == [0, 1, 2, 3, 4]


async def test_in_flight_is_bounded() -> None:
    """No more than max_in_flight deliveries of one sink run at once."""
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def deliver(envelope: Envelope) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    async with SignalQueue(sinks=[CallableSink(deliver, name="a")], max_in_flight=3) as q:
        for i in range(10):
            await q.publish(sig(symbol=f"SYM{i}"))
        for _ in range(50):
            await asyncio.sleep(0)
        m = await q.metrics()
        assert m["a"].in_flight == 3 and m["a"].pending == 10
        gate.set()
        await q.wait_idle(timeout=timeout(5))
    assert peak == 3


async def test_one_dead_sink_does_not_slow_the_others() -> None:
    """While one sink's breaker is open the other sink delivers everything."""
    bad = Recorder(fail_times=10_000)
    good = Recorder()
    breaker = CircuitBreaker("bad", failure_threshold=2, open_duration=60.0)
    q = SignalQueue(
        sinks=[CallableSink(bad, name="bad"), CallableSink(good, name="good")],
        retry=FAST,
        sink_config={"bad": SinkConfig(breaker=breaker)},
    )
    async with q:
        for _ in range(20):
            await q.publish(sig())
        for _ in range(1000):
            if len(good.got) == 20:
                break
            await asyncio.sleep(0.005)  # polling a real condition with a bounded loop
        assert len(good.got) == 20
        assert q.breaker("bad").state.value == "open"
        assert bad.calls <= 4


async def test_a_failed_append_releases_the_dedup_claim() -> None:
    """When the store refuses, publish raises and the same signal can be published later."""
    store = MemoryOutboxStore(max_pending=1)
    rec = Recorder()
    gate = asyncio.Event()

    async def blocked(envelope: Envelope) -> None:
        await gate.wait()
        rec.got.append(envelope)

    async with SignalQueue(store=store, sinks=[CallableSink(blocked, name="a")]) as q:
        await q.publish(sig())
        s = sig()
        with pytest.raises(BackendError):
            await q.publish(s)
        gate.set()
        await q.wait_idle(timeout=timeout(5))
        assert (await q.publish(s)).status == "accepted"
        await q.wait_idle(timeout=timeout(5))
    assert rec.got[-1].id == s.id


class ChannelRecorder:
    """A real in-test WebSocket server stand-in: a list per channel."""

    def __init__(self) -> None:
        self.channels: dict[str, list[Any]] = defaultdict(list)

    async def publish(self, channel: str, data: Any) -> int:
        self.channels[channel].append(data)
        return len(self.channels[channel])


class ReplyingBridge:
    """A real in-test file bridge stand-in: keeps messages by id and replies like an EA.

    It refuses volumes above ``max_volume`` and executes each id once (a resend of
    a known id is answered from the journal, as the EA side must do).
    """

    def __init__(self, max_volume: float = 1.0) -> None:
        self.journal: dict[str, str] = {}
        self.sent: list[str] = []
        self.executions = 0
        self.max_volume = max_volume

    class Reply:
        def __init__(self, status: str, detail: str = "") -> None:
            self.status = status
            self.detail = detail

    async def send(self, kind: str, body: Mapping[str, Any], *, id: str | None = None) -> None:
        assert id is not None
        self.sent.append(id)

    async def request(
        self, kind: str, body: Mapping[str, Any], *, id: str | None = None, timeout: float = 30.0
    ) -> Reply:
        assert id is not None
        assert kind == "order"
        if id in self.journal:
            return self.Reply(self.journal[id])
        volume = float(body["volume"])
        status = "rejected" if volume > self.max_volume else "filled"
        if status == "filled":
            self.executions += 1
        self.journal[id] = status
        return self.Reply(status, "volume too large" if status == "rejected" else "")


async def test_websocket_and_file_bridge_sinks_adapt_any_object_of_their_shape() -> None:
    """WebSocketSink publishes to a channel; a rejected bridge reply becomes a dead letter."""
    server = ChannelRecorder()
    bridge = ReplyingBridge(max_volume=1.0)
    sinks = [WebSocketSink(server, channel="signals"), FileBridgeSink(bridge)]
    async with SignalQueue(sinks=sinks, retry=FAST) as q:
        ok = sig()
        big = Signal(symbol="XAUUSD", direction=Direction.SELL, volume=5.0)
        await q.publish(ok)
        await q.publish(big)
        await q.wait_idle(timeout=timeout(5))
        dead = await q.dead_letters()
    assert [d["id"] for d in server.channels["signals"]] == [ok.id, big.id]
    assert bridge.journal == {ok.id: "filled", big.id: "rejected"}
    assert [(d.sink, d.reason, d.detail) for d in dead] == [
        ("file_bridge", "rejected", "rejected: volume too large")
    ]


async def test_file_bridge_sink_without_reply_just_sends() -> None:
    """With wait_reply=False the sink sends and counts it delivered."""
    bridge = ReplyingBridge()
    async with SignalQueue(sinks=[FileBridgeSink(bridge, wait_reply=False)]) as q:
        s = sig()
        await q.publish(s)
        await q.wait_idle(timeout=timeout(5))
    assert bridge.sent == [s.id] and bridge.journal == {}


async def test_a_hung_delivery_times_out_and_is_retried() -> None:
    """A deliver call past delivery_timeout is cancelled, recorded as a timeout, and retried."""
    calls = 0
    done: list[str] = []

    async def hang_once(envelope: Envelope) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # never returns: the watchdog must cancel it
        done.append(envelope.id)

    async with SignalQueue(
        sinks=[CallableSink(hang_once, name="a")], retry=FAST, delivery_timeout=0.05
    ) as q:
        s = sig()
        await q.publish(s)
        await q.wait_idle(timeout=timeout(5))
        m = await q.metrics()
    assert done == [s.id] and calls == 2 and m["a"].retried == 1


async def test_a_delivery_that_always_hangs_is_dead_lettered_as_timeouts() -> None:
    """Every attempt timing out ends in a dead letter whose attempts say OperationTimeoutError."""

    async def hang(envelope: Envelope) -> None:
        await asyncio.Event().wait()

    policy = RetryPolicy(attempts=2, initial=0.001, max_delay=0.001, deadline=None)
    async with SignalQueue(
        sinks=[CallableSink(hang, name="a")], retry=policy, delivery_timeout=0.05
    ) as q:
        await q.publish(sig())
        await q.wait_idle(timeout=timeout(5))
        (dead,) = await q.dead_letters()
    assert dead.reason == "max_attempts"
    assert all("OperationTimeoutError" in a.error for a in dead.attempts)


async def test_the_watchdog_never_cuts_a_call_short() -> None:
    """The watchdog samples calls every timeout/8: a call that spans several samples
    but ends within delivery_timeout completes, and a hung one is cancelled no sooner
    than delivery_timeout after it started."""
    loop = asyncio.get_running_loop()
    spans: dict[str, float] = {}

    async def deliver(envelope: Envelope) -> None:
        symbol = str(envelope.payload["symbol"])
        started = loop.time()
        try:
            if symbol == "SLOW":
                await asyncio.sleep(0.3)  # the work of a slow sink: 0.3 s of a 1 s budget
            else:
                await asyncio.Event().wait()  # hangs until the watchdog cancels it
        finally:
            spans[symbol] = loop.time() - started

    once = RetryPolicy(attempts=1, initial=0.001, max_delay=0.001, deadline=None)
    async with SignalQueue(
        sinks=[CallableSink(deliver, name="a")], retry=once, delivery_timeout=1.0
    ) as q:
        await q.publish(sig(symbol="SLOW"))
        await q.publish(sig(symbol="HANG"))
        await q.wait_idle(timeout=timeout(10))
        m = (await q.metrics())["a"]
        (dead,) = await q.dead_letters()
    assert m.delivered == 1 and dead.envelope.payload["symbol"] == "HANG"
    assert "OperationTimeoutError" in dead.attempts[0].error
    assert spans["HANG"] >= 1.0


async def test_attempts_run_under_an_attempt_timeout_leave_no_watchdog_slot() -> None:
    """A retry policy with attempt_timeout runs each attempt in a task of its own; the
    watchdog tracks that task for the call only, so retried deliveries leave nothing."""
    failed: set[str] = set()

    async def flaky(envelope: Envelope) -> None:
        if envelope.id not in failed:
            failed.add(envelope.id)
            raise RuntimeError("first attempt fails")

    policy = RetryPolicy(
        attempts=3, initial=0.001, max_delay=0.001, deadline=None, attempt_timeout=5.0
    )
    q = SignalQueue(
        sinks=[CallableSink(flaky, name="a")],
        retry=policy,
        breaker_config=BreakerConfig(failure_threshold=1000),
    )
    async with q:
        for i in range(20):
            await q.publish(sig(symbol=f"S{i}"))
        await q.wait_idle(timeout=timeout(5))
        assert (await q.metrics())["a"].retried == 20
        # Runners have finished: the watchdog tracks no call (its tasks all ended).
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "fokha-queue-a-runner"]
        assert tasks == []
        assert q.stats().sink("a").in_flight == 0


class ScriptedDeduper:
    """A deduper of the adapter shape whose answers the test scripts (like a DedupCache
    whose first claimer has not finished yet)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.released: list[str] = []

        self.committed: list[str] = []

    class Claim:
        def __init__(self, status: str) -> None:
            self.status = status
            self.token: str | None = "t" if status == "first" else None

    async def claim(
        self,
        key: str,
        *,
        type: str,
        fingerprint: str | None = None,
        lease: float | None = None,
    ) -> Claim:
        assert lease is not None  # the queue always claims with a lease
        return self.Claim(self.answers.pop(0))

    async def commit(self, key: str, *, type: str, token: str | None = None) -> None:
        assert token == "t"
        self.committed.append(key)

    async def release(self, key: str, *, type: str, token: str | None = None) -> None:
        self.released.append(key)


async def test_any_deduper_of_the_protocol_shape_plugs_in() -> None:
    """A custom deduper's first / in_flight / conflict answers map to publish results."""
    dedup = ScriptedDeduper(["first", "in_flight", "conflict"])
    rec = Recorder()
    async with SignalQueue(dedup=dedup, sinks=[CallableSink(rec, name="a")]) as q:
        r1, r2, r3 = [await q.publish(sig()) for _ in range(3)]
        await q.wait_idle(timeout=timeout(5))
    assert (r1.status, r2.status, r2.in_flight, r3.status) == (
        "accepted",
        "duplicate",
        True,
        "conflict",
    )
    assert [e.id for e in rec.got] == [r1.id]


async def test_memory_deduper_forgets_keys_after_ttl_and_past_its_bound() -> None:
    """MemoryDeduper treats a key as new again after ttl (on its clock) or once evicted."""
    from fokha_integration.clock import ManualClock
    from fokha_integration.queue import MemoryDeduper

    clock = ManualClock()
    d = MemoryDeduper(max_keys=2, ttl=10.0, clock=clock)
    assert (await d.claim("a", type="signal")).status == "first"
    assert (await d.claim("a", type="signal")).status == "duplicate"
    clock.advance(10.0)
    assert (await d.claim("a", type="signal")).status == "first"
    await d.claim("b", type="signal")
    await d.claim("c", type="signal")  # evicts "a", the oldest
    assert (await d.claim("a", type="signal")).status == "first"
    assert (await d.claim("x", type="signal", fingerprint="1")).status == "first"
    assert (await d.claim("x", type="signal", fingerprint="2")).status == "conflict"


async def test_metrics_age_and_lag_follow_the_clock() -> None:
    """``oldest_pending_age`` is the oldest pending entry's age, ``lag`` the last delivery's."""
    clock = ManualClock()
    gate = asyncio.Event()
    delivered = asyncio.Event()

    async def deliver(envelope: Envelope) -> None:
        await gate.wait()
        delivered.set()

    q = SignalQueue(sinks=[CallableSink(deliver, name="a")], clock=clock, max_in_flight=1)
    async with q:
        await q.publish(sig(symbol="A"))
        clock.advance(4.0)
        await q.publish(sig(symbol="B"))
        clock.advance(1.5)
        m = (await q.metrics())["a"]
        assert m.pending == 2
        assert m.oldest_pending_age == pytest.approx(5.5)
        assert m.lag == 0.0 and m.delivered == 0
        gate.set()
        await asyncio.wait_for(delivered.wait(), timeout(5))
        await q.wait_idle(timeout=timeout(5))
        m = (await q.metrics())["a"]
    assert m.pending == 0 and m.oldest_pending_age == 0.0 and m.delivered == 2
    # Both were delivered at the same manual instant: the last one (B) waited 1.5 s.
    assert m.lag == pytest.approx(1.5)


class CountingStore(MemoryOutboxStore):
    """The memory store, counting fetch calls and the entries they returned."""

    def __init__(self) -> None:
        super().__init__()
        self.fetches: list[int] = []

    async def fetch(self, sink: str, *, limit: int) -> list[OutboxEntry]:
        out = await super().fetch(sink, limit=limit)
        if out:
            self.fetches.append(len(out))
        return out


async def test_backlog_is_read_in_batches() -> None:
    """Behind a backlog the worker refills a quarter of its slots at a time, not one by one."""
    store = CountingStore()
    got: list[str] = []
    one_at_a_time = asyncio.Lock()

    async def deliver(envelope: Envelope) -> None:
        # Deliveries finish one per loop turn, as a sink that answers over a socket:
        # without batching the worker would read the store after each of them.
        async with one_at_a_time:
            await asyncio.sleep(0)
        got.append(envelope.id)

    q = SignalQueue(store=store, sinks=[CallableSink(deliver, name="a")], max_in_flight=16)
    for i in range(400):
        await q.publish(Envelope(type="tick", key=f"k{i}", payload={"n": i}))
    async with q:
        await q.wait_idle(timeout=timeout(10))
    assert len(got) == 400
    # 400 entries in refills of >= 4 (a quarter of 16): at most 100 reads plus the first.
    assert len(store.fetches) <= 101, store.fetches
    assert min(store.fetches[:-1]) >= 4, store.fetches


async def test_caught_up_sink_takes_a_new_entry_at_once() -> None:
    """With free slots and no backlog, a new entry starts while others are still in flight."""
    gate = asyncio.Event()
    started: list[str] = []
    seven = asyncio.Event()
    fresh = asyncio.Event()

    async def deliver(envelope: Envelope) -> None:
        started.append(envelope.key)
        if len(started) == 7:
            seven.set()
        if envelope.key == "fresh":
            fresh.set()
            return
        await gate.wait()

    async with SignalQueue(sinks=[CallableSink(deliver, name="a")], max_in_flight=8) as q:
        # Seven of eight slots busy: fewer free than a refill batch (a quarter, 2).
        for i in range(7):
            await q.publish(Envelope(type="tick", key=f"slow{i}", payload={"n": i}))
        await asyncio.wait_for(seven.wait(), timeout(5))
        await q.publish(Envelope(type="tick", key="fresh", payload={"n": 99}))
        await asyncio.wait_for(fresh.wait(), timeout(5))
        assert not gate.is_set()  # the seven slow ones are all still in flight
        gate.set()
        await q.wait_idle(timeout=timeout(5))


_plan = st.lists(
    # (order key, times the sink yields to the loop, whether the first attempt fails,
    #  times the producer yields after publishing it)
    st.tuples(
        st.integers(0, 3), st.integers(0, 3), st.booleans(), st.sampled_from([0, 0, 0, 1, 3])
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(plan=_plan, max_in_flight=st.integers(1, 6))
def test_per_key_order_holds_however_deliveries_interleave(
    plan: list[tuple[int, int, bool, int]], max_in_flight: int
) -> None:
    """Whatever suspends or fails when, each key's envelopes arrive once each, in order.

    Deliveries that finish at once, ones that yield to the loop several times, and
    ones whose first attempt fails (and is retried) are mixed over a few keys, with
    the producer sometimes publishing while deliveries run.
    """

    async def main() -> dict[str, list[int]]:
        seen: dict[str, list[int]] = defaultdict(list)
        failed: set[int] = set()

        async def deliver(envelope: Envelope) -> None:
            p = envelope.payload
            n = int(p["n"])
            for _ in range(int(p["yields"])):
                await asyncio.sleep(0)
            if p["fail"] and n not in failed:
                failed.add(n)
                raise RuntimeError("first attempt fails")
            seen[str(p["symbol"])].append(n)

        q = SignalQueue(
            sinks=[CallableSink(deliver, name="a")],
            max_in_flight=max_in_flight,
            retry=RetryPolicy(attempts=3, initial=0.001, max_delay=0.002, deadline=None),
            breaker_config=BreakerConfig(failure_threshold=1000),
        )
        async with q:
            for n, (key, yields, fail, pause) in enumerate(plan):
                payload = {"symbol": f"K{key}", "n": n, "yields": yields, "fail": fail}
                await q.publish(Envelope(type="tick", key=f"e{n}", payload=payload))
                for _ in range(pause):
                    await asyncio.sleep(0)
            await q.wait_idle(timeout=timeout(10))
        return seen

    seen = asyncio.run(main())
    expected: dict[str, list[int]] = defaultdict(list)
    for n, (key, *_) in enumerate(plan):
        expected[f"K{key}"].append(n)
    assert seen == expected
