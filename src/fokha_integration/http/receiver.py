"""A webhook receiver for aiohttp: Standard Webhooks verification plus a replay cache.

:func:`verify_webhook` alone is stateless, so a captured message replayed inside
the tolerance window passes it (issue 13, defect 6). :class:`WebhookReceiver` wraps
your handler with everything a receiving endpoint needs:

1. a body size limit (413 before the body is read past it);
2. signature and timestamp checks (401 problem+json naming the failed check),
   several secrets accepted during a rotation;
3. a **replay cache** keyed by the (signed) ``webhook-id`` on a
   :class:`~fokha_integration.dedup.DedupCache`, written only *after* the signature
   checked out and kept at least twice the tolerance, so a message can never be
   both fresh enough and forgotten. The id is claimed with a lease while your
   handler runs: a concurrent duplicate gets 409 with ``Retry-After``; a failed
   handler releases it (the sender's retry runs again); a handled one is committed,
   and later copies get 200 ``already_processed`` (or 409, by config) without your
   handler being called.

This module is not a sender: :class:`~fokha_integration.queue.WebhookSink` signs and
delivers. With the default memory cache the replay protection covers one process;
pass a cache on SQLite or Redis to share it between processes.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._validate import integer, non_negative, one_of, optional_number, positive
from ..clock import SYSTEM_CLOCK, Clock
from ..dedup import DedupCache, MemoryDedupBackend
from ..dedup._backend import check_name
from ..errors import ConfigError
from ._problem import problem
from .webhooks import WebhookSecret, WebhookVerificationError, _keys, verify_webhook

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookReceiverConfig",
    "WebhookReceiverStats",
    "webhook_receiver",
]

_log = logging.getLogger("fokha_integration.http.receiver")


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookReceiverConfig:
    """How a :class:`WebhookReceiver` checks and remembers messages.

    ``tolerance``: seconds a ``webhook-timestamp`` may be off the receiver's clock
    (default 300, the spec's). ``replay_ttl``: seconds an id is remembered (default
    and minimum: ``2 * tolerance``). ``max_body``: largest body in bytes (default
    1 MiB). ``on_replay``: ``"ack"`` answers a replay 200 ``already_processed``,
    ``"conflict"`` answers 409. ``lease``: seconds a running handler holds its id
    (a crashed process frees it after this). ``namespace``: the cache's message
    type for these ids (one per endpoint when several share a cache).
    """

    tolerance: float = 300.0
    replay_ttl: float | None = None
    max_body: int = 1024 * 1024
    on_replay: Literal["ack", "conflict"] = "ack"
    lease: float = 30.0
    namespace: str = "webhook_ids"

    def __post_init__(self) -> None:
        tolerance = non_negative("tolerance", self.tolerance, maximum=86400.0)
        ttl = optional_number("replay_ttl", self.replay_ttl, exclusive_minimum=0.0)
        if ttl is not None and ttl < 2 * tolerance:
            raise ConfigError(
                "replay_ttl", f"must be at least 2 * tolerance ({2 * tolerance:g} s)", ttl
            )
        integer("max_body", self.max_body, minimum=1, maximum=64 * 1024 * 1024)
        one_of("on_replay", self.on_replay, ("ack", "conflict"))
        positive("lease", self.lease, maximum=86400.0)
        check_name("namespace", self.namespace, config=True)

    @property
    def effective_replay_ttl(self) -> float:
        """``replay_ttl``, or ``2 * tolerance`` (at least one second) when not set."""
        if self.replay_ttl is not None:
            return float(self.replay_ttl)
        return max(1.0, 2.0 * float(self.tolerance))


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One verified message handed to your handler: id, timestamp, raw body, headers."""

    id: str
    timestamp: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not JSON)."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class WebhookReceiverStats:
    """Counters of a :class:`WebhookReceiver` (a snapshot)."""

    received: int
    processed: int
    replays: int
    in_flight: int
    refused: int
    too_large: int
    handler_errors: int


WebhookHandler = Callable[["web.Request", WebhookEvent], Awaitable["web.StreamResponse | None"]]
"""``async (request, event) -> response | None``; ``None`` answers 200 ``processed``."""


class WebhookReceiver:
    """An aiohttp handler that verifies, de-duplicates and then calls ``handler``.

    Mount its :meth:`handle`: ``app.router.add_post("/hooks/n8n", receiver.handle)``.
    ``secret`` is one secret or a list (rotation: any may have signed). ``cache`` is
    the replay cache (default: a private memory one). See the module docstring for
    the answers.
    """

    def __init__(
        self,
        handler: WebhookHandler,
        *,
        secret: WebhookSecret | Sequence[WebhookSecret],
        cache: DedupCache | None = None,
        config: WebhookReceiverConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        _keys(secret)  # refuse a missing, malformed or weak secret now, not per request
        if isinstance(secret, (str, bytes, bytearray)):
            self._secret: WebhookSecret | tuple[WebhookSecret, ...] = secret
        else:
            self._secret = tuple(secret)
        self._handler = handler
        self._config = config if config is not None else WebhookReceiverConfig()
        self._clock = clock
        self._cache = (
            cache if cache is not None else DedupCache(MemoryDedupBackend(clock=clock), clock=clock)
        )
        self._own_cache = cache is None
        self._received = self._processed = self._replays = self._in_flight = 0
        self._refused = self._too_large = self._handler_errors = 0

    @property
    def config(self) -> WebhookReceiverConfig:
        """The receiver's settings."""
        return self._config

    def stats(self) -> WebhookReceiverStats:
        """A snapshot of the counters."""
        return WebhookReceiverStats(
            received=self._received,
            processed=self._processed,
            replays=self._replays,
            in_flight=self._in_flight,
            refused=self._refused,
            too_large=self._too_large,
            handler_errors=self._handler_errors,
        )

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The raw body, or ``None`` when it is longer than ``max_body``."""
        limit = self._config.max_body
        if request.content_length is not None and request.content_length > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Handle one delivery (the aiohttp handler)."""
        from aiohttp import web

        self._received += 1
        cfg = self._config
        body = await self._read_body(request)
        if body is None:
            self._too_large += 1
            return problem(413, "body_too_large", "Body too large", f"at most {cfg.max_body} bytes")
        try:
            msg_id = verify_webhook(
                request.headers,
                body,
                self._secret,
                tolerance=cfg.tolerance,
                now=self._clock.time(),
            )
        except WebhookVerificationError as exc:
            self._refused += 1
            return problem(401, exc.code, "Webhook verification failed", exc.detail)
        claim = await self._cache.claim(
            msg_id, type=cfg.namespace, ttl=cfg.effective_replay_ttl, lease=cfg.lease
        )
        if not claim.is_first:
            if claim.status.value == "in_flight":
                self._in_flight += 1
                wait = 1
                if claim.expires_at is not None:
                    wait = max(1, math.ceil(claim.expires_at - self._clock.time()))
                return problem(
                    409,
                    "webhook_in_flight",
                    "This message is being processed",
                    headers={"Retry-After": str(min(wait, 3600))},
                )
            self._replays += 1
            if cfg.on_replay == "conflict":
                return problem(409, "webhook_replayed", "This message was already processed")
            return web.json_response({"status": "already_processed", "id": msg_id})
        event = WebhookEvent(
            msg_id, int(request.headers["webhook-timestamp"]), body, request.headers
        )
        try:
            response = await self._handler(request, event)
        except Exception:
            # The sender will retry: let that retry run the handler again. (A
            # cancelled handler keeps its lease until it expires: it may have acted.)
            self._handler_errors += 1
            await self._cache.release(msg_id, type=cfg.namespace, token=claim.token)
            raise
        if response is not None and response.status >= 500:
            # The handler said it failed: the sender's retry must run it again.
            self._handler_errors += 1
            await self._cache.release(msg_id, type=cfg.namespace, token=claim.token)
            return response
        await self._cache.commit(
            msg_id, type=cfg.namespace, token=claim.token, ttl=cfg.effective_replay_ttl
        )
        self._processed += 1
        if response is None:
            return web.json_response({"status": "processed", "id": msg_id})
        return response

    async def close(self) -> None:
        """Close the replay cache if the receiver made it."""
        if self._own_cache:
            await self._cache.close()


def webhook_receiver(
    handler: WebhookHandler,
    *,
    secret: WebhookSecret | Sequence[WebhookSecret],
    cache: DedupCache | None = None,
    config: WebhookReceiverConfig | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> WebhookReceiver:
    """A :class:`WebhookReceiver` around ``handler`` (see it for the arguments)."""
    return WebhookReceiver(handler, secret=secret, cache=cache, config=config, clock=clock)
