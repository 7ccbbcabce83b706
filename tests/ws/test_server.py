"""WebSocketServer + WebSocketClient on real sockets: delivery, recovery, auth, limits, drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fokha_integration.clock import ManualClock
from fokha_integration.errors import ClosedError
from fokha_integration.ws import (
    ClientState,
    Limits,
    LocalBroker,
    Principal,
    StateEvent,
    TokenAuthenticator,
    WebSocketClient,
    WebSocketServer,
)
from tests.support import timeout
from tests.ws.support import SECRET, RawClient, TcpProxy


@pytest.fixture
async def auth() -> TokenAuthenticator:
    return TokenAuthenticator(SECRET)


@pytest.fixture
async def server(auth: TokenAuthenticator) -> AsyncIterator[WebSocketServer]:
    srv = WebSocketServer(authenticator=auth, broker=LocalBroker(history=30), heartbeat=30)
    await srv.start()
    yield srv
    await srv.close()


async def _subscribed(url: str, token: str, *channels: Any) -> tuple[RawClient, dict[str, Any]]:
    c = await RawClient.open(url)
    assert (await c.hello(token))["type"] == "welcome"
    ack = await c.request("subscribe", channels=list(channels))
    return c, ack


async def test_new_subscriber_gets_latest_value_at_once(server, auth) -> None:
    """A subscriber to a price channel gets the current price as a snapshot right after the ack."""
    await server.publish("prices.EURUSD", {"bid": 1.08})
    await server.publish("prices.EURUSD", {"bid": 1.09})
    c, ack = await _subscribed(server.url, auth.issue("u", ttl=60), "prices.EURUSD")
    assert ack["channels"][0]["mode"] == "latest"
    assert ack["channels"][0]["position"]["seq"] == 2
    [snap] = await c.messages(1)
    assert (snap["kind"], snap["seq"], snap["data"]) == ("snapshot", 2, {"bid": 1.09})
    await c.close()


async def test_updates_reach_every_subscriber_in_order(server, auth) -> None:
    """Three subscribers all get the same messages with consecutive sequence numbers."""
    clients = [
        (await _subscribed(server.url, auth.issue("u", ttl=60), "signals.s1"))[0] for _ in range(3)
    ]
    for i in range(20):
        await server.publish("signals.s1", {"i": i})
    for c in clients:
        msgs = await c.messages(20)
        assert [m["seq"] for m in msgs] == list(range(1, 21))
        assert [m["data"]["i"] for m in msgs] == list(range(20))
        assert {m["kind"] for m in msgs} == {"update"}
        await c.close()
    m = server.metrics()
    assert m.messages_published == 20
    assert m.messages_sent >= 60


async def test_recovery_gives_exactly_the_missed_messages(server, auth) -> None:
    """A client that left after seq 3 and returns with since gets seqs 4..9 exactly, in order."""
    token = auth.issue("u", ttl=60)
    c, _ = await _subscribed(server.url, token, "signals.s1")
    for i in range(3):
        await server.publish("signals.s1", {"i": i})
    seen = await c.messages(3)
    await c.close()
    for i in range(3, 9):
        await server.publish("signals.s1", {"i": i})
    since = {"epoch": seen[-1]["epoch"], "seq": seen[-1]["seq"]}
    c2, ack = await _subscribed(server.url, token, {"channel": "signals.s1", "since": since})
    assert ack["channels"][0]["recovered"] is True
    missed = await c2.messages(6)
    assert [m["seq"] for m in missed] == [4, 5, 6, 7, 8, 9]
    assert [m["data"]["i"] for m in missed] == [3, 4, 5, 6, 7, 8]
    await c2.close()
    assert server.metrics().recovery_hits == 1


async def test_recovery_beyond_history_is_a_snapshot_with_recovered_false(server, auth) -> None:
    """With history 30, a client 40 messages behind gets the latest as snapshot, recovered=false."""
    token = auth.issue("u", ttl=60)
    pos = await server.publish("signals.s1", {"i": 0})
    for i in range(1, 41):
        await server.publish("signals.s1", {"i": i})
    since = {"epoch": pos.epoch, "seq": pos.seq}
    c, ack = await _subscribed(server.url, token, {"channel": "signals.s1", "since": since})
    assert ack["channels"][0]["recovered"] is False
    [snap] = await c.messages(1)
    assert (snap["kind"], snap["recovered"], snap["seq"], snap["data"]) == (
        "snapshot", False, 41, {"i": 40},
    )  # fmt: skip
    await c.close()
    assert server.metrics().recovery_misses == 1


async def test_client_reconnects_through_a_cut_and_recovers_without_loss(server, auth) -> None:
    """WebSocketClient loses its link while 20 messages are published and gets all of them after."""
    proxy = TcpProxy(server.port)
    port = await proxy.start()
    states: list[StateEvent] = []
    reconnecting = asyncio.Event()

    def on_state(ev: StateEvent) -> None:
        states.append(ev)
        if ev.state is ClientState.RECONNECTING:
            reconnecting.set()

    client = WebSocketClient(
        f"ws://127.0.0.1:{port}/", token=auth.issue("u", ttl=60), backoff=(0.05, 0.2),
        on_state=on_state,
    )  # fmt: skip
    await client.connect()
    await client.subscribe("signals.s1")
    for i in range(5):
        await server.publish("signals.s1", {"i": i})
    got = [await client.next_message(timeout(5)) for _ in range(5)]
    proxy.refuse = True
    proxy.cut()
    await asyncio.wait_for(reconnecting.wait(), timeout(5))
    for i in range(5, 25):
        await server.publish("signals.s1", {"i": i})
    proxy.refuse = False
    got += [await client.next_message(timeout(10)) for _ in range(20)]
    assert [m.seq for m in got] == list(range(1, 26))
    assert [m.data["i"] for m in got] == list(range(25))
    assert client.reconnects >= 1
    assert ClientState.CONNECTED in [s.state for s in states[1:]]
    await client.close()
    await proxy.close()


@pytest.mark.parametrize(
    ("which", "code", "close"),
    [("missing", "auth_missing", 4500), ("expired", "auth_expired", 4501),
     ("forged", "auth_invalid", 4500), ("garbage", "auth_invalid", 4500)],
)  # fmt: skip
async def test_bad_tokens_are_refused_with_the_documented_code(server, which, code, close) -> None:
    """Missing, expired, forged and garbage tokens get an error frame and the close code."""
    tokens = {
        "missing": None,
        "expired": TokenAuthenticator(SECRET, clock=ManualClock(wall=1_000_000.0)).issue(
            "u", ttl=60
        ),
        "forged": TokenAuthenticator("an-attacker-secret-0123456789abcdef").issue("u", ttl=60),
        "garbage": "v1.e30.AAAA",
    }
    c = await RawClient.open(server.url)
    reply = await c.hello(tokens[which])
    assert (reply["type"], reply["code"], reply["temporary"]) == ("error", code, False)
    assert await c.closed_with() == close
    assert server.metrics().auth_failures == 1


async def test_commands_before_hello_are_refused(server) -> None:
    """subscribe before hello gets not_authenticated and no messages."""
    c = await RawClient.open(server.url)
    reply = await c.request("subscribe", channels=["signals.s1"])
    assert reply["code"] == "not_authenticated"
    await c.close()


async def test_unauthorised_channel_is_refused(server, auth) -> None:
    """A token limited to prices.* may subscribe prices.X but not signals.Y (forbidden)."""
    c = await RawClient.open(server.url)
    await c.hello(auth.issue("viewer", ttl=60, channels=["prices.*"]))
    assert (await c.request("subscribe", channels=["prices.GBPUSD"]))["type"] == "ack"
    err = await c.request("subscribe", channels=["signals.admin"])
    assert (err["code"], err["channel"]) == ("forbidden", "signals.admin")
    await c.close()


async def test_async_authorizer_is_consulted() -> None:
    """A custom async authorize callback decides per channel."""

    async def only_own(principal: Principal, channel: str, action: str) -> bool:
        return channel.endswith("." + principal.subject)

    auth = TokenAuthenticator(SECRET)
    async with WebSocketServer(authenticator=auth, authorize=only_own) as srv:
        c = await RawClient.open(srv.url)
        await c.hello(auth.issue("alice", ttl=60))
        assert (await c.request("subscribe", channels=["acct.alice"]))["type"] == "ack"
        assert (await c.request("subscribe", channels=["acct.bob"]))["code"] == "forbidden"
        await c.close()


async def test_hello_timeout_closes_with_4003(auth) -> None:
    """A connection that never says hello is closed with 4003."""
    async with WebSocketServer(authenticator=auth, limits=Limits(hello_timeout=0.2)) as srv:
        c = await RawClient.open(srv.url)
        assert await c.closed_with() == 4003


async def test_connection_limit_closes_with_4004() -> None:
    """Over max_connections, a new connection is closed with 4004 and counted."""
    async with WebSocketServer(limits=Limits(max_connections=1)) as srv:
        first = await RawClient.open(srv.url)
        assert (await first.request("ping"))["type"] == "pong"
        second = await RawClient.open(srv.url)
        assert await second.closed_with() == 4004
        assert srv.metrics().rejected_connections == 1
        await first.close()


async def test_oversized_frame_closes_with_1009() -> None:
    """A frame over max_frame_bytes is cut off by the WebSocket layer with 1009."""
    async with WebSocketServer(limits=Limits(max_frame_bytes=1024)) as srv:
        c = await RawClient.open(srv.url)
        await c.ws.send('{"op":"ping","pad":"' + "x" * 5000 + '"}')
        assert await c.closed_with() == 1009


async def test_item1_heartbeat_never_carries_null_positions(auth) -> None:
    """An idle subscriber's heartbeat has its channels' latest positions, and a channel that
    never had a message is left out instead of null (issue 15 item 1)."""
    async with WebSocketServer(authenticator=auth, heartbeat=0.2) as srv:
        c, _ = await _subscribed(srv.url, auth.issue("u", ttl=60), "signals.s1", "signals.none")
        pos = await srv.publish("signals.s1", {"x": 1})
        await c.messages(1)
        while (frame := await c.recv()).get("type") != "heartbeat":
            pass
        assert frame["channels"] == {
            "signals.s1": {"epoch": pos.epoch, "seq": 1},
        }
        await c.close()


async def test_drain_notice_then_close_4000(auth) -> None:
    """Graceful shutdown sends drain with retry_after, then closes with 4000."""
    srv = WebSocketServer(authenticator=auth)
    await srv.start()
    c, _ = await _subscribed(srv.url, auth.issue("u", ttl=60), "signals.s1")
    closing = asyncio.create_task(srv.close(drain=0.3, retry_after=2.5))
    frame = await c.recv()
    assert frame == {"type": "drain", "retry_after": 2.5, "reason": "shutdown"}
    assert await c.closed_with() == 4000
    await closing


async def test_client_does_not_reconnect_after_a_permanent_code(server) -> None:
    """A forged token makes WebSocketClient stop (state closed, code 4500), not retry."""
    forged = TokenAuthenticator("an-attacker-secret-0123456789abcdef").issue("u", ttl=60)
    client = WebSocketClient(server.url, token=forged, backoff=(0.01, 0.02))
    with pytest.raises(ClosedError):
        await client.connect(timeout=timeout(5))
    assert client.state is ClientState.CLOSED
    assert client.close_code == 4500
    assert client.reconnects == 0
    await client.close()


async def test_client_publish_when_allowed(auth) -> None:
    """With allow_publish, a client publish is acked with its position and fanned out."""
    async with WebSocketServer(authenticator=auth, allow_publish=True) as srv:
        token = auth.issue("u", ttl=60)
        sub, _ = await _subscribed(srv.url, token, "signals.s1")
        async with WebSocketClient(srv.url, token=token) as pub:
            pos = await pub.publish("signals.s1", {"side": "BUY"})
        assert pos.seq == 1
        [msg] = await sub.messages(1)
        assert msg["data"] == {"side": "BUY"}
        await sub.close()


async def test_unsubscribe_stops_delivery(server, auth) -> None:
    """After unsubscribe no more messages of that channel arrive (a ping round-trip proves it)."""
    c, _ = await _subscribed(server.url, auth.issue("u", ttl=60), "signals.s1")
    assert (await c.request("unsubscribe", channels=["signals.s1"]))["op"] == "unsubscribe"
    await server.publish("signals.s1", {"x": 1})
    assert (await c.request("ping"))["type"] == "pong"
    assert server.metrics().subscriptions == 0
    await c.close()


async def test_client_resumes_from_saved_positions_and_models_publish(server, auth) -> None:
    """A new client given saved positions gets exactly what it missed; models publish as dicts."""
    from fokha_integration import PriceTick

    token = auth.issue("u", ttl=60)
    async with WebSocketClient(server.url, token=token) as first:
        await first.subscribe("signals.s1")
        for i in range(3):
            await server.publish("signals.s1", {"i": i})
        [await first.next_message(timeout(5)) for _ in range(3)]
        saved = first.positions
    for i in range(3, 6):
        await server.publish("signals.s1", {"i": i})
    async with WebSocketClient(server.url, token=token, positions=saved) as again:
        await again.subscribe("signals.s1")
        got = [await again.next_message(timeout(5)) for _ in range(3)]
        assert [(m.seq, m.kind, m.data["i"]) for m in got] == [
            (4, "update", 3), (5, "update", 4), (6, "update", 5),
        ]  # fmt: skip
        tick = PriceTick(symbol="EURUSD", bid=1.0842, ask=1.0843)
        await server.publish("prices.EURUSD", tick)
        await again.subscribe("prices.EURUSD")
        snap = await again.next_message(timeout(5))
        assert snap.data == tick.to_dict()


async def test_slow_async_authorizer_is_a_temporary_error_not_a_slow_close() -> None:
    """An authoriser that times out gives 'unavailable' and the connection stays open."""
    hang = asyncio.Event()

    async def stuck(principal: Principal, channel: str, action: str) -> bool:
        await hang.wait()
        return True

    auth = TokenAuthenticator(SECRET)
    async with WebSocketServer(authenticator=auth, authorize=stuck, op_timeout=0.1) as srv:
        c = await RawClient.open(srv.url)
        await c.hello(auth.issue("alice", ttl=60))
        err = await c.request("subscribe", channels=["acct.alice"])
        assert (err["type"], err["code"], err["temporary"]) == ("error", "unavailable", True)
        assert (await c.request("ping"))["type"] == "pong"  # still connected
        assert srv.metrics().slow_disconnects == 0
        hang.set()
        await c.close()


async def test_connection_is_closed_when_its_token_expires() -> None:
    """A token's expiry ends the connection too (4501), not only the hello."""
    clock = ManualClock()
    auth = TokenAuthenticator(SECRET, clock=clock)
    async with WebSocketServer(authenticator=auth, heartbeat=1.0, clock=clock) as srv:
        c, _ = await _subscribed(srv.url, auth.issue("u", ttl=10), "signals.s1")
        await clock.wait_for_sleepers(1)
        clock.advance(5)
        assert (await c.request("ping"))["type"] == "pong"  # still valid at t+5
        await clock.wait_for_sleepers(1)
        clock.advance(6)
        assert await c.closed_with() == 4501
