"""The aiohttp client middlewares behind :class:`~fokha_integration.http.ApiClient`.

The chain, outermost first: auth (single-flight refresh on 401) → per-host rate
limiter → per-host circuit breaker → retry. The breaker and the retry run in one
stage (:class:`RetryMiddleware` given the client's :class:`HostBreakers`): one
frame fewer on every request, and the breaker still records one outcome per
logical call. (The per-host metrics are kept by ``ApiClient.request`` around the
whole call.) What a middleware needs to know about the logical call (its start
and deadline, whether its body can be replayed) travels in a context variable set
by the client for the duration of one call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..clock import Clock
from ..errors import OperationTimeoutError, RateLimitedError
from ..resilience import (
    BreakerConfig,
    CircuitBreaker,
    Outcome,
    RateLimiter,
    RetryPolicy,
    parse_retry_after,
)
from ._errors import (
    ApiConnectionError,
    ApiDecodeError,
    ApiTimeoutError,
    HttpStatusError,
    status_error,
    translate_client_error,
)

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientResponse

Handler = Callable[["ClientRequest"], Awaitable["ClientResponse"]]


class Middleware(Protocol):
    """An aiohttp client middleware whose second parameter is named ``handler``."""

    def __call__(self, req: ClientRequest, handler: Handler) -> Awaitable[ClientResponse]: ...


_log = logging.getLogger("fokha_integration.http.client")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
"""Methods safe to repeat by definition (RFC 9110 section 9.2.2)."""


@dataclass(slots=True)
class CallContext:
    """One logical call: when it began and must end (both on the client's clock),
    whether its body may be sent again.

    ``send`` is aiohttp's own handler for this request (connect and send), which
    the innermost stage of a :class:`MiddlewareChain` calls. ``budget`` is the call's
    time budget in seconds (``None``: the retry policy's own deadline). ``body`` is the body the
    latest attempt read (the retry stage reads each answer whole, inside the attempt),
    so the client does not ask aiohttp for it a second time.
    """

    started: float
    deadline: float
    replayable: bool
    budget: float | None = None
    attempts: int = 0
    send: Handler | None = None
    body: bytes | None = None


CALL: ContextVar[CallContext | None] = ContextVar("fokha_api_call", default=None)


def _remaining(clock: Clock) -> float:
    call = CALL.get()
    if call is None:
        return float("inf")
    return call.deadline - clock.monotonic()


TokenProvider = Callable[[], Awaitable[str]]
"""``async () -> str``: a fresh bearer token (called at first use and after a 401)."""


class AuthMiddleware:
    """Adds ``Authorization: Bearer``; on a 401 refreshes the token once for everybody.

    Single flight: concurrent 401s share one refresh, and a 401 for a request sent
    with an older token just retries with the current one.
    """

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider
        self._token: str | None = None
        self._generation = 0
        self._refreshing: asyncio.Future[None] | None = None
        self.refreshes = 0

    async def _refresh(self, seen_generation: int) -> None:
        if self._generation != seen_generation and self._token is not None:
            return  # somebody already refreshed since this request was sent
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._fetch())
        refreshing = self._refreshing
        try:
            await asyncio.shield(refreshing)
        finally:
            if self._refreshing is refreshing and refreshing.done():
                self._refreshing = None

    async def _fetch(self) -> None:
        token = await self._provider()
        self.refreshes += 1
        self._token = token
        self._generation += 1

    async def __call__(self, req: ClientRequest, handler: Handler) -> ClientResponse:
        if self._token is None:
            await self._refresh(self._generation)
        generation = self._generation
        req.headers["Authorization"] = f"Bearer {self._token}"
        resp = await handler(req)
        if resp.status != 401:
            return resp
        resp.release()
        await self._refresh(generation)
        req.headers["Authorization"] = f"Bearer {self._token}"
        return await handler(req)


class RateLimitMiddleware:
    """A token bucket per host; waits within the call's deadline or raises RateLimitedError."""

    def __init__(self, rate: float, burst: float | None, clock: Clock) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._limiters: dict[str, RateLimiter] = {}

    def limiter(self, host: str) -> RateLimiter:
        """The host's limiter (made on first use)."""
        found = self._limiters.get(host)
        if found is None:
            found = RateLimiter(self._rate, self._burst, clock=self._clock)
            self._limiters[host] = found
        return found

    async def __call__(self, req: ClientRequest, handler: Handler) -> ClientResponse:
        remaining = _remaining(self._clock)
        limiter = self.limiter(req.url.host or "")
        try:
            await limiter.acquire(timeout=None if remaining == float("inf") else remaining)
        except OperationTimeoutError:
            raise RateLimitedError(
                f"rate limit for {req.url.host}: no slot before the deadline"
            ) from None
        return await handler(req)


def _breaker_outcome(exc: BaseException) -> Outcome:
    """Transport failures and 5xx/429 count against a host; 4xx answers do not."""
    if isinstance(exc, HttpStatusError):
        return Outcome.FAILURE if exc.status >= 500 or exc.status == 429 else Outcome.IGNORE
    if isinstance(exc, (ApiConnectionError, ApiTimeoutError)):
        return Outcome.FAILURE
    if isinstance(exc.__cause__, (ApiConnectionError, ApiTimeoutError, HttpStatusError)):
        return _breaker_outcome(exc.__cause__)  # RetryExhaustedError: what the last try hit
    return Outcome.IGNORE


class HostBreakers(dict[str, CircuitBreaker]):
    """A circuit breaker per host, made on first use (``breakers[host]``)."""

    def __init__(self, config: BreakerConfig, clock: Clock) -> None:
        super().__init__()
        self._config = config
        self._clock = clock

    def __missing__(self, host: str) -> CircuitBreaker:
        made = CircuitBreaker(
            f"http:{host}", config=self._config, classifier=_breaker_outcome, clock=self._clock
        )
        self[host] = made
        return made


class AttemptDeadline:
    """One attempt's deadline, kept by :class:`AttemptTimers`."""

    __slots__ = ("at", "done", "fired", "handle", "task")

    def __init__(self, at: float, task: asyncio.Task[object] | None) -> None:
        self.at = at
        self.task = task
        self.done = False
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None  # only for an out-of-order deadline

    def fire(self) -> None:
        """The deadline passed: cancel the attempt's task if the attempt still runs."""
        if not self.done and self.task is not None and not self.task.done():
            self.fired = True
            self.task.cancel()

    def expired(self) -> bool:
        """Whether this deadline cancelled the task (and take that cancellation back)."""
        if self.fired and self.task is not None and hasattr(self.task, "uncancel"):
            self.task.uncancel()  # Python >= 3.11: keep the task's cancel count right
        return self.fired


class AttemptTimers:
    """Cancels the attempts that overrun their deadline, with one timer handle per client.

    A ``call_later`` per attempt pushes a handle onto the event loop's heap (whose
    comparisons run in Python) and leaves it there, cancelled, until the loop purges
    it: that was a third of the client's own cost per request. The attempts of one
    client share one ``attempt_timeout``, so their deadlines come in the order they
    started: a FIFO of deadlines and one handle, set for the oldest deadline still
    open, do the same job. An attempt whose deadline comes before one already queued
    (a call close to its own deadline gets a shorter attempt) has a handle of its own.
    A finished attempt only marks its entry done; finished entries leave the queue
    from its head, when the next attempt starts or when the handle fires (behind a
    slow attempt they wait, at most ``attempt_timeout`` seconds' worth of calls).
    """

    def __init__(self) -> None:
        self._queue: deque[AttemptDeadline] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = 0.0  # the handle's time (``handle.when()`` is a Python call)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, seconds: float) -> AttemptDeadline:
        """Cancel the current task in ``seconds`` unless :meth:`finish` comes first."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the client moved to another loop
            self._queue.clear()
            self._handle = None
            self._loop = loop
        entry = AttemptDeadline(loop.time() + seconds, asyncio.current_task(loop))
        queue = self._queue
        while queue and queue[0].done:
            queue.popleft()
        if queue and entry.at < queue[-1].at:
            entry.handle = loop.call_at(entry.at, entry.fire)
            return entry
        queue.append(entry)
        handle = self._handle
        if handle is None or entry.at < self._handle_at:
            # No handle, or one left for a finished attempt's later deadline (the queue
            # emptied since): the new head's deadline is the one to keep.
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(entry.at, self._expire)
            self._handle_at = entry.at
        return entry

    @staticmethod
    def finish(entry: AttemptDeadline) -> None:
        """The attempt ended (whichever way): its deadline no longer applies."""
        entry.done = True
        entry.task = None  # a finished entry may wait in the queue: do not keep its task alive
        if entry.handle is not None:
            entry.handle.cancel()

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a handle left on a loop this client no longer uses
            return
        self._handle = None
        now = loop.time()
        queue = self._queue
        while queue and (queue[0].done or queue[0].at <= now):
            queue.popleft().fire()
        if queue:
            self._handle = loop.call_at(queue[0].at, self._expire)
            self._handle_at = queue[0].at


class RetryMiddleware:
    """Retries what is safe to retry, per a :class:`RetryPolicy`; with ``breakers``, the
    host's circuit breaker around the whole (retried) call.

    Safe: an idempotent method, or a request with an ``Idempotency-Key``, whose body
    can be sent again. Each attempt reads the whole body (so a reset mid-body is a
    failed attempt) within ``attempt_timeout`` and the call's remaining time.
    Retried: connection errors, timeouts and the policy's statuses (plus 409 when
    the request carries a key: the server says the first one still runs).
    ``Retry-After`` (seconds or an HTTP-date) sets the wait; a wait that would end
    past the call's deadline raises
    :class:`~fokha_integration.errors.RetryExhaustedError`.

    The first attempt runs in this frame; only after it fails does the policy take
    over (:meth:`RetryPolicy.resume`), so the usual call pays for neither the
    policy's frame nor a breaker stage of its own. The breaker gives one permit per
    logical call and is told how the call ended: its exception, or a 5xx/429 answer.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        attempt_timeout: float,
        clock: Clock,
        max_body: int = 16 * 1024 * 1024,
        breakers: HostBreakers | None = None,
    ) -> None:
        self._max_body = max_body
        self._policy = dataclasses.replace(
            policy, retry_on=(ApiConnectionError, ApiTimeoutError), clock=clock
        )
        self._once_only = dataclasses.replace(self._policy, attempts=1)
        self._keyed = dataclasses.replace(
            self._policy, retry_statuses=self._policy.retry_statuses | {409}
        )
        self._retry_statuses = self._keyed.retry_statuses
        self._attempt_timeout = attempt_timeout
        self._clock = clock
        self._timers = AttemptTimers()
        self._breakers = breakers

    def policy_for(self, req: ClientRequest, call: CallContext) -> RetryPolicy:
        """The policy for one request: no retries unless it is safe to repeat."""
        has_key = "Idempotency-Key" in req.headers
        if not call.replayable or not (req.method in IDEMPOTENT_METHODS or has_key):
            return self._once_only
        policy = self._keyed if has_key else self._policy
        if call.budget is not None and call.budget != policy.deadline:
            # This call's own deadline: no wait may end past it.
            policy = dataclasses.replace(policy, deadline=call.budget)
        return policy

    def __call__(self, req: ClientRequest, handler: Handler) -> Awaitable[ClientResponse]:
        call = CALL.get()
        if call is None:  # used outside ApiClient.request: the policy's own deadline
            call = CallContext(self._clock.monotonic(), float("inf"), True)
        return self.run(call, req, handler)

    async def run(self, call: CallContext, req: ClientRequest, handler: Handler) -> ClientResponse:
        """The stage for ``call`` (aiohttp calls :meth:`__call__`, which finds the call in
        ``CALL``; a client whose chain is this stage alone binds the call to this
        method with :func:`functools.partial` and sets no context variable)."""
        breaker = None if self._breakers is None else self._breakers[req.url.host or ""]
        permit = None if breaker is None else breaker.acquire()
        failure: Exception | None = None
        try:
            try:
                resp = await self._attempt(req, handler, call)
            except Exception as exc:
                failure = exc
            if failure is not None:
                policy = self.policy_for(req, call)
                resp = await policy.resume(failure, call.started, self._attempt, req, handler, call)
        except BaseException as exc:
            if breaker is not None and permit is not None:
                breaker.release(permit, exc)
            raise
        if breaker is not None and permit is not None:
            failed = resp.status >= 500 or resp.status == 429
            breaker.release(
                permit, HttpStatusError(req.method, str(req.url), resp.status) if failed else None
            )
        return resp

    async def _attempt(
        self, req: ClientRequest, handler: Handler, call: CallContext
    ) -> ClientResponse:
        call.attempts += 1
        timeout = self._attempt_timeout
        remaining = call.deadline - self._clock.monotonic()
        if remaining < timeout:
            timeout = max(0.0, remaining)
        timer = self._timers.start(timeout)
        try:
            resp = await handler(req)
            try:
                if not resp.content.is_eof():  # else the body is in memory already
                    self._check_declared(req, resp)
                body = await resp.read()  # the whole body inside the attempt: a reset is retryable
                if len(body) > self._max_body:
                    raise ApiDecodeError(req.method, str(req.url), f"body of {len(body)} bytes")
                call.body = body
            except BaseException:
                resp.release()
                raise
        except asyncio.CancelledError:
            if not timer.expired():
                raise
            raise translate_client_error(
                asyncio.TimeoutError(), req.method, req.url, timeout
            ) from None
        except Exception as exc:
            mapped = translate_client_error(exc, req.method, req.url, timeout)
            if mapped is exc:
                raise
            raise mapped from (None if mapped is exc.__cause__ else exc)
        finally:
            self._timers.finish(timer)
        if resp.status in self._retry_statuses:
            raise status_error(
                req.method,
                str(req.url),
                resp.status,
                body=body,
                headers=dict(resp.headers),
                retry_after=self._retry_after(resp),
                has_key="Idempotency-Key" in req.headers,
            )
        return resp

    def _check_declared(self, req: ClientRequest, resp: ClientResponse) -> None:
        """A declared length over ``max_body`` is refused before the body is read."""
        declared = resp.content_length
        if declared is not None and declared > self._max_body:
            raise ApiDecodeError(req.method, str(req.url), f"body of {declared} bytes")

    def _retry_after(self, resp: ClientResponse) -> float | None:
        raw = resp.headers.get("Retry-After")
        if raw is None:
            return None
        return parse_retry_after(raw, now=self._clock.time())


class MiddlewareChain:
    """Stages (each an aiohttp client middleware) composed once, run as one middleware.

    aiohttp builds a closure per middleware per request; composing the stages once
    at construction and handing aiohttp a single middleware keeps the chain's cost
    to one frame per stage: each stage is bound to the one after it with
    :func:`functools.partial` (``stage(req, handler=following)``), so every stage
    names its second parameter ``handler``, as aiohttp's own signature does. The
    innermost stage calls aiohttp's handler for the current request, taken from the
    call's :class:`CallContext`.
    """

    def __init__(self, stages: tuple[Middleware, ...], clock: Clock) -> None:
        self.stages = stages
        self._clock = clock
        handler: Handler = self._send
        for stage in reversed(stages):
            handler = functools.partial(stage, handler=handler)
        self._chain = handler

    @staticmethod
    def _send(req: ClientRequest) -> Awaitable[ClientResponse]:
        call = CALL.get()
        assert call is not None
        assert call.send is not None
        return call.send(req)

    def __call__(self, req: ClientRequest, handler: Handler) -> Awaitable[ClientResponse]:
        call = CALL.get()
        if call is None:  # used outside ApiClient.request: the retry policy's own deadline
            call = CallContext(self._clock.monotonic(), float("inf"), True)
            CALL.set(call)
        call.send = handler
        return self._chain(req)
