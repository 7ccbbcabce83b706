"""Slow clients: others keep their pace, memory stays bounded, conflation, gaps, slow close."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect

from fokha_integration.ws import (
    LocalBroker,
    SlowClientPolicy,
    WebSocketClient,
    WebSocketServer,
)
from tests.support import timeout
from tests.ws.support import RawClient

PAD = "x" * 400


async def _stalled_client(port: int, channels: list[Any]) -> RawClient:
    """A client with a tiny receive buffer that subscribes and then stops reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    ws = await connect(
        f"ws://127.0.0.1:{port}/", sock=sock, max_queue=(2, 1), compression=None,
        open_timeout=timeout(5),
    )  # fmt: skip
    c = RawClient(ws)
    ack = await c.request("subscribe", channels=channels)
    assert ack["type"] == "ack"
    return c


async def _until(cond: Callable[[], bool], what: str, step: Callable[[], Any], wait: float) -> None:
    """Run ``step`` until ``cond`` holds (a real condition), failing after ``wait`` seconds."""
    deadline = time.monotonic() + timeout(wait)
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await step()


class Reader:
    """Keeps reading a raw client in the background, recording message frames."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.frames: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for raw in self.client.ws:
            frame = json.loads(raw)
            if frame["type"] == "message":
                self.frames.append(frame)

    def seqs(self, channel: str) -> list[int]:
        return [f["seq"] for f in self.frames if f["channel"] == channel]


def _slow_stats(server: WebSocketServer) -> list[dict[str, Any]]:
    return [s for s in server.connection_stats() if s["slow"]]


async def test_one_stalled_client_does_not_hold_back_the_others() -> None:
    """A stalled client goes slow; the fast one gets everything; the slow one stays bounded,
    and on resume gets the latest price (conflated) and a gap marker for the signal channel."""
    policy = SlowClientPolicy(
        high_watermark=16 * 1024, low_watermark=4 * 1024, queue_size=20, max_pending=100, grace=60
    )
    async with WebSocketServer(slow=policy, broker=LocalBroker(history=5000)) as srv:
        fast = await RawClient.open(srv.url)
        await fast.request("subscribe", channels=["prices.EURUSD", "signals.s1"])
        reader = Reader(fast)
        stalled = await _stalled_client(srv.port, ["prices.EURUSD", "signals.s1"])
        n = 0

        async def publish_batch() -> None:
            nonlocal n
            for _ in range(20):
                n += 1
                await srv.publish("prices.EURUSD", {"n": n, "pad": PAD})
                await srv.publish("signals.s1", {"n": n, "pad": PAD})
            await asyncio.sleep(0)  # let the fast reader and the transports run

        await _until(lambda: bool(_slow_stats(srv)), "the stalled client to go slow",
                     publish_batch, 20)  # fmt: skip
        for _ in range(10):
            await publish_batch()
        # The fast client keeps receiving everything, in order.
        await _until(lambda: len(reader.seqs("signals.s1")) >= n, "fast client to catch up",
                     lambda: asyncio.sleep(0.01), 10)  # fmt: skip
        assert reader.seqs("signals.s1") == list(range(1, n + 1))
        assert reader.seqs("prices.EURUSD") == list(range(1, n + 1))
        # The stalled client's memory is bounded: one price + at most queue_size+1 signals.
        [slow] = _slow_stats(srv)
        assert slow["pending"] <= 1 + policy.queue_size + 1
        assert slow["write_buffer"] <= policy.high_watermark + 4096
        m = srv.metrics()
        assert m.slow_clients == 1
        assert m.conflated > 0
        assert m.gaps >= 1
        last_price = n
        # Resume: read until the latest price arrives.
        got: list[dict[str, Any]] = []
        while not any(
            f.get("channel") == "prices.EURUSD" and f.get("seq") == last_price for f in got
        ):
            got.append(await stalled.recv(10))
        prices = [f for f in got if f.get("channel") == "prices.EURUSD"]
        signals = [f for f in got if f.get("channel") == "signals.s1"]
        assert prices[-1]["kind"] == "conflated"
        assert prices[-1]["data"]["n"] == last_price
        assert prices[-1]["from"] <= last_price
        assert len(prices) < last_price  # the skipped ones were conflated away
        assert any(f["kind"] == "gap" for f in signals)
        # After catching up the client is fast again and gets live updates directly.
        await _until(lambda: not _slow_stats(srv), "the client to be fast again",
                     lambda: stalled.recv(5), 10)  # fmt: skip
        pos = await srv.publish("signals.s1", {"n": "live"})
        while (f := await stalled.recv(5)).get("seq") != pos.seq:
            pass
        assert f["kind"] == "update"
        reader.task.cancel()
        await fast.close()
        await stalled.close()


async def test_a_client_that_never_resumes_is_closed_with_4001() -> None:
    """A stalled client over the high watermark for longer than grace is closed with 4001."""
    policy = SlowClientPolicy(high_watermark=8 * 1024, low_watermark=2 * 1024, grace=0.5)
    async with WebSocketServer(slow=policy, close_timeout=30) as srv:
        other = await RawClient.open(srv.url)
        await other.request("subscribe", channels=["prices.EURUSD"])
        reader = Reader(other)
        stalled = await _stalled_client(srv.port, ["prices.EURUSD"])
        n = 0

        async def publish_batch() -> None:
            nonlocal n
            for _ in range(20):
                n += 1
                await srv.publish("prices.EURUSD", {"n": n, "pad": PAD})
            await asyncio.sleep(0.01)  # pace the feed; the grace timer runs meanwhile

        await _until(lambda: srv.metrics().slow_disconnects == 1, "the slow close",
                     publish_batch, 20)  # fmt: skip
        assert await stalled.closed_with(10) == 4001
        # The other client was served all along.
        await _until(lambda: len(reader.seqs("prices.EURUSD")) >= n, "other client",
                     lambda: asyncio.sleep(0.01), 10)  # fmt: skip
        assert reader.seqs("prices.EURUSD") == list(range(1, n + 1))
        reader.task.cancel()
        await other.close()


async def test_slow_client_on_an_all_channel_recovers_every_message() -> None:
    """A WebSocketClient whose consumer pauses gets a gap marker, recovers it, loses nothing."""
    policy = SlowClientPolicy(high_watermark=16 * 1024, low_watermark=4 * 1024, queue_size=10)
    async with WebSocketServer(slow=policy, broker=LocalBroker(history=100_000)) as srv:
        client = WebSocketClient(srv.url, queue_size=1)
        await client.connect()
        await client.subscribe("signals.s1")
        n = 0

        async def publish_batch() -> None:
            nonlocal n
            for _ in range(50):
                n += 1
                await srv.publish("signals.s1", {"n": n, "pad": PAD * 4})
            await asyncio.sleep(0)

        await _until(lambda: srv.metrics().gaps >= 1, "a gap marker", publish_batch, 30)
        total = n
        got = [await client.next_message(timeout(10)) for _ in range(total)]
        assert [m.data["n"] for m in got] == list(range(1, total + 1))
        assert client.gaps_detected >= 1
        assert srv.metrics().recovery_hits >= 1
        await client.close()
