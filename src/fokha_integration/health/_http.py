"""Health endpoints for aiohttp: mount them in your app or serve them alone.

Routes (``prefix`` defaults to ``/health``):

- ``GET /health`` — every check, ``application/health+json``;
- ``GET /health/live``, ``/health/ready``, ``/health/{group}`` — one group's checks;
- ``GET /metrics`` — the monitor's :class:`MetricsRegistry` in Prometheus text format.

Status codes: 200 for ``pass`` and ``warn``, 503 for ``fail``; ``unknown`` (a critical
check has no result yet) is sent as ``warn`` and answers 200, except on ``ready``,
which answers 503 until every critical check has a result. An unknown group is 404.

With ``token=`` set, only requests with ``Authorization: Bearer <token>`` see the
``checks`` details and ``/metrics``; others get the status alone (and 401 on
``/metrics``). The token is compared in constant time; an empty ``token`` is
refused (:class:`~fokha_integration.errors.ConfigError`), and a header that is not
valid UTF-8 counts as no credentials (never a 500).
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from .. import _validate
from ..errors import ClosedError
from ._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ._monitor import HealthMonitor, HealthReport
from ._state import HealthStatus

if TYPE_CHECKING:
    from aiohttp import web

# aiohttp.web is imported where it is used, so ``import fokha_integration`` stays light

__all__ = ["HEALTH_CONTENT_TYPE", "HealthServer", "add_health_routes", "render_health"]

HEALTH_CONTENT_TYPE = "application/health+json"

_ISO_FMT = "%Y-%m-%dT%H:%M:%S"


def _iso(seconds: float) -> str:
    from ..clock import utc_from_timestamp

    dt = utc_from_timestamp(seconds)
    return dt.strftime(_ISO_FMT) + f".{dt.microsecond // 1000:03d}Z"


def render_health(
    report: HealthReport, *, details: bool = True, service_id: str | None = None
) -> dict[str, Any]:
    """The health+json document of a report (``details=False``: status only)."""
    doc: dict[str, Any] = {"status": report.status.wire}
    if service_id is not None:
        doc["serviceId"] = service_id
    if report.status is HealthStatus.UNKNOWN:
        doc["output"] = "waiting for the first result of a critical check"
    if not details:
        return doc
    checks: dict[str, list[dict[str, Any]]] = {}
    for check, view in report.checks:
        item: dict[str, Any] = {
            "componentId": check.component,
            "componentType": check.component_type,
            "status": view.status.wire,
        }
        result = view.result
        if result is not None:
            if result.observed_value is not None:
                item["observedValue"] = result.observed_value
            if result.observed_unit is not None:
                item["observedUnit"] = result.observed_unit
            item["time"] = _iso(result.time)
        output = result.output if result is not None else "no result yet"
        if view.stale:
            output = "stale: no result within stale_after" + (f"; last: {output}" if output else "")
        if output:
            item["output"] = output
        checks.setdefault(check.key, []).append(item)
    doc["checks"] = checks
    return doc


def _http_status(status: HealthStatus, group: str | None) -> int:
    if status is HealthStatus.FAIL:
        return 503
    if status is HealthStatus.UNKNOWN and group == "ready":
        return 503
    return 200


class _Handlers:
    def __init__(self, monitor: HealthMonitor, token: str | None, service_id: str | None) -> None:
        self.monitor = monitor
        # An empty token would let "Authorization: Bearer " in: refuse it up front.
        self.token = _validate.string("token", token).encode() if token is not None else None
        self.service_id = service_id

    def authorised(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            # aiohttp hands undecodable header bytes over as lone surrogates: a hostile
            # header is simply wrong, never a 500.
            presented = given.strip().encode("utf-8")
        except UnicodeEncodeError:
            return False
        return bool(presented) and hmac.compare_digest(presented, self.token)

    def respond(self, group: str | None, request: web.Request) -> web.Response:
        from aiohttp import web

        report = self.monitor.report(group)
        doc = render_health(report, details=self.authorised(request), service_id=self.service_id)
        return web.Response(
            status=_http_status(report.status, group),
            text=json.dumps(doc, separators=(",", ":")),
            content_type=HEALTH_CONTENT_TYPE,
            headers={"Cache-Control": "no-store"},
        )

    async def health(self, request: web.Request) -> web.Response:
        return self.respond(None, request)

    async def group(self, request: web.Request) -> web.Response:
        from aiohttp import web

        name = request.match_info["group"]
        if name not in ("live", "ready") and name not in self.monitor.groups:
            return web.json_response({"error": "unknown group"}, status=404)
        return self.respond(name, request)

    async def metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        if not self.authorised(request):
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        return web.Response(
            body=self.monitor.metrics.render().encode(),
            headers={"Content-Type": METRICS_CONTENT_TYPE},
        )


def add_health_routes(
    app: web.Application,
    monitor: HealthMonitor,
    *,
    prefix: str = "/health",
    metrics_path: str | None = "/metrics",
    token: str | None = None,
    service_id: str | None = None,
) -> None:
    """Mount the health endpoints (and ``/metrics`` unless ``metrics_path=None``) in ``app``."""
    h = _Handlers(monitor, token, service_id)
    prefix = prefix.rstrip("/")
    app.router.add_get(prefix, h.health)
    app.router.add_get(prefix + "/{group}", h.group)
    if metrics_path is not None:
        app.router.add_get(metrics_path, h.metrics)


class HealthServer:
    """The endpoints served alone on ``host:port`` (127.0.0.1 and a free port by default).

    ``async with HealthServer(monitor) as server: print(server.url)``.
    """

    def __init__(
        self,
        monitor: HealthMonitor,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        service_id: str | None = None,
    ) -> None:
        from aiohttp import web

        _validate.string("host", host)
        _validate.integer("port", port, minimum=0, maximum=65535)
        if token is not None:
            # An empty token would let "Authorization: Bearer " through.
            _validate.string("token", token)
        if service_id is not None:
            _validate.string("service_id", service_id)
        self._app = web.Application()
        add_health_routes(self._app, monitor, token=token, service_id=service_id)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._runner is None:
            raise ClosedError("the health server is not started")
        addr = self._runner.addresses[0]
        return int(addr[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self._host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve."""
        from aiohttp import web

        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
