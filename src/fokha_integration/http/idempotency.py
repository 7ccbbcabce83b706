"""``Idempotency-Key`` for aiohttp servers (draft-ietf-httpapi-idempotency-key-header-07).

A client that retries a POST (a timeout, a dropped connection) must not cause a
second trade. :func:`idempotency_middleware` makes a route answer a repeated request
with the stored answer of the first one instead of running the handler again:

=====================================  =============================================
request                                answer
=====================================  =============================================
no key, route requires one             400 problem+json (``idempotency_key_missing``)
malformed key (not 1..255 printable)   400 problem+json (``idempotency_key_invalid``)
key in use by a running request        409 problem+json + ``Retry-After``
key reused with another method, path   422 problem+json (``idempotency_key_reused``),
or body                                handler not called
handler raised a 4xx or a 503          passed through, not stored (retry with the key)
key seen and completed                 the stored response, byte for byte, with
                                       ``Idempotent-Replayed: true``
=====================================  =============================================

Rules taken from Stripe where the draft is silent: the entry is created (a lease,
atomically, on a :class:`~fokha_integration.dedup.DedupCache`) just before the
handler begins; what the handler returns, errors included, is stored and replayed;
an :class:`aiohttp.web.HTTPClientError` the handler raises (a validation failure) is
*not* stored, so the client can fix the request and retry with the same key; keys
are remembered for ``retention`` (24 h by default). A process that dies mid-request
leaves a lease that expires after ``lease`` seconds; the next retry then runs once.

Entries are keyed by (principal, method, route, key); the fingerprint is SHA-256 of
the method, the path with its query and the raw body. Streaming responses cannot be
stored and are refused on idempotent routes (500, stored, so the handler is not run
twice). Stored responses are bounded by the cache's ``max_result_bytes``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from .._validate import integer, one_of, positive
from ..clock import SYSTEM_CLOCK, Clock
from ..dedup import DedupCache
from ..dedup._backend import check_name
from ..errors import ConfigError
from ._problem import PROBLEM_CONTENT_TYPE, problem, problem_body

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "IDEMPOTENCY_HEADER",
    "PRINCIPAL_KEY",
    "REPLAYED_HEADER",
    "IdempotencyConfig",
    "StoredResponse",
    "idempotency_middleware",
    "idempotent",
    "idempotent_routes",
    "parse_idempotency_key",
    "request_fingerprint",
]

_log = logging.getLogger("fokha_integration.http.idempotency")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
"""Longest key accepted (Stripe's limit; the draft sets none)."""

_RULE_ATTR = "__fokha_idempotency__"


def _make_principal_key() -> Any:
    from aiohttp import web

    maker = getattr(web, "RequestKey", None)  # aiohttp >= 3.13; a plain str before
    return maker("fokha_principal", object) if maker is not None else "fokha_principal"


PRINCIPAL_KEY: Any = _make_principal_key()
"""Where an authenticating middleware stores the caller's principal (``.subject``)."""
# Headers not stored with a response: hop-by-hop, recomputed, or per-response.
_NOT_STORED = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "server", "set-cookie"}
)
_STORED_MAGIC = b"FKIR2\n"

Rule = Literal["required", "optional", "off"]
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


@overload
def idempotent(handler: H, *, rule: Rule = "required") -> H: ...


@overload
def idempotent(handler: None = None, *, rule: Rule = "required") -> Callable[[H], H]: ...


def idempotent(handler: H | None = None, *, rule: Rule = "required") -> Any:
    """Mark a handler's idempotency rule: ``required`` (default), ``optional`` or ``off``.

    ``@idempotent`` or ``@idempotent(rule="optional")``. Unmarked handlers follow
    :attr:`IdempotencyConfig.default_rule` for the configured methods.
    """
    one_of("rule", rule, ("required", "optional", "off"))

    def mark(fn: H) -> H:
        setattr(fn, _RULE_ATTR, rule)
        return fn

    return mark if handler is None else mark(handler)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyConfig:
    """Settings of :func:`idempotency_middleware`.

    ``methods``: the methods it applies to (default POST and PATCH; the others are
    idempotent by definition). ``default_rule``: for handlers not marked with
    :func:`idempotent` (``optional``: a key is honoured when sent). ``lease``:
    seconds a running request holds its key (a crashed process frees it after
    that). ``retention``: seconds a completed key is remembered (default 24 h,
    Stripe's minimum). ``max_body``: largest request body fingerprinted (larger:
    413). ``namespace``: the cache's message type for these entries.
    """

    methods: frozenset[str] = frozenset({"POST", "PATCH"})
    default_rule: Rule = "optional"
    lease: float = 60.0
    retention: float = 86400.0
    max_body: int = 1024 * 1024
    namespace: str = "idempotency"

    def __post_init__(self) -> None:
        if not isinstance(self.methods, frozenset) or not all(
            isinstance(m, str) and m.isupper() for m in self.methods
        ):
            raise ConfigError("methods", "must be a frozenset of upper-case methods", None)
        one_of("default_rule", self.default_rule, ("required", "optional", "off"))
        positive("lease", self.lease, maximum=86400.0)
        positive("retention", self.retention, maximum=365 * 86400.0)
        if self.retention < self.lease:
            raise ConfigError("retention", "must be at least the lease", self.retention)
        integer("max_body", self.max_body, minimum=1, maximum=64 * 1024 * 1024)
        check_name("namespace", self.namespace, config=True)


def parse_idempotency_key(value: str) -> str | None:
    """The key of an ``Idempotency-Key`` header value, or ``None`` when malformed.

    The draft makes the header an RFC 8941 sf-string (``"8e03..."``); clients in the
    wild (Stripe's) send it bare. Both are accepted: 1..255 printable ASCII
    characters after unquoting.
    """
    text = value.strip()
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            return None
        inner = text[1:-1]
        out: list[str] = []
        escaped = False
        for ch in inner:
            if escaped:
                if ch not in '"\\':
                    return None
                out.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                return None
            else:
                out.append(ch)
        if escaped:
            return None
        text = "".join(out)
    if not 0 < len(text) <= MAX_KEY_LENGTH:
        return None
    if not all(" " <= ch <= "~" for ch in text):
        return None
    return text


def request_fingerprint(method: str, path_qs: str, body: bytes) -> str:
    """SHA-256 (hex) of the method, the path with its query and the raw body."""
    digest = hashlib.sha256()
    digest.update(method.encode("ascii", "replace"))
    digest.update(b"\n")
    digest.update(path_qs.encode("utf-8", "surrogateescape"))
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as stored for replay: status, headers (in order) and the exact body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def encode(self) -> bytes:
        """The stored form: a magic line, the status, one ``name\\0value`` line per
        header, an empty line, then the body bytes (HTTP forbids NUL and newlines in
        header names and values, so the lines cannot be confused)."""
        head = "".join(f"{name}\0{value}\n" for name, value in self.headers)
        return b"%s%d\n%s\n%s" % (_STORED_MAGIC, self.status, head.encode("utf-8"), self.body)

    @classmethod
    def decode(cls, data: bytes) -> StoredResponse | None:
        """Parse :meth:`encode`'s output; ``None`` when it is not one."""
        if not data.startswith(_STORED_MAGIC):
            return None
        head, sep, body = data[len(_STORED_MAGIC) :].partition(b"\n\n")
        if not sep:
            return None
        status_line, *lines = head.decode("utf-8", "replace").split("\n")
        if not (status_line.isascii() and status_line.isdigit()):
            return None
        headers = []
        for line in lines:
            name, nul, value = line.partition("\0")
            if not nul:
                return None
            headers.append((name, value))
        return cls(int(status_line), tuple(headers), body)

    def to_response(self) -> web.Response:
        """An aiohttp response replaying this one, marked ``Idempotent-Replayed: true``."""
        from aiohttp import web
        from multidict import CIMultiDict

        headers: CIMultiDict[str] = CIMultiDict(self.headers)
        headers[REPLAYED_HEADER] = "true"
        return web.Response(status=self.status, body=self.body, headers=headers)


def _stored_from(response: web.StreamResponse) -> StoredResponse | None:
    """The storable form of a handler's response; ``None`` for a streaming one."""
    from aiohttp import web

    if not isinstance(response, web.Response) or response.prepared:
        return None
    body = response.body
    if body is None:
        body = b""
    if not isinstance(body, (bytes, bytearray)):
        return None
    headers = tuple(
        (name, value) for name, value in response.headers.items() if name.lower() not in _NOT_STORED
    )
    return StoredResponse(response.status, headers, bytes(body))


def _principal_of(request: web.Request) -> str:
    """The default principal: what the API app's auth stored, else anonymous."""
    principal = request.get(PRINCIPAL_KEY)
    subject = getattr(principal, "subject", None)
    return subject if isinstance(subject, str) else "-"


def _rule_of(request: web.Request, config: IdempotencyConfig) -> Rule:
    handler = request.match_info.handler
    rule = getattr(handler, _RULE_ATTR, None)
    if rule is None:
        # aiohttp may wrap handlers; look through functools.partial / bound methods.
        rule = getattr(getattr(handler, "__func__", None), _RULE_ATTR, None)
    return rule if rule in ("required", "optional", "off") else config.default_rule


def idempotency_middleware(
    cache: DedupCache,
    *,
    config: IdempotencyConfig | None = None,
    principal: Callable[[web.Request], str] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An aiohttp middleware giving the configured methods ``Idempotency-Key`` semantics.

    ``cache`` stores the entries (its backend decides the reach: memory for one
    process, SQLite for one host, Redis for many). ``principal(request)`` names who
    is calling, so two users' keys never collide (default: the API app's
    authenticated subject, else ``"-"``). ``clock`` is the wall clock the cache's
    backend runs on (for ``Retry-After``). See the module docstring for the answers.
    """
    from aiohttp import web

    cfg = config if config is not None else IdempotencyConfig()
    who = principal if principal is not None else _principal_of
    methods = cfg.methods

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method not in methods:
            return await handler(request)
        rule = _rule_of(request, cfg)
        if rule == "off":
            return await handler(request)
        raw_key = request.headers.get(IDEMPOTENCY_HEADER)
        if raw_key is None:
            if rule == "required":
                return problem(
                    400,
                    "idempotency_key_missing",
                    "Idempotency-Key required",
                    "this operation needs an Idempotency-Key header",
                )
            return await handler(request)
        key = parse_idempotency_key(raw_key)
        if key is None:
            return problem(
                400,
                "idempotency_key_invalid",
                "Malformed Idempotency-Key",
                f"1..{MAX_KEY_LENGTH} printable ASCII characters, optionally quoted",
            )
        if request.content_length is not None and request.content_length > cfg.max_body:
            return problem(413, "body_too_large", "Body too large", f"at most {cfg.max_body}")
        body = await request.read()
        route = request.match_info.route.resource
        route_name = route.canonical if route is not None else request.path
        entry = hashlib.sha256(
            "\x1f".join((who(request), request.method, route_name, key)).encode(
                "utf-8", "surrogateescape"
            )
        ).hexdigest()
        fingerprint = request_fingerprint(request.method, request.path_qs, body)
        claim = await cache.claim(
            entry, type=cfg.namespace, fingerprint=fingerprint, lease=cfg.lease, ttl=cfg.retention
        )
        status = claim.status.value
        if status == "conflict":
            return problem(
                422,
                "idempotency_key_reused",
                "Idempotency-Key reused with another request",
                "this key was used with another method, path or body",
            )
        if status == "in_flight":
            wait = 1
            if claim.expires_at is not None and math.isfinite(claim.expires_at):
                wait = max(1, math.ceil(claim.expires_at - clock.time()))
            return problem(
                409,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is in progress",
                headers={"Retry-After": str(min(wait, 3600))},
            )
        if status == "duplicate":
            stored = StoredResponse.decode(claim.result or b"")
            if stored is None:
                return problem(500, "idempotency_store_corrupt", "Stored response unreadable")
            return stored.to_response()
        return await _run_first(request, handler, cache, cfg, entry, claim.token)

    return middleware


async def _run_first(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    cache: DedupCache,
    cfg: IdempotencyConfig,
    entry: str,
    token: str | None,
) -> web.StreamResponse:
    """Run the handler for the first request of a key and store what it answered."""
    from aiohttp import web

    try:
        response = await handler(request)
    except (web.HTTPClientError, web.HTTPServiceUnavailable):
        # A validation failure, or "not done, try again" (503): not stored, the client
        # may fix the request or retry it with the same key.
        await cache.release(entry, type=cfg.namespace, token=token)
        raise
    except web.HTTPException as exc:
        response = exc
    except Exception:
        _log.exception("idempotent handler failed; storing a 500 for its key")
        response = web.Response(
            status=500,
            body=problem_body(500, "internal_error", "Internal server error"),
            content_type=PROBLEM_CONTENT_TYPE,
        )
    stored = _stored_from(response)
    if stored is None:
        _log.error("idempotent route %s answered a streaming response", request.path)
        response = problem(
            500, "not_storable", "Streaming responses are not supported on idempotent routes"
        )
        stored = _stored_from(response)
        assert stored is not None
    encoded = stored.encode()
    if len(encoded) > cache.max_result_bytes:
        _log.error(
            "idempotent response of %d bytes is over the cache's max_result_bytes", len(encoded)
        )
        encoded = StoredResponse(
            500,
            (("Content-Type", PROBLEM_CONTENT_TYPE),),
            problem_body(500, "not_storable", "The original response was too large to replay"),
        ).encode()
    if not await cache.commit(entry, encoded, type=cfg.namespace, token=token, ttl=cfg.retention):
        _log.warning("idempotency lease of %s ran out before the response was stored", entry)
    return response


def idempotent_routes(app: web.Application) -> Iterable[tuple[str, str, Rule]]:
    """(method, path, rule) of every route of ``app`` marked with :func:`idempotent`."""
    for route in app.router.routes():
        rule = getattr(route.handler, _RULE_ATTR, None)
        if rule is not None and route.resource is not None:
            yield route.method, route.resource.canonical, rule
