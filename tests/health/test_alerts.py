"""AlertRouter: alert/resolve/reminder notices, no storm when a check flaps, webhook delivery."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from fokha_integration import ConfigError, Envelope, ManualClock
from fokha_integration.health import AlertRouter, HealthStatus, StatusChange
from tests.support import timeout

P, W, F = HealthStatus.PASS, HealthStatus.WARN, HealthStatus.FAIL


class Sink:
    def __init__(self) -> None:
        self.got: list[Envelope] = []

    async def deliver(self, envelope: Envelope) -> None:
        self.got.append(envelope)

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.type.removeprefix("health."), str(e.payload["status"])) for e in self.got]


def change(
    old: HealthStatus, new: HealthStatus, key: str | None = "api:responseTime"
) -> StatusChange:
    return StatusChange(check=key, old=old, new=new, at=0.0, output="boom")


async def test_flapping_inside_min_interval_is_coalesced() -> None:
    """Changes inside min_interval are held; then the current status is sent once, or nothing."""
    clock = ManualClock()
    sink = Sink()
    router = AlertRouter(sink=sink, min_interval=60, reminder_interval=None, clock=clock)
    router(change(P, F))  # first alert goes out at once
    await router.drain(timeout(5))
    assert sink.kinds() == [("alert", "fail")]
    # flaps: pass, fail, pass, fail... all within the minute
    for i in range(20):
        clock.advance(1)
        router(change(F, P) if i % 2 == 0 else change(P, F))
    await clock.wait_for_sleepers(1, timeout=timeout(5))  # the pending flush
    await clock.run_until_idle()  # the window ends and the flush runs
    assert clock.monotonic() == 60  # held until exactly one min_interval after the alert
    await router.drain(timeout(5))
    # ended on fail, which the receiver already knows: nothing more was sent
    assert sink.kinds() == [("alert", "fail")]
    # now it recovers and stays up: one resolve once the window allows it
    router(change(F, P))
    await router.drain(timeout(5))
    assert sink.kinds() == [("alert", "fail"), ("resolved", "pass")]
    clock.advance(10)
    router(change(P, F))  # too soon after the resolve: held
    await router.drain(timeout(5))
    assert len(sink.got) == 2
    await clock.wait_for_sleepers(1, timeout=timeout(5))
    await clock.run_until_idle()
    await router.drain(timeout(5))
    assert sink.kinds()[-1] == ("alert", "fail")
    assert len(sink.got) == 3
    await router.close()


async def test_reminders_until_resolved() -> None:
    """An unresolved alert is repeated every reminder_interval, and stops once resolved."""
    clock = ManualClock()
    sink = Sink()
    router = AlertRouter(sink=sink, min_interval=0, reminder_interval=300, clock=clock)
    router(change(P, W))
    await clock.wait_for_sleepers(1, timeout=timeout(5))
    for _ in range(2):
        clock.advance(300)
        await clock.wait_for_sleepers(1, timeout=timeout(5))
    await router.drain(timeout(5))
    assert sink.kinds() == [("alert", "warn"), ("reminder", "warn"), ("reminder", "warn")]
    router(change(W, P))
    await router.drain(timeout(5))
    clock.advance(900)
    for _ in range(5):
        await asyncio.sleep(0)
    await router.drain(timeout(5))
    assert sink.kinds()[-1] == ("resolved", "pass")
    assert len(sink.got) == 4
    first = sink.got[0]
    assert first.payload["check"] == "api:responseTime"
    assert "WARN" in str(first.payload["text"])
    assert len({e.id for e in sink.got}) == 4
    await router.close()


async def test_filters_overall_and_non_critical() -> None:
    """Overall changes only with include_overall; non-critical checks skipped with only_critical."""
    sink = Sink()
    router = AlertRouter(sink=sink, min_interval=0, only_critical=True, reminder_interval=None)
    router(change(P, F, key=None))
    router(StatusChange(check="opt:x", old=P, new=F, at=0.0, critical=False))
    router(change(HealthStatus.UNKNOWN, P))
    await router.drain(timeout(5))
    assert sink.got == []
    router2 = AlertRouter(sink=sink, min_interval=0, include_overall=True, reminder_interval=None)
    router2(change(P, F, key=None))
    await router2.drain(timeout(5))
    assert sink.got[0].payload["check"] == "overall"
    await router.close()
    await router2.close()


async def test_webhook_gets_the_envelope_and_failures_are_counted() -> None:
    """The webhook receives the envelope JSON; a 500 answer counts as a failed delivery."""
    bodies: list[dict[str, object]] = []
    got = asyncio.Event()
    answer = {"status": 200}

    async def hook(request: web.Request) -> web.Response:
        bodies.append(json.loads(await request.text()))
        got.set()
        return web.Response(status=answer["status"])

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    router = AlertRouter(webhook_url=url, min_interval=0, reminder_interval=None, timeout=5)
    try:
        router(change(P, F))
        await asyncio.wait_for(got.wait(), timeout(10))
        await router.drain(timeout(5))
        assert Envelope.from_dict(bodies[0]).type == "health.alert"
        assert router.sent == 1
        answer["status"] = 500
        router(change(F, P))
        await router.drain(timeout(10))
        assert router.failed == 1
    finally:
        await router.close()
        await runner.cleanup()


def test_config_is_checked() -> None:
    """A router needs a receiver and sane intervals."""
    with pytest.raises(ConfigError, match="sink"):
        AlertRouter()
    with pytest.raises(ConfigError, match="reminder_interval"):
        AlertRouter(sink=Sink(), reminder_interval=0)
