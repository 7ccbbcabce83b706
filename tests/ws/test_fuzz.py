"""Fuzzing a real server: hypothesis-made frames get error replies or the right close code,
while another client keeps receiving a live feed without a hole."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fokha_integration.ws import Limits, TokenAuthenticator, WebSocketServer
from tests.support import timeout
from tests.ws.support import SECRET, RawClient

ALLOWED_TYPES = {"error", "pong", "ack", "welcome", "message"}
ALLOWED_CLOSE = {1009, 4002, 4003, 4500, 4501, 4502, 4503}


class Harness:
    """A server on its own event loop thread, a publisher and a watcher client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.auth = TokenAuthenticator(SECRET)
        self.seqs: list[int] = []
        self.url = ""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(timeout(10))

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        limits = Limits(max_frame_bytes=4096, rate=500, burst=40, max_channels=5)
        async with WebSocketServer(authenticator=self.auth, limits=limits, heartbeat=60) as srv:
            self.url = srv.url
            watcher = await RawClient.open(srv.url)
            await watcher.hello(self.auth.issue("watcher", ttl=600))
            await watcher.request("subscribe", channels=["signals.feed"])

            async def publish() -> None:
                i = 0
                while True:
                    i += 1
                    await srv.publish("signals.feed", {"i": i})
                    await asyncio.sleep(0.005)  # a steady feed, ~200/s

            async def watch() -> None:
                async for raw in watcher.ws:
                    frame = json.loads(raw)
                    if frame["type"] == "message":
                        self.seqs.append(frame["seq"])

            tasks = [asyncio.create_task(publish()), asyncio.create_task(watch())]
            self.ready.set()
            await self.stop.wait()
            for t in tasks:
                t.cancel()
            await watcher.close()

    def close(self) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout(10))


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
_ops = st.sampled_from(["hello", "subscribe", "unsubscribe", "ping", "publish", "nope", ""])
_command = st.fixed_dictionaries(
    {"op": _ops | _json},
    optional={
        "id": st.integers() | st.text(max_size=80) | _json,
        "channels": st.lists(st.text(max_size=20) | _json, max_size=8) | _json,
        "token": st.text(max_size=50) | _json,
        "protocol": st.integers(0, 3) | _json,
        "channel": st.text(max_size=20),
        "data": _json,
    },
)
_frame = st.one_of(
    _command.map(lambda d: ("text", json.dumps(d))),
    _json.map(lambda d: ("text", json.dumps(d))),
    st.text(max_size=200).map(lambda t: ("text", t)),
    st.binary(max_size=200).map(lambda b: ("binary", b)),
    st.integers(5000, 20000).map(lambda n: ("text", '{"op":"ping","x":"' + "a" * n + '"}')),
    st.integers(50, 120).map(lambda n: ("flood", n)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(_frame, min_size=1, max_size=6), say_hello=st.booleans())
def test_fuzzed_frames_get_errors_or_documented_closes(
    harness: Harness, frames: list[tuple[str, Any]], say_hello: bool
) -> None:
    """Every reply is a protocol frame; a close uses a documented code; the server lives on."""
    code = _exercise(harness, frames, say_hello)
    assert code is None or code in ALLOWED_CLOSE, code


def _exercise(harness: Harness, frames: list[tuple[str, Any]], say_hello: bool) -> int | None:
    """Send the frames and check the replies: each inbound frame gets exactly one reply
    (besides channel messages) until the server closes.

    Returns the close code when the server closed (``None`` when it answered them all).
    """
    with connect(harness.url, open_timeout=timeout(5), close_timeout=2) as ws:
        sent = 0
        try:
            if say_hello:
                token = harness.auth.issue("f", ttl=60)
                ws.send(json.dumps({"op": "hello", "id": 0, "token": token}))
                sent += 1
            for kind, payload in frames:
                if kind == "flood":
                    for _ in range(payload):
                        ws.send('{"op":"ping"}')
                    sent += payload
                else:
                    ws.send(payload)
                    sent += 1
            replies = 0
            while replies < sent:
                frame = json.loads(ws.recv(timeout(10)))
                assert frame["type"] in ALLOWED_TYPES, frame
                if frame["type"] == "message":
                    continue
                replies += 1
                if frame["type"] == "error":
                    assert isinstance(frame["code"], str)
                    assert isinstance(frame["temporary"], bool)
            return None
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                raise AssertionError("server dropped without a close frame") from exc
            return exc.rcvd.code


def test_watcher_received_a_gapless_feed_throughout(harness: Harness) -> None:
    """The other client's feed has no hole after the fuzzing (runs after the fuzz test)."""
    seqs = list(harness.seqs)
    assert len(seqs) > 10
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
