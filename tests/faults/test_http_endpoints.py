"""Malformed headers on every endpoint of the HTTP layer: the API app, a webhook receiver.

Requests are written byte by byte over a raw socket (tests/faults/_raw_http.py). The
invariants: no header makes any endpoint answer 5xx or log an error; a protected
route never answers 2xx without a valid token; a webhook handler never runs for an
unverified message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from fokha_integration.http import generate_webhook_secret, webhook_receiver
from fokha_integration.http.app import api_app
from fokha_integration.http.openapi import OPERATIONS
from fokha_integration.queue import CallableSink, SignalQueue
from fokha_integration.ws import TokenAuthenticator
from tests.faults._raw_http import MALFORMED_HEADERS, raw_request
from tests.support import free_port

SECRET = b"fault-test-secret-of-at-least-32-bytes"


@dataclass
class Endpoints:
    """Ports of the running app and receiver, and how often the webhook handler ran."""

    api_port: int
    hook_port: int
    handled: list[str]


@pytest.fixture
async def endpoints() -> AsyncIterator[Endpoints]:
    """The API app (memory queue) and a webhook receiver, each on a free port."""

    async def deliver(envelope: object) -> None:
        return None

    queue = SignalQueue(sinks=[CallableSink(deliver, name="s")])
    await queue.start()
    handled: list[str] = []

    async def on_hook(request: web.Request, event: object) -> None:
        handled.append("ran")

    receiver = webhook_receiver(on_hook, secret=generate_webhook_secret())
    runners = []
    ports = []
    for app in (
        api_app(queue=queue, authenticator=TokenAuthenticator(SECRET)),
        web.Application(),
    ):
        if not app.router.routes():
            app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        ports.append(port)
    yield Endpoints(ports[0], ports[1], handled)
    for runner in runners:
        await runner.cleanup()
    await queue.close()
    await receiver.close()


ROUTES = [(op.method, op.path.replace("{id}", "x1"), op.scope is not None) for op in OPERATIONS] + [
    ("GET", "/openapi.json", False)
]


@pytest.mark.parametrize(("method", "path", "protected"), ROUTES)
@pytest.mark.parametrize("name", sorted(MALFORMED_HEADERS))
async def test_api_routes_survive_malformed_headers(
    endpoints: Endpoints,
    method: str,
    path: str,
    protected: bool,
    name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each malformed header on each API route: no 5xx, no error logged, no 2xx unauthenticated."""
    caplog.set_level(logging.ERROR)
    body = b'{"symbol":"EURUSD","direction":"BUY","volume":0.1}' if method == "POST" else b""
    headers = MALFORMED_HEADERS[name]
    if b"Content-Type" not in headers:
        headers += b"Content-Type: application/json\r\n"
    status = await raw_request(endpoints.api_port, method, path, headers, body)
    assert status < 500, f"{name} on {method} {path}: {status}"
    if protected:
        assert status in (400, 401, 431), f"{name} on {method} {path}: {status}"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("name", sorted(MALFORMED_HEADERS))
async def test_the_webhook_receiver_survives_malformed_headers(
    endpoints: Endpoints, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each malformed header on a webhook receiver: a 4xx, and the handler never runs."""
    caplog.set_level(logging.ERROR)
    status = await raw_request(endpoints.hook_port, "POST", "/hook", MALFORMED_HEADERS[name], b"{}")
    assert 400 <= status < 500
    assert endpoints.handled == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("name", sorted(n for n in MALFORMED_HEADERS if not n.startswith("auth_")))
async def test_authenticated_publish_survives_malformed_headers(
    endpoints: Endpoints, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With a valid token, malformed Idempotency-Key and other headers: a 2xx or 4xx, no 5xx."""
    caplog.set_level(logging.ERROR)
    token = TokenAuthenticator(SECRET).issue("fault", ttl=600)
    headers = MALFORMED_HEADERS[name] + f"Authorization: Bearer {token}\r\n".encode()
    if b"Idempotency-Key" not in headers:
        headers += b"Idempotency-Key: k-fault\r\n"
    if b"Content-Type" not in headers:
        headers += b"Content-Type: application/json\r\n"
    body = b'{"symbol":"EURUSD","direction":"BUY","volume":0.1}'
    status = await raw_request(endpoints.api_port, "POST", "/v1/signals", headers, body)
    assert status < 500, f"{name}: {status}"
    if name.startswith("idempotency_key"):
        assert status in (400, 431)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
