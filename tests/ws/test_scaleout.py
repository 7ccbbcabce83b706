"""Scale-out: two server processes sharing a real redis-server (RedisBroker)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fokha_integration.ws import ChannelLimitError, Position, WebSocketClient, WebSocketServer
from fokha_integration.ws.brokers.redis import RedisBroker
from tests.support import timeout
from tests.ws.support import RawClient

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


class Node:
    """A server subprocess; ``kill()`` sends SIGKILL."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/"

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[Callable[[], Awaitable[Node]]]:
    started: list[Node] = []

    async def start() -> Node:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ws.node", redis_url,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout(20))
        assert line.startswith(b"PORT "), line
        node = Node(proc, int(line.split()[1]))
        started.append(node)
        return node

    yield start
    for node in started:
        node.kill()
        await node.proc.wait()


async def test_a_message_published_on_node_a_reaches_a_client_on_node_b(nodes) -> None:
    """Publishing through node A delivers to a subscriber on node B, in order."""
    a, b = await nodes(), await nodes()
    sub = await RawClient.open(b.url)
    await sub.request("subscribe", channels=["signals.x"])
    async with WebSocketClient(a.url) as pub:
        positions = [await pub.publish("signals.x", {"i": i}) for i in range(30)]
    assert [p.seq for p in positions] == list(range(1, 31))
    msgs = await sub.messages(30)
    assert [m["seq"] for m in msgs] == list(range(1, 31))
    assert [m["data"]["i"] for m in msgs] == list(range(30))
    await sub.close()


async def test_a_client_moving_from_a_to_b_recovers_without_loss(nodes) -> None:
    """Node A is SIGKILLed under a client; it fails over to B and gets every message once."""
    a, b = await nodes(), await nodes()
    client = WebSocketClient([a.url, b.url], backoff=(0.05, 0.3))
    await client.connect()
    await client.subscribe("signals.y")
    total = 300
    published: list[Position] = []

    async def publish_all() -> None:
        async with WebSocketClient(b.url) as pub:
            for i in range(total):
                published.append(await pub.publish("signals.y", {"i": i}))
                if i % 10 == 0:
                    await asyncio.sleep(0.005)  # pace the feed so the kill lands mid-stream

    feeder = asyncio.create_task(publish_all())
    got = [await client.next_message(timeout(10)) for _ in range(50)]
    a.kill()
    got += [await client.next_message(timeout(20)) for _ in range(total - 50)]
    await feeder
    assert [m.data["i"] for m in got] == list(range(total))
    assert [m.seq for m in got] == list(range(1, total + 1))
    assert client.url == b.url
    assert client.reconnects >= 1
    await client.close()


async def test_recovery_in_process_brokers_share_history(redis_url: str) -> None:
    """Two in-process servers on one Redis: history published via A is recovered on B."""
    a = await WebSocketServer(broker=RedisBroker(redis_url, history=5)).start()
    b = await WebSocketServer(broker=RedisBroker(redis_url, history=5)).start()
    try:
        first = await a.publish("signals.z", {"i": 0})
        for i in range(1, 4):
            await a.publish("signals.z", {"i": i})
        c = await RawClient.open(b.url)
        ack = await c.request(
            "subscribe",
            channels=[{"channel": "signals.z", "since": {"epoch": first.epoch, "seq": 1}}],
        )
        assert ack["channels"][0]["recovered"] is True
        assert [m["seq"] for m in await c.messages(3)] == [2, 3, 4]
        for i in range(4, 12):
            await a.publish("signals.z", {"i": i})
        ack = await c.request(
            "subscribe",
            channels=[{"channel": "signals.z", "since": {"epoch": first.epoch, "seq": 1}}],
        )
        assert ack["channels"][0]["recovered"] is False
        await c.close()
    finally:
        await a.close()
        await b.close()


async def test_a_node_whose_pubsub_link_drops_backfills_instead_of_going_deaf(
    redis_url: str,
) -> None:
    """Killing node B's pub/sub connection mid-stream loses nothing for B's subscriber."""
    import redis.asyncio as aioredis

    a = await WebSocketServer(broker=RedisBroker(redis_url)).start()
    b_broker = RedisBroker(redis_url)
    b = await WebSocketServer(broker=b_broker).start()
    admin = aioredis.from_url(redis_url)
    try:
        sub = await RawClient.open(b.url)
        await sub.request("subscribe", channels=["signals.d"])
        for i in range(10):
            await a.publish("signals.d", {"i": i})
        assert [m["seq"] for m in await sub.messages(10)] == list(range(1, 11))
        killed = await admin.client_kill_filter(_type="pubsub")
        assert killed >= 1
        for i in range(10, 40):
            await a.publish("signals.d", {"i": i})
        msgs = await sub.messages(30, wait=15)
        assert [m["seq"] for m in msgs] == list(range(11, 41))
        assert [m["data"]["i"] for m in msgs] == list(range(10, 40))
        assert b_broker.backfilled >= 1  # the hole was filled from the stream
        await sub.close()
    finally:
        await admin.aclose()
        await a.close()
        await b.close()


async def test_redis_outage_is_visible_and_the_node_recovers(redis_server, redis_url: str) -> None:
    """With Redis down, publish raises BackendUnavailableError (no hang, nothing silent);
    after Redis is back, publishing and delivery resume (a new epoch: Redis lost its data)."""
    from fokha_integration.errors import BackendUnavailableError

    srv = await WebSocketServer(broker=RedisBroker(redis_url, op_timeout=1.0)).start()
    try:
        sub = await RawClient.open(srv.url)
        await sub.request("subscribe", channels=["signals.o"])
        first = await srv.publish("signals.o", {"i": 0})
        await sub.messages(1)
        redis_server.stop()
        with pytest.raises(BackendUnavailableError):
            await srv.publish("signals.o", {"i": 1})
        redis_server.start()
        deadline = asyncio.get_running_loop().time() + timeout(15)
        while True:  # the broker reconnects on its own; poll the real condition
            try:
                pos = await srv.publish("signals.o", {"i": 2})
                break
            except BackendUnavailableError:
                assert asyncio.get_running_loop().time() < deadline, "Redis never came back"
                await asyncio.sleep(0.1)
        assert pos.epoch != first.epoch
        [msg] = await sub.messages(1, wait=15)
        assert (msg["epoch"], msg["seq"], msg["data"]) == (pos.epoch, pos.seq, {"i": 2})
        await sub.close()
    finally:
        await srv.close()


async def test_redis_broker_bounds_the_number_of_channels(redis_url: str) -> None:
    """Past max_channels a publish to a new channel is refused; known channels still work."""
    srv = await WebSocketServer(broker=RedisBroker(redis_url, max_channels=2)).start()
    try:
        await srv.publish("prices.a", {"x": 1})
        await srv.publish("prices.b", {"x": 1})
        with pytest.raises(ChannelLimitError):
            await srv.publish("prices.c", {"x": 1})
        assert (await srv.publish("prices.a", {"x": 2})).seq == 2
    finally:
        await srv.close()
