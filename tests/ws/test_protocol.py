"""Sans-I/O protocol tests: the shared vectors, limits, timers and fuzzed frames (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fokha_integration.clock import ManualClock
from fokha_integration.ws import Limits, Mode, Position, Session, TokenAuthenticator
from fokha_integration.ws._auth import AuthError, Principal, token_channels
from fokha_integration.ws._channels import ChannelStore, snapshot_frame
from fokha_integration.ws._protocol import (
    Close,
    ErrorCode,
    HelloRequest,
    PublishRequest,
    Send,
    SubscribeRequest,
    SubscribeResult,
    TokenBucket,
    UnsubscribeRequest,
    is_reconnect_code,
    validate_channel,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "websocket" / "session.json"
SPEC = json.loads(VECTORS.read_text())
SECRET = "vector-secret-0123456789abcdef0123456789"
NOW = 1_000.0


class VectorDriver:
    """A synchronous reference I/O layer: Session + ChannelStore + TokenAuthenticator."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.clock = ManualClock(wall=1_800_000_000.0)
        self.auth = TokenAuthenticator(SECRET, clock=self.clock)
        self.store = ChannelStore(history=config["history"])
        limits = Limits(
            max_channels=config["max_channels"],
            rate=config["rate"],
            burst=config["burst"],
            max_frame_bytes=config["max_frame_bytes"],
        )
        self.session = Session(
            now=NOW, limits=limits, require_hello=config["auth"],
            allow_publish=config["allow_publish"],
        )  # fmt: skip
        self.principal = Principal("anonymous")
        self.out: list[dict[str, Any]] = []
        self.close: int | None = None

    def publish(self, channel: str, data: Any) -> Position:
        now = self.clock.time()
        return self.store.append(channel, json.dumps(data), now, now).position

    def token(self, name: str) -> str:
        if name == "$valid":
            return self.auth.issue("alice", ttl=60)
        if name == "$restricted":
            return self.auth.issue("bob", ttl=60, channels=["prices.*"])
        if name == "$expired":
            return TokenAuthenticator(SECRET, clock=ManualClock(wall=1_700_000_000.0)).issue(
                "alice", ttl=60
            )
        if name == "$forged":
            # A valid token's signature on a payload naming someone else.
            good = self.auth.issue("alice", ttl=60)
            other = TokenAuthenticator("x" * 32, clock=self.clock).issue("mallory", ttl=60)
            return other.rsplit(".", 1)[0] + "." + good.rsplit(".", 1)[1]
        raise AssertionError(name)

    def apply(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self.out.append(json.loads(action.text))
            elif isinstance(action, Close):
                self.close = action.code
            elif isinstance(action, HelloRequest):
                try:
                    self.principal = self.auth.verify(action.token)
                except AuthError as exc:
                    self.apply(self.session.hello_refused(action.id, exc.error_code, exc.detail))
                else:
                    self.apply(
                        self.session.hello_accepted(
                            action.id,
                            session_id="s1",
                            heartbeat=15.0,
                            server="t",
                            user=self.principal.subject,
                        )
                    )
            elif isinstance(action, SubscribeRequest):
                denied = [
                    c.channel
                    for c in action.channels
                    if not token_channels(self.principal, c.channel, "subscribe")
                ]
                if denied:
                    self.apply(
                        self.session.refused(
                            action.id, ErrorCode.FORBIDDEN, "no", channel=denied[0]
                        )
                    )
                    continue
                recs = [self.store.recover(c.channel, c.since) for c in action.channels]
                results = [
                    SubscribeResult(
                        c.channel,
                        c.mode or (Mode.LATEST if c.channel.startswith("prices.") else Mode.ALL),
                        r.position,
                        r.recovered,
                    )
                    for c, r in zip(action.channels, recs, strict=True)
                ]
                self.apply(self.session.subscribed(action.id, results))
                for r in recs:
                    for m in r.messages:
                        frame = m.frame if r.recovered else snapshot_frame(m, 0.0, r.recovered)
                        self.out.append(json.loads(frame))
            elif isinstance(action, UnsubscribeRequest):
                pass
            elif isinstance(action, PublishRequest):
                pos = self.publish(action.channel, action.data)
                self.apply(self.session.published(action.id, action.channel, pos))


def _resolve(value: Any, driver: VectorDriver) -> Any:
    if isinstance(value, str) and value.startswith("$epoch:"):
        log = driver.store.log(value.split(":", 1)[1])
        assert log is not None
        return log.epoch
    if isinstance(value, str) and value.startswith("$"):
        return driver.token(value)
    if isinstance(value, dict):
        return {k: _resolve(v, driver) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, driver) for v in value]
    return value


def _matches(expected: Any, actual: Any) -> bool:
    if expected == "*":
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual and type(expected) is type(actual))


@pytest.mark.parametrize("case", SPEC["cases"], ids=[c["name"] for c in SPEC["cases"]])
def test_vector(case: dict[str, Any]) -> None:
    """The sans-I/O session answers each vector's frames with the expected replies."""
    driver = VectorDriver({**SPEC["config"], **case.get("config", {})})
    for channel, data in case.get("setup", {}).get("publish", []):
        driver.publish(channel, data)
    for step in case["steps"]:
        driver.out.clear()
        if "send" in step:
            text = json.dumps(_resolve(step["send"], driver))
            driver.apply(driver.session.receive_text(text, NOW))
        elif "send_text" in step:
            driver.apply(driver.session.receive_text(step["send_text"], NOW))
        else:
            driver.apply(driver.session.receive_bytes(bytes.fromhex(step["send_binary"]), NOW))
        expected = _resolve(step["expect"], driver)
        assert _matches(expected, driver.out), (expected, driver.out)
        assert driver.close == step.get("close"), (driver.close, step)


def test_vectors_cover_every_command_and_frame() -> None:
    """The vectors exercise every op, every server frame type and every kind on subscribe."""
    ops = {s["send"]["op"] for c in SPEC["cases"] for s in c["steps"] if "send" in s}
    types = {f["type"] for c in SPEC["cases"] for s in c["steps"] for f in s["expect"]}
    assert {"hello", "subscribe", "unsubscribe", "ping", "publish"} <= ops
    assert {"welcome", "ack", "error", "pong", "message"} <= types


def test_oversized_vector_is_really_oversized() -> None:
    """The frame-too-large vector is bigger than the vector limit."""
    case = next(c for c in SPEC["cases"] if "max_frame_bytes" in c["name"])
    assert len(case["steps"][0]["send_text"]) > SPEC["config"]["max_frame_bytes"]


def test_hello_timeout_closes_with_4003() -> None:
    """Without a hello by the deadline, poll() closes with 4003; not before."""
    s = Session(now=0.0, limits=Limits(hello_timeout=5.0))
    assert s.poll(4.9) == []
    assert s.hello_deadline() == 5.0
    assert s.poll(5.0) == [Close(4003, "hello_timeout")]
    assert s.receive_text('{"op":"ping"}', 6.0) == []


def test_no_hello_needed_without_auth() -> None:
    """With require_hello=False, subscribe works at once and no deadline applies."""
    s = Session(now=0.0, require_hello=False)
    assert s.hello_deadline() is None
    actions = s.receive_text('{"op":"subscribe","id":1,"channels":["a.b"]}', 100.0)
    assert isinstance(actions[0], SubscribeRequest)


def test_heartbeat_and_drain_frames() -> None:
    """Heartbeat carries each channel's position; drain carries retry_after."""
    s = Session(now=0.0)
    hb = json.loads(s.heartbeat(12.5, {"a.b": Position("e", 4), "c.d": None}).text)
    assert hb == {"type": "heartbeat", "time": 12.5,
                  "channels": {"a.b": {"epoch": "e", "seq": 4}}}  # fmt: skip
    assert json.loads(s.drain(2.0).text) == {"type": "drain", "retry_after": 2.0,
                                             "reason": "shutdown"}  # fmt: skip


def test_token_bucket_refills_with_the_clock() -> None:
    """An empty bucket refuses; after 1/rate seconds one more token is there."""
    b = TokenBucket(rate=10.0, burst=2, now=0.0)
    assert b.take(0.0)
    assert b.take(0.0)
    assert not b.take(0.0)
    assert b.retry_after() == pytest.approx(0.2)
    assert b.take(0.25)


def test_close_code_classes() -> None:
    """4000-4499 reconnect, 4500-4999 do not; standard codes as documented."""
    assert all(is_reconnect_code(c) for c in (None, 1000, 1001, 1006, 1011, 4000, 4001, 4499))
    assert not any(is_reconnect_code(c) for c in (1002, 1008, 1009, 4500, 4501, 4999))


def test_expired_token_closes_4501_and_others_4500() -> None:
    """hello_refused maps auth_expired to 4501 and the other auth errors to 4500."""
    for code, close in ((ErrorCode.AUTH_EXPIRED, 4501), (ErrorCode.AUTH_INVALID, 4500)):
        s = Session(now=0.0)
        s.receive_text('{"op":"hello","id":1,"token":"x"}', 0.0)
        reason = "token_expired" if close == 4501 else "auth_failed"
        assert s.hello_refused(1, code, "no")[-1] == Close(close, reason)


@given(st.text(max_size=140))
def test_channel_validation_is_total(name: str) -> None:
    """validate_channel never raises and accepts only the documented alphabet."""
    why = validate_channel(name)
    if why is None:
        assert 1 <= len(name) <= 128
        assert all(seg for seg in name.split("."))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_frames = st.one_of(
    st.text(max_size=300),
    _json.map(json.dumps),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["hello", "subscribe", "unsubscribe", "ping", "publish", "x"])},
        optional={"id": _json, "channels": _json, "token": _json, "data": _json, "since": _json},
    ).map(json.dumps),
)


@settings(max_examples=300)
@given(st.lists(_frames, max_size=8), st.booleans())
def test_session_never_raises_on_any_input(frames: list[str], auth: bool) -> None:
    """Arbitrary text frames only ever yield actions (error replies, requests, a close)."""
    s = Session(now=0.0, require_hello=auth, allow_publish=True)
    for text in frames:
        for action in s.receive_text(text, 0.0):
            assert isinstance(
                action,
                Send
                | Close
                | HelloRequest
                | SubscribeRequest
                | UnsubscribeRequest
                | PublishRequest,
            )
            if isinstance(action, Send):
                frame = json.loads(action.text)
                assert frame["type"] in ("error", "pong", "ack")


FRAMES = json.loads((VECTORS.parent / "server_frames.json").read_text())


def _build_frame(build: dict[str, Any]) -> dict[str, Any]:
    from fokha_integration.ws._channels import conflated_frame, gap_frame, make_message

    update = FRAMES["cases"][0]["build"]
    msg = make_message(
        update["channel"], update["epoch"], update["seq"], update["ts"],
        json.dumps(update["data"], separators=(",", ":")), update["sent"],
    )  # fmt: skip
    fn = build["fn"]
    session = Session(now=0.0)
    if fn == "update":
        raw: bytes | str = msg.frame
    elif fn == "snapshot":
        raw = snapshot_frame(msg, build["sent"], build["recovered"])
    elif fn == "conflated":
        raw = conflated_frame(msg, build["from"], build["sent"])
    elif fn == "gap":
        raw = gap_frame(
            build["channel"], build["epoch"], build["from"], build["seq"], build["sent"]
        )
    elif fn == "heartbeat":
        positions = {
            ch: None if p is None else Position(p["epoch"], p["seq"])
            for ch, p in build["channels"].items()
        }
        raw = session.heartbeat(build["time"], positions).text
    else:
        raw = session.drain(build["retry_after"], build["reason"]).text
    frame = json.loads(raw)
    assert isinstance(frame, dict)
    return frame


@pytest.mark.parametrize("case", FRAMES["cases"], ids=[c["name"] for c in FRAMES["cases"]])
def test_server_frame_vectors(case: dict[str, Any]) -> None:
    """Server-initiated frames (message kinds, heartbeat, drain) match the vectors exactly."""
    assert _build_frame(case["build"]) == case["frame"]
