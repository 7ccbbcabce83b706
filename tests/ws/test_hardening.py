"""Issue 13 in the WebSocket area: eternal tokens, malleable tokens, the channel cap,
non-finite or wrong-typed settings, and the Redis epoch after a snapshot restore."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from typing import Any

import pytest

from fokha_integration.clock import ManualClock
from fokha_integration.errors import ConfigError
from fokha_integration.ws import (
    AuthError,
    ChannelLimitError,
    HistoryPolicy,
    Limits,
    LocalBroker,
    Position,
    SlowClientPolicy,
    TokenAuthenticator,
    WebSocketClient,
    WebSocketServer,
)
from fokha_integration.ws.brokers.redis import RedisBroker
from tests.ws.support import SECRET, RawClient

WALL = 1_800_000_000.0


@pytest.mark.parametrize("ttl", [math.nan, math.inf, -math.inf, 0, -1, True, "60"])
def test_defect7_issue_refuses_non_finite_and_wrong_ttl(ttl: Any) -> None:
    """issue(ttl=nan/inf/...) raises ConfigError naming ttl: no token that never expires."""
    auth = TokenAuthenticator(SECRET)
    with pytest.raises(ConfigError) as info:
        auth.issue("alice", ttl=ttl)
    assert info.value.field == "ttl"


def _signed(payload: dict[str, Any] | str) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    part = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    sig = hmac.new(SECRET.encode(), f"v1.{part}".encode(), hashlib.sha256).digest()
    return f"v1.{part}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def test_defect7_a_signed_infinite_expiry_is_refused() -> None:
    """A correctly signed payload with exp Infinity is auth_invalid, not valid forever."""
    auth = TokenAuthenticator(SECRET)
    with pytest.raises(AuthError) as info:
        auth.verify(_signed('{"sub":"alice","exp":Infinity}'))
    assert info.value.code == "auth_invalid"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda sig: sig[:5] + "!" + sig[5:],  # a non-alphabet character inside
        lambda sig: sig + "=",  # padding
        lambda sig: sig + " ",
        lambda sig: sig[:-1] + ("B" if sig[-1] == "A" else "A")[0],  # other trailing bits
    ],
)
def test_tokens_are_decoded_strictly(mangle: Any) -> None:
    """Any other spelling of a valid signature is refused (strict base64url)."""
    auth = TokenAuthenticator(SECRET)
    token = auth.issue("alice", ttl=60)
    head, sig = token.rsplit(".", 1)
    assert auth.verify(token).subject == "alice"
    with pytest.raises(AuthError) as info:
        auth.verify(f"{head}.{mangle(sig)}")
    assert info.value.code == "auth_invalid"


async def test_channel_cap_evicts_idle_channels_and_raises_a_typed_error() -> None:
    """Past max_channels an idle channel is evicted (its resume gets recovered=false);
    with none idle, a new channel raises ChannelLimitError (and a client publish gets
    `unavailable` naming the channel)."""
    clock = ManualClock(wall=WALL)
    broker = LocalBroker(max_channels=2, channel_idle=60.0, clock=clock)
    async with WebSocketServer(broker=broker, clock=clock, allow_publish=True) as srv:
        old = await srv.publish("signals.a", {"i": 1})
        await srv.publish("signals.b", {"i": 1})
        with pytest.raises(ChannelLimitError) as info:
            await srv.publish("signals.c", {"i": 1})
        assert (info.value.channel, info.value.limit) == ("signals.c", 2)
        c = await RawClient.open(srv.url)
        reply = await c.request("publish", channel="signals.c", data=1)
        assert (reply["code"], reply["channel"], reply["temporary"]) == (
            "unavailable", "signals.c", True,
        )  # fmt: skip
        clock.advance(30.0)
        await srv.publish("signals.b", {"i": 2})  # b is busy, a idle
        clock.advance(31.0)
        await srv.publish("signals.c", {"i": 1})
        assert (broker.channels, broker.evicted) == (2, 1)
        since = {"epoch": old.epoch, "seq": old.seq}
        ack = await c.request("subscribe", channels=[{"channel": "signals.a", "since": since}])
        assert ack["channels"][0]["recovered"] is False
        await c.close()


BAD_NUMBERS = [math.nan, math.inf, -1, True, "1"]


CONSTRUCTORS: list[tuple[str, Any]] = [
    ("rate", lambda v: Limits(rate=v)),
    ("hello_timeout", lambda v: Limits(hello_timeout=v)),
    ("max_channels", lambda v: Limits(max_channels=v)),
    ("grace", lambda v: SlowClientPolicy(grace=v)),
    ("queue_size", lambda v: SlowClientPolicy(queue_size=v)),
    ("history.max_age", lambda v: HistoryPolicy(max_age=v)),
    ("history.count", lambda v: HistoryPolicy(count=v)),
    ("heartbeat", lambda v: WebSocketServer(heartbeat=v)),
    ("op_timeout", lambda v: WebSocketServer(op_timeout=v)),
    ("port", lambda v: WebSocketServer(port=v)),
    ("channel_idle", lambda v: LocalBroker(channel_idle=v)),
    ("max_channels", lambda v: LocalBroker(max_channels=v)),
    ("leeway", lambda v: TokenAuthenticator(SECRET, leeway=v)),
    ("request_timeout", lambda v: WebSocketClient("ws://x/", request_timeout=v)),
    ("queue_size", lambda v: WebSocketClient("ws://x/", queue_size=v)),
    ("backoff.initial", lambda v: WebSocketClient("ws://x/", backoff=(v, 1.0))),
    ("history", lambda v: RedisBroker("redis://x", history=v)),
    ("op_timeout", lambda v: RedisBroker("redis://x", op_timeout=v)),
]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize(("name", "build"), CONSTRUCTORS, ids=[n for n, _ in CONSTRUCTORS])
def test_ws_constructors_refuse_non_finite_and_wrong_types(name: str, build: Any, bad: Any) -> None:
    """Every ws constructor refuses NaN, inf, negatives, bools and strings with ConfigError."""
    with pytest.raises(ConfigError) as info:
        build(bad)
    assert info.value.field == name


@pytest.mark.redis
async def test_defect12_redis_restored_from_an_older_snapshot_starts_a_new_epoch(
    redis_server: Any, redis_url: str
) -> None:
    """Redis SIGKILLed and restored from an RDB snapshot taken earlier: the next publish
    is in a new epoch, a live client receives it (not dropped as already seen), and a
    client resuming from a position past the snapshot gets recovered=false."""
    import redis.asyncio as aioredis

    srv = await WebSocketServer(broker=RedisBroker(redis_url, op_timeout=1.0)).start()
    admin = aioredis.from_url(redis_url)
    dump = redis_server.workdir / "dump.rdb"
    try:
        live = await RawClient.open(srv.url)
        await live.request("subscribe", channels=[{"channel": "signals.r", "mode": "all"}])
        for i in range(5):
            await srv.publish("signals.r", {"i": i})
        await admin.save()  # the snapshot: seq 5
        for i in range(5, 10):
            await srv.publish("signals.r", {"i": i})
        seen = await live.messages(10)
        assert seen[-1]["seq"] == 10
        await admin.aclose()
        assert redis_server.proc is not None
        redis_server.proc.kill()  # a crash: no shutdown save
        redis_server.proc.wait()
        redis_server.start()  # loads dump.rdb: seq 5 in the same epoch
        deadline = 50
        while True:
            try:
                pos = await srv.publish("signals.r", {"i": 10})
                break
            except Exception:
                deadline -= 1
                assert deadline > 0, "Redis never came back"
                await live.ws.ping()
        assert pos.epoch != seen[-1]["epoch"]
        [after] = await live.messages(1, wait=15)
        assert (after["epoch"], after["data"]) == (pos.epoch, {"i": 10})
        since = {"epoch": seen[-1]["epoch"], "seq": seen[-1]["seq"]}
        other = await RawClient.open(srv.url)
        ack = await other.request("subscribe", channels=[{"channel": "signals.r", "since": since}])
        assert ack["channels"][0]["recovered"] is False
        assert Position(**ack["channels"][0]["position"]) == pos
        await other.close()
        await live.close()
    finally:
        await srv.close()
        dump.unlink(missing_ok=True)
