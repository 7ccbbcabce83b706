"""Redis backend specifics: key layout, fail modes across a real outage, error translation."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fokha_integration import BackendError, BackendUnavailableError, ConfigError
from fokha_integration.dedup import ClaimStatus, DedupCache, signal_key
from tests.support import RedisServer, free_port, timeout

redis = pytest.importorskip("redis")
from fokha_integration.dedup.redis import RedisDedupBackend  # noqa: E402

pytestmark = pytest.mark.redis


@pytest.fixture
def own_redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it is stopped and started during the test)."""
    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_keys_are_namespaced_with_a_cluster_hash_tag(redis_url: str) -> None:
    """Entries live at {namespace}:{type}:{{key}}: one slot per key, namespace required."""
    backend = RedisDedupBackend(redis_url, namespace="fokha-test")
    async with DedupCache(backend) as cache:
        await cache.claim("EURUSD_BUY_202611231200")
        await cache.claim_many(["a", "b"], type="webhook")
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            names = sorted([k async for k in client.scan_iter(match="fokha-test:*")])
            ttl = await client.pttl(b"fokha-test:signal:{EURUSD_BUY_202611231200}")
        finally:
            await client.aclose()
    assert names == [
        b"fokha-test:signal:{EURUSD_BUY_202611231200}",
        b"fokha-test:webhook:{a}",
        b"fokha-test:webhook:{b}",
    ]
    assert 299_000 < ttl <= 300_000
    assert backend.redis_key("signal", "x") == "fokha-test:signal:{x}"


def test_namespace_is_required_and_checked(redis_url: str) -> None:
    """A namespace must be given and be plain; url and client are exclusive."""
    with pytest.raises(TypeError):
        RedisDedupBackend(redis_url)  # type: ignore[call-arg]
    with pytest.raises(ConfigError):
        RedisDedupBackend(redis_url, namespace="a:b{c}")
    with pytest.raises(ConfigError):
        RedisDedupBackend(namespace="ns")


async def test_clear_leaves_other_namespaces_alone(redis_url: str) -> None:
    """clear() scans only its own namespace."""
    async with (
        DedupCache(RedisDedupBackend(redis_url, namespace="one")) as one,
        DedupCache(RedisDedupBackend(redis_url, namespace="two")) as two,
    ):
        await one.claim_many([f"k{i}" for i in range(1500)])
        await two.claim("k1")
        assert await one.clear() == 1500
        assert await two.seen("k1")


async def test_a_foreign_value_is_a_backend_error(redis_url: str) -> None:
    """A key holding a value this library did not write raises BackendError, not garbage."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.set("ns:signal:{k}", "hello")
    finally:
        await client.aclose()
    async with DedupCache(RedisDedupBackend(redis_url, namespace="ns")) as cache:
        with pytest.raises(BackendError):
            await cache.claim("k")


async def test_fail_modes_through_an_outage(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped: closed raises, open says FIRST and warns; restarted: both work again."""
    closed = DedupCache(
        RedisDedupBackend(own_redis.url, namespace="ns", socket_timeout=1, connect_timeout=1)
    )
    opened = DedupCache(
        RedisDedupBackend(own_redis.url, namespace="ns", socket_timeout=1, connect_timeout=1),
        fail_mode="open",
    )
    try:
        assert (await closed.claim("before")).status is ClaimStatus.FIRST
        assert (await opened.claim("before")).status is ClaimStatus.DUPLICATE

        own_redis.stop()
        with pytest.raises(BackendUnavailableError) as info:
            await closed.claim("during")
        assert info.value.backend == "redis"
        with pytest.raises(BackendUnavailableError):
            await closed.claim_many(["x", "y"])
        with caplog.at_level(logging.WARNING, logger="fokha_integration.dedup"):
            answer = await opened.claim("during")
        assert answer.status is ClaimStatus.FIRST
        assert answer.degraded
        assert "failing open" in caplog.text
        batch = await opened.claim_many(["x", "y"])
        assert all(r.degraded and r.status is ClaimStatus.FIRST for r in batch)
        assert not await opened.seen("before")  # open: "not seen"
        assert opened.stats().fail_open == 4
        assert closed.stats().errors == 2
        assert closed.stats().fail_open == 0

        own_redis.start()  # same port, empty (no persistence)
        assert (await closed.claim("after")).status is ClaimStatus.FIRST
        assert (await opened.claim("after")).status is ClaimStatus.DUPLICATE
        assert not (await opened.claim("after")).degraded
    finally:
        await closed.close()
        await opened.close()


async def test_unreachable_server_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """A server that was never there is unavailable too (closed raises, open degrades)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with DedupCache(
        RedisDedupBackend(url, namespace="ns", connect_timeout=1, socket_timeout=1)
    ) as cache:
        with pytest.raises(BackendUnavailableError):
            await cache.claim("k")
        with pytest.raises(BackendUnavailableError):
            await cache.commit("k", b"r")
    async with DedupCache(
        RedisDedupBackend(url, namespace="ns", connect_timeout=1, socket_timeout=1),
        fail_mode="open",
    ) as cache:
        assert (await cache.claim("k")).degraded
        assert not await cache.commit("k", b"r")
        assert not await cache.release("k")
        assert not await cache.forget("k")
        with pytest.raises(BackendUnavailableError):
            await cache.clear()


async def test_works_with_a_caller_made_client(redis_url: str) -> None:
    """client= takes a ready redis.asyncio client, which the backend then does not close."""
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with DedupCache(RedisDedupBackend(client=client, namespace="mine")) as cache:
            await cache.claim("k", lease=30)
            assert await cache.commit("k", "done")
            assert (await cache.claim("k")).result == b"done"
        assert await client.ping()
    finally:
        await client.aclose()


async def test_real_sliding_window_and_lease(redis_url: str) -> None:
    """Real time on Redis: a 0.3 s sliding window and a 0.3 s lease run out on the server."""
    async with DedupCache(RedisDedupBackend(redis_url, namespace="rt")) as cache:
        key = signal_key("EURUSD", "BUY", time.time(), 1, mode="sliding")
        first = await cache.claim(key, ttl=0.3)
        held = await cache.claim("job", lease=0.3)
        assert (await cache.claim(key, ttl=0.3)).status is ClaimStatus.DUPLICATE
        assert (await cache.claim("job")).status is ClaimStatus.IN_FLIGHT
        deadline = time.monotonic() + timeout(5)
        while await cache.seen(key) or await cache.seen("job"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)  # waiting on the server's expiry, bounded
        assert time.time() >= first.first_seen + 0.29
        assert (await cache.claim(key, ttl=0.3)).status is ClaimStatus.FIRST
        taker = await cache.claim("job", lease=30)
        assert taker.status is ClaimStatus.FIRST
        assert not await cache.commit("job", b"late", token=held.token)
