"""The shared backend suite: the same behaviour checked on memory, SQLite and Redis."""

from __future__ import annotations

import asyncio

import pytest

from fokha_integration import ValidationError
from fokha_integration.dedup import ClaimStatus, DedupCache
from tests.dedup.conftest import Env

FIRST = ClaimStatus.FIRST
DUPLICATE = ClaimStatus.DUPLICATE
CONFLICT = ClaimStatus.CONFLICT
IN_FLIGHT = ClaimStatus.IN_FLIGHT

SHORT = {"signal": 0.4, "notification": 0.4, "webhook": 0.2}


async def test_first_then_duplicate(env: Env) -> None:
    """A key is FIRST once; a repeat is DUPLICATE with the same first_seen."""
    cache = env.cache()
    first = await cache.claim("EURUSD_BUY_202611231953")
    again = await cache.claim("EURUSD_BUY_202611231953")
    assert first.status is FIRST
    assert first.is_first
    assert again.status is DUPLICATE
    assert not again.is_first
    assert again.first_seen == pytest.approx(first.first_seen, abs=1e-3)
    assert first.expires_at == pytest.approx(first.first_seen + 300, abs=1e-3)
    assert first.key == again.key == "EURUSD_BUY_202611231953"


async def test_second_backend_on_same_storage_sees_the_claim(env: Env) -> None:
    """Another backend instance on the same storage sees the key as DUPLICATE."""
    a, b = env.cache(), env.cache()
    assert (await a.claim("k1")).status is FIRST
    assert (await b.claim("k1")).status is DUPLICATE


async def test_concurrent_claims_of_one_key_give_one_first(env: Env) -> None:
    """Of 50 concurrent coroutines claiming one key (over two backend instances), one wins."""
    caches = [env.cache(), env.cache()]
    results = await asyncio.gather(*(caches[i % 2].claim("hot") for i in range(50)))
    assert sum(r.status is FIRST for r in results) == 1
    assert sum(r.status is DUPLICATE for r in results) == 49


async def test_claim_many_keeps_order_and_repeats(env: Env) -> None:
    """claim_many answers in order; a key already held or repeated in the batch is DUPLICATE."""
    cache = env.cache()
    await cache.claim("b")
    results = await cache.claim_many(["a", "b", "c", "a"])
    assert [r.status for r in results] == [FIRST, DUPLICATE, FIRST, DUPLICATE]
    assert [r.key for r in results] == ["a", "b", "c", "a"]
    assert (await cache.claim("c")).status is DUPLICATE
    assert list(await cache.claim_many([])) == []
    stats = cache.stats()
    assert (stats.first, stats.duplicates) == (3, 3)


async def test_types_are_separate(env: Env) -> None:
    """The same key under two message types is two entries."""
    cache = env.cache()
    assert (await cache.claim("x", type="signal")).status is FIRST
    assert (await cache.claim("x", type="webhook")).status is FIRST
    assert (await cache.claim("x", type="webhook")).status is DUPLICATE


async def test_ttl_expiry_frees_the_key(env: Env) -> None:
    """After its TTL the key is FIRST again."""
    cache = env.cache(ttl_by_type=SHORT)
    assert (await cache.claim("k")).status is FIRST
    assert await cache.seen("k")
    await env.expire(cache, "k", type="signal", seconds=SHORT["signal"])
    assert not await cache.seen("k")
    assert (await cache.claim("k")).status is FIRST


async def test_ttl_is_per_type(env: Env) -> None:
    """Each type keeps its own TTL: the webhook entry expires, the signal entry stays."""
    cache = env.cache(ttl_by_type={"signal": 60, "webhook": 0.2})
    assert cache.ttl_for("webhook") == 0.2
    assert cache.ttl_for("other") == 60.0
    await cache.claim("k", type="signal")
    await cache.claim("k", type="webhook")
    await env.expire(cache, "k", type="webhook", seconds=0.2)
    assert (await cache.claim("k", type="webhook")).status is FIRST
    assert (await cache.claim("k", type="signal")).status is DUPLICATE


async def test_ttl_override_for_a_sliding_window(env: Env) -> None:
    """claim(ttl=...) overrides the type's TTL."""
    cache = env.cache()
    first = await cache.claim("EURUSD_BUY", ttl=0.2)
    assert first.expires_at == pytest.approx(first.first_seen + 0.2, abs=1e-3)
    await env.expire(cache, "EURUSD_BUY", type="signal", seconds=0.2)
    assert (await cache.claim("EURUSD_BUY", ttl=0.2)).status is FIRST


async def test_fingerprint_conflict(env: Env) -> None:
    """Same fingerprint is DUPLICATE; a different one is CONFLICT; none compares nothing."""
    cache = env.cache()
    assert (await cache.claim("k", fingerprint="aaa")).status is FIRST
    assert (await cache.claim("k", fingerprint="aaa")).status is DUPLICATE
    assert (await cache.claim("k", fingerprint="bbb")).status is CONFLICT
    assert (await cache.claim("k")).status is DUPLICATE
    assert (await cache.claim("plain")).status is FIRST
    assert (await cache.claim("plain", fingerprint="bbb")).status is DUPLICATE
    assert cache.stats().conflicts == 1


async def test_fingerprint_of_an_expired_entry_is_forgotten(env: Env) -> None:
    """A new holder after expiry is judged by its own fingerprint, not the old one."""
    cache = env.cache(ttl_by_type=SHORT)
    await cache.claim("k", fingerprint="old")
    await env.expire(cache, "k", type="signal", seconds=SHORT["signal"])
    assert (await cache.claim("k")).status is FIRST
    assert (await cache.claim("k", fingerprint="new")).status is DUPLICATE


async def test_lease_is_in_flight_then_commit_replays_the_result(env: Env) -> None:
    """A leased key is IN_FLIGHT for others; after commit a repeat returns the stored result."""
    cache = env.cache()
    held = await cache.claim("order-1", lease=30)
    assert held.status is FIRST
    assert held.token
    other = await cache.claim("order-1", lease=30)
    assert other.status is IN_FLIGHT
    assert other.token is None
    peeked = await cache.peek("order-1")
    assert peeked is not None
    assert peeked.status is IN_FLIGHT
    assert await cache.commit("order-1", b'{"ticket": 42}', token=held.token)
    replay = await cache.claim("order-1")
    assert replay.status is DUPLICATE
    assert replay.result == b'{"ticket": 42}'
    assert replay.first_seen == pytest.approx(held.first_seen, abs=1e-3)
    assert replay.expires_at is not None
    assert replay.expires_at >= held.first_seen + 299
    assert cache.stats().in_flight == 1


async def test_commit_accepts_text_and_empty_results(env: Env) -> None:
    """A str result is stored as UTF-8; an empty result still marks the key done."""
    cache = env.cache()
    await cache.claim("a", lease=30)
    assert await cache.commit("a", "ok ✓")
    assert (await cache.claim("a")).result == "ok ✓".encode()
    await cache.claim("b", lease=30)
    assert await cache.commit("b")
    answer = await cache.claim("b")
    assert answer.status is DUPLICATE
    assert answer.result == b""


async def test_expired_lease_frees_the_key_and_fences_the_old_holder(env: Env) -> None:
    """A crashed holder's lease runs out: the key is FIRST again and the old token is refused."""
    cache = env.cache()
    crashed = await cache.claim("job", lease=0.2)
    await env.expire(cache, "job", type="signal", seconds=0.2)
    taker = await cache.claim("job", lease=30)
    assert taker.status is FIRST
    assert taker.token != crashed.token
    assert not await cache.commit("job", b"late", token=crashed.token)
    assert not await cache.release("job", token=crashed.token)
    assert await cache.commit("job", b"done", token=taker.token)
    assert (await cache.claim("job")).result == b"done"


async def test_commit_after_expiry_recreates_the_entry(env: Env) -> None:
    """Committing after the entry expired (nobody else holds it) still remembers the work."""
    cache = env.cache()
    held = await cache.claim("job", lease=0.2)
    await env.expire(cache, "job", type="signal", seconds=0.2)
    assert await cache.commit("job", b"r", token=held.token)
    answer = await cache.claim("job")
    assert answer.status is DUPLICATE
    assert answer.result == b"r"


async def test_release(env: Env) -> None:
    """release frees an uncommitted claim; a wrong token or a committed key is kept."""
    cache = env.cache()
    held = await cache.claim("k", lease=30)
    assert not await cache.release("k", token="not-mine")
    assert (await cache.claim("k")).status is IN_FLIGHT
    assert await cache.release("k", token=held.token)
    assert not await cache.seen("k")
    again = await cache.claim("k", lease=30)
    assert again.status is FIRST
    assert await cache.commit("k", b"x", token=again.token)
    assert not await cache.release("k", token=again.token)
    assert await cache.seen("k")
    await cache.claim("plain")
    assert await cache.release("plain")
    assert (await cache.claim("plain")).status is FIRST
    assert not await cache.release("never-claimed")


async def test_seen_peek_forget(env: Env) -> None:
    """seen/peek only look; forget drops the key whatever its state."""
    cache = env.cache()
    assert not await cache.seen("k")
    assert await cache.peek("k") is None
    assert (await cache.claim("k")).status is FIRST
    assert await cache.seen("k")
    peeked = await cache.peek("k")
    assert peeked is not None
    assert peeked.status is DUPLICATE
    assert cache.stats().duplicates == 0  # looking is not claiming
    assert await cache.forget("k")
    assert not await cache.forget("k")
    assert (await cache.claim("k")).status is FIRST


async def test_clear_by_type_and_all(env: Env) -> None:
    """clear(type) drops that type only; clear() drops everything."""
    cache = env.cache()
    await cache.claim_many(["a", "b"], type="signal")
    await cache.claim("a", type="webhook")
    assert await cache.clear("signal") == 2
    assert not await cache.seen("a", type="signal")
    assert await cache.seen("a", type="webhook")
    await cache.claim("c", type="notification")
    assert await cache.clear() == 2
    assert not await cache.seen("a", type="webhook")
    assert not await cache.seen("c", type="notification")


async def test_limits_are_enforced(env: Env) -> None:
    """Keys, types, fingerprints, leases and results are validated and bounded."""
    cache = env.cache(max_result_bytes=16)
    for bad in ("", "x" * 513, 42, None):
        with pytest.raises(ValidationError):
            await cache.claim(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await cache.claim_many(["ok", ""])
    with pytest.raises(ValidationError):
        await cache.claim_many(["k"] * 10_001)
    with pytest.raises(ValidationError):
        await cache.claim("k", type="bad type")
    with pytest.raises(ValidationError):
        await cache.claim("k", type="bad type", ttl=5)
    with pytest.raises(ValidationError):
        await cache.claim("k", ttl=-1)
    with pytest.raises(ValidationError):
        await cache.claim("k", fingerprint="f" * 257)
    with pytest.raises(ValidationError):
        await cache.claim("k", lease=0)
    await cache.claim("k", lease=30)
    with pytest.raises(ValidationError):
        await cache.commit("k", b"x" * 17)
    assert await cache.commit("k", b"x" * 16)
    with pytest.raises(ValidationError):
        await cache.commit("k", b"x", token="t" * 65)
    with pytest.raises(ValidationError):
        await cache.release("k", token=b"bytes")  # type: ignore[arg-type]


async def test_binary_safe_keys_and_results(env: Env) -> None:
    """Keys with separators and braces and binary results survive the round trip."""
    cache = env.cache()
    key = "a|b:{c}}|d ünï"
    await cache.claim(key, lease=30, fingerprint="fp|with|bars")
    payload = bytes(range(256))
    assert await cache.commit(key, payload)
    answer = await cache.claim(key, fingerprint="fp|with|bars")
    assert answer.status is DUPLICATE
    assert answer.result == payload
    assert (await cache.claim(key, fingerprint="other")).status is CONFLICT


async def test_context_manager_closes_the_backend(env: Env) -> None:
    """DedupCache is an async context manager."""
    async with DedupCache(env.backend(), clock=env.clock) as cache:
        assert (await cache.claim("k")).status is FIRST
