"""Real targets going down and coming back: an aiohttp server and a redis-server.

Checks run every 50 ms. The tests wait on events set by listeners and by the target
itself, each with a bounded timeout; they never sleep to synchronise.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from fokha_integration import Envelope
from fokha_integration.health import (
    AlertRouter,
    CheckResult,
    HealthMonitor,
    HealthStatus,
    StatusChange,
    http_check,
    redis_check,
)
from tests.support import RedisServer, free_port, timeout

P, F = HealthStatus.PASS, HealthStatus.FAIL
INTERVAL = 0.05


class RecordingSink:
    """A sink (``async def deliver(envelope)``) that keeps what it got and signals each one."""

    def __init__(self) -> None:
        self.got: list[Envelope] = []
        self.changed = asyncio.Event()

    async def deliver(self, envelope: Envelope) -> None:
        self.got.append(envelope)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        async def _wait() -> None:
            while len(self.got) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(_wait(), timeout(10))

    def kinds(self) -> list[str]:
        return [e.type for e in self.got]


class Tracker:
    """Counts a check's runs and waits for status changes and run counts."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.runs = 0
        self.changes: list[tuple[HealthStatus, int]] = []
        # consecutive results of the same status, and when that streak began
        self.streak = 0
        self.streak_status: HealthStatus | None = None
        self.streak_began = 0.0
        self.at_change: list[tuple[int, float]] = []  # (streak length, seconds since it began)
        self.cond = asyncio.Condition()
        self.loop = asyncio.get_running_loop()

    def on_result(self, key: str, result: CheckResult) -> None:
        if key == self.key:
            self.runs += 1
            if result.status is self.streak_status:
                self.streak += 1
            else:
                self.streak_status, self.streak = result.status, 1
                self.streak_began = result.started
            self.loop.create_task(self._poke())

    def on_change(self, change: StatusChange) -> None:
        if change.check == self.key:
            self.changes.append((change.new, self.runs))
            assert change.result is not None
            self.at_change.append((self.streak, change.result.started - self.streak_began))
            self.loop.create_task(self._poke())

    async def _poke(self) -> None:
        async with self.cond:
            self.cond.notify_all()

    async def wait(self, predicate: object, limit: float = 10) -> None:
        async def _wait() -> None:
            async with self.cond:
                await self.cond.wait_for(predicate)  # type: ignore[arg-type]

        await asyncio.wait_for(_wait(), timeout(limit))


async def start_app(port: int) -> web.AppRunner:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    return runner


async def outage_cycle(
    monitor: HealthMonitor,
    tracker: Tracker,
    sink: RecordingSink,
    router: AlertRouter,
    stop: object,
    start: object,
    fail_after: int,
    recover_after: int,
) -> None:
    """Drive one down/up cycle and check the hysteresis and the notices."""
    await tracker.wait(lambda: tracker.changes and tracker.changes[-1][0] is P)
    assert sink.got == []  # unknown -> pass is not news
    await stop()  # type: ignore[operator]
    await tracker.wait(lambda: tracker.changes[-1][0] is F)
    # exactly fail_after failing runs in a row, i.e. within fail_after intervals
    streak, span = tracker.at_change[-1]
    assert streak == fail_after
    assert span <= (fail_after - 1) * INTERVAL * 1.1 + timeout(0.5)
    await sink.wait_for(1)
    await start()  # type: ignore[operator]
    await tracker.wait(lambda: tracker.changes[-1][0] is P)
    streak, span = tracker.at_change[-1]
    assert streak == recover_after
    assert span <= (recover_after - 1) * INTERVAL * 1.1 + timeout(0.5)
    await sink.wait_for(2)
    # keep running a while: no more notices while the target stays up
    settled = tracker.runs
    await tracker.wait(lambda: tracker.runs >= settled + 2 * (fail_after + recover_after))
    await router.drain(timeout(5))
    assert sink.kinds() == ["health.alert", "health.resolved"]
    alert, resolved = sink.got
    assert alert.payload["status"] == "fail"
    assert alert.payload["check"] == tracker.key
    assert resolved.payload["status"] == "pass"
    assert [s for s, _ in tracker.changes] == [P, F, P]


async def test_http_target_down_and_up_alerts_once_each_way() -> None:
    """aiohttp target down/up: fail after fail_after, pass after recover_after, 1 notice each."""
    port = free_port()
    runner = await start_app(port)
    check = http_check(
        f"http://127.0.0.1:{port}/", component="api", interval=INTERVAL, jitter=0.1,
        timeout=0.5, fail_after=3, recover_after=2,
    )  # fmt: skip
    tracker = Tracker(check.key)
    sink = RecordingSink()
    router = AlertRouter(sink=sink, min_interval=0, reminder_interval=None)
    monitor = HealthMonitor([check], listeners=[tracker.on_change, router])
    monitor.add_result_listener(tracker.on_result)
    box = {"runner": runner}

    async def stop() -> None:
        await box["runner"].cleanup()

    async def start() -> None:
        box["runner"] = await start_app(port)

    try:
        async with monitor:
            await outage_cycle(monitor, tracker, sink, router, stop, start, 3, 2)
    finally:
        await router.close()
        await box["runner"].cleanup()


@pytest.mark.redis
async def test_redis_target_down_and_up_alerts_once_each_way(tmp_path: Path) -> None:
    """A dedicated redis-server stopped/started: same hysteresis and exactly one notice each way."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found on PATH")
    server = RedisServer(port=free_port(), workdir=tmp_path)
    server.start()
    check = redis_check(
        server.url, interval=INTERVAL, jitter=0.1, timeout=0.5, fail_after=2, recover_after=3,
    )  # fmt: skip
    tracker = Tracker(check.key)
    sink = RecordingSink()
    router = AlertRouter(sink=sink, min_interval=0, reminder_interval=None)
    monitor = HealthMonitor([check], listeners=[tracker.on_change, router])
    monitor.add_result_listener(tracker.on_result)

    async def stop() -> None:
        await asyncio.to_thread(server.stop)

    async def start() -> None:
        await asyncio.to_thread(server.start)

    try:
        async with monitor:
            await outage_cycle(monitor, tracker, sink, router, stop, start, 2, 3)
    finally:
        await router.close()
        server.stop()
