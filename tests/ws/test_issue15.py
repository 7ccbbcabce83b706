"""Issue 15: each spec/server disagreement found by outside clients, one test per item."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from fokha_integration.clock import ManualClock
from fokha_integration.ws import (
    CloseCode,
    HistoryPolicy,
    Limits,
    LocalBroker,
    TokenAuthenticator,
    WebSocketClient,
    WebSocketServer,
    is_reconnect_code,
)
from fokha_integration.ws.protocol_table import CLOSE_CODES
from tests.support import timeout
from tests.ws.support import SECRET, RawClient

WALL = 1_800_000_000.0


async def _closed_frames(c: RawClient) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame until the server closes, and the close code."""
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(c.ws.recv(), timeout(5))))
    except Exception:
        pass
    rcvd = c.ws.protocol.close_rcvd
    return frames, None if rcvd is None else rcvd.code


async def test_item1_heartbeat_values_are_never_null() -> None:
    """A subscribed channel with no message yet is absent from the heartbeat, not null."""
    async with WebSocketServer(heartbeat=0.1) as srv:
        c = await RawClient.open(srv.url)
        await c.request("subscribe", channels=["signals.quiet", "signals.busy"])
        await srv.publish("signals.busy", {"x": 1})
        while (frame := await c.recv())["type"] != "heartbeat":
            pass
        assert set(frame["channels"]) == {"signals.busy"}
        assert all(v is not None for v in frame["channels"].values())
        await c.close()


async def test_item2_last_rate_limited_before_4002_has_id_and_retry_after() -> None:
    """Flooding: every rate_limited error, the last one before 4002 too, has retry_after."""
    async with WebSocketServer(limits=Limits(rate=1.0, burst=2)) as srv:
        c = await RawClient.open(srv.url)
        for i in range(1, 6):
            await c.send({"op": "ping", "id": i})
        frames, code = await _closed_frames(c)
        errors = [f for f in frames if f["type"] == "error"]
        assert code == 4002
        assert errors
        assert all(e["code"] == "rate_limited" and "retry_after" in e for e in errors)
        assert errors[-1]["id"] == 5


async def test_item3_malformed_hello_closes_with_a_no_reconnect_code() -> None:
    """A hello with a numeric token gets bad_field and close 4502, which is not a
    reconnect code, instead of lingering until the 4003 hello timeout."""
    async with WebSocketServer(authenticator=TokenAuthenticator(SECRET)) as srv:
        c = await RawClient.open(srv.url)
        await c.send({"op": "hello", "id": 1, "token": 12345})
        frames, code = await _closed_frames(c)
        assert [(f["type"], f["code"], f["id"]) for f in frames] == [("error", "bad_field", 1)]
        assert code == CloseCode.PROTOCOL_VIOLATION == 4502
        assert not is_reconnect_code(code)


async def test_item4_age_history_recovers_exactly_after_a_5s_stall_at_2000_per_s() -> None:
    """A signal channel with 10 minutes of history by age recovers exactly the 10,000
    messages published during a 5-second stall at 2,000/s (the default count of 1,000
    would not); past the age a resume gets recovered=false."""
    clock = ManualClock(wall=WALL)
    policy = HistoryPolicy(count=1_300_000, max_age=600.0)
    broker = LocalBroker(history_rules=[("signals.*", policy)], clock=clock)
    async with WebSocketServer(broker=broker, clock=clock, heartbeat=3600) as srv:
        c = await RawClient.open(srv.url)
        await c.request("subscribe", channels=[{"channel": "signals.fast", "mode": "all"}])
        for i in range(2000):  # one second at 2,000/s while the client reads
            clock.advance(0.0005)
            await srv.publish("signals.fast", {"i": i})
        seen = await c.messages(2000)
        await c.close()  # the stall: the client is gone for 5 s
        for i in range(2000, 12000):
            clock.advance(0.0005)
            await srv.publish("signals.fast", {"i": i})
        last = seen[-1]
        since = {"epoch": last["epoch"], "seq": last["seq"]}
        c2 = await RawClient.open(srv.url)
        ack = await c2.request("subscribe", channels=[{"channel": "signals.fast", "since": since}])
        assert ack["channels"][0]["recovered"] is True
        missed = await c2.messages(10_000)
        assert [m["seq"] for m in missed] == list(range(2001, 12001))
        assert [m["data"]["i"] for m in missed] == list(range(2000, 12000))
        await c2.close()
        clock.advance(601.0)  # past the age bound: the history no longer reaches back
        c3 = await RawClient.open(srv.url)
        ack = await c3.request("subscribe", channels=[{"channel": "signals.fast", "since": since}])
        assert ack["channels"][0]["recovered"] is False
        await c3.close()


async def test_item5_replayed_frames_carry_the_replay_time_as_sent() -> None:
    """`sent` is when the server sent the frame: a replay carries the replay time, `ts`
    the original publish time."""
    clock = ManualClock(wall=WALL)
    async with WebSocketServer(broker=LocalBroker(clock=clock), clock=clock) as srv:
        first = await srv.publish("signals.a", {"i": 0})
        await srv.publish("signals.a", {"i": 1})
        clock.advance(100.0)
        c = await RawClient.open(srv.url)
        since = {"epoch": first.epoch, "seq": first.seq}
        await c.request("subscribe", channels=[{"channel": "signals.a", "since": since}])
        [replayed] = await c.messages(1)
        assert (replayed["seq"], replayed["ts"], replayed["sent"]) == (2, WALL, WALL + 100.0)
        await c.close()


async def test_item6_invalid_ids_are_answered_with_null() -> None:
    """Ids outside the spec (-1, "", 2**53, 1.5, true) are never echoed."""
    async with WebSocketServer() as srv:
        c = await RawClient.open(srv.url)
        for bad in (-1, "", 2**53, 1.5, True):
            await c.send({"op": "subscribe", "id": bad, "channels": ["a.b"]})
            frame = await c.recv()
            assert (frame["type"], frame["code"], frame["id"]) == ("error", "bad_field", None)
        await c.close()


async def test_item6_close_reasons_are_the_table_tokens() -> None:
    """Every close code the server sends carries the table's reason token."""
    table = {spec.code: spec.reason for spec in CLOSE_CODES}
    for code in CloseCode:
        assert code.reason == table[int(code)]
    async with WebSocketServer(limits=Limits(rate=1.0, burst=1)) as srv:
        c = await RawClient.open(srv.url)
        for i in range(4):
            await c.send({"op": "ping", "id": i})
        await _closed_frames(c)
        rcvd = c.ws.protocol.close_rcvd
        assert rcvd is not None
        assert (rcvd.code, rcvd.reason) == (4002, "rate_limited")


async def test_item6_token_expiring_mid_connection_gets_auth_expired_then_4501() -> None:
    """A connected client whose token runs out gets an auth_expired error (id null), then 4501."""
    clock = ManualClock(wall=WALL)
    auth = TokenAuthenticator(SECRET, clock=clock)
    async with WebSocketServer(authenticator=auth, clock=clock, heartbeat=1.0) as srv:
        c = await RawClient.open(srv.url)
        assert (await c.hello(auth.issue("u", ttl=10)))["type"] == "welcome"
        clock.advance(11.0)
        frames, code = await _closed_frames(c)
        errors = [f for f in frames if f["type"] == "error"]
        assert [(e["code"], e["id"]) for e in errors] == [("auth_expired", None)]
        assert code == 4501


async def test_item6_duplicate_channels_are_refused_so_the_ack_lines_up() -> None:
    """A subscribe listing a channel twice is refused with bad_field naming it."""
    async with WebSocketServer() as srv:
        c = await RawClient.open(srv.url)
        reply = await c.request("subscribe", channels=["a.b", "a.c", "a.b"])
        assert (reply["type"], reply["code"], reply["channel"]) == ("error", "bad_field", "a.b")
        ack = await c.request("subscribe", channels=["a.b", "a.c"])
        assert [e["channel"] for e in ack["channels"]] == ["a.b", "a.c"]
        await c.close()


async def test_item6_python_client_omits_a_missing_token() -> None:
    """Without a token the Python client's hello has no token key (never null)."""
    hellos: list[dict[str, Any]] = []
    got = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        hello = json.loads(await ws.recv())
        hellos.append(hello)
        got.set()
        await ws.send(json.dumps({"type": "welcome", "id": hello["id"], "heartbeat": 30}))
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with WebSocketClient(f"ws://127.0.0.1:{port}/"):
            await asyncio.wait_for(got.wait(), timeout(5))
    assert "token" not in hellos[0]
    assert hellos[0]["op"] == "hello"


async def test_item6_oversized_frame_closes_1009_without_a_reply() -> None:
    """A frame over max_frame_bytes closes with 1009 (no error frame: the spec says so)."""
    async with WebSocketServer(limits=Limits(max_frame_bytes=1024)) as srv:
        c = await RawClient.open(srv.url)
        await c.ws.send(json.dumps({"op": "ping", "pad": "x" * 2000}))
        frames, code = await _closed_frames(c)
        assert frames == []
        assert code == 1009
