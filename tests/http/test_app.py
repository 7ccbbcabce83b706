"""The REST API app over real sockets: auth, scopes, routes, and schemathesis on /openapi.json.

The schemathesis run generates requests for every operation from the app's own
OpenAPI document and checks each answer (no 5xx, documented status, content type
and schema). ``FOKHA_SCHEMATHESIS_EXAMPLES`` sets the examples per operation
(default 15; ``make test-all`` may raise it).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fokha_integration.http.app import api_app
from fokha_integration.http.openapi import OPERATIONS, openapi_document, openapi_json
from fokha_integration.models import Direction, Envelope
from fokha_integration.queue import CallableSink, SignalQueue
from fokha_integration.ws import TokenAuthenticator
from tests.support import free_port, timeout

SECRET = b"api-test-secret-of-at-least-32-bytes!!"
ALL_SCOPES = ["signals:*", "positions:read", "dead_letters:*"]
EXAMPLES = int(os.environ.get("FOKHA_SCHEMATHESIS_EXAMPLES", "15"))


@dataclass
class Snap:
    """A positions snapshot like FileBridge.read_snapshot returns."""

    seq: int
    sent_at: float
    body: dict[str, Any]


class Positions:
    """Stands in for the FileBridge's snapshot reader (the bridge is tested on its own)."""

    def read_snapshot(self, name: str) -> Snap | None:
        return Snap(3, 1700000000.0, {"positions": [{"ticket": 1, "symbol": "EURUSD"}]})


@dataclass
class Running:
    """A running app: base URL, a full-scope token, the delivered envelopes."""

    url: str
    auth: TokenAuthenticator
    token: str
    delivered: list[Envelope]


async def _serve(port: int, delivered: list[Envelope], refuse: bool = False) -> web.AppRunner:
    async def deliver(envelope: Envelope) -> None:
        if refuse:
            raise ValueError("sink down")
        delivered.append(envelope)

    queue = SignalQueue(sinks=[CallableSink(deliver, name="app")])
    await queue.start()
    auth = TokenAuthenticator(SECRET)
    app = api_app(queue=queue, authenticator=auth, positions=Positions())

    async def stop_queue(app: web.Application) -> None:
        await queue.close()

    app.on_cleanup.append(stop_queue)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    """The app on a free port with a memory queue and one recording sink."""
    port, delivered = free_port(), []
    runner = await _serve(port, delivered)
    auth = TokenAuthenticator(SECRET)
    yield Running(
        f"http://127.0.0.1:{port}", auth, auth.issue("app", ttl=600, channels=ALL_SCOPES), delivered
    )
    await runner.cleanup()


def _signal(**extra: Any) -> dict[str, Any]:
    return {"symbol": "EURUSD", "direction": "BUY", "volume": 0.1, **extra}


async def _call(
    method: str, url: str, token: str | None, *, body: Any = None, key: str | None = None
) -> tuple[int, dict[str, str], Any]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as resp,
    ):
        raw = await resp.read()
        return resp.status, dict(resp.headers), json.loads(raw) if raw else None


async def test_publish_is_idempotent_and_reaches_the_queue(running: Running) -> None:
    """POST /v1/signals: 201, a retry with the key replays it, the sink gets one envelope."""
    url = running.url + "/v1/signals"
    body = _signal(id="sig-1", created_at="2026-11-30T05:00:00Z")
    status, _, first = await _call("POST", url, running.token, body=body, key="k1")
    assert status == 201 and first == {"status": "accepted", "id": "sig-1", "key": "sig-1"}
    status, headers, again = await _call("POST", url, running.token, body=body, key="k1")
    assert (status, again, headers["Idempotent-Replayed"]) == (201, first, "true")
    status, _, dup = await _call("POST", url, running.token, body=body, key="k2")
    assert status == 200 and dup["status"] == "duplicate"
    for _ in range(200):  # the queue delivers asynchronously; bounded wait on a real condition
        if running.delivered:
            break
        await asyncio.sleep(0.01)
    assert [e.id for e in running.delivered] == ["sig-1"]
    status, _, listed = await _call("GET", running.url + "/v1/signals", running.token)
    assert status == 200 and [s["id"] for s in listed["items"]] == ["sig-1"]
    status, _, one = await _call("GET", running.url + "/v1/signals/sig-1", running.token)
    assert status == 200 and one["sinks"] == {
        "app": {"state": "accepted", "reason": None, "detail": None}
    }


async def test_paging_walks_every_signal_once(running: Running) -> None:
    """GET /v1/signals with limit and cursor lists each signal once, newest first."""
    for i in range(7):
        status, _, _ = await _call(
            "POST",
            running.url + "/v1/signals",
            running.token,
            body=_signal(id=f"s{i}"),
            key=f"k{i}",
        )
        assert status == 201
    seen, cursor = [], None
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, _, page = await _call("GET", running.url + "/v1/signals" + query, running.token)
        assert status == 200
        seen += [s["id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"s{i}" for i in reversed(range(7))]


@pytest.mark.parametrize(
    ("token_kind", "status"),
    [("none", 401), ("garbage", 401), ("expired", 401), ("wrong_scope", 403), ("right", 201)],
)
async def test_unauthenticated_and_wrong_scope_are_refused(
    running: Running, token_kind: str, status: int
) -> None:
    """No token, a forged or expired one: 401; a token without signals:write: 403."""
    token = {
        "none": None,
        "garbage": "v1.abc.def",
        "expired": running.auth.issue("app", ttl=0.001, channels=ALL_SCOPES),
        "wrong_scope": running.auth.issue("app", ttl=600, channels=["signals:read"]),
        "right": running.auth.issue("app", ttl=600, channels=["signals:write"]),
    }[token_kind]
    if token_kind == "expired":
        await asyncio.sleep(0.01)  # let a 1 ms token expire on the wall clock
    got, headers, doc = await _call(
        "POST", running.url + "/v1/signals", token, body=_signal(), key="k-auth"
    )
    assert got == status
    if status >= 400:
        assert headers["Content-Type"].startswith("application/problem+json")
        assert doc["status"] == status


async def test_errors_are_problem_json(running: Running) -> None:
    """Invalid signal (422 naming the field), no key (400), unknown route (404), big body (413)."""
    url = running.url + "/v1/signals"
    status, _, doc = await _call("POST", url, running.token, body=_signal(volume=-1), key="k-bad")
    assert status == 422 and doc["field"] == "volume"
    status, _, doc = await _call("POST", url, running.token, body=_signal())
    assert status == 400 and doc["type"] == "/problems/idempotency_key_missing"
    status, _, doc = await _call("GET", running.url + "/v1/nope", running.token)
    assert status == 404 and doc["status"] == 404
    big = _signal(metadata={"x": "y" * 300_000})
    status, _, doc = await _call("POST", url, running.token, body=big, key="k-big")
    assert status == 413 and doc["status"] == 413


async def test_positions_and_dead_letters(running: Running) -> None:
    """Positions come from the snapshot source; dead letters list and replay (404 unknown)."""
    status, _, doc = await _call("GET", running.url + "/v1/positions", running.token)
    assert status == 200 and doc["positions"] == [{"ticket": 1, "symbol": "EURUSD"}]
    status, _, doc = await _call("GET", running.url + "/v1/dead-letters", running.token)
    assert status == 200 and doc == {"items": []}
    status, _, doc = await _call(
        "POST", running.url + "/v1/dead-letters/nope/replay", running.token
    )
    assert status == 404


def test_the_document_is_openapi_31_built_from_the_routes() -> None:
    """Every declared operation is in the document with its scope; Signal has its fields."""
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    for op in OPERATIONS:
        entry = doc["paths"][op.path][op.method.lower()]
        assert entry["operationId"] == op.operation_id
        assert entry.get("x-scope") == op.scope
    signal = doc["components"]["schemas"]["Signal"]
    assert set(signal["required"]) == {"symbol", "direction", "volume"}
    assert signal["properties"]["direction"]["enum"] == [d.value for d in Direction]
    assert json.loads(openapi_json()) == doc


# -- schemathesis -----------------------------------------------------------------


@pytest.fixture(scope="module")
def threaded_app() -> Iterator[str]:
    """The app served from a background thread's event loop (schemathesis calls are sync)."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner_box.append(loop.run_until_complete(_serve(port, [])))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(timeout(10))
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(timeout(10))
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout(10))
    loop.close()


def test_schemathesis_finds_no_failures(threaded_app: str) -> None:
    """Generated requests for every operation: no 5xx, answers match the published schema.

    ``positive_data_acceptance`` is left out: a signal's cross-field rules (stop loss
    below entry for BUY, expiry after creation) cannot be written in JSON Schema, so
    some schema-valid bodies are rightly refused with a documented 422.
    """
    import requests
    import schemathesis  # the dev extra: a missing package fails, never skips
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    doc = requests.get(threaded_app + "/openapi.json", timeout=timeout(10)).json()
    schema = schemathesis.openapi.from_dict(doc)
    token = TokenAuthenticator(SECRET).issue("schemathesis", ttl=3600, channels=ALL_SCOPES)
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(OPERATIONS) + 1  # and /openapi.json
    failures: list[str] = []
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            try:
                case.call_and_validate(
                    base_url=threaded_app,
                    session=session,
                    headers={"Authorization": f"Bearer {token}"},
                    excluded_checks=[positive_data_acceptance],
                )
            except AssertionError as exc:  # schemathesis raises a FailureGroup (an AssertionError)
                failures.append(f"{case.operation.label}: {exc}"[:2000])

        check()
    assert failures == []


def test_the_committed_document_is_what_the_cli_writes(tmp_path: Any) -> None:
    """docs/protocols/http-api.openapi.json is byte-identical to `fokha api openapi`."""
    from pathlib import Path

    from fokha_integration.cli import main

    out = tmp_path / "openapi.json"
    assert main(["api", "openapi", "-o", str(out)]) == 0
    committed = Path(__file__).parents[2] / "docs" / "protocols" / "http-api.openapi.json"
    assert out.read_text() == committed.read_text(), "regenerate: fokha api openapi -o ..."


async def test_health_routes_are_mounted_and_documented() -> None:
    """With monitor=, /health answers without a token and /openapi.json lists it."""
    from fokha_integration.health import HealthMonitor

    queue = SignalQueue(sinks=[])
    monitor = HealthMonitor([])
    app = api_app(queue=queue, authenticator=TokenAuthenticator(SECRET), monitor=monitor)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        status, _, _ = await _call("GET", f"http://127.0.0.1:{port}/health", None)
        assert status == 200
        status, _, doc = await _call("GET", f"http://127.0.0.1:{port}/openapi.json", None)
        assert status == 200 and "/health" in doc["paths"]
    finally:
        await runner.cleanup()
        await queue.close()
