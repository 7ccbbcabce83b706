"""The web console at ``/console``: static page + a small JSON API, both token-protected.

The page is plain HTML, CSS and JavaScript shipped as package data (no build step).
Every API call carries ``Authorization: Bearer <token>`` (the HMAC tokens the
WebSocket server checks; the console needs one that may read every channel). The
token lives in the tab's ``sessionStorage``, never in a cookie, so another site
cannot make the browser send it: actions are CSRF-safe by construction. Every
response carries a strict Content-Security-Policy (no inline script, no other
origin but the hub's own WebSocket port).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import ProtocolError, ValidationError
from ..ws import Principal, token_channels

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["add_console_routes"]

_STATIC = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
}
_HUB_KEY: web.AppKey[Hub] = web.AppKey("fokha_hub")


def _csp(hub: Hub, request: web.Request) -> str:
    # The live feed connects to the host the page came from, on the WebSocket port.
    host = request.url.raw_host or hub.config.server.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    port = hub.ws.port
    ws = f"ws://{host}:{port} wss://{host}:{port}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@web.middleware
async def _security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    if request.path.startswith("/console"):
        response.headers["Content-Security-Policy"] = _csp(request.app[_HUB_KEY], request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
    return response


def _problem(status: int, title: str, detail: str = "") -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/problem+json"
    )


def _principal(request: web.Request) -> Principal | None:
    hub = request.app[_HUB_KEY]
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    try:
        principal: Principal = hub.authenticator.verify(header[7:].strip())
    except (ProtocolError, ValueError, UnicodeError):
        return None
    return principal


def _guard(handler: Any, scope: str | None = None) -> Any:
    """Needs a token with the ``console`` scope (and ``scope`` for an action).

    Scopes are the token's patterns, as for the API: a token without patterns has
    every scope (the one ``fokha serve`` prints is such an admin token).
    """

    async def guarded(request: web.Request) -> web.StreamResponse:
        principal = _principal(request)
        if principal is None or not token_channels(principal, "console", "api"):
            return _problem(401, "unauthorised", "a console token is required (Bearer)")
        if scope is not None and not token_channels(principal, scope, "api"):
            return _problem(403, "scope_missing", f"this action needs the {scope} scope")
        response: web.StreamResponse = await handler(request)
        return response

    return guarded


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name", "index.html")
    if name not in _STATIC:
        raise web.HTTPNotFound
    data = resources.files("fokha_integration.serve").joinpath("static").joinpath(name).read_bytes()
    return web.Response(body=data, content_type=_STATIC[name])


async def _session(request: web.Request) -> web.Response:
    hub = request.app[_HUB_KEY]
    channels = sorted({s.channel for s in hub.config.sinks if s.kind == "websocket"})
    return web.json_response(
        {
            "ws_url": hub.ws_url,
            "ws_port": hub.ws.port,
            "channels": channels,
            "demo": hub.demo,
            "started": hub.started_at,
            "api": hub.config.api.enabled,
            "sync": hub.sync is not None,
        }
    )


async def _overview(request: web.Request) -> web.Response:
    hub = request.app[_HUB_KEY]
    report = hub.monitor.report()
    checks = {
        view.key: {
            "status": str(view.status.value),
            "output": view.result.output if view.result is not None else "",
            "stale": view.stale,
        }
        for _check, view in report.checks
    }
    ws = hub.ws.metrics()
    sinks = {
        name: {
            "delivered": m.delivered,
            "retried": m.retried,
            "dead_lettered": m.dead_lettered,
            "pending": m.pending,
            "lag": round(m.lag, 4),
            "oldest_pending_age": round(m.oldest_pending_age, 3),
            "breaker": m.breaker,
        }
        for name, m in (await hub.queue.metrics()).items()
    }
    ea: dict[str, Any] | None = None
    if hub.bridge is not None:
        age = hub.ea_heartbeat_age()
        alive = hub.bridge.peer_alive(max_age=hub.config.bridge.fail_after)
        ea = {
            "alive": alive,
            "heartbeat_age": None if age is None else round(age, 2),
            "restarts": hub.bridge.stats().peer_restarts,
            "instance": hub.bridge.peer_instance,
        }
    sync: dict[str, Any] | None = None
    if hub.sync is not None:
        m = await hub.sync.metrics()
        sync = {
            "lag": m.lag,
            "records": m.records,
            "tombstones": m.tombstones,
            "unresolved_conflicts": m.unresolved_conflicts,
        }
    return web.json_response(
        {
            "status": str(report.status.value),
            "sync": sync,
            "checks": checks,
            "ea": ea,
            "websocket": {
                "connections": ws.connections,
                "subscriptions": ws.subscriptions,
                "published": ws.messages_published,
                "sent": ws.messages_sent,
                "gaps": ws.gaps,
            },
            "sinks": sinks,
            "samples": [
                {
                    "t": s.t,
                    "messages_per_s": s.messages_per_s,
                    "delivered_per_s": s.delivered_per_s,
                    "pending": s.pending,
                    "oldest_age": s.oldest_age,
                }
                for s in hub.samples
            ],
            "now": time.time(),
        }
    )


async def _dead_letters(request: web.Request) -> web.Response:
    hub = request.app[_HUB_KEY]
    letters = await hub.queue.dead_letters(limit=200)
    return web.json_response(
        [
            {
                "ref": d.ref,
                "sink": d.sink,
                "reason": d.reason,
                "envelope": d.envelope.to_dict(),
                "detail": d.detail,
                "dead_at": d.dead_at,
                "attempts": [a.to_dict() for a in d.attempts],
            }
            for d in letters
        ]
    )


async def _replay(request: web.Request) -> web.Response:
    hub = request.app[_HUB_KEY]
    try:
        body = await request.json()
    except ValueError:
        return _problem(400, "bad_json", "the body must be a JSON object")
    if not isinstance(body, dict):
        return _problem(400, "bad_json", "the body must be a JSON object")
    sink, refs = body.get("sink"), body.get("refs")
    if not isinstance(sink, str) or not (
        isinstance(refs, list) and all(isinstance(r, str) for r in refs) and len(refs) <= 1000
    ):
        return _problem(422, "bad_field", "sink: string; refs: list of up to 1000 strings")
    try:
        count = await hub.queue.replay_dead_letters(sink, refs)
    except (KeyError, ValueError) as exc:  # an unknown sink, a ref the store never issued
        return _problem(404, "unknown_dead_letter", str(exc))
    return web.json_response({"replayed": count})


async def _conflicts(request: web.Request) -> web.Response:
    hub = request.app[_HUB_KEY]
    if hub.sync is None:
        return web.json_response([])
    entries = await hub.sync.conflicts(limit=100)
    return web.json_response([e.to_dict() for e in entries])


async def _resolve(request: web.Request) -> web.Response:
    hub = request.app[_HUB_KEY]
    if hub.sync is None:
        return _problem(404, "sync_disabled", "the hub serves no sync")
    try:
        conflict_id = int(request.match_info["conflict_id"])
        body = await request.json()
    except ValueError:
        return _problem(400, "bad_request", "a numeric conflict id and a JSON body")
    choice = body.get("choice") if isinstance(body, dict) else None
    if choice not in ("server", "client", "result"):
        return _problem(422, "bad_field", "choice: server, client or result")
    try:
        record = await hub.sync.resolve(conflict_id, choice)
    except ValidationError as exc:
        if exc.reason == "no such conflict":
            return _problem(404, "unknown_conflict", str(exc))
        return _problem(409, "conflict_stale", exc.reason)
    return web.json_response({"id": record.id, "version": record.version})


def add_console_routes(app: web.Application, hub: Hub) -> None:
    """Mount the console page and its API on ``app`` (``/console``)."""
    app[_HUB_KEY] = hub
    app.middlewares.append(_security_headers)
    app.router.add_get("/console", _static)
    app.router.add_get("/console/", _static)
    app.router.add_get("/console/static/{name}", _static)
    app.router.add_get("/console/api/session", _guard(_session))
    app.router.add_get("/console/api/overview", _guard(_overview))
    app.router.add_get("/console/api/dead-letters", _guard(_dead_letters))
    app.router.add_post("/console/api/dead-letters/replay", _guard(_replay, "dead_letters:write"))
    app.router.add_get("/console/api/conflicts", _guard(_conflicts))
    app.router.add_post(
        "/console/api/conflicts/{conflict_id}/resolve", _guard(_resolve, "sync:write")
    )
