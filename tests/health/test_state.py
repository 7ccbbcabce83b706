"""Hysteresis, staleness and aggregation: the sans-I/O core, and the monitor on a ManualClock."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fokha_integration import ManualClock
from fokha_integration.health import (
    CheckResult,
    CheckState,
    CheckView,
    HealthMonitor,
    HealthStatus,
    Observation,
    StatusChange,
    aggregate,
    callable_check,
)
from tests.support import timeout

P, W, F, U = HealthStatus.PASS, HealthStatus.WARN, HealthStatus.FAIL, HealthStatus.UNKNOWN


def res(status: HealthStatus, at: float = 0.0) -> CheckResult:
    return CheckResult(status=status, time=1_800_000_000 + at, monotonic=at)


def feed(state: CheckState, *statuses: HealthStatus) -> list[HealthStatus]:
    out = []
    for i, s in enumerate(statuses):
        state.observe(res(s, float(i)))
        out.append(state.status)
    return out


def test_unknown_until_first_result_then_taken_as_is() -> None:
    """A new check is unknown; its first result sets the status without hysteresis."""
    state = CheckState(fail_after=3, recover_after=3)
    assert state.status is U
    assert state.observe(res(F)) is True
    assert state.status is F


def test_fail_needs_fail_after_consecutive_failures() -> None:
    """pass -> fail only after fail_after failures in a row; a pass in between resets."""
    state = CheckState(fail_after=3, recover_after=2)
    assert feed(state, P, F, F, P, F, F, F) == [P, P, P, P, P, P, F]


def test_recover_needs_recover_after_consecutive_passes() -> None:
    """fail -> pass only after recover_after passes in a row; a failure in between resets."""
    state = CheckState(fail_after=1, recover_after=2)
    assert feed(state, F, P, F, P, P) == [F, F, F, F, P]


def test_streak_lands_on_mildest_bad_and_worst_good() -> None:
    """A mixed fail/warn streak lands on warn; a warn/pass streak from fail lands on warn."""
    state = CheckState(fail_after=3, recover_after=2)
    assert feed(state, P, F, W, F) == [P, P, P, W]
    state = CheckState(fail_after=1, recover_after=2)
    assert feed(state, F, P, W) == [F, F, W]


@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.lists(st.sampled_from([P, W, F]), min_size=1, max_size=60),
)
def test_hysteresis_properties(
    fail_after: int, recover_after: int, seq: list[HealthStatus]
) -> None:
    """Every change is backed by enough consecutive results on the new side of the old status."""
    state = CheckState(fail_after=fail_after, recover_after=recover_after)
    history: list[HealthStatus] = []
    for i, s in enumerate(seq):
        old = state.status
        changed = state.observe(res(s, float(i)))
        history.append(s)
        new = state.status
        assert changed == (new is not old)
        if not changed or old is U:
            continue
        need = fail_after if new.severity > old.severity else recover_after
        tail = history[-need:]
        assert len(tail) == need
        if new.severity > old.severity:
            assert all(x.severity > old.severity for x in tail)
            assert min(x.severity for x in tail) == new.severity
        else:
            assert all(x.severity < old.severity for x in tail)
            assert max(x.severity for x in tail) == new.severity
    # a run of one status twice the longer count always ends on that status
    # (the first streak may land on a milder step, e.g. fail -> warn -> pass)
    final = CheckState(fail_after=fail_after, recover_after=recover_after)
    for i, s in enumerate(seq):
        final.observe(res(s, float(i)))
    for j in range(2 * max(fail_after, recover_after)):
        final.observe(res(seq[-1], 100.0 + j))
    assert final.status is seq[-1]


def test_staleness_turns_an_old_result_into_fail() -> None:
    """A pass older than stale_after reads as fail, and a fresh result clears it."""
    clock = ManualClock()
    state = CheckState(stale_after=5.0, now=clock.monotonic())
    state.observe(res(P, clock.monotonic()))
    clock.advance(5.0)
    assert state.effective(clock.monotonic()) is P
    clock.advance(0.1)
    assert state.is_stale(clock.monotonic())
    assert state.effective(clock.monotonic()) is F
    state.observe(res(P, clock.monotonic()))
    assert state.effective(clock.monotonic()) is P


def test_no_result_at_all_becomes_stale_after_the_bound() -> None:
    """A check that never reports is unknown at first, then fail once stale_after has passed."""
    clock = ManualClock()
    state = CheckState(stale_after=2.0, now=clock.monotonic())
    assert state.effective(clock.monotonic()) is U
    clock.advance(2.5)
    assert state.effective(clock.monotonic()) is F


def v(status: HealthStatus, critical: bool = True) -> CheckView:
    return CheckView(key="x:y", status=status, critical=critical, stale=False, result=None)


@pytest.mark.parametrize(
    ("views", "expected"),
    [
        ([], P),
        ([v(P), v(P, False)], P),
        ([v(F), v(P)], F),
        ([v(F, False), v(P)], W),
        ([v(W), v(P)], W),
        ([v(U), v(P)], U),
        ([v(U), v(F)], F),
        ([v(U, False), v(P)], P),
        ([v(U, False), v(W, False)], W),
        ([v(U), v(F, False)], U),
        ([v(W, False), v(F, False), v(P)], W),
    ],
)
def test_aggregation_rules(views: list[CheckView], expected: HealthStatus) -> None:
    """Critical fail/unknown decide; non-critical fail or any warn -> warn; optional unknown: 0."""
    assert aggregate(views) is expected


async def test_monitor_hysteresis_and_staleness_on_a_manual_clock() -> None:
    """On a ManualClock: fail after fail_after runs, pass after recover_after, stale -> fail."""
    clock = ManualClock()
    healthy = True
    runs = 0

    async def probe() -> bool:
        nonlocal runs
        runs += 1
        return healthy

    changes: list[StatusChange] = []
    check = callable_check(
        probe, component="svc", interval=1.0, jitter=0.0, fail_after=3, recover_after=2,
        stale_after=2.5,
    )  # fmt: skip
    monitor = HealthMonitor([check], clock=clock, listeners=[changes.append])

    async def step(seconds: float) -> None:
        clock.advance(seconds)
        await clock.wait_for_sleepers(2, timeout=timeout(5))

    async with monitor:
        await clock.wait_for_sleepers(2, timeout=timeout(5))  # check + sweeper
        assert runs == 1
        assert monitor.check_status("svc:status") is P
        healthy = False
        for _ in range(2):
            await step(1.0)
            assert monitor.check_status("svc:status") is P
        await step(1.0)
        assert runs == 4
        assert monitor.check_status("svc:status") is F
        assert monitor.status() is F
        healthy = True
        await step(1.0)
        assert monitor.check_status("svc:status") is F
        await step(1.0)
        assert monitor.check_status("svc:status") is P
        check_changes = [(c.old, c.new) for c in changes if c.check == "svc:status"]
        assert check_changes == [(U, P), (P, F), (F, P)]
        overall = [(c.old, c.new) for c in changes if c.check is None]
        assert overall == [(U, P), (P, F), (F, P)]

        # the checker stops producing results: the sweeper reports it stale
        monitor.checks  # noqa: B018 - the check is still registered
        await monitor.remove("svc:status")
        stale = HealthMonitor(
            [callable_check(probe, component="dead", interval=1.0, jitter=0.0, stale_after=2.5)],
            clock=clock,
            listeners=[changes.append],
        )
        stale.record(
            "dead:status",
            CheckResult(status=P, time=clock.time(), monotonic=clock.monotonic()),
        )
        clock.advance(2.0)
        stale.refresh()
        assert stale.check_status("dead:status") is P
        clock.advance(1.0)
        stale.refresh()
        assert stale.check_status("dead:status") is F
        assert changes[-2].check == "dead:status"
        assert (changes[-2].old, changes[-2].new) == (P, F)
        assert "stale" in changes[-2].output
        await stale.close()


async def test_probe_exception_and_bad_return_are_failures() -> None:
    """A probe that raises (even its own TimeoutError) or returns garbage fails with the reason."""

    async def boom() -> None:
        raise RuntimeError("db gone")

    async def garbage() -> object:
        return 42

    async def warn() -> Observation:
        return Observation(W, 3, "items", "behind")

    async def own_timeout() -> None:
        raise asyncio.TimeoutError("read timed out")

    monitor = HealthMonitor(
        [
            callable_check(boom, component="a"),
            callable_check(garbage, component="b"),
            callable_check(warn, component="c", critical=False),
            callable_check(own_timeout, component="d", timeout=30),
        ]
    )
    report = await asyncio.wait_for(monitor.run_once(), timeout(5))
    by_key = {c.key: view for c, view in report.checks}
    assert by_key["a:status"].status is F
    assert by_key["a:status"].result is not None
    assert "RuntimeError: db gone" in by_key["a:status"].result.output
    assert by_key["b:status"].status is F
    assert by_key["c:status"].status is W
    assert by_key["c:status"].result is not None
    assert by_key["c:status"].result.observed_value == 3
    assert report.status is F
    # the probe's own early timeout is its error, not the monitor's bound
    d = by_key["d:status"].result
    assert d is not None
    assert d.status is F
    assert d.timed_out is False
    assert "read timed out" in d.output
    await monitor.close()


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([P, W, F]), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_overall_listener_status_matches_a_full_fold(
    steps: list[tuple[int, HealthStatus, bool]],
) -> None:
    """The overall status told to listeners (kept by counting) equals aggregate() of all checks."""

    async def noop() -> None:
        return None

    clock = ManualClock()
    told: list[HealthStatus] = [U]
    monitor = HealthMonitor(
        [
            callable_check(noop, component=f"c{i}", critical=i % 2 == 0, stale_after=5.0)
            for i in range(4)
        ],
        clock=clock,
        listeners=[lambda c: told.append(c.new) if c.check is None else None],
    )
    for index, status, tick in steps:
        if tick:
            clock.advance(2.0)
            monitor.refresh()
        monitor.record(
            f"c{index}:status",
            CheckResult(status=status, time=clock.time(), monotonic=clock.monotonic()),
        )
        assert told[-1] is monitor.status()


async def test_close_does_not_hang_on_a_probe_that_ignores_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() gives up on a check that swallows cancellation instead of hanging."""
    never = asyncio.Event()
    started = asyncio.Event()
    release = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await never.wait()
            except asyncio.CancelledError:
                continue

    monkeypatch.setattr(HealthMonitor, "_close_rounds", 2)
    monitor = HealthMonitor(
        [callable_check(stubborn, component="stubborn", interval=60, timeout=60, jitter=0)]
    )
    await monitor.start()
    await asyncio.wait_for(started.wait(), timeout(5))
    await asyncio.wait_for(monitor.close(), timeout(5))
    release.set()  # let the stubborn task end so the test leaves no task behind
    never.set()


async def test_schedule_keeps_slots_with_jitter_and_does_not_slide() -> None:
    """Runs start on slots interval +- jitter apart; a run's length does not shift the slots."""
    clock = ManualClock()
    scheduled: list[float] = []

    async def probe() -> None:
        clock.advance(0.3)  # each run takes 0.3 s of clock time

    check = callable_check(probe, component="j", interval=1.0, jitter=0.2, stale_after=100)
    monitor = HealthMonitor([check], clock=clock, seed=3, spread_start=False)
    monitor.add_result_listener(lambda key, r: scheduled.append(r.scheduled))
    async with monitor:
        await clock.wait_for_sleepers(2, timeout=timeout(5))
        while len(scheduled) < 30:
            clock.advance(0.05)
            await clock.wait_for_sleepers(2, timeout=timeout(5))
    gaps = [b - a for a, b in itertools.pairwise(scheduled)]
    assert all(0.8 - 1e-9 <= g <= 1.2 + 1e-9 for g in gaps), gaps
    assert len({round(g, 6) for g in gaps}) > 5  # jittered, not a fixed period
    # slots are anchored on the previous slot, so the mean period stays 1.0, not 1.3
    assert abs((scheduled[-1] - scheduled[0]) / len(gaps) - 1.0) < 0.1
