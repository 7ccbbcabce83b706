"""The hub behind ``fokha serve``: every part the config names, in one asyncio process.

Start order: instance lock → dedup and outbox (state) → WebSocket server → file
bridge (and the EA emulator in demo mode) → signal queue → health monitor → one
aiohttp server (REST API, console, health, ``/metrics``). Stop runs the other way
round: the WebSocket server sends ``drain``, the queue finishes or returns its
in-flight deliveries to the outbox, the bridge flushes its journal.

A second hub on the same ``state_dir`` refuses to start (an ``flock`` on
``state_dir/fokha.lock``): two processes delivering from one SQLite outbox would
race for the same entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from ..errors import ConfigError, FokhaError
from . import _demo
from ._config import ServeConfig

__all__ = ["Hub", "HubAlreadyRunningError", "ReloadReport", "Sample"]

log = logging.getLogger("fokha_integration.serve")


class HubAlreadyRunningError(FokhaError):
    """Another ``fokha serve`` holds the lock on this state directory."""


@dataclass(frozen=True, slots=True)
class ReloadReport:
    """What a reload changed: keys applied at once, and keys that need a restart."""

    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


# Settings a running hub can take without a restart (SIGHUP).
_RELOADABLE = frozenset({"bridge.fail_after"})


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out.update(_flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = obj
    return out


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of the console's charts (taken every second)."""

    t: float
    messages_per_s: float
    delivered_per_s: float
    pending: int
    oldest_age: float


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                try:
                    holder = self.path.read_text(encoding="utf-8").strip() or "?"
                except OSError:
                    holder = "?"
                raise HubAlreadyRunningError(
                    f"another fokha serve (pid {holder}) is running on {self.path.parent}; "
                    "stop it or use another state_dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Hub:
    """Everything :class:`ServeConfig` names, started and stopped in order.

    ``demo=True`` adds the EA emulator, a synthetic price feed and a local webhook
    receiver, so the console shows live data on a fresh machine.
    """

    def __init__(self, config: ServeConfig, *, demo: bool = False) -> None:
        self.config = config
        self.demo = demo
        self.state_dir = Path(config.server.state_dir)
        self._lock = _Lock(self.state_dir / "fokha.lock")
        self._stack = contextlib.AsyncExitStack()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.secret = config.server.secret or secrets.token_urlsafe(32)
        self.samples: deque[Sample] = deque(maxlen=300)
        self.started_at = 0.0
        self.ws: Any = None
        self.bridge: Any = None
        self.queue: Any = None
        self.monitor: Any = None
        self.authenticator: Any = None
        self.http_port = 0
        self.sync: Any = None
        self.demo_webhook_received: deque[dict[str, Any]] = deque(maxlen=100)
        self.demo_webhook_url = ""
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._reload_notes: list[str] = []

    # -- lifecycle

    async def start(self) -> None:
        """Start every part in order; on any failure stop what was started and re-raise."""
        self._lock.acquire()
        try:
            await self._start_parts()
        except BaseException:
            await self._stack.aclose()
            self._lock.release()
            raise
        self.started_at = time.time()

    async def _start_parts(self) -> None:
        from ..dedup import DedupCache, MemoryDedupBackend, SQLiteDedupBackend
        from ..queue import MemoryOutboxStore, SignalQueue, SQLiteOutboxStore
        from ..ws import TokenAuthenticator, WebSocketServer

        cfg = self.config
        self.authenticator = TokenAuthenticator(self.secret.encode("utf-8"))
        backend: Any
        store: Any
        if cfg.queue.store == "memory":
            backend, store = MemoryDedupBackend(), MemoryOutboxStore()
        elif cfg.queue.store == "sqlite":
            backend = SQLiteDedupBackend(str(self.state_dir / "dedup.db"))
            store = SQLiteOutboxStore(str(self.state_dir / "outbox.db"))
        else:
            from ..dedup.redis import RedisDedupBackend
            from ..queue.redis_streams import RedisStreamsStore

            backend = RedisDedupBackend(cfg.queue.url, namespace="fokha.dedup")
            store = RedisStreamsStore(cfg.queue.url)
        dedup = await self._stack.enter_async_context(
            DedupCache(backend=backend, fail_mode=cast(Any, cfg.queue.fail_mode))
        )
        self.ws = WebSocketServer(
            host=cfg.server.host,
            port=cfg.server.ws_port,
            authenticator=self.authenticator,
            heartbeat=cfg.websocket.heartbeat,
            allow_publish=cfg.websocket.allow_publish,
        )
        await self._stack.enter_async_context(self.ws)
        if cfg.bridge.enabled:
            await self._start_bridge()
        if self.demo:
            self.demo_webhook_url = await _demo.start_receiver(
                self._stack, self.demo_webhook_received
            )
        sinks = await self._build_sinks()
        from ..queue import SinkConfig
        from ..resilience import RetryPolicy

        attempts = {s.name: s.attempts for s in cfg.sinks}
        sink_config = {
            sink.name: SinkConfig(
                retry=RetryPolicy(
                    attempts=attempts.get(sink.name, 5), initial=0.2, max_delay=5.0, deadline=None
                )
            )
            for sink in sinks
        }
        self.queue = await self._stack.enter_async_context(
            SignalQueue(dedup=dedup, store=store, sinks=sinks, sink_config=sink_config)
        )
        await self._start_health()
        await self._start_http()
        self._spawn(self._sampler())
        if self.demo:
            self._spawn(_demo.price_feed(self.ws))

    async def _start_bridge(self) -> None:
        from ..bridge import FileBridge, find_mt5_data_folders

        path = self.config.bridge.path
        if path == "emulator" or (path == "auto" and self.demo):
            from ..bridge.emulator import EAEmulator

            folder = self.state_dir / "bridge"
            folder.mkdir(parents=True, exist_ok=True)
            self.emulator: Any = EAEmulator(folder)
            await self.emulator.__aenter__()
            self._stack.push_async_callback(self._stop_emulator)
        elif path == "auto":
            found = find_mt5_data_folders()
            if not found:
                raise ConfigError(
                    "bridge.path", "no MT5 terminal folder found; set the folder explicitly", path
                )
            folder = found[0].files_dir / "fokha"
        else:
            folder = Path(path)
        self.bridge_folder = folder
        self.bridge = await self._stack.enter_async_context(FileBridge(folder))

    async def _stop_emulator(self) -> None:
        emulator, self.emulator = getattr(self, "emulator", None), None
        if emulator is not None:
            await emulator.__aexit__(None, None, None)

    async def stop_emulator(self) -> None:
        """Stop the bundled EA emulator (demo; the console's EA tile turns failing)."""
        await self._stop_emulator()

    async def start_emulator(self) -> None:
        """Start the bundled EA emulator again."""
        from ..bridge.emulator import EAEmulator

        if getattr(self, "emulator", None) is None:
            self.emulator = EAEmulator(self.bridge_folder)
            await self.emulator.__aenter__()

    async def _build_sinks(self) -> list[Any]:
        from ..queue import FileBridgeSink, WebhookSink, WebSocketSink

        sinks: list[Any] = []
        for s in _demo.sink_sections(self.config.sinks, self.demo_webhook_url):
            if s.kind == "websocket":
                sinks.append(WebSocketSink(self.ws, channel=s.channel, name=s.name))
            elif s.kind == "bridge":
                if self.bridge is None:
                    raise ConfigError(
                        "sinks", "a bridge sink needs [bridge] enabled = true", s.name
                    )
                sinks.append(FileBridgeSink(self.bridge, name=s.name))
            else:
                sinks.append(WebhookSink(s.url, secret=s.secret, name=s.name))
        return sinks

    async def _start_health(self) -> None:
        from ..health import HealthMonitor, Observation
        from ..health import HealthStatus as HS
        from ..health._checks import callable_check

        interval = self.config.health.interval
        checks = []

        async def ws_ok() -> Any:
            return Observation(HS.PASS if self.ws.serving else HS.FAIL, output="serving")

        checks.append(callable_check(ws_ok, component="websocket", interval=interval))
        if self.bridge is not None:

            async def ea_ok() -> Any:
                # Read at every run: SIGHUP may change fail_after.
                alive = self.bridge.peer_alive(max_age=self.config.bridge.fail_after)
                age = self.ea_heartbeat_age()
                text = "EA heartbeat " + ("never seen" if age is None else f"{age:.1f}s old")
                return Observation(HS.PASS if alive else HS.FAIL, output=text)

            checks.append(callable_check(ea_ok, component="ea", interval=interval))

        async def queue_ok() -> Any:
            stats = await self.queue.metrics()
            dead = sum(m.dead_lettered for m in stats.values())
            oldest = max((m.oldest_pending_age for m in stats.values()), default=0.0)
            status = HS.WARN if oldest > 60 else HS.PASS
            text = f"oldest pending {oldest:.1f}s, {dead} dead"
            snap = self.queue.stats()
            if snap.store_rewinds:
                # Redis came back from an older snapshot: signals may have been lost.
                status = HS.WARN
                text += (
                    f"; outbox history went back {snap.store_rewound} append(s) "
                    f"({snap.store_rewinds} time(s)): signals may be lost, see the ERROR log"
                )
            return Observation(status, output=text)

        checks.append(callable_check(queue_ok, component="queue", interval=interval))
        self.monitor = HealthMonitor(checks)
        await self.monitor.start()
        self._stack.push_async_callback(self.monitor.close)

    async def _start_http(self) -> None:
        from ..health import add_health_routes
        from ._console import add_console_routes

        if self.config.api.enabled:
            from ..dedup import DedupCache, SQLiteDedupBackend
            from ..http import api_app

            # Idempotency-Key entries survive a restart: a retried POST after a crash
            # still gets its stored answer.
            cache = await self._stack.enter_async_context(
                DedupCache(backend=SQLiteDedupBackend(str(self.state_dir / "idempotency.db")))
            )
            from ..http import ApiAppConfig
            from ..sync import SyncConfig

            # The sync app mounted below takes larger bodies than the API's own routes.
            server_max = SyncConfig().max_body_bytes if self.config.sync.enabled else None
            app = api_app(
                queue=self.queue,
                authenticator=self.authenticator,
                idempotency_cache=cache,
                positions=self.bridge,
                config=ApiAppConfig(server_max_body=server_max),
            )
        else:
            app = web.Application(client_max_size=1024 * 1024)
        add_health_routes(app, self.monitor, token=self.metrics_token)
        if self.config.sync.enabled:
            await self._start_sync(app)
        if self.config.console.enabled:
            add_console_routes(app, self)
        # A slow client must not hold the shutdown past its deadline: open requests get
        # a small share of it, the drain the rest.
        grace = min(2.0, self.config.server.shutdown_deadline * 0.2)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace)
        await runner.setup()
        site = web.TCPSite(runner, self.config.server.host, self.config.server.http_port)
        await site.start()
        self._runner = runner
        self._stack.push_async_callback(self._stop_http)
        self.http_port = int(runner.addresses[0][1])

    async def wait_ready(self, *, timeout: float) -> None:
        """Health-gated readiness: wait until every check has run once and none fails.

        Logs the checks still failing when ``timeout`` runs out (and returns: a hub
        whose EA is not attached yet still serves the app).
        """
        from ..health import HealthStatus

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._stopping.is_set():
            report = await self.monitor.run_once()
            failing = [
                view.key for _check, view in report.checks if view.status is not HealthStatus.PASS
            ]
            if not failing:
                return
            if loop.time() >= deadline:
                log.warning("not ready after %.0fs: %s", timeout, ", ".join(failing))
                print(f"warning: not ready: {', '.join(failing)}", flush=True)
                return
            await asyncio.sleep(min(0.2, self.config.health.interval))

    async def _start_sync(self, app: web.Application) -> None:
        from ..sync import POKE_CHANNEL, SQLiteSyncStore, SyncService, sync_app

        names = [c.strip() for c in self.config.sync.collections.split(",")]
        self.sync = SyncService(SQLiteSyncStore(self.state_dir / "sync.db"), names)
        await self.sync.start()
        self._stack.push_async_callback(self.sync.close)
        app.add_subapp(
            "/sync",
            sync_app(self.sync, authenticator=self.authenticator, poke=(self.ws, POKE_CHANNEL)),
        )

    async def stop(self) -> None:
        """Drain and stop every part (reverse start order), then release the lock."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            # No new signals from here on; what was accepted is delivered or stays in the
            # outbox for the next start (a cancelled delivery is sent again then).
            await self._stop_http()
            if self.queue is not None:
                budget = max(0.5, self.config.server.shutdown_deadline * 0.5)
                if not await self.queue.drain(budget):
                    log.warning(
                        "drain: deliveries still under way after %.1fs go back to the outbox",
                        budget,
                    )
            if self.ws is not None and self.ws.serving:
                await self.ws.close(drain=1.0, retry_after=2.0)
            await self._stack.aclose()
        finally:
            self._lock.release()

    async def _stop_http(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- helpers the console reads

    @property
    def metrics_token(self) -> str | None:
        """The bearer token /metrics and /health ask for: none on 127.0.0.1, else derived."""
        if self.config.server.host in ("127.0.0.1", "localhost", "::1"):
            return None
        import hashlib
        import hmac

        return hmac.new(self.secret.encode(), b"fokha-metrics", hashlib.sha256).hexdigest()

    def console_token(self, *, ttl: float = 3600.0, subject: str = "console") -> str:
        """A token for the console (and the live feed): may read every channel."""
        token: str = self.authenticator.issue(subject, ttl=ttl)
        return token

    def ea_heartbeat_age(self) -> float | None:
        """Seconds since the EA's last heartbeat, or None when none was seen."""
        if self.bridge is None:
            return None
        snap = self.bridge.read_snapshot("heartbeat")
        beat = None if snap is None else snap.body.get("time")
        if isinstance(beat, (int, float)) and not isinstance(beat, bool):
            return max(0.0, time.time() - float(beat))
        return None

    @property
    def ws_url(self) -> str:
        """The WebSocket URL clients use."""
        url: str = self.ws.url
        return url

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sampler(self) -> None:
        last_published = 0
        last_delivered = 0
        while True:
            metrics = self.ws.metrics()
            stats = await self.queue.metrics()
            delivered = sum(m.delivered for m in stats.values())
            self.samples.append(
                Sample(
                    t=time.time(),
                    messages_per_s=float(metrics.messages_published - last_published),
                    delivered_per_s=float(delivered - last_delivered),
                    pending=sum(m.pending for m in stats.values()),
                    oldest_age=max((m.oldest_pending_age for m in stats.values()), default=0.0),
                )
            )
            last_published, last_delivered = metrics.messages_published, delivered
            await asyncio.sleep(1.0)

    # -- reload

    def reload(self, new: ServeConfig) -> ReloadReport:
        """Apply the settings of ``new`` that can change while running; list the rest.

        Secret values are compared but never named with their values.
        """
        import dataclasses

        old_flat = _flatten(self.config.redacted())
        new_flat = _flatten(new.redacted())
        changed = sorted(
            k for k in old_flat.keys() | new_flat.keys() if old_flat.get(k) != new_flat.get(k)
        )
        # A secret changed behind "***" is still a change.
        if self.config.secrets() != new.secrets():
            changed = sorted({*changed, "<secrets>"})
        applied = tuple(k for k in changed if k in _RELOADABLE)
        restart = tuple(k for k in changed if k not in _RELOADABLE)
        if applied:
            self.config = dataclasses.replace(
                self.config,
                bridge=dataclasses.replace(self.config.bridge, fail_after=new.bridge.fail_after),
            )
        return ReloadReport(applied, restart)

    # -- signals

    def request_stop(self) -> None:
        """Ask :meth:`run_until_stopped` to return (SIGTERM/SIGINT)."""
        self._stopping.set()

    def install_signal_handlers(self, on_reload: Callable[[], None] | None = None) -> None:
        """SIGTERM/SIGINT ask the hub to stop; SIGHUP calls ``on_reload``.

        Install them before telling anyone the hub is ready, so that a signal sent
        right after "ready" is never the default (killing) action.
        """
        import signal

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        if on_reload is not None:
            loop.add_signal_handler(signal.SIGHUP, on_reload)

    async def run_until_stopped(self) -> None:
        """Wait until :meth:`request_stop` (a signal), then stop within the deadline."""
        import signal

        loop = asyncio.get_running_loop()
        try:
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            try:
                await asyncio.wait_for(self.stop(), self.config.server.shutdown_deadline)
            except asyncio.TimeoutError:
                # Past the deadline: close what is left at once (deliveries under way go
                # back to the outbox) instead of leaving the state open.
                log.error(
                    "stop did not finish in %.1fs; closing the rest now",
                    self.config.server.shutdown_deadline,
                )
                await self._stack.aclose()
                self._lock.release()
