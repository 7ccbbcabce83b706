"""ApiClient: an outbound HTTP client that only retries what is safe to retry.

Built on one :class:`aiohttp.ClientSession` with aiohttp (>= 3.12) client
middlewares, outermost first: bearer auth with a single-flight refresh on 401 → a
per-host :class:`~fokha_integration.resilience.RateLimiter` → a per-host
:class:`~fokha_integration.resilience.CircuitBreaker` → a
:class:`~fokha_integration.resilience.RetryPolicy`. Metrics per host are kept around
the whole call (every call counted once, also one that fails before the chain).

Retried: GET, HEAD, PUT, DELETE, OPTIONS, and any request that carries an
``Idempotency-Key`` (``idempotency_key=True`` makes one per logical call, reused on
every retry and returned in :attr:`ApiResponse.idempotency_key`), on connection
errors, timeouts and 408/425/429/500/502/503/504 (plus 409 for keyed requests: the
server says the first one is still running). A POST or PATCH without a key is sent
once, whatever happens. A body that cannot be sent again (a stream) is sent once.
``Retry-After`` (seconds or an HTTP-date) sets the next wait; a wait longer than the
policy's ``max_retry_after`` or ending past the call's deadline stops the retries.
Timeouts: each attempt (connect, headers and the whole body) takes at most
``attempt_timeout`` and never more than what is left of the call's deadline.
Redirects are not followed (a 3xx is returned as it is). Errors: see
``fokha_integration.http._errors`` (one tree, translated in one place).
"""

from __future__ import annotations

import functools
import json as jsonlib
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from .._validate import integer, optional_number, positive
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, ValidationError
from ..models import Model
from ..resilience import BreakerConfig, RetryPolicy
from ._client_mw import (
    CALL,
    AuthMiddleware,
    CallContext,
    HostBreakers,
    Middleware,
    MiddlewareChain,
    RateLimitMiddleware,
    RetryMiddleware,
    TokenProvider,
)
from ._errors import ApiDecodeError, status_error, translate_client_error
from .idempotency import MAX_KEY_LENGTH, parse_idempotency_key

if TYPE_CHECKING:
    import aiohttp

__all__ = ["ApiClient", "ApiClientConfig", "ApiHostStats", "ApiResponse"]

M = TypeVar("M", bound=Model)

_DEFAULT_RETRY = RetryPolicy(
    attempts=4, initial=0.1, max_delay=5.0, deadline=30.0, max_retry_after=60.0, name="api"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiClientConfig:
    """Settings of an :class:`ApiClient`.

    ``retry``: the :class:`RetryPolicy` (attempts, backoff, ``deadline`` = the
    whole call's time budget, ``max_retry_after``). ``attempt_timeout``: seconds
    one attempt may take, headers and body. ``rate``/``burst``: requests per second
    per host (``None``: no limit). ``breaker``: per-host breaker settings (``None``:
    no breaker). ``max_response_bytes``: largest response body accepted
    (:class:`ApiDecodeError` beyond it, never retried; a declared ``Content-Length``
    over it is refused before the body is read). ``user_agent``: a
    ``User-Agent`` for every request (``None``: aiohttp's).
    """

    retry: RetryPolicy = _DEFAULT_RETRY
    attempt_timeout: float = 10.0
    rate: float | None = None
    burst: float | None = None
    breaker: BreakerConfig | None = field(default_factory=BreakerConfig)
    max_response_bytes: int = 16 * 1024 * 1024
    user_agent: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.retry, RetryPolicy):
            raise ConfigError("retry", "must be a RetryPolicy", self.retry)
        positive("attempt_timeout", self.attempt_timeout, maximum=86400.0)
        optional_number("rate", self.rate, exclusive_minimum=0.0)
        optional_number("burst", self.burst, minimum=1.0)
        if self.breaker is not None and not isinstance(self.breaker, BreakerConfig):
            raise ConfigError("breaker", "must be a BreakerConfig or None", self.breaker)
        integer("max_response_bytes", self.max_response_bytes, minimum=1)


@dataclass(slots=True)
class HostCounters:
    """Mutable per-host counters (the client snapshots them in ``stats()``)."""

    requests: int = 0
    attempts: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latency_total: float = 0.0
    latency_max: float = 0.0

    def record(self, attempts: int, took: float, status: int | None) -> None:
        """One call ended after ``attempts`` attempts and ``took`` seconds, with an
        answer of ``status`` or (``None``) an exception."""
        self.requests += 1
        self.attempts += attempts
        if status is None:
            self.errors += 1
        else:
            self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latency_total += took
        if took > self.latency_max:
            self.latency_max = took


class _Target(NamedTuple):
    """A path joined with ``base_url``: the URL, its text and its host's counters (all
    used on every call)."""

    url: Any
    text: str
    counters: HostCounters


class ApiResponse(NamedTuple):
    """A complete answer: status, headers, body, and how the call went (immutable).

    A named tuple rather than a frozen dataclass: one is built per call (the same
    choice as ``PublishResult`` and ``ClaimResult``); treat it as a record.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str
    idempotency_key: str | None
    attempts: int

    def json(self) -> Any:
        """The body as JSON; :class:`ApiDecodeError` when it is not."""
        try:
            return jsonlib.loads(self.body)
        except ValueError as exc:
            raise ApiDecodeError("GET", self.url, f"body is not JSON: {exc}") from exc

    def model(self, cls: type[M]) -> M:
        """The body as one of the library's models; :class:`ApiDecodeError` when invalid."""
        try:
            return cls.from_json(self.body)
        except ValidationError as exc:
            raise ApiDecodeError("GET", self.url, f"not a valid {cls.__name__}: {exc}") from exc


# A named tuple's own constructor is a Python function (a frame per call); building
# the tuple directly does the same in C. One ApiResponse is made per call.
_new_response = functools.partial(tuple.__new__, ApiResponse)

# The methods as the interned strings aiohttp compares them with (``str.upper()`` makes
# a new string each time, whose every set lookup and comparison then costs more).
_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
_METHODS.update({m.lower(): m for m in _METHODS})


@dataclass(frozen=True, slots=True)
class ApiHostStats:
    """Counters for one host (a snapshot)."""

    requests: int
    attempts: int
    errors: int
    statuses: Mapping[int, int]
    latency_avg: float
    latency_max: float
    breaker_state: str | None
    token_refreshes: int


class ApiClient:
    """Calls one API (``base_url``) carefully; see the module docstring.

    ``token_provider`` (``async () -> str``) turns on bearer auth. ``session`` lets
    you share an aiohttp session (its middlewares are not used: the client passes
    its own per request); otherwise the client makes one and :meth:`close` closes it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        config: ApiClientConfig | None = None,
        token_provider: TokenProvider | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        from yarl import URL

        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url", "must be an http(s) URL", base_url)
        self._base = URL(base_url)
        self._targets: dict[str, _Target] = {}
        self._config = config if config is not None else ApiClientConfig()
        self._clock = clock

        self._hosts: dict[str, HostCounters] = {}
        self._auth = AuthMiddleware(token_provider) if token_provider is not None else None
        cfg = self._config
        self._breakers = HostBreakers(cfg.breaker, clock) if cfg.breaker is not None else None
        chain: list[Any] = []
        if self._auth is not None:
            chain.append(self._auth)
        if cfg.rate is not None:
            chain.append(RateLimitMiddleware(cfg.rate, cfg.burst, clock))
        retry = RetryMiddleware(
            cfg.retry, cfg.attempt_timeout, clock, cfg.max_response_bytes, self._breakers
        )
        chain.append(retry)  # the breaker runs in the retry stage, around the retried call
        # More stages than the retry stage: composed once, and they find the call's
        # context in CALL. The retry stage alone (the usual case) is given its call
        # directly (see request()).
        self._chain: tuple[Middleware, ...] | None = (
            (MiddlewareChain(tuple(chain), clock),) if len(chain) > 1 else None
        )
        self._run_retry = retry.run
        self._budget = cfg.retry.deadline
        self._session = session
        self._own_session = session is None

    def _new_session(self) -> aiohttp.ClientSession:
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": self._config.user_agent} if self._config.user_agent else None,
        )
        self._own_session = True
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | bool | None = None,
        deadline: float | None = None,
    ) -> ApiResponse:
        """Send one logical request (retried per the module's rules); the whole answer.

        ``idempotency_key``: a key to send, ``True`` to make one (UUIDv4), ``None``
        or ``False`` for none. ``deadline``: this call's time budget in seconds
        (default: the retry policy's). Error statuses raise :class:`HttpStatusError`
        (or its idempotency subclasses); 2xx and 3xx are returned.
        """
        method = _METHODS.get(method) or method.upper()
        key = None if idempotency_key is None else self._key(idempotency_key)
        send_headers = dict(headers) if headers else {}
        if key is not None:
            send_headers["Idempotency-Key"] = key
        body: Any = data
        if json is not None:
            if data is not None:
                raise ValidationError("data", "give json= or data=, not both", None)
            body = jsonlib.dumps(json, separators=(",", ":")).encode("utf-8")
            send_headers.setdefault("Content-Type", "application/json")
        budget = self._budget if deadline is None else positive("deadline", deadline)
        replayable = body is None or isinstance(body, (bytes, str))
        target = self._targets.get(path) or self._target(path)
        url = target.url
        now = self._clock.monotonic()
        ends = now + budget if budget is not None else float("inf")
        call = CallContext(now, ends, replayable, budget)
        middlewares = self._chain
        token = None
        if middlewares is None:
            middlewares = (functools.partial(self._run_retry, call),)
        else:
            token = CALL.set(call)
        session = self._session
        # The client's own session is closed only by close(), which forgets it; a
        # shared one may have been closed by its owner (then the client makes its own).
        if session is None or (not self._own_session and session.closed):
            session = self._new_session()
        answered: int | None = None  # the status, once an answer came back
        try:
            # Awaited rather than used in ``async with``: the retry stage has read the
            # body already, and the context managers' four coroutines would only add
            # frames; release() frees the response (its connection is back in the pool).
            resp = await session.request(
                method,
                url,
                data=body,
                params=params,
                headers=send_headers or None,
                allow_redirects=False,
                middlewares=middlewares,
            )
            try:
                payload = call.body if call.body is not None else await resp.read()
            finally:
                resp.release()
            status, resp_headers = resp.status, resp.headers
            answered = status
        except Exception as exc:
            mapped = translate_client_error(exc, method, url, self._config.attempt_timeout)
            if mapped is exc:
                raise
            raise mapped from (None if mapped is exc.__cause__ else exc)
        finally:
            if token is not None:
                CALL.reset(token)
            target.counters.record(call.attempts, self._clock.monotonic() - now, answered)
        if status >= 400:
            raise status_error(
                method,
                target.text,
                status,
                body=payload,
                headers=resp_headers,
                retry_after=None,
                has_key=key is not None,
            )
        return _new_response((status, resp_headers, payload, target.text, key, call.attempts))

    def _target(self, path: str) -> _Target:
        """``base_url`` joined with ``path``, kept (clients call a few paths many times:
        ``request`` looks a path up in ``_targets`` before it calls this)."""
        url = self._base.join(_relative(path))
        host = url.host or ""
        counters = self._hosts.get(host)
        if counters is None:
            counters = self._hosts[host] = HostCounters()
        target = _Target(url, str(url), counters)
        if len(self._targets) < 1024:
            self._targets[path] = target
        return target

    @staticmethod
    def _key(value: str | bool | None) -> str | None:
        if value is None or value is False:
            return None
        if value is True:
            return str(uuid.uuid4())
        if not isinstance(value, str) or parse_idempotency_key(value) != value:
            raise ValidationError(
                "idempotency_key", f"must be 1..{MAX_KEY_LENGTH} printable ASCII", value
            )
        return value

    # get/post/put/delete hand back request()'s coroutine rather than awaiting it in a
    # coroutine of their own: one frame fewer that every resumption passes through.

    def get(self, path: str, **kwargs: Any) -> Coroutine[Any, Any, ApiResponse]:
        """``request("GET", path, ...)``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Coroutine[Any, Any, ApiResponse]:
        """``request("POST", path, ...)``; pass ``idempotency_key=True`` to make it retryable."""
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Coroutine[Any, Any, ApiResponse]:
        """``request("PUT", path, ...)``."""
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Coroutine[Any, Any, ApiResponse]:
        """``request("DELETE", path, ...)``."""
        return self.request("DELETE", path, **kwargs)

    def stats(self) -> dict[str, ApiHostStats]:
        """Per-host counters, breaker state and token refreshes (snapshots)."""
        out: dict[str, ApiHostStats] = {}
        for host, c in self._hosts.items():
            breaker = self._breakers.get(host) if self._breakers is not None else None
            out[host] = ApiHostStats(
                requests=c.requests,
                attempts=c.attempts,
                errors=c.errors,
                statuses=dict(c.statuses),
                latency_avg=c.latency_total / c.requests if c.requests else 0.0,
                latency_max=c.latency_max,
                breaker_state=breaker.state.value if breaker is not None else None,
                token_refreshes=self._auth.refreshes if self._auth is not None else 0,
            )
        return out

    async def close(self) -> None:
        """Close the session if the client made it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _relative(path: str) -> Any:
    from yarl import URL

    if not isinstance(path, str) or "://" in path:
        raise ValidationError("path", "must be a path relative to base_url", path)
    return URL(path)
