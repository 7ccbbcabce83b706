"""The sans-I/O core of health checking: per-check state with hysteresis and staleness,
and the rules that fold many checks into one status.

Nothing here does I/O or reads a clock: results and ``now`` are passed in, so every
rule is tested with plain values (or a :class:`~fokha_integration.clock.ManualClock`).

Per check (:class:`CheckState`):

- The status is ``unknown`` until the first result; the first result is taken as is.
- After that, a *worse* status needs ``fail_after`` consecutive results worse than the
  current one, and a *better* status needs ``recover_after`` consecutive results better
  than the current one (hysteresis: one blip neither raises nor clears an alarm). The
  new status is the mildest one seen in the streak (``pass → [fail, warn, fail] → warn``).
- A result older than ``stale_after`` seconds no longer counts: the check reads as
  ``fail`` ("stale"). A check that has had no result for ``stale_after`` since it was
  added is also ``fail``. A stale check is a dead or stuck checker, and a dependency
  nobody is watching must not look healthy.

Across checks (:func:`aggregate`):

- a critical check failing → ``fail``;
- otherwise a critical check unknown → ``unknown``;
- otherwise any check warning or a non-critical check failing → ``warn``;
- otherwise (or with no checks at all) → ``pass``.

A non-critical check that has not reported yet counts for nothing: it could only
ever make the service ``warn``, and "not known yet" is not a warning (otherwise every
start-up would raise and clear a warning).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

from .. import _validate
from ..errors import ValidationError

__all__ = [
    "CheckResult",
    "CheckState",
    "CheckView",
    "HealthStatus",
    "ObservedValue",
    "aggregate",
]

ObservedValue = Union[float, int, str, bool, None]  # noqa: UP007 (a runtime alias on 3.10)
"""What a check observed (latency in ms, a state name, a count...)."""


class HealthStatus(str, enum.Enum):
    """The status of a check, a group or the whole service."""

    PASS = "pass"  # noqa: S105
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"

    @property
    def severity(self) -> int:
        """0 for pass, 1 for warn, 2 for fail; unknown sorts with warn."""
        return _SEVERITY[self]

    @property
    def wire(self) -> str:
        """The health+json status word (``unknown`` is sent as ``warn``)."""
        return "warn" if self is HealthStatus.UNKNOWN else self.value


_SEVERITY = {
    HealthStatus.PASS: 0,
    HealthStatus.WARN: 1,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.FAIL: 2,
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One run of one check: what it saw and when.

    ``time`` is wall-clock seconds (what the health+json ``time`` field shows);
    ``monotonic`` is when the run finished on the monitor's clock (what staleness is
    measured with); ``scheduled`` and ``started`` are monotonic too, for drift;
    ``duration`` is the run's length in seconds.
    """

    status: HealthStatus
    time: float
    monotonic: float
    observed_value: ObservedValue = None
    observed_unit: str | None = None
    output: str = ""
    duration: float = 0.0
    scheduled: float = 0.0
    started: float = 0.0
    timed_out: bool = False


@dataclass(frozen=True, slots=True)
class CheckView:
    """A check as the aggregation and the endpoints see it at one instant."""

    key: str
    status: HealthStatus
    critical: bool
    stale: bool
    result: CheckResult | None


class CheckState:
    """One check's status with hysteresis and staleness. Not thread-safe; no I/O."""

    __slots__ = (
        "_better",
        "_born",
        "_streak",
        "_streak_status",
        "_worse",
        "fail_after",
        "last",
        "recover_after",
        "stale_after",
        "status",
    )

    def __init__(
        self,
        *,
        fail_after: int = 1,
        recover_after: int = 1,
        stale_after: float | None = None,
        now: float = 0.0,
    ) -> None:
        self.fail_after = _validate.integer("fail_after", fail_after, minimum=1)
        self.recover_after = _validate.integer("recover_after", recover_after, minimum=1)
        self.stale_after = _validate.optional_number(
            "stale_after", stale_after, exclusive_minimum=0.0
        )
        self.status = HealthStatus.UNKNOWN
        """The status after hysteresis, without staleness (see :meth:`effective`)."""
        self.last: CheckResult | None = None
        """The latest result, whatever its status."""
        self._born = now
        self._streak = 0
        self._streak_status = HealthStatus.PASS
        self._worse = False
        self._better = False

    def observe(self, result: CheckResult) -> bool:
        """Take one result into account; True when :attr:`status` changed."""
        if result.status is HealthStatus.UNKNOWN:
            raise ValidationError("status", "a check result is pass, warn or fail", result.status)
        self.last = result
        old = self.status
        if old is HealthStatus.UNKNOWN:
            self.status = result.status
            self._reset()
            return True
        sev, cur = result.status.severity, old.severity
        if sev == cur:
            self._reset()
            return False
        worse = sev > cur
        if self._streak == 0 or worse != self._worse:
            self._reset()
            self._worse = worse
            self._streak_status = result.status
        elif worse:
            # the mildest of the bad results decides where we land
            if sev < self._streak_status.severity:
                self._streak_status = result.status
        elif sev > self._streak_status.severity:
            # the worst of the good results decides where we land
            self._streak_status = result.status
        self._streak += 1
        needed = self.fail_after if worse else self.recover_after
        if self._streak >= needed:
            self.status = self._streak_status
            self._reset()
            return True
        return False

    def _reset(self) -> None:
        self._streak = 0
        self._worse = False
        self._streak_status = HealthStatus.PASS

    def is_stale(self, now: float) -> bool:
        """True when the latest result (or, before any, the start) is older than the bound."""
        if self.stale_after is None:
            return False
        since = self.last.monotonic if self.last is not None else self._born
        return now - since > self.stale_after

    def effective(self, now: float) -> HealthStatus:
        """The status to report at ``now``: :attr:`status`, or ``fail`` when stale."""
        if self.is_stale(now):
            return HealthStatus.FAIL
        return self.status

    def view(self, key: str, *, critical: bool, now: float) -> CheckView:
        """A snapshot for aggregation and rendering."""
        stale = self.is_stale(now)
        status = HealthStatus.FAIL if stale else self.status
        return CheckView(key=key, status=status, critical=critical, stale=stale, result=self.last)


def aggregate(views: Iterable[CheckView]) -> HealthStatus:
    """Fold check views into one status by the rules in the module docstring."""
    critical_unknown = False
    warn = False
    for v in views:
        if v.status is HealthStatus.FAIL:
            if v.critical:
                return HealthStatus.FAIL
            warn = True
        elif v.status is HealthStatus.UNKNOWN:
            if v.critical:
                critical_unknown = True
        elif v.status is HealthStatus.WARN:
            warn = True
    if critical_unknown:
        return HealthStatus.UNKNOWN
    return HealthStatus.WARN if warn else HealthStatus.PASS
