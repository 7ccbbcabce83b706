"""Malformed headers on the health endpoints (issue 13, defect 11 and the empty-token weak spot).

A real :class:`HealthServer` on 127.0.0.1, requests written byte by byte over a raw
socket. The invariant: no header a client sends can make the server answer 5xx, and
details and ``/metrics`` stay behind the token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from fokha_integration.errors import ConfigError
from fokha_integration.health import HealthMonitor, HealthServer, Observation, callable_check
from tests.faults._raw_http import MALFORMED_HEADERS, raw_request

TOKEN = "s3cret-health-token"
PATHS = ["/health", "/health/live", "/health/ready", "/health/nosuchgroup", "/metrics"]


async def _ok() -> Observation:
    return Observation()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """The port of a running HealthServer with a token."""
    monitor = HealthMonitor([callable_check(_ok, component="db")], spread_start=False)
    await monitor.run_once()  # every check has a result: /health/ready answers 200
    async with HealthServer(monitor, token=TOKEN) as server:
        yield server.port


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(MALFORMED_HEADERS))
async def test_malformed_headers_never_give_5xx(
    port: int, path: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every malformed header on every health route: a 2xx/4xx answer, no traceback logged."""
    caplog.set_level(logging.ERROR)
    status = await raw_request(port, "GET", path, MALFORMED_HEADERS[name])
    assert status < 500, f"{name} on {path} answered {status}"
    if path == "/metrics":
        assert status in (400, 401, 431), f"{name} read /metrics without the token"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_right_token_still_reads_metrics(port: int) -> None:
    """The real token is still accepted after the hardening."""
    status = await raw_request(
        port, "GET", "/metrics", f"Authorization: Bearer {TOKEN}\r\n".encode()
    )
    assert status == 200


def test_an_empty_token_is_refused() -> None:
    """HealthServer(token="") raises ConfigError naming token (an empty Bearer would match)."""
    monitor = HealthMonitor([])
    with pytest.raises(ConfigError) as info:
        HealthServer(monitor, token="")
    assert info.value.field == "token"
