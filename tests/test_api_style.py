"""The one API style (docs/topics/design.md): stats() snapshots, close(), start()."""

from __future__ import annotations

import dataclasses

import pytest

from fokha_integration import DedupCache, HealthMonitor, ManualClock, RateLimiter
from fokha_integration.dedup import DedupStats, MemoryDedupBackend, SQLiteDedupBackend
from fokha_integration.health import AlertRouter, AlertStats, HealthStats, callable_check
from fokha_integration.resilience import RateLimiterStats


def _is_frozen_slotted(value: object) -> bool:
    cls = type(value)
    params = getattr(cls, "__dataclass_params__", None)
    return params is not None and params.frozen and "__slots__" in cls.__dict__


async def test_dedup_stats_is_a_frozen_slotted_snapshot() -> None:
    """DedupCache.stats() is sync and returns a frozen, slotted DedupStats that does not move."""
    async with DedupCache() as cache:
        before = cache.stats()
        await cache.claim("k")
        assert isinstance(before, DedupStats) and _is_frozen_slotted(before)
        assert before.first == 0 and cache.stats().first == 1
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.first = 5  # type: ignore[misc]


async def test_health_monitor_stats_snapshot() -> None:
    """HealthMonitor.stats() totals every check; check_stats(key) gives one."""
    clock = ManualClock()

    async def ok() -> bool:
        return True

    check = callable_check(ok, component="db", interval=1.0)
    async with HealthMonitor([check], clock=clock) as monitor:
        await monitor.run_once()
        snap = monitor.stats()
        assert isinstance(snap, HealthStats) and _is_frozen_slotted(snap)
        assert snap.runs == 1 and [c.key for c in snap.checks] == [check.key]
        assert monitor.check_stats(check.key).runs == 1
        with pytest.deprecated_call():
            assert monitor.stats(check.key)["runs"] == 1


async def test_alert_router_and_rate_limiter_stats() -> None:
    """AlertRouter.stats() and RateLimiter.stats() are frozen, slotted snapshots."""
    sent: list[object] = []

    class Sink:
        async def deliver(self, envelope: object) -> None:
            sent.append(envelope)

    router = AlertRouter(sink=Sink())
    snap = router.stats()
    assert isinstance(snap, AlertStats) and _is_frozen_slotted(snap)
    assert (snap.sent, snap.failed, snap.dropped, snap.pending) == (0, 0, 0, 0)
    await router.close()

    limiter = RateLimiter(1.0, burst=1, clock=ManualClock())
    assert limiter.try_acquire() and not limiter.try_acquire()
    stats = limiter.stats()
    assert isinstance(stats, RateLimiterStats) and _is_frozen_slotted(stats)
    assert (stats.acquired, stats.refused, stats.timed_out) == (1, 1, 0)


@pytest.mark.parametrize("make", [MemoryDedupBackend, None])
async def test_aclose_is_a_deprecated_alias_of_close(make: object, tmp_path: object) -> None:
    """DedupCache.aclose() and its backends' aclose() still work, with a DeprecationWarning."""
    backend = MemoryDedupBackend() if make else SQLiteDedupBackend(f"{tmp_path}/d.db")
    cache = DedupCache(backend)
    await cache.claim("k")
    with pytest.deprecated_call():
        await cache.aclose()
    with pytest.deprecated_call():
        await backend.aclose()
