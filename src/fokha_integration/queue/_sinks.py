"""The sinks: webhook (Standard Webhooks signed POST), callable, WebSocket, file bridge.

``WebSocketSink`` and ``FileBridgeSink`` are thin adapters over tiny Protocols
(:class:`ChannelPublisher`, :class:`BridgeSender`), so they work with the library's
``WebSocketServer`` and ``FileBridge`` or with any object of that shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import aiohttp
from yarl import URL

from .._validate import boolean, positive
from ..errors import ConfigError
from ..http.webhooks import webhook_headers
from ..models import Envelope, canonical_json
from ..resilience import parse_retry_after
from ._types import DeliveryFailedError, DeliveryResult, Guarantee

__all__ = [
    "BridgeReply",
    "BridgeSender",
    "CallableSink",
    "ChannelPublisher",
    "FileBridgeSink",
    "WebSocketSink",
    "WebhookSink",
]


def _check_guarantee(value: str) -> Guarantee:
    if value == "at_most_once":
        return "at_most_once"
    if value == "at_least_once":
        return "at_least_once"
    raise ConfigError("guarantee", "must be 'at_most_once' or 'at_least_once'", value)


class _BaseSink:
    def __init__(self, name: str, guarantee: str, execution: bool) -> None:
        if not name or len(name) > 64 or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError("name", "must be 1..64 of [A-Za-z0-9_-]", name)
        self._name = name
        self._guarantee = _check_guarantee(guarantee)
        self._execution = boolean("execution", execution)

    @property
    def name(self) -> str:
        """The sink's name (its cursor in the store)."""
        return self._name

    @property
    def guarantee(self) -> Guarantee:
        """``at_most_once`` or ``at_least_once``."""
        return self._guarantee

    @property
    def execution(self) -> bool:
        """Whether this sink executes signals (never gets expired ones)."""
        return self._execution

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, {self._guarantee})"


class CallableSink(_BaseSink):
    """Delivers by awaiting ``fn(envelope)``.

    ``fn`` may return ``None`` (delivered), a :class:`DeliveryResult` (``ok=False``
    refuses, no retry) or raise (retried per the sink's policy).
    """

    def __init__(
        self,
        fn: Callable[[Envelope], Awaitable[DeliveryResult | None]],
        *,
        name: str = "callable",
        guarantee: str = "at_least_once",
        execution: bool = False,
    ) -> None:
        super().__init__(name, guarantee, execution)
        self._fn = fn

    async def deliver(self, envelope: Envelope) -> DeliveryResult | None:
        """Await the callable."""
        return await self._fn(envelope)


class WebhookSink(_BaseSink):
    """POSTs the envelope JSON to ``url`` with Standard Webhooks headers.

    ``secret`` is a ``whsec_...`` secret (see
    :func:`~fokha_integration.http.generate_webhook_secret`). The ``webhook-id`` is
    the envelope id (the same on every retry). A 2xx answer is delivered; 429, 5xx,
    408, connection errors and timeouts raise a retryable
    :class:`DeliveryFailedError` (``retry_after`` from a ``Retry-After`` header);
    any other status raises one the queue does not retry. ``timeout`` bounds each
    request. Pass ``session`` to share an :class:`aiohttp.ClientSession`; otherwise
    the sink makes one and :meth:`close` closes it.

    Redirects are not followed: a 3xx answer is a delivery failure the queue does not
    retry, dead-lettered with the ``Location`` in its detail (a followed 301/302
    turns the POST into a body-less GET, and a followed 307 would hand the signed
    body to whatever host the redirect names). ``follow_redirects=True`` follows
    only a 307 or 308 to the *same origin* (scheme, host and port), keeping the
    method, body and signature, at most ``MAX_REDIRECTS`` times.
    """

    MAX_REDIRECTS = 3
    """How many same-origin 307/308 hops ``follow_redirects=True`` takes at most."""

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        name: str = "webhook",
        timeout: float = 10.0,
        guarantee: str = "at_least_once",
        execution: bool = False,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> None:
        super().__init__(name, guarantee, execution)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError("url", "must be an http(s) URL", url)
        positive("timeout", timeout)
        self._follow = boolean("follow_redirects", follow_redirects)
        webhook_headers("probe", b"", secret)  # fail early on a malformed secret
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None
        self._extra = dict(headers or {})

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def deliver(self, envelope: Envelope) -> DeliveryResult | None:
        """POST one signed envelope; see the class docstring for what is retried."""
        body = envelope.to_json().encode("utf-8")
        headers = {"content-type": "application/json", **self._extra}
        headers.update(webhook_headers(envelope.id, body, self._secret))
        url = URL(self._url)
        for _hop in range(self.MAX_REDIRECTS + 1):
            status, retry_after_raw, location = await self._post(url, body, headers)
            if 200 <= status < 300:
                return None
            if not 300 <= status < 400:
                break
            target = _same_origin_target(url, location) if self._follow else None
            if target is None or status not in (307, 308):
                where = f" to {location!r}" if location else " without a Location"
                raise DeliveryFailedError(
                    f"POST {_shown(url)} answered {status} (redirect{where}; redirects are not "
                    "followed with a signed body)",
                    status=status,
                )
            url = target
        else:
            raise DeliveryFailedError(
                f"POST {_shown(url)}: more than {self.MAX_REDIRECTS} redirects", status=status
            )
        retry_after = (
            parse_retry_after(retry_after_raw, now=time.time()) if retry_after_raw else None
        )
        raise DeliveryFailedError(
            f"POST {_shown(url)} answered {status}", status=status, retry_after=retry_after
        )

    async def _post(
        self, url: URL, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, str | None, str | None]:
        """One POST without following redirects: status, Retry-After and Location."""
        try:
            async with self._client().post(
                url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                return resp.status, resp.headers.get("Retry-After"), resp.headers.get("Location")
        except asyncio.TimeoutError as exc:
            raise DeliveryFailedError(f"POST {_shown(url)} timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryFailedError(f"POST {_shown(url)} failed: {type(exc).__name__}") from exc

    async def close(self) -> None:
        """Close the HTTP session if the sink made it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None


def _shown(url: URL) -> str:
    """The part of a webhook URL fit for dead letters, logs and the console: its origin.

    The path of an n8n (or Slack, ...) webhook is often itself the secret.
    """
    return str(url.origin()) + "/..."


def _same_origin_target(url: URL, location: str | None) -> URL | None:
    """Where a redirect from ``url`` to ``location`` leads, if it stays on ``url``'s origin."""
    if not location:
        return None
    try:
        target = url.join(URL(location))
        same = target.is_absolute() and target.origin() == url.origin()
    except ValueError:
        return None
    return target if same else None


@runtime_checkable
class ChannelPublisher(Protocol):
    """What :class:`WebSocketSink` needs of a WebSocket server."""

    async def publish(self, channel: str, data: Any) -> object:
        """Send ``data`` to every subscriber of ``channel``."""
        ...


class WebSocketSink(_BaseSink):
    """Publishes the envelope (as a JSON-ready dict) to a server channel.

    Default guarantee: ``at_most_once`` (live display; the server keeps its own
    per-channel history for clients that reconnect).
    """

    def __init__(
        self,
        server: ChannelPublisher,
        *,
        channel: str = "signals",
        name: str = "websocket",
        guarantee: str = "at_most_once",
    ) -> None:
        super().__init__(name, guarantee, False)
        self._server = server
        self._channel = channel

    async def deliver(self, envelope: Envelope) -> DeliveryResult | None:
        """Publish to the channel."""
        await self._server.publish(self._channel, envelope.to_dict())
        return None


class BridgeReply(Protocol):
    """What a file bridge's ``request`` returns: a reply with a ``status``.

    :class:`~fokha_integration.bridge.Reply` is one (``status`` is a
    :class:`~fokha_integration.ReplyStatus`, ``details`` a mapping).
    """

    @property
    def status(self) -> Any:
        """``accepted``, ``executed``, ``rejected``, ``failed`` (a string or str-enum)."""
        ...


@runtime_checkable
class BridgeSender(Protocol):
    """What :class:`FileBridgeSink` needs of a file bridge: :class:`~fokha_integration.FileBridge`'s
    ``send`` and ``request``."""

    async def send(self, kind: str, body: Mapping[str, Any], *, id: str | None = None) -> object:
        """Write one message of ``kind`` (``id``: its stable id) without waiting."""
        ...

    async def request(
        self,
        kind: str,
        body: Mapping[str, Any],
        *,
        id: str | None = None,
        timeout: float = 30.0,
    ) -> BridgeReply:
        """Write one request and wait up to ``timeout`` seconds for its final reply."""
        ...


def _status_text(status: Any) -> str:
    value = getattr(status, "value", status)  # str-enums print as Class.MEMBER on 3.11
    return str(value)


class FileBridgeSink(_BaseSink):
    """Sends the envelope to the EA through a :class:`~fokha_integration.FileBridge`.

    The message ``kind`` is ``kind`` (default ``"order"``, what the shipped EA
    executes), its body the envelope's payload (a signal's fields) and its id the
    envelope id, so a resend after a timeout or a crash is the same message and the
    EA's journal answers it without a second trade. With ``wait_reply`` the EA's
    final reply decides: a status in ``refused_statuses`` (default ``rejected``,
    ``failed``) dead-letters the entry with that reason and the EA's details (no
    retry: the EA said no); no reply within ``reply_timeout`` raises and is retried.
    An execution sink by default: expired signals are never sent. Envelope ids must
    fit the bridge's file names (``[A-Za-z0-9_-]{1,64}``; ids from ``new_id()`` do).
    """

    def __init__(
        self,
        bridge: BridgeSender,
        *,
        name: str = "file_bridge",
        kind: str = "order",
        wait_reply: bool = True,
        reply_timeout: float = 10.0,
        refused_statuses: frozenset[str] = frozenset({"rejected", "failed"}),
        guarantee: str = "at_least_once",
        execution: bool = True,
    ) -> None:
        super().__init__(name, guarantee, execution)
        positive("reply_timeout", reply_timeout)
        boolean("wait_reply", wait_reply)
        self._bridge = bridge
        self._kind = kind
        self._wait = wait_reply
        self._reply_timeout = reply_timeout
        self._refused = refused_statuses

    async def deliver(self, envelope: Envelope) -> DeliveryResult | None:
        """Send (and wait for the reply when configured)."""
        body = envelope.payload
        if not self._wait:
            await self._bridge.send(self._kind, body, id=envelope.id)
            return None
        reply = await self._bridge.request(
            self._kind, body, id=envelope.id, timeout=self._reply_timeout
        )
        status = _status_text(reply.status)
        if status in self._refused:
            details = getattr(reply, "details", None)
            if isinstance(details, Mapping):
                detail = str(details.get("message", "") or canonical_json(dict(details)))
            else:
                detail = str(getattr(reply, "detail", "") or getattr(reply, "reason", "") or "")
            return DeliveryResult(ok=False, reason=status, detail=detail)
        return None
