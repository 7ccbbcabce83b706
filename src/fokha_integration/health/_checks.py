"""Check definitions and the built-in probes.

A :class:`Check` is configuration (name, interval, timeout, hysteresis, groups...) plus
a *probe*: an async function that looks at one thing once and returns an
:class:`Observation`. The :class:`~fokha_integration.health.HealthMonitor` schedules
probes, bounds them with the check's timeout and keeps the results; probes themselves
never loop and never sleep between runs.

Built-in probes: :func:`http_check`, :func:`tcp_check`, :func:`websocket_check`,
:func:`redis_check` (RESP ``PING`` over a plain asyncio connection, so it needs no
extra), :func:`file_check` (age of a heartbeat file), :func:`callable_check`,
:func:`loop_lag_check` and :func:`breaker_check`.

A probe that raises produces a ``fail`` result whose output is the exception; a probe
that does not finish within the check's timeout produces a ``fail`` result marked as
timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from .. import _validate
from ..errors import ConfigError
from ._state import HealthStatus, ObservedValue

if TYPE_CHECKING:
    import aiohttp

    from ..resilience import CircuitBreaker

__all__ = [
    "Check",
    "Observation",
    "Probe",
    "ProbeContext",
    "breaker_check",
    "callable_check",
    "file_check",
    "http_check",
    "loop_lag_check",
    "redis_check",
    "tcp_check",
    "websocket_check",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")
_MAX_REPLY_LINE = 4096
_MAX_OUTPUT = 512


@dataclass(frozen=True, slots=True)
class Observation:
    """What one probe run saw. ``status`` is pass, warn or fail."""

    status: HealthStatus = HealthStatus.PASS
    value: ObservedValue = None
    unit: str | None = None
    output: str = ""


class ProbeContext:
    """What the monitor hands each probe: a shared HTTP session, made on first use.

    The session's connection pool is bounded by the monitor's ``http_limit``.
    """

    def __init__(self, *, http_limit: int = 256) -> None:
        self._http_limit = http_limit
        self._session: aiohttp.ClientSession | None = None

    def http_session(self) -> aiohttp.ClientSession:
        """The shared client session (created lazily inside the running loop)."""
        if self._session is None or self._session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self._http_limit)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the shared session, if one was made."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


Probe = Callable[[ProbeContext], Awaitable[Observation]]
"""An async function that looks once and reports an :class:`Observation`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One thing to watch, and how.

    ``component`` and ``measurement`` make the health+json key
    ``component:measurement``. ``interval`` is the period in seconds; each run is
    shifted by a random ``+-jitter * interval`` so many checks do not fire in step.
    ``timeout`` bounds one run (default: ``min(interval, 10)``). ``critical`` checks
    decide ``fail``; others can only make the service ``warn``. ``groups`` name the
    endpoints it belongs to (``live``, ``ready`` or your own). ``fail_after`` and
    ``recover_after`` are the hysteresis counts; ``stale_after`` (seconds, default
    ``3 * interval + timeout``) is how old the latest result may be before the check
    reads as failing.
    """

    component: str
    probe: Probe
    measurement: str = "status"
    component_type: str = "component"
    interval: float = 10.0
    jitter: float = 0.1
    timeout: float | None = None
    critical: bool = True
    groups: Collection[str] = field(default_factory=lambda: frozenset({"ready"}))
    fail_after: int = 1
    recover_after: int = 1
    stale_after: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.component, str) or not _NAME_RE.match(self.component):
            raise ConfigError("component", "1-128 chars of [A-Za-z0-9_.-/]", self.component)
        if not isinstance(self.measurement, str) or not _NAME_RE.match(self.measurement):
            raise ConfigError("measurement", "1-128 chars of [A-Za-z0-9_.-/]", self.measurement)
        if not callable(self.probe):
            raise ConfigError("probe", "must be callable", self.probe)
        _validate.string("component_type", self.component_type)
        _validate.positive("interval", self.interval)
        _validate.non_negative("jitter", self.jitter)
        if not self.jitter < 1:
            raise ConfigError("jitter", "must be in [0, 1)", self.jitter)
        _validate.optional_number("timeout", self.timeout, exclusive_minimum=0.0)
        _validate.boolean("critical", self.critical)
        _validate.integer("fail_after", self.fail_after, minimum=1)
        _validate.integer("recover_after", self.recover_after, minimum=1)
        _validate.optional_number("stale_after", self.stale_after, exclusive_minimum=0.0)
        if isinstance(self.groups, str) or not isinstance(self.groups, Collection):
            raise ConfigError("groups", "must be a collection of group names", self.groups)
        if not isinstance(self.groups, frozenset):
            object.__setattr__(self, "groups", frozenset(self.groups))
        for g in self.groups:
            if not isinstance(g, str) or not _NAME_RE.match(g):
                raise ConfigError("groups", "group names are 1-128 chars of [A-Za-z0-9_.-/]", g)

    @property
    def key(self) -> str:
        """``component:measurement``, the key in the health+json ``checks`` object."""
        return f"{self.component}:{self.measurement}"

    @property
    def effective_timeout(self) -> float:
        """The bound on one run."""
        return self.timeout if self.timeout is not None else min(self.interval, 10.0)

    @property
    def effective_stale_after(self) -> float:
        """How old a result may get before the check reads as failing."""
        if self.stale_after is not None:
            return self.stale_after
        return 3 * self.interval * (1 + self.jitter) + self.effective_timeout


def _short(text: str) -> str:
    return text if len(text) <= _MAX_OUTPUT else text[: _MAX_OUTPUT - 3] + "..."


def describe_error(exc: BaseException) -> str:
    """A short one-line description of an exception for the ``output`` field."""
    text = str(exc)
    return _short(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _latency(elapsed: float, max_latency: float | None, output: str = "") -> Observation:
    ms = round(elapsed * 1000, 3)
    if max_latency is not None and elapsed > max_latency:
        return Observation(
            HealthStatus.WARN, ms, "ms", _short(f"slow: {ms} ms > {max_latency * 1000:g} ms")
        )
    return Observation(HealthStatus.PASS, ms, "ms", output)


_CheckOpts = Any  # keyword options passed on to Check (interval, timeout, critical, ...)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def http_check(
    url: str,
    *,
    component: str | None = None,
    method: str = "GET",
    expect_status: Collection[int] | int | None = None,
    body: Callable[[str], bool] | None = None,
    max_body: int = 64 * 1024,
    max_latency: float | None = None,
    headers: dict[str, str] | None = None,
    **opts: _CheckOpts,
) -> Check:
    """Request ``url``; pass when the status is expected (default: any 2xx).

    ``body`` is a predicate on the response text (at most ``max_body`` bytes are read);
    a latency above ``max_latency`` seconds makes the result ``warn``. The observed
    value is the latency in ms.
    """
    parts = urlsplit(_validate.string("url", url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("url", "an http:// or https:// URL", url)
    _validate.integer("max_body", max_body, minimum=1)
    _validate.optional_number("max_latency", max_latency, exclusive_minimum=0.0)
    if isinstance(expect_status, int):
        wanted: Collection[int] | None = (expect_status,)
    else:
        wanted = expect_status

    async def probe(ctx: ProbeContext) -> Observation:
        session = ctx.http_session()
        started = time.perf_counter()
        async with session.request(method, url, headers=headers, allow_redirects=False) as resp:
            ok = resp.status in wanted if wanted is not None else 200 <= resp.status < 300
            if not ok:
                return Observation(
                    HealthStatus.FAIL,
                    round((time.perf_counter() - started) * 1000, 3),
                    "ms",
                    f"unexpected HTTP status {resp.status}",
                )
            # read the (bounded) body even without a predicate: a fully read response
            # lets the pooled connection be reused instead of closed
            raw = await _read_bounded(resp, max_body)
            if body is not None:
                text = raw.decode(resp.get_encoding() if resp.charset else "utf-8", "replace")
                if not body(text):
                    return Observation(
                        HealthStatus.FAIL,
                        round((time.perf_counter() - started) * 1000, 3),
                        "ms",
                        "response body did not match",
                    )
        return _latency(time.perf_counter() - started, max_latency, f"HTTP {resp.status}")

    opts.setdefault("measurement", "responseTime")
    opts.setdefault("component_type", "http")
    return Check(component=component or (parts.hostname or "http"), probe=probe, **opts)


def tcp_check(
    host: str,
    port: int,
    *,
    component: str | None = None,
    max_latency: float | None = None,
    **opts: _CheckOpts,
) -> Check:
    """Open a TCP connection to ``host:port`` and close it; value is the connect time."""
    _validate.string("host", host)
    _validate.integer("port", port, minimum=1, maximum=65535)
    _validate.optional_number("max_latency", max_latency, exclusive_minimum=0.0)

    async def probe(ctx: ProbeContext) -> Observation:
        started = time.perf_counter()
        _, writer = await asyncio.open_connection(host, port)
        elapsed = time.perf_counter() - started
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return _latency(elapsed, max_latency)

    opts.setdefault("measurement", "connectTime")
    opts.setdefault("component_type", "tcp")
    return Check(component=component or f"{host}.{port}", probe=probe, **opts)


def websocket_check(
    url: str,
    *,
    component: str | None = None,
    ping: bool = True,
    max_latency: float | None = None,
    **opts: _CheckOpts,
) -> Check:
    """Open a WebSocket to ``url`` (and, with ``ping``, wait for a pong); value in ms."""
    parts = urlsplit(_validate.string("url", url))
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ConfigError("url", "a ws:// or wss:// URL", url)
    _validate.boolean("ping", ping)
    _validate.optional_number("max_latency", max_latency, exclusive_minimum=0.0)

    async def probe(ctx: ProbeContext) -> Observation:
        from websockets.asyncio.client import connect

        started = time.perf_counter()
        # the monitor's timeout bounds the whole run; these only stop the library's
        # own defaults from outliving it
        async with connect(url, open_timeout=None, close_timeout=1, max_size=2**16) as ws:
            if ping:
                pong = await ws.ping()
                await pong
            elapsed = time.perf_counter() - started
        return _latency(elapsed, max_latency)

    opts.setdefault("measurement", "pingTime" if ping else "connectTime")
    opts.setdefault("component_type", "websocket")
    return Check(component=component or (parts.hostname or "websocket"), probe=probe, **opts)


def _resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        data = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    line = await reader.readuntil(b"\r\n")
    if len(line) > _MAX_REPLY_LINE:
        raise ConnectionError("reply line too long")
    return line[:-2]


def redis_check(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    component: str = "redis",
    max_latency: float | None = None,
    **opts: _CheckOpts,
) -> Check:
    """Send ``PING`` (after ``AUTH`` when the URL has a password); pass on ``+PONG``.

    Speaks RESP over a plain asyncio connection, so it needs no extra. Only
    ``redis://`` URLs (no TLS). The observed value is the round trip in ms.
    """
    _validate.optional_number("max_latency", max_latency, exclusive_minimum=0.0)
    parts = urlsplit(_validate.string("url", url))
    if parts.scheme != "redis" or not parts.hostname:
        raise ConfigError("url", "a redis://[user:password@]host[:port][/db] URL", url)
    host, port = parts.hostname, parts.port or 6379
    auth: tuple[str, ...] = ()
    if parts.password is not None:
        user = unquote(parts.username) if parts.username else None
        auth = (user, unquote(parts.password)) if user else (unquote(parts.password),)

    async def probe(ctx: ProbeContext) -> Observation:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, port, limit=_MAX_REPLY_LINE * 2)
        try:
            if auth:
                writer.write(_resp_command("AUTH", *auth))
                line = await _read_line(reader)
                if not line.startswith(b"+"):
                    return Observation(
                        HealthStatus.FAIL, None, None, _short(line.decode("utf-8", "replace"))
                    )
            writer.write(_resp_command("PING"))
            await writer.drain()
            line = await _read_line(reader)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        elapsed = time.perf_counter() - started
        if line != b"+PONG":
            return Observation(
                HealthStatus.FAIL,
                round(elapsed * 1000, 3),
                "ms",
                _short(f"unexpected reply {line.decode('utf-8', 'replace')!r}"),
            )
        return _latency(elapsed, max_latency)

    opts.setdefault("measurement", "pingTime")
    opts.setdefault("component_type", "datastore")
    return Check(component=component, probe=probe, **opts)


def file_check(
    path: str | os.PathLike[str],
    *,
    max_age: float,
    warn_age: float | None = None,
    component: str | None = None,
    **opts: _CheckOpts,
) -> Check:
    """Age of a heartbeat file (now - mtime, seconds): fail above ``max_age`` or if missing.

    Point it at any file a peer touches periodically (e.g. the FileBridge peer's
    heartbeat file). Above ``warn_age`` the result is ``warn``.
    """
    max_age = _validate.positive("max_age", max_age)
    warn_age = _validate.optional_number("warn_age", warn_age, exclusive_minimum=0.0)
    target = Path(path)

    async def probe(ctx: ProbeContext) -> Observation:
        try:
            mtime = os.stat(target).st_mtime  # one cheap syscall; no thread hop
        except FileNotFoundError:
            return Observation(HealthStatus.FAIL, None, "s", f"{target.name} does not exist")
        age = round(max(0.0, time.time() - mtime), 3)
        if age > max_age:
            return Observation(HealthStatus.FAIL, age, "s", f"heartbeat is {age:g}s old")
        if warn_age is not None and age > warn_age:
            return Observation(HealthStatus.WARN, age, "s", f"heartbeat is {age:g}s old")
        return Observation(HealthStatus.PASS, age, "s")

    opts.setdefault("measurement", "age")
    opts.setdefault("component_type", "file")
    return Check(component=component or target.name or "file", probe=probe, **opts)


CallableResult = Any  # Observation | HealthStatus | bool | None


def callable_check(
    fn: Callable[[], Awaitable[CallableResult]],
    *,
    component: str,
    **opts: _CheckOpts,
) -> Check:
    """Any async function: it returns an :class:`Observation`, a :class:`HealthStatus`,
    a bool (True = pass, False = fail) or None (= pass); raising means fail."""

    async def probe(ctx: ProbeContext) -> Observation:
        out = await fn()
        if out is None or out is True:
            return Observation()
        if out is False:
            return Observation(HealthStatus.FAIL, output="check returned False")
        if isinstance(out, HealthStatus):
            if out is HealthStatus.UNKNOWN:
                return Observation(HealthStatus.WARN, output="check returned unknown")
            return Observation(out)
        if isinstance(out, Observation):
            return out
        raise TypeError(f"a check returned {type(out).__name__}; expected Observation or bool")

    opts.setdefault("component_type", "component")
    return Check(component=component, probe=probe, **opts)


class _LagSampler:
    """Samples event-loop lag continuously between two checks and keeps the maximum.

    One sample per probe would miss a block that happens between two runs (a 3 s
    stall in a 10 s interval); this task sleeps ``sample`` seconds over and over and
    records how late each wake-up was. It stops by itself once nobody has read it
    for ``idle_stop`` seconds (the monitor closed) and the next read starts it again.
    """

    def __init__(self, sample: float, idle_stop: float) -> None:
        self.sample = sample
        self.idle_stop = idle_stop
        self._max = 0.0
        self._last_read = time.perf_counter()
        self._task: asyncio.Task[None] | None = None

    def take(self) -> float:
        """The largest lag seen since the previous call; (re)starts sampling."""
        self._last_read = time.perf_counter()
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="fokha-loop-lag-sampler")
        lag, self._max = self._max, 0.0
        return lag

    async def _run(self) -> None:
        while time.perf_counter() - self._last_read < self.idle_stop:
            started = time.perf_counter()
            await asyncio.sleep(self.sample)
            self._max = max(self._max, time.perf_counter() - started - self.sample)


def loop_lag_check(
    *,
    warn_above: float = 0.05,
    fail_above: float = 0.5,
    sample: float = 0.01,
    component: str = "eventloop",
    **opts: _CheckOpts,
) -> Check:
    """How late the event loop wakes a ``sample``-second sleep (ms over the sleep).

    A loop blocked by CPU work or blocking calls delays every connection this process
    serves; above ``warn_above`` seconds the result is ``warn``, above ``fail_above``
    ``fail``. Not critical by default, and in the ``live`` group.

    The lag is sampled continuously in the background (every ``sample`` seconds) and
    each run reports the largest lag since the previous run, so a block between two
    runs is not missed.
    """
    warn_above = _validate.positive("warn_above", warn_above)
    fail_above = _validate.positive("fail_above", fail_above)
    sample = _validate.positive("sample", sample)
    interval = opts.get("interval", Check.__dataclass_fields__["interval"].default)
    sampler = _LagSampler(sample, idle_stop=3 * float(interval) + 5.0)

    async def probe(ctx: ProbeContext) -> Observation:
        started = time.perf_counter()
        await asyncio.sleep(sample)  # also lets the sampler record a wake-up still due
        lag = max(0.0, time.perf_counter() - started - sample, sampler.take())
        ms = round(lag * 1000, 3)
        if lag > fail_above:
            return Observation(HealthStatus.FAIL, ms, "ms", "event loop is blocked")
        if lag > warn_above:
            return Observation(HealthStatus.WARN, ms, "ms", "event loop is slow")
        return Observation(HealthStatus.PASS, ms, "ms")

    opts.setdefault("measurement", "lag")
    opts.setdefault("component_type", "system")
    opts.setdefault("critical", False)
    opts.setdefault("groups", frozenset({"live"}))
    return Check(component=component, probe=probe, **opts)


def breaker_check(
    breaker: CircuitBreaker, *, component: str | None = None, **opts: _CheckOpts
) -> Check:
    """A :class:`~fokha_integration.CircuitBreaker`'s state: open or half-open → ``warn``.

    The breaker already keeps the service running without the dependency, so an open
    breaker degrades the service (warn), it does not take it down. The observed value
    is the state name.
    """

    async def probe(ctx: ProbeContext) -> Observation:
        state = breaker.state.value
        if state in ("open", "forced_open", "half_open"):
            return Observation(HealthStatus.WARN, state, None, f"circuit {breaker.name} is {state}")
        return Observation(HealthStatus.PASS, state)

    opts.setdefault("measurement", "state")
    opts.setdefault("component_type", "breaker")
    opts.setdefault("interval", 1.0)
    return Check(component=component or breaker.name, probe=probe, **opts)


class _StreamingStats(Protocol):
    connections: int
    slow_clients: int


class StreamingServer(Protocol):
    """What :func:`websocket_server_check` needs: a :class:`~fokha_integration.WebSocketServer`
    or anything with ``serving`` and ``metrics()`` (``connections``, ``slow_clients``)."""

    @property
    def serving(self) -> bool: ...

    def metrics(self) -> _StreamingStats: ...


def websocket_server_check(
    server: StreamingServer,
    *,
    component: str = "websocket-server",
    max_slow_clients: int = 0,
    **opts: _CheckOpts,
) -> Check:
    """Our own streaming server's health, read from its metrics (no connection made).

    Not serving → ``fail``; more than ``max_slow_clients`` clients behind (being
    conflated or queued) → ``warn``: the others are still served in real time, but
    somebody's screen lags. The observed value is the number of connections.
    """
    _validate.integer("max_slow_clients", max_slow_clients, minimum=0)

    async def probe(ctx: ProbeContext) -> Observation:
        if not server.serving:
            return Observation(HealthStatus.FAIL, 0, "connections", "server is not serving")
        stats = server.metrics()
        if stats.slow_clients > max_slow_clients:
            return Observation(
                HealthStatus.WARN,
                stats.connections,
                "connections",
                f"{stats.slow_clients} slow client(s) behind",
            )
        return Observation(HealthStatus.PASS, stats.connections, "connections")

    opts.setdefault("measurement", "connections")
    opts.setdefault("component_type", "websocket")
    opts.setdefault("interval", 1.0)
    return Check(component=component, probe=probe, **opts)
