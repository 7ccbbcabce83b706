"""WebhookSink and redirects (issue 13, defects 4 and 5): never followed with a signed body.

Two real aiohttp servers on 127.0.0.1: ``home`` (the sink's URL, which answers with
redirects) and ``stranger`` (another port, so another origin) that records whatever
reaches it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from fokha_integration.http import generate_webhook_secret, verify_webhook
from fokha_integration.models import Direction, Envelope, Signal
from fokha_integration.queue import SignalQueue, WebhookSink
from fokha_integration.queue._types import DeliveryFailedError
from fokha_integration.resilience import RetryPolicy
from tests.support import free_port, timeout

SECRET = generate_webhook_secret()


@dataclass
class Recorder:
    """Requests that reached one server: (method, path, body, had a signature)."""

    seen: list[tuple[str, str, bytes, bool]] = field(default_factory=list)

    async def record(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            (request.method, request.path, body, "webhook-signature" in request.headers)
        )
        if request.method == "POST":
            verify_webhook(request.headers, body, SECRET)
        return web.Response(status=200)


@dataclass
class Servers:
    """The two servers' recorders and base URLs."""

    home: Recorder
    stranger: Recorder
    home_url: str
    stranger_url: str


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """``home`` redirects by path; ``stranger`` (another origin) records everything."""
    home, stranger = Recorder(), Recorder()
    stranger_port, home_port = free_port(), free_port()
    stranger_url = f"http://127.0.0.1:{stranger_port}"
    home_url = f"http://127.0.0.1:{home_port}"

    async def redirect(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        where = request.match_info["where"]
        await request.read()
        location = f"{stranger_url}/got" if where == "away" else "/got"
        return web.Response(status=status, headers={"Location": location})

    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=302)

    home_app = web.Application()
    home_app.router.add_post("/r/{status}/{where}", redirect)
    home_app.router.add_post("/bare", no_location)
    home_app.router.add_route("*", "/got", home.record)
    stranger_app = web.Application()
    stranger_app.router.add_route("*", "/got", stranger.record)
    runners = []
    for app, port in ((home_app, home_port), (stranger_app, stranger_port)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    yield Servers(home, stranger, home_url, stranger_url)
    for runner in runners:
        await runner.cleanup()


def _envelope() -> Envelope:
    return Envelope(type="signal", key="k-1", payload={"a": 1})


def _signal() -> Signal:
    return Signal(symbol="EURUSD", direction=Direction.BUY, volume=0.1)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("where", ["home", "away"])
async def test_a_redirect_is_a_dead_letter_with_its_location(
    servers: Servers, status: int, where: str
) -> None:
    """Any 3xx is not followed: nothing reaches either target, the dead letter names Location."""
    sink = WebhookSink(f"{servers.home_url}/r/{status}/{where}", secret=SECRET, timeout=5)
    policy = RetryPolicy(attempts=3, initial=0.001, deadline=None)
    async with SignalQueue(sinks=[sink], retry=policy) as q:
        await q.publish(_signal())
        await q.wait_idle(timeout=timeout(10))
        (dead,) = await q.dead_letters()
    await sink.close()
    assert servers.home.seen == [] and servers.stranger.seen == []
    assert dead.reason == "not_retryable"
    assert str(status) in dead.detail and "/got" in dead.detail
    assert len(dead.attempts) == 1


async def test_a_redirect_without_location_is_a_failure(servers: Servers) -> None:
    """A 3xx without Location raises a non-retryable DeliveryFailedError saying so."""
    sink = WebhookSink(f"{servers.home_url}/bare", secret=SECRET, timeout=5)
    with pytest.raises(DeliveryFailedError, match="without a Location") as info:
        await sink.deliver(_envelope())
    await sink.close()
    assert info.value.status == 302


@pytest.mark.parametrize("status", [307, 308])
async def test_opt_in_follows_same_origin_307_308_keeping_the_post(
    servers: Servers, status: int
) -> None:
    """follow_redirects=True: a same-origin 307/308 is followed as a signed POST with the body."""
    sink = WebhookSink(
        f"{servers.home_url}/r/{status}/home", secret=SECRET, timeout=5, follow_redirects=True
    )
    envelope = _envelope()
    assert await sink.deliver(envelope) is None
    await sink.close()
    ((method, path, body, signed),) = servers.home.seen
    assert (method, path, signed) == ("POST", "/got", True)
    assert body == envelope.to_json().encode()
    assert servers.stranger.seen == []


@pytest.mark.parametrize(("status", "where"), [(307, "away"), (308, "away"), (301, "home")])
async def test_opt_in_never_follows_cross_origin_or_method_changing(
    servers: Servers, status: int, where: str
) -> None:
    """Even opted in, a cross-origin 307/308 or a 301 is a failure and nothing is sent on."""
    sink = WebhookSink(
        f"{servers.home_url}/r/{status}/{where}", secret=SECRET, timeout=5, follow_redirects=True
    )
    with pytest.raises(DeliveryFailedError) as info:
        await sink.deliver(_envelope())
    await sink.close()
    assert info.value.status == status
    assert servers.home.seen == [] and servers.stranger.seen == []
