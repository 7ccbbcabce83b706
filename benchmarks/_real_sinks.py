"""Real sinks on loopback for bench_queue: a WebSocketServer with 10 subscribed
clients, a FileBridge to the EA emulator, and a signed webhook to a local aiohttp
receiver. The queue and its baseline are measured against the same three sinks.

Baseline ("direct"): per signal, claim the dedup key (key and content fingerprint,
as the queue does), then call the three sinks concurrently, each through a
semaphore of the queue's in-flight limit per sink. No outbox, retry or breaker.
Ours: ``SignalQueue.publish`` with the SQLite store (the durable default), and the
memory store beside it. Both are driven by the same 64 concurrent publishers;
throughput is signals per second until every sink has every signal (saturated).
Latency (publish start to each sink's delivery having returned) is compared in a
paced run at the same offered load for both (half the baseline's saturated
throughput): under saturation an outbox accepts at once and its latency is its
backlog, while the baseline's publishers wait, so saturated latencies compare
nothing. Each run gets a fresh bridge folder and EA emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from fokha_integration import FileBridge, WebSocketClient, WebSocketServer
from fokha_integration.bridge import PollConfig
from fokha_integration.bridge.emulator import EAEmulator
from fokha_integration.dedup import content_key
from fokha_integration.http import generate_webhook_secret
from fokha_integration.models import Envelope
from fokha_integration.queue import (
    FileBridgeSink,
    OutboxStore,
    SignalQueue,
    Sink,
    WebhookSink,
    WebSocketSink,
    memory_deduper,
)

CLIENTS = 10
PUBLISHERS = 64
IN_FLIGHT = 64  # the queue's default max_in_flight per sink
SYMBOLS = 64
POLL = PollConfig(busy=0.001, idle=0.005)


def signals(n: int, run: str) -> list[Envelope]:
    """``n`` order signals the EA emulator executes (unique keys per run)."""
    return [
        Envelope(
            type="signal",
            key=f"{run}-{i}",
            payload={"symbol": f"SYM{i % SYMBOLS:02d}", "direction": "BUY", "volume": 0.01},
        )
        for i in range(n)
    ]


class Clock:
    """Publish times and per-(sink, id) delivery latencies of one run."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.by_sink: dict[str, list[float]] = {}
        self.done = asyncio.Event()

    def delivered(self, sink: str, envelope: Envelope) -> None:
        latency = time.perf_counter() - self.sent[envelope.id]
        self.latencies.append(latency)
        self.by_sink.setdefault(sink, []).append(latency)
        if len(self.latencies) >= self.expected:
            self.done.set()


class RealSinks:
    """The three real sinks and the servers behind them, set up once for every run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.secret = generate_webhook_secret()
        self.received = 0
        self._stack = contextlib.AsyncExitStack()
        self._readers: list[asyncio.Task[None]] = []
        self.server: WebSocketServer | None = None
        self.url = ""

    async def __aenter__(self) -> RealSinks:
        stack = self._stack
        self.server = await stack.enter_async_context(WebSocketServer(port=0))
        for _ in range(CLIENTS):
            client = WebSocketClient(self.server.url)
            await client.connect(timeout=10)
            await client.subscribe("signals")
            stack.push_async_callback(client.close)
            self._readers.append(asyncio.create_task(self._drain(client)))
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._readers:
            task.cancel()
        # Bounded: WebSocketClient.next_message was seen not to end on cancellation
        # (reported to the ws area); the clients are closed below either way.
        await asyncio.wait(self._readers, timeout=2)
        # Bounded: the figures are taken; a slow teardown of the servers and clients
        # must not hold the report (seen once after ~20,000 messages to 10 clients).
        try:
            await asyncio.wait_for(self._stack.aclose(), 15)
        except asyncio.TimeoutError:
            print("real sinks: teardown took over 15 s", file=sys.stderr, flush=True)

    @staticmethod
    async def _drain(client: WebSocketClient) -> None:
        with contextlib.suppress(StopAsyncIteration):  # the client was closed
            while True:
                await client.next_message(3600)

    async def _hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        return web.Response(status=200)

    @contextlib.asynccontextmanager
    async def sinks(self, run: str) -> AsyncIterator[list[Sink]]:
        """Fresh sinks over the shared servers, and a fresh bridge folder with its own
        EA emulator for this run (a folder that served earlier runs is slower)."""
        assert self.server is not None
        root = self.root / f"bridge-{run}"
        async with (
            EAEmulator(root, poll=POLL, max_volume=1e9),
            FileBridge(root, poll=POLL) as bridge,
        ):
            webhook = WebhookSink(self.url, secret=self.secret, timeout=60.0)
            try:
                yield [
                    WebSocketSink(self.server, channel="signals"),
                    FileBridgeSink(bridge, reply_timeout=60.0),
                    webhook,
                ]
            finally:
                await webhook.close()


async def drive(
    envs: list[Envelope], one: Callable[[Envelope], Awaitable[None]], rate: float | None
) -> None:
    """Saturated (``rate`` None): 64 publishers back to back. Paced: one signal every
    ``1/rate`` seconds, each in a task of its own (an open loop, as producers are)."""
    if rate is None:
        it = iter(envs)

        async def publisher() -> None:
            for e in it:
                await one(e)

        await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))
        return
    start = time.perf_counter()
    tasks = []
    for i, e in enumerate(envs):
        wait = start + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(e)))
    await asyncio.gather(*tasks)


async def baseline(
    real: RealSinks, n: int, run: str, rate: float | None = None
) -> tuple[float, list[float]]:
    """Claim + the three sinks called directly and concurrently; (signals/s, latencies)."""
    envs = signals(n, run)
    clock = Clock(3 * n)
    dedup = memory_deduper()

    async with real.sinks(run) as sinks:
        gates = {s.name: asyncio.Semaphore(IN_FLIGHT) for s in sinks}

        async def call(sink: Sink, envelope: Envelope) -> None:
            async with gates[sink.name]:
                await sink.deliver(envelope)
            clock.delivered(sink.name, envelope)

        async def one(envelope: Envelope) -> None:
            clock.sent[envelope.id] = time.perf_counter()
            claim = await dedup.claim(
                envelope.key, type=envelope.type, fingerprint=content_key(envelope.payload)
            )
            if claim.status == "first":
                await asyncio.gather(*(call(s, envelope) for s in sinks))

        start = time.perf_counter()
        await drive(envs, one, rate)
        await asyncio.wait_for(clock.done.wait(), 120)
        elapsed = time.perf_counter() - start
    return n / elapsed, clock.latencies


async def through_queue(
    real: RealSinks, n: int, run: str, store: OutboxStore, rate: float | None = None
) -> tuple[float, list[float]]:
    """The same signals through ``SignalQueue`` on ``store``; (signals/s, latencies)."""
    envs = signals(n, run)
    clock = Clock(3 * n)
    async with real.sinks(run) as sinks:
        queue = SignalQueue(
            store=store, sinks=sinks, max_in_flight=IN_FLIGHT, on_delivered=clock.delivered
        )
        async with queue:

            async def one(envelope: Envelope) -> None:
                clock.sent[envelope.id] = time.perf_counter()
                await queue.publish(envelope)

            start = time.perf_counter()
            await drive(envs, one, rate)
            try:
                await asyncio.wait_for(clock.done.wait(), 120)
            except asyncio.TimeoutError:
                counts = {k: len(v) for k, v in clock.by_sink.items()}
                raise RuntimeError(
                    f"run {run}: deliveries stalled at {counts} of {n}: {queue.stats()}"
                ) from None
            elapsed = time.perf_counter() - start
    return n / elapsed, clock.latencies


@contextlib.asynccontextmanager
async def real_sinks() -> AsyncIterator[RealSinks]:
    """The real sinks in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="fokha-bench-") as tmp:
        async with RealSinks(Path(tmp)) as real:
            yield real
