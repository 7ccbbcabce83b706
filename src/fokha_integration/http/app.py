"""The REST API the Flutter app talks to: ``api_app(...)`` returns an aiohttp application.

Routes (declared once in :data:`~fokha_integration.http.openapi.OPERATIONS`, which
also generates the OpenAPI 3.1 document served at ``/openapi.json``):

- ``POST /v1/signals`` — validate a :class:`~fokha_integration.models.Signal` and
  publish it into the :class:`~fokha_integration.queue.SignalQueue`; an
  ``Idempotency-Key`` is required (:func:`idempotency_middleware`); 201 with the
  publish result, 200 for a duplicate signal;
- ``GET /v1/signals`` (newest first, ``cursor``/``limit``) and ``GET /v1/signals/{id}``
  (with its state per sink) — over the signals published through this app (a
  bounded in-memory index, ``recent_limit``);
- ``GET /v1/positions`` — the EA's latest ``positions`` snapshot through a
  :class:`~fokha_integration.FileBridge` (or anything with ``read_snapshot``);
- ``GET /v1/dead-letters``, ``POST /v1/dead-letters/{id}/replay``;
- the health routes when a monitor is given, and ``/openapi.json``.

Auth: ``Authorization: Bearer <token>`` checked by the WebSocket server's
:class:`~fokha_integration.ws.TokenAuthenticator` (the same HMAC tokens); the
token's channel patterns are its scopes (``signals:write``, ``signals:*``; a token
without patterns may do everything, as on the WebSocket server). Errors are
problem+json (RFC 9457) everywhere; bodies are limited to ``max_body`` bytes.
Serve it on 127.0.0.1 unless it sits behind a TLS proxy.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .._validate import integer
from ..dedup import DedupCache
from ..errors import (
    BackendError,
    ClosedError,
    ConfigError,
    OperationTimeoutError,
    ValidationError,
)
from ..models import Signal
from ._problem import PROBLEM_CONTENT_TYPE, problem, problem_body
from .idempotency import PRINCIPAL_KEY, IdempotencyConfig, idempotency_middleware, idempotent
from .openapi import OPERATIONS, Operation, openapi_document

if TYPE_CHECKING:
    from aiohttp import web

    from ..health import HealthMonitor
    from ..queue import SignalQueue
    from ..ws import Authenticator

__all__ = ["ApiAppConfig", "SnapshotSource", "api_app"]

_log = logging.getLogger("fokha_integration.http.app")


class SnapshotSource(Protocol):
    """What the positions route needs: :meth:`FileBridge.read_snapshot`'s shape."""

    def read_snapshot(self, name: str) -> Any:
        """The latest snapshot called ``name`` (``.seq``, ``.sent_at``, ``.body``) or None."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiAppConfig:
    """Settings of :func:`api_app`: body limit, index size, idempotency rules.

    ``max_body`` bounds the API's own requests. ``server_max_body`` (default: the
    same) is the whole aiohttp server's limit, for when other applications mounted
    on this one accept larger bodies (the sync sub-application: 8 MiB).
    """

    max_body: int = 256 * 1024
    server_max_body: int | None = None
    recent_limit: int = 10_000
    idempotency: IdempotencyConfig = field(default_factory=IdempotencyConfig)

    def __post_init__(self) -> None:
        integer("max_body", self.max_body, minimum=1, maximum=64 * 1024 * 1024)
        if self.server_max_body is not None:
            integer(
                "server_max_body",
                self.server_max_body,
                minimum=self.max_body,
                maximum=256 * 1024 * 1024,
            )
        integer("recent_limit", self.recent_limit, minimum=1, maximum=10_000_000)
        if not isinstance(self.idempotency, IdempotencyConfig):
            raise ConfigError("idempotency", "must be an IdempotencyConfig", self.idempotency)


class _SignalIndex:
    """Signals published through the app, in order, bounded (oldest dropped)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seqs: list[int] = []
        self._signals: list[Signal] = []
        self._by_id: dict[str, Signal] = {}
        self._next = 1

    def add(self, signal: Signal) -> None:
        if signal.id in self._by_id:
            return
        self._seqs.append(self._next)
        self._signals.append(signal)
        self._by_id[signal.id] = signal
        self._next += 1
        if len(self._seqs) > self._limit:
            dropped = self._signals[0]
            del self._seqs[0], self._signals[0]
            self._by_id.pop(dropped.id, None)

    def get(self, signal_id: str) -> Signal | None:
        return self._by_id.get(signal_id)

    def page(self, before: int | None, limit: int) -> tuple[list[Signal], str | None]:
        """Newest first, only entries with a sequence below ``before``; and the next cursor."""
        end = len(self._seqs) if before is None else bisect.bisect_left(self._seqs, before)
        start = max(0, end - limit)
        items = self._signals[start:end][::-1]
        cursor = str(self._seqs[start]) if start > 0 and items else None
        return items, cursor


def _json(data: Any, status: int = 200) -> web.Response:
    from aiohttp import web

    return web.Response(
        status=status,
        body=json.dumps(data, separators=(",", ":")).encode("utf-8"),
        content_type="application/json",
    )


def _client_error(status: int, code: str, title: str, detail: str = "", **extra: Any) -> Any:
    """A raised 4xx problem (raised, so the idempotency middleware does not store it)."""
    from aiohttp import web

    kinds: dict[int, type[web.HTTPClientError]] = {
        400: web.HTTPBadRequest,
        409: web.HTTPConflict,
        415: web.HTTPUnsupportedMediaType,
        422: web.HTTPUnprocessableEntity,
    }
    return kinds[status](
        text=problem_body(status, code, title, detail, **extra).decode("utf-8"),
        content_type=PROBLEM_CONTENT_TYPE,
    )


def _unavailable(detail: str) -> Any:
    """A raised 503 + Retry-After: nothing was done, the same key may be retried."""
    from aiohttp import web

    return web.HTTPServiceUnavailable(
        text=problem_body(503, "unavailable", "Try again shortly", detail).decode("utf-8"),
        content_type=PROBLEM_CONTENT_TYPE,
        headers={"Retry-After": "1"},
    )


def _int_query(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise _client_error(400, "bad_query", f"{name} must be an integer in 1..{maximum}")
    return int(raw)


def api_app(
    *,
    queue: SignalQueue,
    authenticator: Authenticator,
    idempotency_cache: DedupCache | None = None,
    positions: SnapshotSource | None = None,
    monitor: HealthMonitor | None = None,
    config: ApiAppConfig | None = None,
) -> web.Application:
    """The REST API application (see the module docstring); serve it with aiohttp's runners.

    ``idempotency_cache`` stores Idempotency-Key entries (default: a memory
    :class:`DedupCache`; use SQLite or Redis when several processes serve the API).
    """
    from aiohttp import web

    from ..ws import AuthError, token_channels

    cfg = config if config is not None else ApiAppConfig()
    cache = idempotency_cache if idempotency_cache is not None else DedupCache()
    index = _SignalIndex(cfg.recent_limit)
    operations = {(op.method, op.path): op for op in OPERATIONS}
    document = json.dumps(openapi_document(health=monitor is not None)).encode("utf-8")

    @web.middleware
    async def problems(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == PROBLEM_CONTENT_TYPE or exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            return problem(exc.status, f"http_{exc.status}", exc.reason, headers=headers)
        except Exception:
            _log.exception("API handler failed: %s %s", request.method, request.path)
            return problem(500, "internal_error", "Internal server error")

    @web.middleware
    async def body_limit(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # The API's own limit, whatever the server-wide one (mounted apps may need more).
        resource = request.match_info.route.resource
        if (request.method, resource.canonical if resource else "") in operations:
            size = request.content_length
            if size is None and request.can_read_body:
                size = len(await request.read())
            if size is not None and size > cfg.max_body:
                return problem(413, "body_too_large", f"at most {cfg.max_body} bytes")
        return await handler(request)

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        resource = request.match_info.route.resource
        op = operations.get((request.method, resource.canonical if resource else ""))
        if op is None or op.scope is None:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not token.strip() or not token.isascii():
            return problem(401, "auth_missing", "Bearer token required", headers=challenge)
        try:
            principal = await authenticator.authenticate(token.strip())
        except AuthError as exc:
            return problem(401, exc.code, "Token refused", exc.detail, headers=challenge)
        if not token_channels(principal, op.scope, "api"):
            return problem(403, "scope_missing", "Token lacks a scope", f"needs {op.scope}")
        request[PRINCIPAL_KEY] = principal
        return await handler(request)

    def need(op_id: str) -> Operation:
        return next(op for op in OPERATIONS if op.operation_id == op_id)

    @idempotent
    async def publish_signal(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise _client_error(415, "unsupported_media_type", "Body must be application/json")
        try:
            data = json.loads(await request.read())
        except ValueError:
            raise _client_error(400, "bad_json", "Body is not JSON") from None
        if not isinstance(data, dict):
            raise _client_error(422, "invalid_signal", "Body must be a JSON object")
        try:
            signal = Signal.from_dict(data)
        except ValidationError as exc:
            raise _client_error(
                422, "invalid_signal", "Invalid signal", exc.reason, field=exc.field
            ) from None
        try:
            result = await queue.publish(signal)
        except (BackendError, OperationTimeoutError, ClosedError) as exc:
            # The queue did not take it (and freed its dedup claim): say "retry", and
            # keep nothing under the Idempotency-Key.
            raise _unavailable(f"the outbox could not take the signal: {exc}") from None
        if result.status == "duplicate" and result.in_flight:
            # The first publish of this signal has not finished: its outcome is not
            # known yet, so nothing final may be stored under this key.
            raise _client_error(
                409, "signal_in_flight", "The same signal is being published right now"
            )
        if result.status == "conflict":
            return problem(
                422, "signal_conflict", "A signal with this id exists with other content"
            )
        index.add(signal)
        body = {"status": result.status, "id": result.id, "key": result.key}
        return _json(body, 201 if result.status == "accepted" else 200)

    async def list_signals(request: web.Request) -> web.Response:
        limit = _int_query(request, "limit", 50, 500)
        cursor = request.query.get("cursor")
        before = None
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
                raise _client_error(400, "bad_query", "cursor is not one this API gave")
            before = int(cursor)
        items, next_cursor = index.page(before, limit)
        return _json({"items": [s.to_dict() for s in items], "next_cursor": next_cursor})

    async def get_signal(request: web.Request) -> web.Response:
        signal = index.get(request.match_info["id"])
        if signal is None:
            return problem(404, "not_found", "No such signal")
        sinks: dict[str, dict[str, Any]] = {
            name: {"state": "accepted", "reason": None, "detail": None}
            for name in await queue.metrics()
        }
        for dead in await queue.dead_letters(limit=1000):
            if dead.envelope.id == signal.id:
                sinks[dead.sink] = {
                    "state": "dead_letter",
                    "reason": dead.reason,
                    "detail": dead.detail,
                }
        return _json({"signal": signal.to_dict(), "sinks": sinks})

    async def get_positions(request: web.Request) -> web.Response:
        snapshot = positions.read_snapshot("positions") if positions is not None else None
        if snapshot is None:
            return problem(503, "positions_unavailable", "No positions snapshot from the EA yet")
        listed = snapshot.body.get("positions", [])
        return _json(
            {
                "positions": [p for p in listed if isinstance(p, dict)]
                if isinstance(listed, list)
                else [],
                "seq": int(snapshot.seq),
                "sent_at": float(snapshot.sent_at),
            }
        )

    async def list_dead_letters(request: web.Request) -> web.Response:
        limit = _int_query(request, "limit", 100, 500)
        sink = request.query.get("sink")
        letters = await queue.dead_letters(sink, limit=limit)
        return _json(
            {
                "items": [
                    {
                        "ref": d.ref,
                        "sink": d.sink,
                        "reason": d.reason,
                        "detail": d.detail,
                        "envelope_id": d.envelope.id,
                        "dead_at": d.dead_at,
                    }
                    for d in letters
                ]
            }
        )

    @idempotent(rule="optional")
    async def replay_dead_letter(request: web.Request) -> web.Response:
        try:
            replayed = await queue.replay_dead_letters(refs=[request.match_info["id"]])
        except ValueError:  # the memory store refuses a ref that is not one of its numbers
            replayed = 0
        if replayed == 0:
            return problem(404, "not_found", "No such dead letter")
        return _json({"replayed": replayed})

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    handlers = {
        "publishSignal": publish_signal,
        "listSignals": list_signals,
        "getSignal": get_signal,
        "getPositions": get_positions,
        "listDeadLetters": list_dead_letters,
        "replayDeadLetter": replay_dead_letter,
    }
    app = web.Application(
        client_max_size=cfg.server_max_body or cfg.max_body,
        middlewares=[
            problems,
            body_limit,
            auth,
            idempotency_middleware(cache, config=cfg.idempotency),
        ],
    )
    for op_id, handler in handlers.items():
        op = need(op_id)
        app.router.add_route(op.method, op.path, handler)
    app.router.add_get("/openapi.json", openapi)
    if monitor is not None:
        from ..health import add_health_routes

        add_health_routes(app, monitor, metrics_path=None)
    if idempotency_cache is None:

        async def close_cache(app: web.Application) -> None:
            await cache.close()

        app.on_cleanup.append(close_cache)
    return app
