"""200 checks against local targets, one of which hangs: nobody waits for anybody."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from aiohttp import web

from fokha_integration.health import CheckResult, HealthMonitor, HealthStatus, http_check, tcp_check
from tests.support import timeout

INTERVAL = 1.0
HANG_TIMEOUT = 0.3


async def test_200_checks_with_one_hanging_keep_their_schedule() -> None:
    """Every check keeps its schedule; the hanging one times out each run; none blocks another."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    http_port = runner.addresses[0][1]

    # a plain TCP target that accepts and closes
    def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    tcp_server = await asyncio.start_server(close_at_once, "127.0.0.1", 0, backlog=1024)
    tcp_port = tcp_server.sockets[0].getsockname()[1]

    # a target that accepts connections and never answers
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    hang_server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    hang_port = hang_server.sockets[0].getsockname()[1]

    checks = [
        http_check(
            f"http://127.0.0.1:{http_port}/", component=f"http{i}", interval=INTERVAL, timeout=5
        )
        for i in range(100)
    ]
    checks += [
        tcp_check("127.0.0.1", tcp_port, component=f"tcp{i}", interval=INTERVAL, timeout=5)
        for i in range(99)
    ]
    hanging = http_check(
        f"http://127.0.0.1:{hang_port}/", component="hang", interval=INTERVAL,
        timeout=HANG_TIMEOUT,
    )  # fmt: skip
    checks.append(hanging)
    assert len(checks) == 200

    results: dict[str, list[CheckResult]] = defaultdict(list)
    enough = asyncio.Event()

    def on_result(key: str, result: CheckResult) -> None:
        results[key].append(result)
        if key == hanging.key and len(results[key]) >= 4:
            enough.set()

    monitor = HealthMonitor(checks, seed=7)
    monitor.add_result_listener(on_result)
    started = time.monotonic()
    try:
        async with monitor:
            await asyncio.wait_for(enough.wait(), timeout(15))
            elapsed = time.monotonic() - started
            report = monitor.report()
    finally:
        for w in held:
            w.close()
        hang_server.close()
        tcp_server.close()
        await asyncio.wait_for(runner.cleanup(), timeout(10))

    hang_runs = results.pop(hanging.key)
    assert all(r.timed_out and r.status is HealthStatus.FAIL for r in hang_runs)
    # cut at its timeout (the slack is event-loop lag on a loaded 2-core machine)
    durations = [r.duration for r in hang_runs]
    assert all(HANG_TIMEOUT <= d < HANG_TIMEOUT + timeout(1.0) for d in durations), durations

    # everyone else ran on schedule while the hanging check was stuck four times
    expected_runs = int(elapsed / INTERVAL) - 1
    assert len(results) == 199
    slow_starters = {k: len(v) for k, v in results.items() if len(v) < expected_runs}
    assert slow_starters == {}, f"checks behind schedule after {elapsed:.2f}s"
    drifts = sorted(r.started - r.scheduled for v in results.values() for r in v)
    p99 = drifts[int(len(drifts) * 0.99) - 1]
    assert p99 < timeout(0.5), f"p99 scheduling drift {p99:.3f}s"
    assert all(r.status is HealthStatus.PASS for v in results.values() for r in v)
    # the hanging check is critical and failing: the service is down, the others pass
    views = {c.key: v for c, v in report.checks}
    assert views[hanging.key].status is HealthStatus.FAIL
    assert report.status is HealthStatus.FAIL
    assert sum(v.status is HealthStatus.PASS for v in views.values()) == 199
