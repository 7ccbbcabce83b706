"""idempotency_middleware over real sockets on every DedupCache backend (memory, SQLite, Redis).

The acceptance items of issue 16: 50 concurrent requests with one key run the
handler exactly once; a key reused with another body is 422 every time and the
handler is never called; a handler process SIGKILLed mid-request leaves a lease
that expires, and the next retry runs once.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from fokha_integration.dedup import DedupCache, MemoryDedupBackend, SQLiteDedupBackend
from fokha_integration.http.idempotency import (
    IdempotencyConfig,
    StoredResponse,
    idempotency_middleware,
    idempotent,
    parse_idempotency_key,
)
from tests.support import free_port, timeout

_namespaces = itertools.count()
ROOT = Path(__file__).parents[2]


@dataclass
class App:
    """A running app: URL, handler call count, and a gate the handler waits on."""

    url: str
    calls: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def cache(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DedupCache]:
    """A DedupCache on each backend (Redis: the private test server)."""
    if request.param == "memory":
        made = DedupCache(MemoryDedupBackend())
    elif request.param == "sqlite":
        made = DedupCache(SQLiteDedupBackend(tmp_path / "idem.db"))
    else:
        from fokha_integration.dedup.redis import RedisDedupBackend

        url = request.getfixturevalue("redis_url")
        made = DedupCache(RedisDedupBackend(url, namespace=f"idem{next(_namespaces)}"))
    yield made
    await made.close()


Start = Callable[..., Awaitable[App]]


@pytest.fixture
async def start(cache: DedupCache) -> AsyncIterator[Start]:
    """Start an app with the middleware on ``cache`` (``start(blocking=True)`` gates it)."""
    runners: list[web.AppRunner] = []

    async def run(blocking: bool = False, config: IdempotencyConfig | None = None) -> App:
        port = free_port()
        app_state = App(f"http://127.0.0.1:{port}")
        if not blocking:
            app_state.gate.set()

        @idempotent
        async def create(request: web.Request) -> web.Response:
            app_state.calls += 1
            app_state.entered.set()
            body = await request.json()
            await app_state.gate.wait()
            if body.get("invalid"):
                raise web.HTTPUnprocessableEntity(text="invalid")
            return web.json_response({"id": app_state.calls, "echo": body}, status=201)

        @idempotent(rule="optional")
        async def maybe(request: web.Request) -> web.Response:
            app_state.calls += 1
            return web.Response(status=200, text=f"call {app_state.calls}")

        app = web.Application(middlewares=[idempotency_middleware(cache, config=config)])
        app.router.add_post("/orders", create)
        app.router.add_post("/maybe", maybe)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return app_state

    yield run
    for runner in runners:
        await runner.cleanup()


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, key: str | None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with session.post(url, data=body, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_fifty_concurrent_requests_run_the_handler_once(start: Start) -> None:
    """50 concurrent POSTs with one key: 1 handler run, the rest 409 while it runs."""
    app = await start(blocking=True)
    body = b'{"symbol":"EURUSD","volume":0.1}'
    async with aiohttp.ClientSession() as session:
        first = asyncio.create_task(_post(session, app.url + "/orders", body, "k-50"))
        await asyncio.wait_for(app.entered.wait(), timeout(10))
        others = await asyncio.gather(
            *(_post(session, app.url + "/orders", body, "k-50") for _ in range(49))
        )
        app.gate.set()
        status, _, original = await first
        assert status == 201
        assert [s for s, _, _ in others] == [409] * 49
        assert all(int(h["Retry-After"]) >= 1 for _, h, _ in others)
        # after completion every retry is the stored answer, byte for byte
        replays = await asyncio.gather(
            *(_post(session, app.url + "/orders", body, "k-50") for _ in range(50))
        )
    assert app.calls == 1
    assert {(s, b) for s, _, b in replays} == {(201, original)}
    assert all(h["Idempotent-Replayed"] == "true" for _, h, _ in replays)


async def test_fifty_concurrent_requests_unblocked_run_once(start: Start) -> None:
    """50 concurrent POSTs with one key on a fast handler: one run; others 409 or the replay."""
    app = await start()
    body = b'{"n":1}'
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(_post(session, app.url + "/orders", body, "k-fast") for _ in range(50))
        )
    assert app.calls == 1
    statuses = [s for s, _, _ in answers]
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}
    assert len({b for s, _, b in answers if s == 201}) == 1


async def test_reuse_with_another_body_is_422_every_time(start: Start) -> None:
    """A key reused with a different body: 422 on every try, the handler never runs for it."""
    app = await start()
    async with aiohttp.ClientSession() as session:
        assert (await _post(session, app.url + "/orders", b'{"v":1}', "k-reuse"))[0] == 201
        for i in range(20):
            status, headers, _ = await _post(
                session, app.url + "/orders", f'{{"v":{i + 2}}}'.encode(), "k-reuse"
            )
            assert status == 422
            assert headers["Content-Type"].startswith("application/problem+json")
    assert app.calls == 1


async def test_missing_and_malformed_keys_are_400(start: Start) -> None:
    """No key on a required route, or a malformed one: 400 problem+json, handler not run."""
    app = await start()
    async with aiohttp.ClientSession() as session:
        for key in (None, "", "x" * 256, "caf\u00e9", '"unterminated'):
            status, headers, _ = await _post(session, app.url + "/orders", b"{}", key)
            assert status == 400, key
            assert headers["Content-Type"].startswith("application/problem+json")
    assert app.calls == 0


async def test_an_optional_route_runs_without_a_key(start: Start) -> None:
    """On an optional route a request without a key runs every time; with one, once."""
    app = await start()
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            assert (await _post(session, app.url + "/maybe", b"", None))[0] == 200
        for _ in range(3):
            assert (await _post(session, app.url + "/maybe", b"", "k-opt"))[0] == 200
    assert app.calls == 3


async def test_a_validation_failure_is_not_stored(start: Start) -> None:
    """A 4xx the handler raises is not stored: the fixed request with the same key runs."""
    app = await start()
    async with aiohttp.ClientSession() as session:
        status, _, _ = await _post(session, app.url + "/orders", b'{"invalid":1}', "k-val")
        assert status == 422
        status, _, _ = await _post(session, app.url + "/orders", b'{"invalid":0}', "k-val")
        assert status == 201
    assert app.calls == 2


async def test_two_principals_never_share_a_key(cache: DedupCache) -> None:
    """The same key from two principals: two handler runs."""
    calls = []

    async def create(request: web.Request) -> web.Response:
        calls.append(request.headers["X-User"])
        return web.Response(status=201)

    app = web.Application(
        middlewares=[
            idempotency_middleware(
                cache,
                config=IdempotencyConfig(default_rule="required"),
                principal=lambda r: r.headers["X-User"],
            )
        ]
    )
    app.router.add_post("/o", create)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            for user in ("ann", "bob", "ann"):
                headers = {"Idempotency-Key": "same", "X-User": user}
                async with session.post(f"http://127.0.0.1:{port}/o", headers=headers) as resp:
                    assert resp.status == 201
    finally:
        await runner.cleanup()
    assert calls == ["ann", "bob"]


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("abc", "abc"),
        ('"abc"', "abc"),
        ('"a\\"b"', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ('"a\\nb"', None),
        ("", None),
        ("\x7f", None),
        ("k" * 255, "k" * 255),
        ("k" * 256, None),
    ],
)
def test_key_parsing(raw: str, key: str | None) -> None:
    """Bare or sf-string keys, 1..255 printable ASCII; anything else is malformed."""
    assert parse_idempotency_key(raw) == key


_TOKEN = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-", min_size=1)
_VALUE = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@given(
    status=st.integers(min_value=100, max_value=599),
    headers=st.lists(st.tuples(_TOKEN, _VALUE), max_size=6),
    body=st.binary(max_size=200),
)
def test_stored_responses_round_trip(
    status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    """Any status, headers and body decode to exactly what was stored."""
    stored = StoredResponse(status, tuple(headers), body)
    assert StoredResponse.decode(stored.encode()) == stored


@pytest.mark.parametrize("data", [b"garbage", b"FKIR2\n", b"FKIR2\nabc\n\n", b"FKIR2\n200\nX\n\n"])
def test_garbage_is_not_a_stored_response(data: bytes) -> None:
    """Anything that is not an encoded response decodes to None."""
    assert StoredResponse.decode(data) is None


def _wait_for_line(path: Path, line: str) -> None:
    import time

    deadline = time.monotonic() + timeout(20)
    while time.monotonic() < deadline:  # polling a real file, bounded
        if path.exists() and line in path.read_text().splitlines():
            return
        time.sleep(0.01)
    raise AssertionError(f"{line!r} never appeared in {path}")


def _spawn(port: int, db: Path, log: Path, mode: str, lease: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.http.idem_worker",
            str(port),
            str(db),
            str(log),
            mode,
            str(lease),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
async def test_a_sigkilled_handler_runs_once_more_after_the_lease(tmp_path: Path) -> None:
    """SIGKILL mid-handler: 409 until the lease expires, then the retry runs exactly once."""
    db, log, lease = tmp_path / "idem.db", tmp_path / "log.txt", 3.0
    body = b'{"symbol":"EURUSD"}'
    port_a, port_b = free_port(), free_port()
    # Both processes share the SQLite file; the survivor is up before the kill.
    doomed = _spawn(port_a, db, log, "hang", lease)
    survivor = _spawn(port_b, db, log, "ok", lease)
    try:
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(
                _post(session, f"http://127.0.0.1:{port_a}/orders", body, "k-kill")
            )
            await asyncio.to_thread(_wait_for_line, log, "start k-kill")
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout(10))
            with pytest.raises(aiohttp.ClientError):
                await task
            url = f"http://127.0.0.1:{port_b}/orders"
            status, headers, _ = await _post(session, url, body, "k-kill")
            assert status == 409  # the dead process's lease still holds the key
            assert 1 <= int(headers["Retry-After"]) <= lease
            await asyncio.sleep(float(headers["Retry-After"]))  # what the protocol asks
            status, _, original = await _post(session, url, body, "k-kill")
            assert status == 201
            status, headers, again = await _post(session, url, body, "k-kill")
            assert (status, again, headers["Idempotent-Replayed"]) == (201, original, "true")
    finally:
        for proc in (doomed, survivor):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout(10))
    assert log.read_text().splitlines() == ["start k-kill", "start k-kill", "done k-kill"]
