"""Hostile sinks against the queue: wrong return types, raising, hanging, swallowing
cancellation, and a producer that never yields. Each test asserts the invariant
(every accepted signal delivered once or dead-lettered with a reason; deliveries per
entry bounded by the retry policy; the event loop never blocked > 100 ms)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.models import Envelope
from fokha_integration.queue import DeliveryFailedError, SignalQueue
from fokha_integration.resilience import BreakerConfig, RetryPolicy
from tests.faults._lag import LoopLagSampler
from tests.faults._queue_support import Ledger, check_invariant, make_store
from tests.support import timeout

ATTEMPTS = 3
FAST = RetryPolicy(attempts=ATTEMPTS, initial=0.001, max_delay=0.005, deadline=None)
STORES = ["memory", "sqlite"]
# A breaker that does not trip: these tests count attempts, not breaker waits.
PATIENT = BreakerConfig(failure_threshold=1000)


def envelopes(n: int) -> Iterator[Envelope]:
    """``n`` envelopes, built one at a time as they are taken.

    Lazily: building 3,000 up front is one uninterrupted stretch of the test's own
    work on the event loop (~140 ms on Python 3.10), which the loop-lag check would
    charge to the queue.
    """
    for i in range(n):
        yield Envelope(type="signal", key=f"k{i}", payload={"symbol": f"S{i % 3}", "n": i})


async def publish_all(queue: SignalQueue, n: int) -> list[str]:
    accepted = []
    for env in envelopes(n):
        result = await queue.publish(env)
        assert result.accepted
        accepted.append(result.id)
    return accepted


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("returned", [True, {"ok": True}, "ok", 0, 1.5])
async def test_a_wrong_return_type_is_dead_lettered_once(
    kind: str, returned: Any, tmp_path: Path, loop_lag: LoopLagSampler
) -> None:
    """A sink returning neither None nor a DeliveryResult is called once and the
    entry is dead-lettered with reason bad_sink_result (no re-fetch storm)."""
    ledger = Ledger()

    async def body(envelope: Envelope) -> Any:
        return returned

    sink = ledger.sink("exec", body, execution=True)
    async with SignalQueue(store=make_store(kind, tmp_path), sinks=[sink], retry=FAST) as q:
        accepted = await publish_all(q, 5)
        await q.wait_idle(timeout=timeout(5))
        reasons = await check_invariant(q, ledger, accepted, attempts=ATTEMPTS)
    assert set(reasons["exec"].values()) == {"bad_sink_result"}
    assert ledger.total("exec") == 5


@pytest.mark.parametrize("kind", STORES)
async def test_a_sink_that_always_raises_is_called_attempts_times(
    kind: str, tmp_path: Path, loop_lag: LoopLagSampler
) -> None:
    """A sink that always raises gets exactly the policy's attempts, then a dead letter."""
    ledger = Ledger()

    async def body(envelope: Envelope) -> None:
        raise DeliveryFailedError("down", status=503)

    sink = ledger.sink("down", body)
    store = make_store(kind, tmp_path)
    async with SignalQueue(store=store, sinks=[sink], retry=FAST, breaker_config=PATIENT) as q:
        accepted = await publish_all(q, 4)
        await q.wait_idle(timeout=timeout(5))
        reasons = await check_invariant(q, ledger, accepted, attempts=ATTEMPTS)
    assert set(reasons["down"].values()) == {"max_attempts"}
    assert all(count == ATTEMPTS for count in ledger.calls["down"].values())


@pytest.mark.parametrize("kind", STORES)
async def test_a_hanging_sink_times_out_within_the_attempts(
    kind: str, tmp_path: Path, loop_lag: LoopLagSampler
) -> None:
    """A sink that never answers is cancelled by the delivery timeout, at most
    attempts times per entry, then dead-lettered; a healthy sink beside it gets all."""
    ledger = Ledger()
    never = asyncio.Event()

    async def hang(envelope: Envelope) -> None:
        await never.wait()

    sinks = [ledger.sink("hang", hang), ledger.sink("fine")]
    store = make_store(kind, tmp_path)
    async with SignalQueue(
        store=store, sinks=sinks, retry=FAST, delivery_timeout=0.05, breaker_config=PATIENT
    ) as q:
        accepted = await publish_all(q, 3)
        await q.wait_idle(timeout=timeout(10))
        reasons = await check_invariant(q, ledger, accepted, attempts=ATTEMPTS)
    assert set(reasons["hang"].values()) == {"max_attempts"}
    assert reasons["fine"] == {}


_SWALLOW = textwrap.dedent(
    """
    import asyncio, sys
    from fokha_integration.models import Envelope
    from fokha_integration.queue import CallableSink, SignalQueue

    async def main() -> None:
        entered = asyncio.Event()

        async def stubborn(envelope: Envelope) -> None:
            entered.set()
            while True:  # swallows every cancellation
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass

        q = SignalQueue(sinks=[CallableSink(stubborn, name="stubborn")])
        await q.start()
        for i in range(20):
            await q.publish(Envelope(type="signal", key=f"k{i}", payload={"n": i}))
        await entered.wait()
        await q.close()
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        print("tasks left:", len(left), flush=True)

    asyncio.run(main())
    print("exited", flush=True)
    """
)


def test_a_sink_that_swallows_cancellation_does_not_hang_shutdown(tmp_path: Path) -> None:
    """close() leaves no runner task alive and asyncio.run returns, even when the
    sink swallows every cancellation."""
    script = tmp_path / "swallow.py"
    script.write_text(_SWALLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=timeout(30),
            env=env,
        )
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - the failure case
        pytest.fail(f"asyncio.run hung at shutdown: {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0, proc.stderr
    assert "tasks left: 0" in proc.stdout, proc.stdout + proc.stderr
    assert "exited" in proc.stdout


async def test_a_tight_publish_loop_does_not_starve_delivery(loop_lag: LoopLagSampler) -> None:
    """Deliveries happen while one producer publishes in a loop on the memory store."""
    ledger = Ledger()
    seen_during: list[int] = []
    async with SignalQueue(sinks=[ledger.sink("a")], retry=FAST) as q:
        for i, env in enumerate(envelopes(3000)):
            await q.publish(env)
            if i == 2999:
                seen_during.append(ledger.total("a"))
        await q.wait_idle(timeout=timeout(10))
    assert seen_during[0] > 0, "no delivery happened during the publish loop"
    assert ledger.total("a") == 3000
