"""The memory backend: eviction policy, monotonic time, batches, synchronous claims."""

from __future__ import annotations

import pytest

from fokha_integration import ManualClock, ValidationError
from fokha_integration.dedup import ClaimStatus, DedupCache, MemoryDedupBackend
from fokha_integration.dedup.memory import ClaimBatch

FIRST = ClaimStatus.FIRST
DUPLICATE = ClaimStatus.DUPLICATE


def make(max_entries: int = 100_000) -> tuple[DedupCache, MemoryDedupBackend, ManualClock]:
    clock = ManualClock()
    backend = MemoryDedupBackend(max_entries=max_entries, clock=clock)
    return DedupCache(backend, clock=clock), backend, clock


async def test_default_backend_is_memory() -> None:
    """DedupCache() with no backend uses a memory backend and the default TTL table."""
    cache = DedupCache()
    assert isinstance(cache.backend, MemoryDedupBackend)
    assert (cache.ttl_for("signal"), cache.ttl_for("notification"), cache.ttl_for("webhook")) == (
        300.0,
        60.0,
        30.0,
    )
    assert cache.fail_mode == "closed"


async def test_ttl_boundary_on_the_manual_clock() -> None:
    """An entry is held until exactly its TTL has passed, and not a moment longer."""
    cache, _, clock = make()
    await cache.claim("k", type="webhook")
    clock.advance(29.999)
    assert (await cache.claim("k", type="webhook")).status is DUPLICATE
    clock.advance(0.001)
    assert (await cache.claim("k", type="webhook")).status is FIRST


async def test_wall_clock_step_does_not_change_expiry() -> None:
    """Expiry runs on monotonic time: stepping the wall clock neither expires nor extends."""
    cache, _, clock = make()
    await cache.claim("k")
    clock.set_wall(clock.time() + 10_000)
    assert (await cache.claim("k")).status is DUPLICATE
    clock.set_wall(clock.time() - 20_000)
    clock.advance(300)
    assert (await cache.claim("k")).status is FIRST


async def test_lease_expiry_on_the_manual_clock() -> None:
    """A lease holds for its length on the monotonic clock, then the key is free."""
    cache, _, clock = make()
    await cache.claim("k", lease=5)
    clock.advance(4.9)
    assert (await cache.claim("k")).status is ClaimStatus.IN_FLIGHT
    clock.advance(0.1)
    assert (await cache.claim("k")).status is FIRST


async def test_eviction_drops_oldest_first_and_counts() -> None:
    """At the bound, the oldest live entries are evicted (in groups) and counted."""
    cache, backend, _ = make(max_entries=128)
    for i in range(128):
        await cache.claim(f"k{i}")
    assert len(backend) == 128
    await cache.claim("new")
    assert len(backend) <= 128
    evicted = cache.stats().evictions
    assert evicted == 2  # max(1, 128 // 64)
    assert (await cache.claim("k0")).status is FIRST  # the oldest went first
    assert (await cache.claim("k127")).status is DUPLICATE
    assert (await cache.claim("new")).status is DUPLICATE


async def test_expired_entries_are_swept_before_live_ones_are_evicted() -> None:
    """When the bound is hit and enough keys arrived, expired entries go first, uncounted."""
    cache, backend, clock = make(max_entries=64)
    for i in range(32):
        await cache.claim(f"short{i}", type="webhook")
    for i in range(32):
        await cache.claim(f"long{i}", type="webhook", ttl=1000)
    clock.advance(31)  # the short ones expired
    # 16 arrivals drop the oldest (expired) entries one by one; the 17th arrival at the
    # bound triggers a sweep of all the other expired ones: room for all 32.
    for i in range(32):
        await cache.claim(f"more{i}", type="webhook")
    assert cache.stats().evictions == 0
    for i in range(32):
        assert (await cache.claim(f"long{i}", type="webhook")).status is DUPLICATE
    assert len(backend) <= 64


async def test_rewritten_key_moves_to_the_back_of_the_eviction_order() -> None:
    """A commit re-writes an entry, so it is evicted after the entries written before it."""
    cache, _, _ = make(max_entries=64)
    await cache.claim("old", lease=60)
    for i in range(63):
        await cache.claim(f"k{i}")
    assert await cache.commit("old", b"r")
    await cache.claim("overflow")  # evicts the oldest group: k0 (old was re-written)
    assert (await cache.claim("old")).result == b"r"
    assert (await cache.claim("k0")).status is FIRST


async def test_bound_is_per_type() -> None:
    """Each message type has its own bound: one busy type does not evict another."""
    cache, _, _ = make(max_entries=8)
    await cache.claim("keep", type="signal")
    for i in range(100):
        await cache.claim(f"n{i}", type="notification")
    assert (await cache.claim("keep", type="signal")).status is DUPLICATE


async def test_claim_many_over_the_bound_stays_bounded() -> None:
    """A batch larger than the bound keeps the bound and answers every key."""
    cache, backend, _ = make(max_entries=100)
    batch = await cache.claim_many([f"k{i}" for i in range(1000)])
    assert isinstance(batch, ClaimBatch)
    assert batch.first == 1000
    assert len(backend) <= 100
    assert cache.stats().evictions == 900


async def test_claim_batch_is_a_sequence_of_results() -> None:
    """ClaimBatch indexes, slices and iterates like a list of ClaimResult."""
    cache, _, _ = make()
    await cache.claim("b", lease=60)
    batch = await cache.claim_many(["a", "b", "a"])
    assert isinstance(batch, ClaimBatch)
    assert len(batch) == 3
    assert batch[0].status is FIRST
    assert batch[-1].status is DUPLICATE
    assert batch[1].status is ClaimStatus.IN_FLIGHT
    assert [r.key for r in batch[0:2]] == ["a", "b"]
    assert [r.status for r in batch] == batch.statuses()
    assert batch.first_keys == ["a"]
    with pytest.raises(IndexError):
        batch[3]
    assert cache.stats().in_flight == 1


async def test_sweep_drops_expired_entries() -> None:
    """sweep() drops expired entries without counting evictions."""
    _, backend, clock = make()
    cache = DedupCache(backend, clock=clock)
    await cache.claim_many(["a", "b"], type="webhook")
    await cache.claim("c", type="signal")
    clock.advance(31)
    assert backend.sweep() == 2
    assert len(backend) == 1
    assert backend.evictions == 0


async def test_claim_nowait_is_the_synchronous_claim() -> None:
    """claim_nowait answers like claim, counted in the same stats."""
    cache, _, _ = make()
    assert cache.claim_nowait("k").status is FIRST
    assert (await cache.claim("k")).status is DUPLICATE
    assert cache.claim_nowait("k", fingerprint="x").status is DUPLICATE
    assert cache.stats().first == 1
    assert cache.stats().duplicates == 2
    with pytest.raises(ValidationError):
        cache.claim_nowait("")


def test_max_entries_is_validated() -> None:
    """A non-positive bound is refused."""
    with pytest.raises(ValidationError):
        MemoryDedupBackend(max_entries=0)


async def test_batch_reclaim_of_an_expired_key_moves_it_to_the_back() -> None:
    """A key re-claimed by a batch after expiry is evicted after keys written before it."""
    cache, _, clock = make(max_entries=64)
    await cache.claim_many(["old"], type="webhook")
    clock.advance(31)  # "old" expired
    await cache.claim_many([f"k{i}" for i in range(62)], type="webhook")
    await cache.claim_many(["old"], type="webhook")  # re-claimed: now the newest
    await cache.claim_many(["x1", "x2"], type="webhook")  # x2 finds it full: the oldest goes
    assert (await cache.claim("old", type="webhook")).status is DUPLICATE
    assert (await cache.claim("k0", type="webhook")).status is FIRST
