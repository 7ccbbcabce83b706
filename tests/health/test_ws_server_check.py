"""websocket_server_check: our streaming server's own health, read from its metrics."""

from __future__ import annotations

from dataclasses import dataclass

from websockets.asyncio.client import connect

from fokha_integration import ManualClock, WebSocketServer
from fokha_integration.health import HealthMonitor, HealthStatus, websocket_server_check
from tests.support import timeout


async def test_serving_server_passes_and_stopped_server_fails() -> None:
    """A started server passes with its connection count; a closed one fails."""
    server = WebSocketServer(port=0)
    await server.start()
    monitor = HealthMonitor([websocket_server_check(server)], clock=ManualClock())
    try:
        async with connect(server.url, open_timeout=timeout(5)) as ws:
            await ws.send('{"op":"ping","id":"1"}')
            await ws.recv()  # the server has registered this connection
            report = await monitor.run_once()
            view = report.checks[0][1]
            assert view.status is HealthStatus.PASS
            assert view.result is not None
            assert view.result.observed_value == 1
        await server.close()
        report = await monitor.run_once()
        assert report.checks[0][1].status is HealthStatus.FAIL
        assert report.status is HealthStatus.FAIL
    finally:
        await monitor.close()
        await server.close()


@dataclass
class _Stats:
    connections: int
    slow_clients: int


class _StatsSource:
    """A stand-in exposing the same two facts a real server does (for the warn branch)."""

    serving = True

    def __init__(self, slow: int) -> None:
        self.slow = slow

    def metrics(self) -> _Stats:
        return _Stats(connections=10, slow_clients=self.slow)


async def test_slow_clients_over_the_limit_warn() -> None:
    """More slow clients than max_slow_clients gives warn (degraded), not fail."""
    source = _StatsSource(slow=2)
    monitor = HealthMonitor(
        [websocket_server_check(source, max_slow_clients=1)], clock=ManualClock()
    )
    try:
        report = await monitor.run_once()
        assert report.checks[0][1].status is HealthStatus.WARN
        assert report.status is HealthStatus.WARN
    finally:
        await monitor.close()
