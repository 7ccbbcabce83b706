"""The :class:`HealthMonitor`: runs every check as its own background task.

Each check has its own task that sleeps until its next slot (interval ± jitter),
runs the probe under the check's timeout, and records the result. A slow or hanging
probe therefore delays nobody but itself, and a probe request (``/health``) never
runs a check: it reads the latest results and the time each was taken.

A sweeper task re-evaluates staleness once a second (or faster for short intervals),
so a checker that died or hangs is reported and alerted on even though it produces
no results.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import overload

from .. import _validate
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ClosedError, ConfigError
from ._checks import Check, Observation, ProbeContext, describe_error
from ._metrics import MetricFamily, MetricsRegistry, Sample
from ._state import CheckResult, CheckState, CheckView, HealthStatus, aggregate

if sys.version_info >= (3, 11):

    async def _bounded(aw: Awaitable[Observation], seconds: float) -> Observation:
        # runs the probe in the checker's own task: no extra task per run
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover - 3.10

    async def _bounded(aw: Awaitable[Observation], seconds: float) -> Observation:
        return await asyncio.wait_for(aw, seconds)


__all__ = [
    "CheckStats",
    "HealthMonitor",
    "HealthReport",
    "HealthStats",
    "ResultListener",
    "StatusChange",
    "StatusListener",
]

_log = logging.getLogger("fokha_integration.health")

_STATUS_VALUE = {
    HealthStatus.PASS: 0.0,
    HealthStatus.WARN: 1.0,
    HealthStatus.FAIL: 2.0,
    HealthStatus.UNKNOWN: -1.0,
}


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A status change, as told to listeners.

    ``check`` is the check's ``component:measurement`` key, or ``None`` for the
    overall status. ``at`` is wall-clock seconds; ``result`` the result that caused
    it (``None`` for a change caused by staleness or by removing a check).
    """

    check: str | None
    old: HealthStatus
    new: HealthStatus
    at: float
    output: str = ""
    result: CheckResult | None = None
    critical: bool = True


StatusListener = Callable[[StatusChange], "Awaitable[None] | None"]
"""Called after each status change; may be sync or async; must not block."""

ResultListener = Callable[[str, CheckResult], None]
"""Called (synchronously) with a check's key and each of its results; must not block."""


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The status of a set of checks at one instant (what the endpoints render)."""

    status: HealthStatus
    checks: tuple[tuple[Check, CheckView], ...]
    time: float


@dataclass
class _Entry:
    check: Check
    state: CheckState
    reported: HealthStatus = HealthStatus.UNKNOWN
    task: asyncio.Task[None] | None = None
    runs: int = 0
    failures: int = 0
    timeouts: int = 0
    last_drift: float = 0.0


@dataclass(frozen=True, slots=True)
class CheckStats:
    """One check's counters (see :meth:`HealthMonitor.check_stats`)."""

    key: str
    runs: int
    failures: int
    timeouts: int
    last_drift: float
    """How late (seconds) the latest run started against its schedule."""


@dataclass(frozen=True, slots=True)
class HealthStats:
    """A snapshot of a :class:`HealthMonitor` (see :meth:`HealthMonitor.stats`)."""

    status: HealthStatus
    """The aggregated status now."""
    runs: int
    failures: int
    timeouts: int
    checks: tuple[CheckStats, ...]
    """Per check, in registration order."""


class HealthMonitor:
    """Watches checks concurrently and keeps their latest status.

    ``clock`` drives scheduling, hysteresis and staleness (a ``ManualClock`` in
    tests). ``http_limit`` bounds the connection pool shared by HTTP checks.
    ``listeners`` are called on every status change of a check and of the overall
    status. ``metrics`` is the registry ``/metrics`` renders; the monitor registers its
    own per-check metrics in it. With ``spread_start`` (the default) the first runs of
    checks with jitter are spread over one interval, so a thousand checks do not all
    fire in the first instant; pass ``False`` (or call :meth:`run_once` after
    :meth:`start`) to have first results at once. ``seed`` seeds the jitter.

    Use as ``async with HealthMonitor(...) as monitor:`` or call :meth:`start` and
    :meth:`close`.
    """

    _close_rounds = 20  # x 0.25 s: how long close() insists on a check that will not stop

    def __init__(
        self,
        checks: Iterable[Check] = (),
        *,
        clock: Clock = SYSTEM_CLOCK,
        http_limit: int = 256,
        listeners: Iterable[StatusListener] = (),
        metrics: MetricsRegistry | None = None,
        logger: logging.Logger | None = None,
        seed: int | None = None,
        spread_start: bool = True,
    ) -> None:
        _validate.integer("http_limit", http_limit, minimum=1)
        if seed is not None:
            _validate.integer("seed", seed)
        _validate.boolean("spread_start", spread_start)
        self._clock = clock
        self._ctx = ProbeContext(http_limit=http_limit)
        self._entries: dict[str, _Entry] = {}
        self._listeners: list[StatusListener] = list(listeners)
        self._result_listeners: list[ResultListener] = []
        self._overall = HealthStatus.UNKNOWN
        self._counts: dict[tuple[bool, HealthStatus], int] = {}
        self._running = False
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random(seed)
        self._spread_start = spread_start
        self._logger = logger if logger is not None else _log
        self.metrics = metrics if metrics is not None else MetricsRegistry()
        """The registry behind ``/metrics``; register other components' providers here."""
        self.metrics.register(self._metric_families)
        for c in checks:
            self.add(c)

    # -- configuration -----------------------------------------------------

    @property
    def clock(self) -> Clock:
        """The clock the monitor schedules and measures with."""
        return self._clock

    @property
    def checks(self) -> list[Check]:
        """The checks, in the order they were added."""
        return [e.check for e in self._entries.values()]

    @property
    def groups(self) -> set[str]:
        """Every group some check belongs to."""
        return {g for e in self._entries.values() for g in e.check.groups}

    def add(self, check: Check) -> Check:
        """Add a check (started at once if the monitor is running); returns it."""
        if self._closed:
            raise ClosedError("the health monitor is closed")
        if check.key in self._entries:
            raise ConfigError("check", "a check with this component:measurement exists", check.key)
        entry = _Entry(
            check=check,
            state=CheckState(
                fail_after=check.fail_after,
                recover_after=check.recover_after,
                stale_after=check.effective_stale_after,
                now=self._clock.monotonic(),
            ),
        )
        self._entries[check.key] = entry
        self._count(entry, entry.reported, +1)
        if self._running:
            entry.task = asyncio.get_running_loop().create_task(
                self._run(entry), name=f"health:{check.key}"
            )
            self._refresh_overall(None)
        return check

    async def remove(self, key: str) -> None:
        """Stop and forget the check with this ``component:measurement`` key."""
        entry = self._entries.pop(key)
        self._count(entry, entry.reported, -1)
        if entry.task is not None:
            entry.task.cancel()
            await asyncio.gather(entry.task, return_exceptions=True)
        self._refresh_overall(None)

    def add_listener(self, listener: StatusListener) -> None:
        """Call ``listener`` on every status change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: StatusListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def add_result_listener(self, listener: ResultListener) -> None:
        """Call ``listener(key, result)`` after every run of every check (for
        instrumentation: drift, durations); it must be quick and must not raise."""
        self._result_listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start one task per check, and the staleness sweeper."""
        if self._closed:
            raise ClosedError("the health monitor is closed")
        if self._running:
            return
        self._running = True
        loop = asyncio.get_running_loop()
        self._refresh_overall(None)
        for entry in self._entries.values():
            entry.task = loop.create_task(self._run(entry), name=f"health:{entry.check.key}")
        self._sweeper = loop.create_task(self._sweep(), name="health:sweeper")

    async def close(self) -> None:
        """Stop every task and close the shared HTTP session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._running = False
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        pending = {t for t in tasks if not t.done()}
        for _ in range(self._close_rounds):
            if not pending:
                break
            # cancel again until they are gone: a probe finishing at the very moment
            # its timeout fires can swallow one cancellation (wait_for on 3.10)
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.25)
        if pending:
            # a probe that ignores cancellation: leave it, say so, do not hang close()
            names = sorted(t.get_name() for t in pending)
            self._logger.error("health checks did not stop when cancelled: %s", names)
        else:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._listener_tasks:
            await asyncio.gather(*self._listener_tasks, return_exceptions=True)
        await self._ctx.close()

    async def __aenter__(self) -> HealthMonitor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- running checks ------------------------------------------------------

    async def run_once(self, keys: Iterable[str] | None = None) -> HealthReport:
        """Run the checks (all, or those keyed) once, concurrently, and report.

        For one-shot use (the CLI) and tests; results go through the same
        hysteresis as scheduled runs.
        """
        entries = (
            [self._entries[k] for k in keys] if keys is not None else list(self._entries.values())
        )
        now = self._clock.monotonic()
        await asyncio.gather(*(self._run_one(e, now) for e in entries))
        return self.report()

    async def _run(self, entry: _Entry) -> None:
        check = entry.check
        clock = self._clock
        # spread first runs so checks added together don't fire in step
        if self._spread_start and check.jitter > 0:
            offset = self._random.uniform(0, check.interval)
        else:
            offset = self._random.uniform(0, check.jitter) * check.interval
        next_at = clock.monotonic() + offset
        while self._running:
            delay = next_at - clock.monotonic()
            if delay > 0:
                await clock.sleep(delay)
            scheduled = next_at
            await self._run_one(entry, scheduled)
            spread = check.jitter * check.interval
            next_at = scheduled + check.interval + self._random.uniform(-spread, spread)
            now = clock.monotonic()
            if next_at <= now:
                # the run overran its slot: start again one interval from now, do not burst
                next_at = now + check.interval

    async def _run_one(self, entry: _Entry, scheduled: float) -> None:
        check = entry.check
        clock = self._clock
        started = clock.monotonic()
        entry.last_drift = max(0.0, started - scheduled)
        timed_out = False
        timeout = check.effective_timeout
        loop = asyncio.get_running_loop()
        real_start = loop.time()
        try:
            obs = await _bounded(check.probe(self._ctx), timeout)
            if not isinstance(obs, Observation):
                raise TypeError(f"probe returned {type(obs).__name__}, not Observation")
            if obs.status is HealthStatus.UNKNOWN:
                obs = Observation(HealthStatus.WARN, obs.value, obs.unit, obs.output or "unknown")
        except asyncio.TimeoutError as exc:
            # the bound is real time (asyncio), whatever clock schedules the checks
            if loop.time() - real_start >= timeout * 0.99:
                timed_out = True
                obs = Observation(HealthStatus.FAIL, None, None, f"timed out after {timeout:g}s")
            else:
                # the probe's own timeout (e.g. a client read timeout), not ours
                obs = Observation(HealthStatus.FAIL, None, None, describe_error(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            obs = Observation(HealthStatus.FAIL, None, None, describe_error(exc))
        finished = clock.monotonic()
        result = CheckResult(
            status=obs.status,
            time=clock.time(),
            monotonic=finished,
            observed_value=obs.value,
            observed_unit=obs.unit,
            output=obs.output,
            duration=finished - started,
            scheduled=scheduled,
            started=started,
            timed_out=timed_out,
        )
        self.record(check.key, result)

    def record(self, key: str, result: CheckResult) -> None:
        """Feed a result for the check ``key`` (what each run does; public for tests
        and for components that push their own results)."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.runs += 1
        if result.status is HealthStatus.FAIL:
            entry.failures += 1
        if result.timed_out:
            entry.timeouts += 1
        entry.state.observe(result)
        for listener in self._result_listeners:
            try:
                listener(key, result)
            except Exception:
                self._logger.exception("health result listener %r failed", listener)
        self._refresh(entry, result)

    async def _sweep(self) -> None:
        if not self._entries:
            period = 1.0
        else:
            period = min(1.0, min(e.check.interval for e in self._entries.values()) / 2)
        while True:
            await self._clock.sleep(period)
            self.refresh()

    def refresh(self) -> None:
        """Re-evaluate staleness now and tell listeners what changed."""
        for entry in list(self._entries.values()):
            self._refresh(entry, None)

    def _refresh(self, entry: _Entry, result: CheckResult | None) -> None:
        now = self._clock.monotonic()
        new = entry.state.effective(now)
        old = entry.reported
        if new is not old:
            entry.reported = new
            self._count(entry, old, -1)
            self._count(entry, new, +1)
            if result is not None:
                output = result.output
            elif entry.state.is_stale(now):
                output = "stale: no result within stale_after"
            else:
                output = ""
            change = StatusChange(
                check=entry.check.key,
                old=old,
                new=new,
                at=self._clock.time(),
                output=output,
                result=result,
                critical=entry.check.critical,
            )
            level = logging.INFO if new is HealthStatus.PASS else logging.WARNING
            self._logger.log(
                level, "health %s: %s -> %s %s", entry.check.key, old.value, new.value, output
            )
            self._notify(change)
            # the overall status can only move when a check's status moved (O(n) fold)
            self._refresh_overall(result)

    def _count(self, entry: _Entry, status: HealthStatus, delta: int) -> None:
        key = (entry.check.critical, status)
        self._counts[key] = self._counts.get(key, 0) + delta

    def _overall_from_counts(self) -> HealthStatus:
        # the rules of aggregate(), on counts of the statuses last reported: O(1)
        c = self._counts
        if c.get((True, HealthStatus.FAIL), 0):
            return HealthStatus.FAIL
        if c.get((True, HealthStatus.UNKNOWN), 0):
            return HealthStatus.UNKNOWN
        if (
            c.get((True, HealthStatus.WARN), 0)
            or c.get((False, HealthStatus.WARN), 0)
            or c.get((False, HealthStatus.FAIL), 0)
        ):
            return HealthStatus.WARN
        return HealthStatus.PASS

    def _refresh_overall(self, result: CheckResult | None) -> None:
        new = self._overall_from_counts()
        if new is not self._overall:
            old, self._overall = self._overall, new
            self._notify(StatusChange(check=None, old=old, new=new, at=self._clock.time()))

    def _notify(self, change: StatusChange) -> None:
        for listener in list(self._listeners):
            try:
                out = listener(change)
                if inspect.isawaitable(out):
                    task = asyncio.ensure_future(out)
                    self._listener_tasks.add(task)
                    task.add_done_callback(self._listener_done)
            except Exception:
                self._logger.exception("health listener %r failed", listener)

    def _listener_done(self, task: asyncio.Future[None]) -> None:
        self._listener_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._logger.error("health listener failed", exc_info=task.exception())

    # -- reading ------------------------------------------------------------

    def report(self, group: str | None = None) -> HealthReport:
        """The latest status of every check (or of one group's checks). Runs nothing."""
        now = self._clock.monotonic()
        rows = tuple(
            (e.check, e.state.view(e.check.key, critical=e.check.critical, now=now))
            for e in self._entries.values()
            if group is None or group in e.check.groups
        )
        return HealthReport(
            status=aggregate(v for _, v in rows), checks=rows, time=self._clock.time()
        )

    def status(self, group: str | None = None) -> HealthStatus:
        """The aggregated status (of one group, or of everything)."""
        return self.report(group).status

    def check_status(self, key: str) -> HealthStatus:
        """One check's status now (staleness applied)."""
        entry = self._entries[key]
        return entry.state.effective(self._clock.monotonic())

    def check_stats(self, key: str) -> CheckStats:
        """Counters of one check: runs, failures, timeouts, last drift (s)."""
        e = self._entries[key]
        return CheckStats(key, e.runs, e.failures, e.timeouts, e.last_drift)

    @overload
    def stats(self) -> HealthStats: ...
    @overload
    def stats(self, key: str) -> dict[str, float]: ...
    def stats(self, key: str | None = None) -> HealthStats | dict[str, float]:
        """A snapshot of every check's counters and the overall status.

        ``stats(key)`` (a dict for one check) is deprecated: use :meth:`check_stats`.
        """
        if key is not None:
            warnings.warn(
                "HealthMonitor.stats(key) is deprecated; use check_stats(key)",
                DeprecationWarning,
                stacklevel=2,
            )
            one = self.check_stats(key)
            return {
                "runs": one.runs,
                "failures": one.failures,
                "timeouts": one.timeouts,
                "last_drift": one.last_drift,
            }
        checks = tuple(self.check_stats(k) for k in self._entries)
        return HealthStats(
            status=self.status(),
            runs=sum(c.runs for c in checks),
            failures=sum(c.failures for c in checks),
            timeouts=sum(c.timeouts for c in checks),
            checks=checks,
        )

    def _metric_families(self) -> list[MetricFamily]:
        return _metric_families(self._entries.values(), self.status(), self._clock.monotonic())


def _metric_families(
    entries: Iterable[_Entry], overall: HealthStatus, now: float
) -> list[MetricFamily]:
    """The monitor's Prometheus families: overall status, and per check its status,
    latest duration and run, failure and timeout counters."""
    status: list[Sample] = []
    duration: list[Sample] = []
    runs: list[Sample] = []
    failures: list[Sample] = []
    timeouts: list[Sample] = []
    for e in entries:
        labels = {"check": e.check.key}
        status.append(Sample(_STATUS_VALUE[e.state.effective(now)], labels))
        last = e.state.last
        duration.append(Sample(last.duration if last is not None else 0.0, labels))
        runs.append(Sample(e.runs, labels))
        failures.append(Sample(e.failures, labels))
        timeouts.append(Sample(e.timeouts, labels))
    return [
        MetricFamily(
            "fokha_health_status",
            "gauge",
            "Overall health: 0 pass, 1 warn, 2 fail, -1 unknown",
            (Sample(_STATUS_VALUE[overall]),),
        ),
        MetricFamily(
            "fokha_health_check_status",
            "gauge",
            "Check status: 0 pass, 1 warn, 2 fail, -1 unknown",
            tuple(status),
        ),
        MetricFamily(
            "fokha_health_check_duration_seconds",
            "gauge",
            "Duration of the check's latest run",
            tuple(duration),
        ),
        MetricFamily("fokha_health_check_runs_total", "counter", "Check runs", tuple(runs)),
        MetricFamily(
            "fokha_health_check_failures_total", "counter", "Failed runs", tuple(failures)
        ),
        MetricFamily(
            "fokha_health_check_timeouts_total",
            "counter",
            "Runs that timed out",
            tuple(timeouts),
        ),
    ]
