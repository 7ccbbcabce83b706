"""Each built-in check against a real local target (sockets, files, redis-server, breaker)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from websockets.asyncio.server import serve

from fokha_integration import CircuitBreaker, ConfigError, ManualClock
from fokha_integration.health import (
    Check,
    HealthMonitor,
    HealthStatus,
    Observation,
    breaker_check,
    callable_check,
    file_check,
    http_check,
    loop_lag_check,
    redis_check,
    tcp_check,
    websocket_check,
)
from tests.support import RedisServer, free_port, timeout

P, W, F = HealthStatus.PASS, HealthStatus.WARN, HealthStatus.FAIL


async def run(check: Check) -> Observation:
    """Run one check once through a monitor; its latest result as an Observation."""
    monitor = HealthMonitor([check])
    try:
        report = await asyncio.wait_for(monitor.run_once(), timeout(10))
    finally:
        await monitor.close()
    (_, view) = report.checks[0]
    assert view.result is not None
    r = view.result
    return Observation(r.status, r.observed_value, r.observed_unit, r.output)


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    """A local aiohttp app with /ok, /down, /slow and /json."""
    release = asyncio.Event()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="all good")

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    async def slow(request: web.Request) -> web.Response:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(release.wait(), 0.05)  # a slow response, by design
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/down", down)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_http_status_body_and_latency(http_url: str) -> None:
    """HTTP: 2xx passes with latency in ms; 503 fails; body predicate; over max_latency warns."""
    ok = await run(http_check(f"{http_url}/ok", component="api"))
    assert ok.status is P
    assert ok.unit == "ms"
    assert isinstance(ok.value, float)
    assert (await run(http_check(f"{http_url}/down", component="api"))).status is F
    assert (await run(http_check(f"{http_url}/down", expect_status=503))).status is P
    matched = await run(http_check(f"{http_url}/ok", body=lambda t: "good" in t))
    assert matched.status is P
    unmatched = await run(http_check(f"{http_url}/ok", body=lambda t: "bad" in t))
    assert unmatched.status is F
    assert "body" in unmatched.output
    slow = await run(http_check(f"{http_url}/slow", max_latency=0.01, timeout=timeout(5)))
    assert slow.status is W
    assert "slow" in slow.output


async def test_http_connection_refused_fails() -> None:
    """HTTP to a closed port fails with the connection error as output."""
    port = free_port()
    result = await run(http_check(f"http://127.0.0.1:{port}/", timeout=timeout(5)))
    assert result.status is F
    assert result.output


def test_bad_config_is_rejected() -> None:
    """Bad URLs and counts are ConfigErrors naming the field."""
    with pytest.raises(ConfigError, match="url"):
        http_check("ftp://x/")
    with pytest.raises(ConfigError, match="url"):
        redis_check("rediss://x/")
    with pytest.raises(ConfigError, match="fail_after"):
        tcp_check("127.0.0.1", 1, fail_after=0)
    with pytest.raises(ConfigError, match="jitter"):
        tcp_check("127.0.0.1", 1, jitter=1.5)


async def test_tcp_open_and_closed_port() -> None:
    """TCP passes against a listening socket and fails against a closed port."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await run(tcp_check("127.0.0.1", port))).status is P
    finally:
        server.close()
        await server.wait_closed()
    assert (await run(tcp_check("127.0.0.1", free_port(), timeout=timeout(5)))).status is F


async def test_websocket_connect_and_ping() -> None:
    """WebSocket: connect and ping pass against a websockets server; a closed port fails."""

    async def handler(ws: object) -> None:
        await ws.wait_closed()  # type: ignore[attr-defined]

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        got = await run(websocket_check(f"ws://127.0.0.1:{port}/", timeout=timeout(5)))
        assert got.status is P
        assert got.unit == "ms"
    gone = await run(websocket_check(f"ws://127.0.0.1:{port}/", timeout=timeout(5)))
    assert gone.status is F


@pytest.mark.redis
async def test_redis_ping_against_real_server(redis_server: RedisServer) -> None:
    """Redis: PING against the private redis-server passes; a closed port fails."""
    got = await run(redis_check(redis_server.url, timeout=timeout(5)))
    assert got.status is P, got.output
    assert got.unit == "ms"
    bad = await run(redis_check(f"redis://127.0.0.1:{free_port()}/0", timeout=timeout(5)))
    assert bad.status is F


@pytest.mark.redis
async def test_redis_auth_error_is_reported(redis_server: RedisServer) -> None:
    """Redis: a password the server does not expect fails with the server's error text."""
    url = f"redis://:wrong@127.0.0.1:{redis_server.port}/0"
    got = await run(redis_check(url, timeout=timeout(5)))
    assert got.status is F
    assert "ERR" in got.output or "AUTH" in got.output.upper()


async def test_file_heartbeat_age(tmp_path: Path) -> None:
    """File: fresh heartbeat passes, old one fails (warn in between), missing fails."""
    beat = tmp_path / "peer.heartbeat"
    beat.write_text("x")
    assert (await run(file_check(beat, max_age=30))).status is P
    now = time.time()
    os.utime(beat, (now - 20, now - 20))
    assert (await run(file_check(beat, max_age=30, warn_age=10))).status is W
    os.utime(beat, (now - 60, now - 60))
    old = await run(file_check(beat, max_age=30))
    assert old.status is F
    assert isinstance(old.value, float)
    assert old.value >= 59
    assert (await run(file_check(tmp_path / "missing", max_age=30))).status is F


async def test_callable_results() -> None:
    """Callable: True/None pass, False fails, HealthStatus and Observation are kept."""

    async def yes() -> bool:
        return True

    async def no() -> bool:
        return False

    async def degraded() -> HealthStatus:
        return W

    assert (await run(callable_check(yes, component="a"))).status is P
    assert (await run(callable_check(no, component="a"))).status is F
    assert (await run(callable_check(degraded, component="a"))).status is W


async def test_callable_timeout_is_a_failure() -> None:
    """A probe that never returns is cut at its timeout and reported as timed out."""
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    got = await run(callable_check(hang, component="hang", timeout=0.05))
    assert got.status is F
    assert "timed out" in got.output


async def test_loop_lag_detects_a_blocked_loop() -> None:
    """Event-loop lag: a callback that blocks the loop during the probe's sleep makes it warn."""
    assert (await run(loop_lag_check())).status is P
    monitor = HealthMonitor([loop_lag_check(warn_above=0.02, fail_above=5, sample=0.01)])
    try:
        # the blocking code under test: it fires inside the probe's 10 ms sleep
        asyncio.get_running_loop().call_later(0.001, time.sleep, 0.06)
        report = await asyncio.wait_for(monitor.run_once(), timeout(10))
    finally:
        await monitor.close()
    view = report.checks[0][1]
    assert view.status is W
    assert view.critical is False


async def test_loop_lag_catches_a_block_between_two_runs() -> None:
    """A loop blocked between two runs (not during a probe) still shows in the next run."""
    check = loop_lag_check(warn_above=0.02, fail_above=0.1, sample=0.005, interval=60)
    monitor = HealthMonitor([check])
    try:
        first = await asyncio.wait_for(monitor.run_once(), timeout(10))
        assert first.checks[0][1].status is P
        time.sleep(0.2)  # the blocking code under test: the loop stalls between two runs
        report = await asyncio.wait_for(monitor.run_once(), timeout(10))
    finally:
        await monitor.close()
    result = report.checks[0][1].result
    assert result is not None and result.status is F
    assert isinstance(result.observed_value, float) and result.observed_value >= 150


async def test_breaker_open_is_warn_not_fail() -> None:
    """Breaker: closed passes; open warns, and the service is warn (degraded), not fail."""
    clock = ManualClock()
    breaker = CircuitBreaker("quotes", clock=clock)
    monitor = HealthMonitor([breaker_check(breaker)], clock=clock)
    try:
        report = await monitor.run_once()
        assert report.status is P
        breaker.trip()
        report = await monitor.run_once()
        assert report.checks[0][1].status is W
        assert report.checks[0][1].result is not None
        assert report.checks[0][1].result.observed_value == "open"
        assert report.status is W
    finally:
        await monitor.close()
