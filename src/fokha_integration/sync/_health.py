"""A :class:`~fokha_integration.health.Check` for a :class:`SyncService`."""

from __future__ import annotations

from typing import Any

from ..health import Check, HealthStatus, Observation, callable_check
from ._service import SyncService

__all__ = ["sync_check"]


def sync_check(
    service: SyncService,
    *,
    component: str = "sync",
    max_lag: int = 10_000,
    max_conflicts: int = 100,
    **opts: Any,
) -> Check:
    """Fails when the store cannot be read; warns when a live client lags more than
    ``max_lag`` changes or more than ``max_conflicts`` conflicts wait for a decision.
    The value is the largest lag."""

    async def probe() -> Observation:
        m = await service.metrics()
        worst = max(m.lag.values(), default=0)
        problems = []
        if worst > max_lag:
            problems.append(f"a client lags {worst} changes")
        if m.unresolved_conflicts > max_conflicts:
            problems.append(f"{m.unresolved_conflicts} unresolved conflicts")
        status = HealthStatus.WARN if problems else HealthStatus.PASS
        return Observation(status, worst, "changes", "; ".join(problems))

    return callable_check(probe, component=component, **opts)
