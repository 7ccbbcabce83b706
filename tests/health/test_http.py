"""The endpoints over real sockets: health+json structure, status codes, groups, token, metrics."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fokha_integration import CircuitBreaker, ManualClock
from fokha_integration.health import (
    HEALTH_CONTENT_TYPE,
    HealthMonitor,
    HealthServer,
    HealthStatus,
    MetricFamily,
    MetricsRegistry,
    Observation,
    Sample,
    add_health_routes,
    breaker_metrics,
    callable_check,
)
from tests.support import timeout

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
KEY = re.compile(r"^[^:]+:[^:]+$")


def validate_health_json(doc: Any) -> list[str]:
    """Errors against the health+json structure (draft-inadarei-api-health-check)."""
    errors: list[str] = []
    if not isinstance(doc, dict):
        return ["document is not an object"]
    if doc.get("status") not in ("pass", "warn", "fail"):
        errors.append(f"status {doc.get('status')!r}")
    for name in ("output", "serviceId", "version", "description"):
        if name in doc and not isinstance(doc[name], str):
            errors.append(f"{name} is not a string")
    checks = doc.get("checks", {})
    if not isinstance(checks, dict):
        return [*errors, "checks is not an object"]
    for key, items in checks.items():
        if not KEY.match(key):
            errors.append(f"check key {key!r} is not component:measurement")
        if not isinstance(items, list) or not items:
            errors.append(f"{key}: not a non-empty array")
            continue
        for item in items:
            if not isinstance(item, dict):
                errors.append(f"{key}: item is not an object")
                continue
            if item.get("status") not in ("pass", "warn", "fail"):
                errors.append(f"{key}: status {item.get('status')!r}")
            if "time" in item and not ISO_Z.match(str(item["time"])):
                errors.append(f"{key}: time {item['time']!r} is not ISO 8601 UTC")
            if "observedValue" in item and not isinstance(
                item["observedValue"], (int, float, str, bool)
            ):
                errors.append(f"{key}: observedValue type")
            for name in ("observedUnit", "output", "componentType", "componentId"):
                if name in item and not isinstance(item[name], str):
                    errors.append(f"{key}: {name} is not a string")
    return errors


def test_validator_catches_bad_documents() -> None:
    """The validator used below rejects what the format forbids."""
    assert validate_health_json({"status": "ok"}) == ["status 'ok'"]
    assert validate_health_json({"status": "pass", "checks": {"nocolon": [{"status": "pass"}]}})
    bad_time = {"a:b": [{"status": "pass", "time": "yesterday"}]}
    assert validate_health_json({"status": "pass", "checks": bad_time})
    assert validate_health_json({"status": "pass", "checks": {"a:b": []}})


class Switch:
    """A callable check's answer, switched by the test."""

    def __init__(self, answer: Observation) -> None:
        self.answer = answer

    async def __call__(self) -> Observation:
        return self.answer


@pytest.fixture
async def setup() -> AsyncIterator[tuple[HealthMonitor, dict[str, Switch], str]]:
    clock = ManualClock()
    switches = {
        "db": Switch(Observation(HealthStatus.PASS, 1.5, "ms")),
        "cache": Switch(Observation(HealthStatus.PASS, 0.4, "ms")),
        "disk": Switch(Observation(HealthStatus.PASS, 0.8, "percent")),
    }
    monitor = HealthMonitor(
        [
            callable_check(switches["db"], component="db", measurement="responseTime",
                           groups={"ready"}),
            callable_check(switches["cache"], component="cache", measurement="responseTime",
                           critical=False, groups={"ready", "extras"}),
            callable_check(switches["disk"], component="disk", measurement="utilization",
                           groups={"live"}),
        ],
        clock=clock,
    )  # fmt: skip
    server = HealthServer(monitor, service_id="fokha-test")
    await server.start()
    yield monitor, switches, server.url
    await server.close()
    await monitor.close()


async def get(url: str, token: str | None = None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limit = aiohttp.ClientTimeout(total=timeout(10))
    async with aiohttp.ClientSession(timeout=limit) as s, s.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_health_json_structure_and_status_codes(
    setup: tuple[HealthMonitor, dict[str, Switch], str],
) -> None:
    """/health: unknown answers 200 (ready 503), pass 200, non-critical fail 200 warn, fail 503."""
    monitor, switches, url = setup
    code, ctype, _ = await get(f"{url}/health")
    assert code == 200
    assert ctype.startswith(HEALTH_CONTENT_TYPE)
    code, _, body = await get(f"{url}/health/ready")
    assert code == 503
    assert json.loads(body)["status"] == "warn"

    await monitor.run_once()
    code, _, body = await get(f"{url}/health")
    doc = json.loads(body)
    assert validate_health_json(doc) == []
    assert code == 200
    assert doc["status"] == "pass"
    assert doc["serviceId"] == "fokha-test"
    assert set(doc["checks"]) == {"db:responseTime", "cache:responseTime", "disk:utilization"}
    db = doc["checks"]["db:responseTime"][0]
    assert db["observedValue"] == 1.5
    assert db["observedUnit"] == "ms"
    assert db["componentType"] == "component"
    assert ISO_Z.match(db["time"])

    switches["cache"].answer = Observation(HealthStatus.FAIL, output="connection refused")
    await monitor.run_once()
    code, _, body = await get(f"{url}/health")
    doc = json.loads(body)
    assert validate_health_json(doc) == []
    assert (code, doc["status"]) == (200, "warn")
    assert doc["checks"]["cache:responseTime"][0]["output"] == "connection refused"

    switches["db"].answer = Observation(HealthStatus.FAIL, output="timeout")
    await monitor.run_once()
    code, _, body = await get(f"{url}/health")
    assert (code, json.loads(body)["status"]) == (503, "fail")
    assert validate_health_json(json.loads(body)) == []


async def test_groups_live_ready_custom_and_unknown(
    setup: tuple[HealthMonitor, dict[str, Switch], str],
) -> None:
    """/health/live, /ready and custom groups report only their checks; unknown group is 404."""
    monitor, switches, url = setup
    switches["db"].answer = Observation(HealthStatus.FAIL)
    await monitor.run_once()
    code, _, body = await get(f"{url}/health/live")
    assert (code, json.loads(body)["status"]) == (200, "pass")
    assert set(json.loads(body)["checks"]) == {"disk:utilization"}
    code, _, body = await get(f"{url}/health/ready")
    assert (code, json.loads(body)["status"]) == (503, "fail")
    code, _, body = await get(f"{url}/health/extras")
    assert code == 200
    assert set(json.loads(body)["checks"]) == {"cache:responseTime"}
    code, _, _ = await get(f"{url}/health/nope")
    assert code == 404


async def test_token_limits_details_and_metrics() -> None:
    """With a token, only bearers see checks and /metrics; others get the status alone."""
    monitor = HealthMonitor([callable_check(Switch(Observation()), component="db")])
    await monitor.run_once()
    app = web.Application()
    add_health_routes(app, monitor, prefix="/status", token="s3cret")
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        code, _, body = await get(f"{url}/status")
        assert code == 200
        assert json.loads(body) == {"status": "pass"}
        code, _, body = await get(f"{url}/status", token="wrong")
        assert "checks" not in json.loads(body)
        code, _, body = await get(f"{url}/status", token="s3cret")
        assert "db:status" in json.loads(body)["checks"]
        code, _, _ = await get(f"{url}/metrics")
        assert code == 401
        code, _, _ = await get(f"{url}/metrics", token="s3cret")
        assert code == 200
    finally:
        await runner.cleanup()
        await monitor.close()


async def _raw_get(port: int, path: str, authorization: bytes) -> int:
    """The status code of a GET whose Authorization header carries raw bytes."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: " + authorization + b"\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout(5))
    writer.close()
    return int(status_line.split()[1])


async def test_non_utf8_authorization_is_refused_not_a_500() -> None:
    """Non-UTF-8 bytes or an empty bearer in Authorization get 401/plain status, never 500."""
    monitor = HealthMonitor([callable_check(Switch(Observation()), component="db")])
    await monitor.run_once()
    server = HealthServer(monitor, token="s3cret")
    await server.start()
    try:
        for header in (b"Bearer \xff\xfe\x80", b"Bearer s3cret\xc3", b"\xff Bearer", b"Bearer "):
            assert await _raw_get(server.port, "/metrics", header) == 401
            assert await _raw_get(server.port, "/health", header) == 200
        assert await _raw_get(server.port, "/metrics", b"Bearer s3cret") == 200
    finally:
        await server.close()
        await monitor.close()


PROM_LINE = re.compile(
    r"^(# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|untyped)"
    r'|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(-?[0-9.eE+-]+|NaN|[+-]Inf))$"
)


def _plain(line: str) -> str:
    """A sample line with ``1.0`` written ``1`` (prometheus_client keeps the ``.0``)."""
    return re.sub(r" (-?[0-9]+)\.0$", r" \1", line)


def test_prometheus_client_and_builtin_writer_agree() -> None:
    """With the [metrics] extra, /metrics text equals the built-in writer's, up to ``.0``."""
    pytest.importorskip("prometheus_client")
    reg = MetricsRegistry()
    reg.register(
        lambda: [
            MetricFamily("c_total", "counter", "a \\ b\nc", (Sample(3, {"k": 'x"\\\n'}),)),
            MetricFamily("g", "gauge", "g", (Sample(float("nan")), Sample(2.5, {"a": "1"}))),
            MetricFamily("u", "untyped", "u", (Sample(float("inf")), Sample(-4))),
        ]
    )
    ours = reg.render_builtin().split("\n")
    theirs = [_plain(line) for line in reg.render().split("\n")]
    assert theirs == ours


async def test_metrics_text_format_with_registered_providers(
    setup: tuple[HealthMonitor, dict[str, Switch], str],
) -> None:
    """/metrics is Prometheus text: per-check series, a breaker's series, escaped labels."""
    monitor, _, url = setup
    await monitor.run_once()
    breaker = CircuitBreaker("quotes")
    breaker.trip()
    monitor.metrics.register(breaker_metrics(breaker))
    monitor.metrics.register(
        lambda: [MetricFamily("odd", "gauge", 'help with \\ and\nnewline',
                              (Sample(1, {"v": 'a"b\\c\nd'}),))]
    )  # fmt: skip
    code, ctype, text = await get(f"{url}/metrics")
    assert code == 200
    assert ctype.startswith("text/plain")
    lines = [_plain(line) for line in text.rstrip("\n").split("\n")]
    bad = [line for line in lines if not PROM_LINE.match(line)]
    assert bad == []
    assert 'fokha_health_check_status{check="db:responseTime"} 0' in lines
    assert 'fokha_health_check_runs_total{check="db:responseTime"} 1' in lines
    assert 'fokha_breaker_state{breaker="quotes",state="open"} 1' in lines
    assert 'odd{v="a\\"b\\\\c\\nd"} 1' in lines
    assert "# HELP odd help with \\\\ and\\nnewline" in lines


def test_registry_merges_and_survives_a_broken_provider() -> None:
    """Same-named families merge; a provider that raises is skipped, not fatal."""
    reg = MetricsRegistry()
    reg.register(lambda: [MetricFamily("x_total", "counter", "h", (Sample(1, {"a": "1"}),))])
    reg.register(lambda: [MetricFamily("x_total", "counter", "h", (Sample(2, {"a": "2"}),))])

    def broken() -> list[MetricFamily]:
        raise RuntimeError("boom")

    reg.register(broken)
    text = "\n".join(_plain(line) for line in reg.render().split("\n"))
    assert text.count("# TYPE x_total counter") == 1
    assert 'x_total{a="1"} 1' in text
    assert 'x_total{a="2"} 2' in text
    with pytest.raises(ValueError, match="metric name"):
        MetricFamily("bad name", "gauge", "h", ())


async def test_a_probe_request_reads_results_and_never_runs_checks() -> None:
    """GET /health runs no check, shows the stored result's time; a stale one reads fail/503."""
    clock = ManualClock()
    calls = 0

    async def probe() -> bool:
        nonlocal calls
        calls += 1
        return True

    monitor = HealthMonitor(
        [callable_check(probe, component="db", interval=1.0, stale_after=5.0)], clock=clock
    )
    await monitor.run_once()
    taken = clock.time()
    server = HealthServer(monitor)
    await server.start()
    try:
        clock.advance(3.0)
        for _ in range(3):
            code, _, body = await get(f"{server.url}/health")
            assert code == 200
        assert calls == 1
        item = json.loads(body)["checks"]["db:status"][0]
        shown = datetime.strptime(item["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert abs(shown.replace(tzinfo=timezone.utc).timestamp() - taken) < 0.01
        clock.advance(2.5)
        code, _, body = await get(f"{server.url}/health")
        doc = json.loads(body)
        assert validate_health_json(doc) == []
        assert (code, doc["status"]) == (503, "fail")
        assert doc["checks"]["db:status"][0]["output"].startswith("stale")
        assert calls == 1
    finally:
        await server.close()
        await monitor.close()
