"""The hub: one instance per state, token-guarded API, CSP, no secret anywhere, SIGTERM drain."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from fokha_integration.serve import HubAlreadyRunningError
from fokha_integration.serve._config import SinkSection
from tests.support import free_port, timeout

from .conftest import HubFactory, make_config

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook secret of 32 bytes, ok!!").decode()


async def test_second_hub_on_the_same_state_refuses(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    """Two hubs on one state_dir: the second refuses with a clear message and starts nothing."""
    await hub_factory(make_config(tmp_path / "state"))
    with pytest.raises(HubAlreadyRunningError, match="another fokha serve"):
        await hub_factory(make_config(tmp_path / "state"))


async def test_api_refuses_missing_and_wrong_tokens(hub_factory: HubFactory) -> None:
    """No token, a forged token, a token for one channel only: all 401; the console token: 200."""
    hub = await hub_factory()
    base = f"http://127.0.0.1:{hub.http_port}/console/api"
    narrow = hub.authenticator.issue("app", ttl=60, channels=["prices.*"])
    async with aiohttp.ClientSession() as s:
        for headers in (
            {},
            {"Authorization": "Bearer v1.x.y"},
            {"Authorization": f"Bearer {narrow}"},
            {"Authorization": hub.console_token()},
        ):
            for method, path in (
                ("GET", "/overview"),
                ("GET", "/dead-letters"),
                ("POST", "/dead-letters/replay"),
                ("GET", "/conflicts"),
            ):
                async with s.request(method, base + path, headers=headers, json={}) as r:
                    assert r.status == 401, (method, path, headers)
                    assert r.content_type == "application/problem+json"
        ok = {"Authorization": f"Bearer {hub.console_token()}"}
        async with s.get(base + "/overview", headers=ok) as r:
            assert r.status == 200
        # The REST API on the same server refuses the same way (problem+json).
        api = f"http://127.0.0.1:{hub.http_port}/v1/signals"
        for headers in ({}, {"Authorization": "Bearer v1.x.y"}):
            async with s.get(api, headers=headers) as r:
                assert r.status == 401
                assert r.content_type == "application/problem+json"
        async with s.get(api, headers=ok) as r:
            assert r.status == 200


async def test_console_has_a_strict_csp(hub_factory: HubFactory) -> None:
    """The page and the API carry a CSP with no inline script and no foreign origin."""
    hub = await hub_factory()
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{hub.http_port}/console") as r,
    ):
        csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp


async def test_no_secret_in_pages_logs_or_metrics(
    hub_factory: HubFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server secret and webhook secrets appear in no page, API answer, /metrics or log line."""
    caplog.set_level(logging.DEBUG)
    config = make_config(
        tmp_path / "state",
        sinks=(
            SinkSection(
                kind="webhook",
                name="n8n",
                url="http://127.0.0.1:9/x",
                secret=WEBHOOK_SECRET,
                attempts=1,
            ),
        ),
    )
    hub = await hub_factory(config)
    secrets = [*config.secrets(), hub.secret]
    assert WEBHOOK_SECRET in secrets
    headers = {"Authorization": f"Bearer {hub.console_token()}"}
    base = f"http://127.0.0.1:{hub.http_port}"
    seen = []
    async with aiohttp.ClientSession() as s:
        async with s.post(
            base + "/v1/signals",
            headers={**headers, "Idempotency-Key": "k-1"},
            json={"symbol": "EURUSD", "direction": "BUY", "volume": 0.1},
        ) as r:
            assert r.status == 201
        await hub.queue.wait_idle(timeout=timeout(20))
        for path in (
            "/console",
            "/console/static/console.js",
            "/console/api/session",
            "/console/api/overview",
            "/console/api/dead-letters",
            "/metrics",
            "/health",
            "/v1/signals",
            "/openapi.json",
        ):
            async with s.get(base + path, headers=headers) as r:
                seen.append(await r.text())
    seen.append(caplog.text)
    seen.append(repr(config.redacted()))
    for text in seen:
        for secret in secrets:
            assert secret not in text


@pytest.mark.slow
async def test_sigterm_during_a_burst_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """SIGTERM while 2,000 signals arrive: exit 0 in time; after a restart every accepted
    signal reaches each sink exactly once."""
    received: dict[str, list[str]] = {"a": [], "b": []}

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        received[request.match_info["sink"]].append(str(body["id"]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook/{sink}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_port = runner.addresses[0][1]
    http_port = free_port()
    config = tmp_path / "fokha.toml"
    config.write_text(
        f"""
[server]
http_port = {http_port}
ws_port = 0
state_dir = "{tmp_path / "state"}"
secret = "${{FOKHA_TEST_SECRET}}"
shutdown_deadline = 10.0

[bridge]
enabled = false

[[sinks]]
kind = "webhook"
name = "a"
url = "http://127.0.0.1:{hook_port}/hook/a"
secret = "{WEBHOOK_SECRET}"

[[sinks]]
kind = "webhook"
name = "b"
url = "http://127.0.0.1:{hook_port}/hook/b"
secret = "{WEBHOOK_SECRET}"
""",
        encoding="utf-8",
    )
    env = dict(os.environ, FOKHA_TEST_SECRET="t" * 40)

    async def start() -> tuple[asyncio.subprocess.Process, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fokha_integration.cli",
            "serve",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        token = ""
        assert proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), timeout(60))).decode()
            assert line, "fokha serve exited before it was ready"
            if line.startswith("token:"):
                token = line.split()[1]
            if line.strip() == "ready":
                return proc, token

    proc, token = await start()
    accepted: list[str] = []
    sent = 0
    url = f"http://127.0.0.1:{http_port}/v1/signals"
    stop_after = 600

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        body = {"symbol": "EURUSD", "direction": "BUY", "volume": 0.1, "strategy": f"burst-{i}"}
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"burst-{i}"}
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with session.post(url, json=body, headers=headers) as r:
                if r.status == 201 and (await r.json())["status"] == "accepted":
                    accepted.append((await r.json())["id"])

    loop = asyncio.get_running_loop()
    terminated_at = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout(10))) as session:
        pending: set[asyncio.Task[None]] = set()
        for i in range(2000):
            if len(pending) >= 32:
                _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.add(asyncio.create_task(one(session, i)))
            sent += 1
            if sent == stop_after:
                proc.send_signal(signal.SIGTERM)
                terminated_at = loop.time()
        await asyncio.gather(*pending)
    code = await asyncio.wait_for(proc.wait(), timeout(30))
    assert code == 0, (await proc.stderr.read()).decode() if proc.stderr else code
    assert loop.time() - terminated_at <= timeout(10 + 5)
    assert len(accepted) >= stop_after // 2, len(accepted)

    proc, token = await start()
    try:
        deadline = loop.time() + timeout(60)
        while not all(set(accepted) <= set(ids) for ids in received.values()):
            assert loop.time() < deadline, {
                k: len(set(accepted) - set(v)) for k, v in received.items()
            }
            await asyncio.sleep(
                0.1
            )  # polling a subprocess's deliveries: no event crosses processes
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout(30)) == 0
        await runner.cleanup()
    for sink, ids in received.items():
        duplicates = {i for i in ids if ids.count(i) > 1}
        assert not duplicates, (sink, len(duplicates))
        assert set(accepted) <= set(ids)


async def test_reload_applies_what_is_safe_and_names_the_rest(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    """A reload applies bridge.fail_after at once; port and secret changes need a restart."""
    import dataclasses

    config = make_config(tmp_path / "state")
    hub = await hub_factory(config)
    new = dataclasses.replace(
        config,
        bridge=dataclasses.replace(config.bridge, fail_after=7.5),
        server=dataclasses.replace(config.server, ws_port=1234, secret="n" * 32),
    )
    report = hub.reload(new)
    assert report.applied == ("bridge.fail_after",)
    assert "server.ws_port" in report.needs_restart and "<secrets>" in report.needs_restart
    assert hub.config.bridge.fail_after == 7.5
    assert hub.config.server.ws_port == config.server.ws_port
    assert "n" * 32 not in repr(report)


async def test_sighup_reload_is_reported_by_the_process(tmp_path: Path) -> None:
    """`kill -HUP` makes fokha serve re-read its file and say what it applied."""
    cfg = tmp_path / "fokha.toml"
    base = f"[server]\nhttp_port = 0\nws_port = 0\nstate_dir = '{tmp_path / 'state'}'\n"
    cfg.write_text(base + "[bridge]\npath = 'emulator'\nfail_after = 5.0\n", encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fokha_integration.cli",
        "serve",
        str(cfg),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        while (await asyncio.wait_for(proc.stdout.readline(), timeout(60))).strip() != b"ready":
            pass
        cfg.write_text(base + "[bridge]\npath = 'emulator'\nfail_after = 9.0\n", encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout(30))).decode()
        assert line.startswith("reload: applied bridge.fail_after; needs a restart: nothing"), line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout(30)) == 0


async def test_a_slow_http_client_does_not_hold_the_shutdown(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    """A request stuck half-way through its body: stop() still drains and closes in time."""
    import dataclasses

    config = make_config(tmp_path / "state")
    config = dataclasses.replace(
        config, server=dataclasses.replace(config.server, shutdown_deadline=4.0)
    )
    hub = await hub_factory(config)
    _reader, writer = await asyncio.open_connection("127.0.0.1", hub.http_port)
    writer.write(
        b"POST /v1/signals HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\nIdempotency-Key: slow\r\n"
        b"Authorization: Bearer " + hub.console_token().encode() + b'\r\n\r\n{"sym'
    )
    await writer.drain()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(hub.stop(), timeout(8))
    assert loop.time() - started <= timeout(4.0)
    assert not hub.ws.serving
    writer.close()


async def test_body_limits_under_one_server(hub_factory: HubFactory, tmp_path: Path) -> None:
    """The sync app takes its 8 MiB bodies; the API's own routes still refuse over 256 KiB."""
    import dataclasses
    import time

    from fokha_integration.serve._config import SyncSection

    config = dataclasses.replace(
        make_config(tmp_path / "state"), sync=SyncSection(enabled=True, collections="notes")
    )
    hub = await hub_factory(config)
    base = f"http://127.0.0.1:{hub.http_port}"
    big = "x" * 300_000
    now = int(time.time() * 1000)
    # Five 60 KB records (one record may hold 64 KiB): a 300 KB push.
    push = {
        "client_id": "alice",
        "mutations": [
            {
                "mutation_id": i,
                "collection": "notes",
                "id": f"n{i}",
                "op": "put",
                "data": {"text": "x" * 60_000},
                "version": f"{now + i:015d}-00000-alice",
            }
            for i in range(1, 6)
        ],
    }
    token = {"Authorization": f"Bearer {hub.authenticator.issue('alice', ttl=60)}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/sync/v1/push", json=push, headers=token) as r:
            assert r.status == 200, await r.text()
        signal = {"symbol": "EURUSD", "direction": "BUY", "volume": 0.1, "strategy": big}
        headers = {**token, "Idempotency-Key": "big-1"}
        async with s.post(base + "/v1/signals", json=signal, headers=headers) as r:
            assert r.status == 413
            assert r.content_type == "application/problem+json"


async def test_scopes_per_action(hub_factory: HubFactory, tmp_path: Path) -> None:
    """A console-only token reads the console but may not replay or resolve; a display
    token (prices.*) may not use the sync protocol."""
    import dataclasses

    from fokha_integration.serve._config import SyncSection

    config = dataclasses.replace(
        make_config(tmp_path / "state"), sync=SyncSection(enabled=True, collections="notes")
    )
    hub = await hub_factory(config)
    base = f"http://127.0.0.1:{hub.http_port}"
    viewer = {
        "Authorization": f"Bearer {hub.authenticator.issue('v', ttl=60, channels=['console'])}"
    }
    display = hub.authenticator.issue("alice", ttl=60, channels=["prices.*"])
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/console/api/overview", headers=viewer) as r:
            assert r.status == 200
        body = {"sink": "app", "refs": ["1"]}
        async with s.post(
            base + "/console/api/dead-letters/replay", json=body, headers=viewer
        ) as r:
            assert r.status == 403
        async with s.post(
            base + "/console/api/conflicts/1/resolve", json={"choice": "client"}, headers=viewer
        ) as r:
            assert r.status == 403
        pull = {"client_id": "alice", "collections": ["notes"], "cursor": None, "limit": 10}
        async with s.post(
            base + "/sync/v1/pull", json=pull, headers={"Authorization": f"Bearer {display}"}
        ) as r:
            assert r.status == 403


@pytest.mark.redis
async def test_queue_health_warns_after_the_redis_outbox_went_back(
    hub_factory: HubFactory, tmp_path: Path, redis_url: str
) -> None:
    """With the Redis store, an outbox whose history went back (its append counter
    set below what the hub appended, as a restore from an older snapshot leaves it)
    turns the queue check to warn, naming how far it went back."""
    import redis.asyncio as aioredis

    from fokha_integration.health import HealthStatus
    from fokha_integration.models import Envelope
    from fokha_integration.serve._config import QueueSection

    hub = await hub_factory(
        make_config(tmp_path / "state", queue=QueueSection(store="redis", url=redis_url))
    )

    async def queue_check() -> tuple[HealthStatus, str]:
        report = await asyncio.wait_for(hub.monitor.run_once(), timeout(10))
        [view] = [v for c, v in report.checks if c.component == "queue"]
        assert view.result is not None
        return view.result.status, view.result.output

    for i in range(3):
        assert (await hub.queue.publish(Envelope(type="t", key=f"k{i}", payload={}))).accepted
    assert (await queue_check())[0] is HealthStatus.PASS
    admin = aioredis.from_url(redis_url)
    await admin.set("{fokha:queue}:seq", 1)  # what a restore from an older snapshot leaves
    await admin.aclose()
    assert (await hub.queue.publish(Envelope(type="t", key="k3", payload={}))).accepted
    status, output = await queue_check()
    assert status is HealthStatus.WARN
    assert "outbox history went back 2 append(s)" in output, output
