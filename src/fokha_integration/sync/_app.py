"""``sync_app(service)``: protocol v1 as an aiohttp sub-application.

Mount it in your own application::

    app = web.Application()
    app.add_subapp("/sync", sync_app(service, authenticator=TokenAuthenticator(secret)))

Routes ``POST /v1/pull`` and ``POST /v1/push`` (under the mount prefix). Errors are
problem+json (a small local helper until the shared HTTP layer lands). With
``poke=(ws_server, channel)`` every committed change publishes a data-less notice
on that WebSocket channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..ws import Authenticator, AuthError, Principal, WebSocketServer, token_channels
from ._service import SyncService, problem

__all__ = ["POKE_CHANNEL", "SYNC_SCOPE", "default_authorize", "sync_app"]

POKE_CHANNEL = "sync.poke"
SYNC_SCOPE = "sync"
"""The token pattern (scope) that allows pull and push."""
_SERVICE = web.AppKey("fokha_sync_service", SyncService)


def default_authorize(principal: Principal, client_id: str) -> bool:
    """A token for ``alice`` may act as ``alice`` or ``alice/<anything>``, if it has the
    ``sync`` scope (a token without patterns has every scope; a ``prices.*`` display
    token has not)."""
    if not token_channels(principal, SYNC_SCOPE, "api"):
        return False
    return client_id == principal.subject or client_id.startswith(principal.subject + "/")


def _reply(status: int, body: bytes) -> web.Response:
    ctype = "application/json" if status == 200 else "application/problem+json"
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.Response(status=status, body=body, content_type=ctype, headers=headers)


def sync_app(
    service: SyncService,
    *,
    authenticator: Authenticator | None = None,
    authorize: Callable[[Principal, str], bool] = default_authorize,
    poke: tuple[WebSocketServer, str] | None = None,
) -> web.Application:
    """The sub-application serving ``service`` (see the module docstring).

    Without an ``authenticator`` every request is accepted (bind to 127.0.0.1).
    """
    limit = service.config.max_body_bytes
    app = web.Application(client_max_size=limit)
    app[_SERVICE] = service

    async def handler(request: web.Request) -> web.Response:
        route = request.match_info["route"]
        if request.content_type != "application/json":
            return _reply(*problem(415, "unsupported_media_type", "send application/json"))
        if request.content_length is not None and request.content_length > limit:
            return _reply(*problem(413, "body_too_large", f"at most {limit} bytes"))
        allow = None
        if authenticator is not None:
            header = request.headers.get("Authorization", "")
            token = header[7:] if header.startswith("Bearer ") else None
            try:
                principal = await authenticator.authenticate(token)
            except AuthError as exc:
                return _reply(*problem(401, "unauthorized", exc.detail))

            def allow(client_id: str) -> bool:
                return authorize(principal, client_id)

        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _reply(*problem(413, "body_too_large", f"at most {limit} bytes"))
        return _reply(*await service.handle(route, body, allow))

    app.router.add_post("/v1/{route:pull|push}", handler)

    if poke is not None:
        server, channel = poke

        async def publish(collections: Any) -> None:
            if server.serving:
                await server.publish(channel, {"collections": list(collections)})

        service.add_listener(publish)
    return app
