"""The shared client rules (issue 19), exercised by the Python client against a real server.

The generated Dart client takes the same table (``fokha_integration._client_rules``);
these tests run the rules where they can run here: in our Python client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
from pathlib import Path

import pytest

from fokha_integration._client_rules import CLIENT_RULES
from fokha_integration.resilience import RetryPolicy
from fokha_integration.ws import ClientState, WebSocketClient, WebSocketServer
from tests.support import free_port, timeout

from .support import TcpProxy

GOLDEN_RULES = Path(__file__).resolve().parents[2] / "clients/dart/lib/src/rules.dart"
CLIENTS = int(os.environ.get("FOKHA_RECONNECT_CLIENTS", "1000"))


def test_python_and_dart_clients_take_the_same_rules() -> None:
    """The Python client's default reconnect policy and the Dart constants equal the table."""
    client = WebSocketClient("ws://127.0.0.1:9/")
    policy = client._retry  # the effective policy, read once in a test
    assert (policy.initial, policy.max_delay, policy.multiplier) == (
        CLIENT_RULES.reconnect_initial,
        CLIENT_RULES.reconnect_cap,
        CLIENT_RULES.reconnect_multiplier,
    )
    assert policy.jitter == "full" and policy.deadline is None
    dart = GOLDEN_RULES.read_text(encoding="utf-8")
    assert f"this.reconnectInitial = {CLIENT_RULES.reconnect_initial!r}," in dart
    assert f"this.reconnectCap = {CLIENT_RULES.reconnect_cap!r}," in dart
    assert f"this.healthyAfter = {CLIENT_RULES.healthy_after!r}," in dart
    assert f"this.tokenRefreshTimeout = {CLIENT_RULES.token_refresh_timeout!r}," in dart


@pytest.mark.slow
async def test_clients_dropped_at_once_spread_their_reconnects() -> None:
    """1,000 clients dropped at once: no 100 ms bucket of reconnect times above 2x the mean."""
    port = free_port()
    server = WebSocketServer(port=port, heartbeat=30.0)
    await server.start()
    delays: list[float] = []
    first_tries = 0
    reconnecting = asyncio.Event()
    clients = []

    def on_state(event: object) -> None:
        nonlocal first_tries
        if armed.is_set() and getattr(event, "state", None) is ClientState.RECONNECTING:
            first_tries += 1
            # A client whose connect needed a retry during the connect storm is on its
            # second delay already; the rule under test is the first one.
            if getattr(event, "attempt", 0) == 1:
                delays.append(float(getattr(event, "delay", 0.0)))
            if first_tries == CLIENTS:
                reconnecting.set()

    armed = asyncio.Event()

    rng = random.Random(1)
    try:
        for i in range(CLIENTS):
            client = WebSocketClient(
                f"ws://127.0.0.1:{port}/", on_state=on_state, rng=random.Random(rng.random() + i)
            )
            clients.append(client)
        await asyncio.gather(*(c.connect(timeout=timeout(60)) for c in clients))
        armed.set()
        await server.close()  # every client dropped at the same instant
        await asyncio.wait_for(reconnecting.wait(), timeout(60))
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        if server.serving:
            await server.close()
    assert len(delays) >= 0.9 * CLIENTS, len(delays)
    bound = CLIENT_RULES.reconnect_bound(0)
    assert all(0.0 <= d <= bound for d in delays), max(delays)
    buckets = collections.Counter(min(int(d / 0.1), int(bound / 0.1) - 1) for d in delays)
    mean = len(delays) / (bound / 0.1)
    assert max(buckets.values()) <= 2 * mean, sorted(buckets.items())


async def test_forced_reconnects_lose_and_duplicate_nothing() -> None:
    """100 forced reconnects while messages flow: every message delivered once, in order."""
    port = free_port()
    server = WebSocketServer(port=port, heartbeat=30.0)
    await server.start()
    proxy = TcpProxy(port)
    proxy_port = await proxy.start()
    connected = asyncio.Event()

    def on_state(event: object) -> None:
        if getattr(event, "state", None) is ClientState.CONNECTED:
            connected.set()

    # Short delays: the subject here is recovery (resubscribe with since, drop by seq),
    # not the backoff, which the test above covers.
    fast = RetryPolicy(initial=0.005, max_delay=0.02, deadline=None)
    client = WebSocketClient(f"ws://127.0.0.1:{proxy_port}/", retry=fast, on_state=on_state)
    seen: list[int] = []
    per_round, rounds = 6, 100
    total = per_round * rounds + 1
    try:
        # A position to resume from: a client that subscribed to an empty stream has
        # none, and the protocol then answers a resubscribe with the latest value only.
        await server.publish("signals.rules", {"n": 1})
        await client.connect(timeout=timeout(10))
        await client.subscribe("signals.rules")

        async def consume() -> None:
            async for msg in client:
                seen.append(msg.seq)
                if msg.seq >= total:
                    return

        consumer = asyncio.create_task(consume())
        published = 1
        for _ in range(rounds):
            for _ in range(per_round):
                published += 1
                await server.publish("signals.rules", {"n": published})
            connected.clear()
            proxy.cut()  # the next messages are published while the client is away
            await asyncio.wait_for(connected.wait(), timeout(10))
        await asyncio.wait_for(consumer, timeout(60))
    finally:
        await client.close()
        await proxy.close()
        await server.close()
    assert client.reconnects >= rounds
    assert seen == list(range(1, total + 1)), (len(seen), len(set(seen)))


async def test_ten_concurrent_token_refreshes_call_the_source_once() -> None:
    """Ten concurrent refreshes share one call of the token source."""
    release = asyncio.Event()
    calls = 0

    async def source() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return f"token-{calls}"

    client = WebSocketClient("ws://127.0.0.1:9/", token=source)
    waiting = [asyncio.create_task(client.refresh_token()) for _ in range(10)]
    await asyncio.sleep(0)  # every task reaches the shared flight
    release.set()
    tokens = await asyncio.gather(*waiting)
    assert calls == 1 and client.token_refreshes == 1
    assert tokens == ["token-1"] * 10
    assert await client.refresh_token() == "token-2"  # a later refresh asks again


async def test_a_failing_token_source_does_not_drop_a_healthy_connection() -> None:
    """A token source that fails makes refresh_token raise; the connection stays up."""
    port = free_port()
    server = WebSocketServer(port=port)
    await server.start()
    healthy = True

    async def source() -> str | None:
        if not healthy:
            raise ConnectionError("identity provider down")
        return None

    client = WebSocketClient(f"ws://127.0.0.1:{port}/", token=source)
    try:
        await client.connect(timeout=timeout(10))
        healthy = False
        with pytest.raises(ConnectionError):
            await client.refresh_token()
        assert client.state is ClientState.CONNECTED
        assert await client.ping() is None or True
    finally:
        await client.close()
        await server.close()


async def test_cancelled_next_message_readers_stop_and_lose_nothing() -> None:
    """Cancelling readers blocked in next_message ends every one of them, and a message one
    of them had already taken is returned by the next read."""
    port = free_port()
    server = WebSocketServer(port=port)
    await server.start()
    client = WebSocketClient(f"ws://127.0.0.1:{port}/")
    try:
        await client.connect(timeout=timeout(10))
        await client.subscribe("signals.cancel")
        seen: list[int] = []
        for round_ in range(50):
            reader = asyncio.create_task(client.next_message(timeout(10)))
            await asyncio.sleep(0)  # the reader is waiting on the queue
            await server.publish("signals.cancel", {"n": round_})
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                seen.append((await reader).seq)
        while len(seen) < 50:
            seen.append((await client.next_message(timeout(10))).seq)
        assert seen == list(range(1, 51))
    finally:
        await client.close()
        await server.close()


async def test_a_refresh_whose_caller_was_cancelled_is_not_reused_stale() -> None:
    """A refresh that finished after its only caller was cancelled is not handed out later."""
    release = asyncio.Event()
    calls = 0

    async def source() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return f"token-{calls}"

    client = WebSocketClient("ws://127.0.0.1:9/", token=source)
    waiter = asyncio.create_task(client.refresh_token())
    await asyncio.sleep(0)  # the refresh is under way
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    flight = client._tokens._flight  # the abandoned refresh (a test may look inside)
    assert flight is not None
    release.set()
    await asyncio.wait({flight})  # it finishes with token-1, nobody waiting for it
    assert await client.refresh_token() == "token-2"
