"""FileBridge on real files in tmp_path: requests, dedup, crash windows, bad input, order."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.bridge import (
    FileBridge,
    Message,
    PollConfig,
    Reply,
    ReplyStatus,
    SyncFileBridge,
    encode_frame,
)
from fokha_integration.bridge.emulator import EAEmulator
from fokha_integration.clock import ManualClock
from fokha_integration.errors import ConfigError, OperationTimeoutError
from fokha_integration.models import canonical_json
from tests.bridge.helpers import files, wait_until
from tests.support import timeout

FAST = PollConfig(busy=0.001, idle=0.01, busy_window=0.2)


def request_frame(msg_id: str, seq: int, *, sender: str = "py", kind: str = "order") -> bytes:
    payload = {"type": "request", "kind": kind, "sender": sender, "sent_at": 1.0, "body": {}}
    return encode_frame(msg_id, seq, canonical_json(payload).encode())


def name_of(msg_id: str, seq: int, sender: str = "py") -> str:
    return f"{seq:020d}-{sender}-{msg_id}.fkb"


class Counter:
    """An EA-side handler that counts calls and executes every request."""

    def __init__(self) -> None:
        self.calls: list[Message] = []

    async def __call__(self, message: Message) -> Reply | None:
        self.calls.append(message)
        if message.is_request:
            return Reply(ReplyStatus.EXECUTED, {"ticket": len(self.calls)})
        return None


def ea_bridge(root: Path, handler: Any, **kw: Any) -> FileBridge:
    kw.setdefault("poll", FAST)
    kw.setdefault("heartbeat_interval", None)
    return FileBridge(root, local="ea", peer="py", handler=handler, **kw)


async def test_request_gets_the_emulators_reply(tmp_path: Path) -> None:
    """A request reaches the EA side and its executed reply (ticket, retcode) comes back."""
    async with EAEmulator(tmp_path, poll=FAST) as ea, FileBridge(tmp_path, poll=FAST) as py:
        reply = await py.request("order", {"symbol": "EURUSD", "direction": "BUY", "volume": 1})
        assert reply.status is ReplyStatus.EXECUTED
        assert reply.ticket == 1001
        assert reply.retcode == 10009
        rejected = await py.request("order", {"symbol": "EURUSD", "volume": 99})
        assert rejected.status is ReplyStatus.REJECTED
        assert ea.executed == 1
        positions = py.read_snapshot("positions")
        assert positions is not None
        assert positions.body["positions"][0]["ticket"] == 1001
    for d in ("py2ea", "ea2py"):
        for sub in ("tmp", "new", "cur", "bad"):
            assert files(tmp_path / d / sub) == []


async def test_resend_keeps_the_id_and_the_effect_happens_once(tmp_path: Path) -> None:
    """Resends of an unanswered request carry the same id; the EA executes it once."""
    handler = Counter()
    async with FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py:
        task = asyncio.create_task(
            py.request("order", {"v": 1}, id="order-1", resend_after=0.02, timeout=10)
        )
        await wait_until(lambda: len(files(tmp_path / "py2ea" / "new")) >= 3)
        async with ea_bridge(tmp_path, handler) as ea:
            reply = await asyncio.wait_for(task, 10)
            await wait_until(lambda: files(tmp_path / "py2ea" / "new") == [])
            await wait_until(lambda: files(tmp_path / "ea2py" / "new") == [])
        assert reply.status is ReplyStatus.EXECUTED
        assert [m.id for m in handler.calls] == ["order-1"]
        assert ea.stats().duplicates >= 2
        assert py.stats().resent >= 2


async def test_crash_between_handled_and_acknowledged_is_harmless(tmp_path: Path) -> None:
    """A request handled and journalled but not acknowledged is not handled again on restart;
    its stored reply is sent again with the same reply id."""
    first = Counter()
    async with FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py:
        async with ea_bridge(tmp_path, first, keep_done=True):
            reply = await py.request("order", {}, id="o-1", timeout=10)
        done = files(tmp_path / "py2ea" / "done")
        assert len(done) == 1
        # The crashed process had claimed the file but not deleted it: put it back in cur/.
        shutil.copy(tmp_path / "py2ea" / "done" / done[0], tmp_path / "py2ea" / "cur" / done[0])
        again = await_again = Counter()
        async with ea_bridge(tmp_path, again) as ea2:
            await wait_until(lambda: files(tmp_path / "py2ea" / "cur") == [])
            await wait_until(lambda: ea2.stats().replies_sent == 1)
        assert await_again.calls == []
        assert ea2.stats().duplicates == 1
        # The re-sent reply has the original reply id: the requester drops it as a duplicate.
        await wait_until(lambda: py.stats().duplicates == 1)
    assert reply.id
    assert first.calls[0].id == "o-1"


async def test_in_doubt_message_is_redelivered_with_the_flag(tmp_path: Path) -> None:
    """A message begun but not done (crash mid-handler) is handed again with redelivered=True."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "ea.journal").write_text(f"B {time.time():.3f} doubt-1\n")
    cur = tmp_path / "py2ea" / "cur"
    cur.mkdir(parents=True)
    (cur / name_of("doubt-1", 5)).write_bytes(request_frame("doubt-1", 5))
    handler = Counter()
    async with ea_bridge(tmp_path, handler) as ea:
        await wait_until(lambda: len(handler.calls) == 1)
        await wait_until(lambda: files(cur) == [])
    assert handler.calls[0].redelivered is True
    assert ea.stats().redelivered == 1
    assert len(files(tmp_path / "ea2py" / "new")) == 1


async def test_interrupted_non_atomic_claim_is_reconciled(tmp_path: Path) -> None:
    """A partial copy in cur/ whose original is still in new/ is dropped; the message runs once."""
    new = tmp_path / "py2ea" / "new"
    cur = tmp_path / "py2ea" / "cur"
    new.mkdir(parents=True)
    cur.mkdir(parents=True)
    frame = request_frame("c-1", 9)
    (new / name_of("c-1", 9)).write_bytes(frame)
    (cur / name_of("c-1", 9)).write_bytes(frame[:30])
    handler = Counter()
    async with ea_bridge(tmp_path, handler):
        await wait_until(lambda: len(handler.calls) == 1 and files(cur) == [] and files(new) == [])
    assert files(tmp_path / "py2ea" / "bad") == []
    assert [m.id for m in handler.calls] == ["c-1"]


async def test_tmp_leftovers_are_published_or_deleted(tmp_path: Path) -> None:
    """At start-up a writer publishes its complete tmp/ frames and deletes its partial ones."""
    tmp = tmp_path / "py2ea" / "tmp"
    tmp.mkdir(parents=True)
    complete = name_of("t-1", 10)
    partial = name_of("t-2", 11)
    foreign = name_of("t-3", 12, sender="other")
    (tmp / complete).write_bytes(request_frame("t-1", 10))
    (tmp / partial).write_bytes(request_frame("t-2", 11)[:40])
    (tmp / foreign).write_bytes(b"")
    async with FileBridge(tmp_path, receive=False, heartbeat_interval=None) as py:
        assert py.stats().recovered_tmp == 1
        assert files(tmp_path / "py2ea" / "new") == [complete]
        assert files(tmp) == [foreign]
        msg_id = await py.send("note", {})
    newest = files(tmp_path / "py2ea" / "new")[-1]
    assert newest.endswith(f"-{msg_id}.fkb")
    assert int(newest[:20]) > 10


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"this is not a frame at all\n", "bad_magic"),
        (b"FOKHA 2 x 1 2 00000000\n{}\nEND\n", "unsupported_version"),
        (encode_frame("big", 1, b'{"x":"' + b"a" * 5000 + b'"}'), "too_large"),
        (encode_frame("u8", 1, b'{"x":"\xc3\x28"}'), "bad_utf8"),
        (encode_frame("js", 1, b'{"x":}'), "bad_json"),
        (encode_frame("ms", 1, b'{"type":"nonsense"}'), "bad_message"),
    ],
    ids=["garbage", "other_version", "oversized", "non_utf8", "bad_json", "bad_message"],
)
async def test_bad_input_goes_to_bad_with_a_reason_and_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, code: str
) -> None:
    """Bad files end in bad/ with a reason file and one log line; the reader keeps going."""
    new = tmp_path / "py2ea" / "new"
    new.mkdir(parents=True)
    seq = int(content.split(b" ")[3]) if content.startswith(b"FOKHA 1") else 1
    frame_id = content.split(b" ")[2].decode() if content.startswith(b"FOKHA") else "junk"
    bad_name = name_of(frame_id, seq)
    (new / bad_name).write_bytes(content)
    (new / name_of("good-1", 99)).write_bytes(request_frame("good-1", 99))
    handler = Counter()
    caplog.set_level(logging.WARNING, logger="fokha_integration.bridge")
    async with ea_bridge(tmp_path, handler, grace=0.05, max_frame_bytes=4096) as ea:
        await wait_until(lambda: len(files(tmp_path / "py2ea" / "bad")) == 2)
        await wait_until(lambda: len(handler.calls) == 1)
    assert [m.id for m in handler.calls] == ["good-1"]
    reason = json.loads((tmp_path / "py2ea" / "bad" / f"{bad_name}.reason.json").read_text())
    assert reason["code"] == code
    assert ea.stats().bad == 1
    lines = [r.getMessage() for r in caplog.records if bad_name in r.getMessage()]
    assert len(lines) == 1
    assert code in lines[0]


async def test_a_frame_still_being_written_is_not_moved_to_bad_before_grace(
    tmp_path: Path,
) -> None:
    """An incomplete frame that keeps growing is waited for, then handled once complete."""
    new = tmp_path / "py2ea" / "new"
    new.mkdir(parents=True)
    frame = request_frame("slow-1", 3)
    path = new / name_of("slow-1", 3)
    path.write_bytes(frame[:25])
    handler = Counter()
    async with ea_bridge(tmp_path, handler, grace=30.0) as ea:
        await wait_until(lambda: ea.stats().incomplete == 1)
        path.write_bytes(frame)
        await wait_until(lambda: len(handler.calls) == 1)
    assert files(tmp_path / "py2ea" / "bad") == []


async def test_name_checks(tmp_path: Path) -> None:
    """Names that only match the 8.3 mask are skipped; a header/name mismatch goes to bad/."""
    new = tmp_path / "py2ea" / "new"
    new.mkdir(parents=True)
    (new / (name_of("skip-1", 1) + "ak")).write_bytes(request_frame("skip-1", 1))
    (new / name_of("other-id", 2)).write_bytes(request_frame("mismatch", 2))
    handler = Counter()
    async with ea_bridge(tmp_path, handler, grace=0.0):
        await wait_until(lambda: len(files(tmp_path / "py2ea" / "bad")) == 2)
    assert handler.calls == []
    reason = json.loads(
        (tmp_path / "py2ea" / "bad" / f"{name_of('other-id', 2)}.reason.json").read_text()
    )
    assert reason["code"] == "name_mismatch"
    assert files(new) == [name_of("skip-1", 1) + "ak"]


async def test_two_writers_keep_their_order_and_lose_nothing(tmp_path: Path) -> None:
    """Two senders writing into one folder: each sender's messages arrive in its order."""
    seen: dict[str, list[int]] = {"w1": [], "w2": []}

    async def handler(message: Message) -> None:
        seen[message.sender].append(message.body["n"])

    n = 300
    async with ea_bridge(tmp_path, handler):
        async with (
            FileBridge(tmp_path, sender="w1", receive=False, heartbeat_interval=None) as w1,
            FileBridge(tmp_path, sender="w2", receive=False, heartbeat_interval=None) as w2,
        ):

            async def pump(bridge: FileBridge) -> None:
                for i in range(n):
                    await bridge.send("tick", {"n": i})
                    if i % 7 == 0:
                        await asyncio.sleep(0)

            await asyncio.gather(pump(w1), pump(w2))
        await wait_until(lambda: len(seen["w1"]) == n and len(seen["w2"]) == n, 20)
    assert seen["w1"] == list(range(n))
    assert seen["w2"] == list(range(n))


async def test_snapshots_are_read_newest_first_skipping_a_partial_one(tmp_path: Path) -> None:
    """A newest snapshot still being copied in is skipped in favour of the previous one."""
    async with (
        ea_bridge(tmp_path, Counter()) as ea,
        FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py,
    ):
        assert py.read_snapshot("account") is None
        await ea.write_snapshot("account", {"balance": 1})
        await ea.write_snapshot("account", {"balance": 2})
        await ea.write_snapshot("account", {"balance": 3})
        snap_dir = tmp_path / "ea2py" / "snap"
        assert len([n for n in files(snap_dir) if n.startswith("account.")]) == 2
        snap = py.read_snapshot("account")
        assert snap is not None
        assert snap.body == {"balance": 3}
        newest = max(n for n in files(snap_dir) if n.startswith("account."))
        partial = snap_dir / f"account.{int(newest.split('.')[1]) + 1:020d}.fkb"
        partial.write_bytes((snap_dir / newest).read_bytes()[:50])
        snap = py.read_snapshot("account")
        assert snap is not None
        assert snap.body == {"balance": 3}


async def test_heartbeat_peer_alive_and_restart_detection(tmp_path: Path) -> None:
    """peer_alive follows the peer's heartbeat age, and a new instance counts as a restart."""
    clock = ManualClock(wall=time.time())
    async with FileBridge(tmp_path, poll=FAST, heartbeat_interval=None, clock=clock) as py:
        assert py.peer_alive(5) is False
        async with ea_bridge(tmp_path, Counter(), heartbeat_interval=1.0) as ea:
            assert py.peer_alive(5) is True
            assert py.peer_instance == ea.instance
            clock.advance(10)
            assert py.peer_alive(5) is False
        async with ea_bridge(tmp_path, Counter(), heartbeat_interval=1.0):
            clock.advance(-0.0)
            assert py.peer_alive(60) is True
            assert py.stats().peer_restarts == 1


async def test_messages_iterator_and_reply(tmp_path: Path) -> None:
    """Without a handler, messages() yields requests and reply() answers them."""
    async with (
        FileBridge(tmp_path, local="ea", peer="py", poll=FAST, heartbeat_interval=None) as ea,
        FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py,
    ):

        async def serve() -> None:
            async for message in ea.messages():
                if message.kind == "stop":
                    break
                ea.reply(message, "executed", echo=message.body["x"])

        server = asyncio.create_task(serve())
        replies = [await py.request("echo", {"x": i}, timeout=10) for i in range(3)]
        await py.send("stop", {})
        await asyncio.wait_for(server, 10)
    assert [r.details["echo"] for r in replies] == [0, 1, 2]


async def test_handler_error_answers_failed(tmp_path: Path) -> None:
    """A handler that raises on a request produces a 'failed' reply with the error."""

    async def broken(message: Message) -> Reply | None:
        raise RuntimeError("boom")

    async with (
        ea_bridge(tmp_path, broken),
        FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py,
    ):
        reply = await py.request("order", {}, timeout=10)
    assert reply.status is ReplyStatus.FAILED
    assert "boom" in reply.message


async def test_request_times_out_without_a_peer(tmp_path: Path) -> None:
    """With nobody answering, request() raises OperationTimeoutError after its timeout."""
    async with FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py:
        with pytest.raises(OperationTimeoutError):
            await py.request("order", {}, timeout=0.1, resend_after=0.03)
        assert py.stats().resent >= 1


def test_configuration_is_validated(tmp_path: Path) -> None:
    """Bad settings are refused with ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        FileBridge(tmp_path, encoding="utf-16")
    assert info.value.field == "encoding"
    with pytest.raises(ConfigError):
        FileBridge(tmp_path, durability="always")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        FileBridge(tmp_path, sender="bad-name")
    with pytest.raises(ConfigError):
        PollConfig(busy=0.1, idle=0.01)


@pytest.mark.parametrize("durability", ["none", "flush", "fsync"])
async def test_every_durability_delivers(tmp_path: Path, durability: str) -> None:
    """Messages flow with each durability setting."""
    async with (
        EAEmulator(tmp_path, poll=FAST, durability=durability) as _,
        FileBridge(
            tmp_path,
            poll=FAST,
            durability=durability,  # type: ignore[arg-type]
        ) as py,
    ):
        reply = await py.request("ping", {}, timeout=10)
    assert reply.message == "pong"


async def test_sync_wrapper_round_trip(tmp_path: Path) -> None:
    """SyncFileBridge sends, requests and receives from a blocking thread."""
    async with EAEmulator(tmp_path, poll=FAST):

        def script() -> tuple[str, str]:
            with SyncFileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as bridge:
                reply = bridge.request("ping", {}, timeout=10)
                alive = bridge.peer_alive(30)
                assert alive
                return reply.status.value, reply.message

        assert await asyncio.to_thread(script) == ("executed", "pong")


async def test_sync_wrapper_receives(tmp_path: Path) -> None:
    """SyncFileBridge.get returns incoming messages and reply() answers requests."""
    async with FileBridge(tmp_path, local="ea", peer="py", poll=FAST) as ea:

        def script() -> str:
            with SyncFileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as bridge:
                message = bridge.get(timeout=10)
                assert message.kind == "note"
                request = bridge.get(timeout=10)
                bridge.reply(request, "executed", ok=True)
                return str(message.body["text"])

        worker = asyncio.create_task(asyncio.to_thread(script))
        await ea.send("note", {"text": "hello"})
        reply = await ea.request("ask", {}, timeout=10)
        assert reply.details == {"ok": True}
        assert await worker == "hello"


async def test_request_only_bridge_leaves_other_messages_waiting(tmp_path: Path) -> None:
    """Without a handler or iterator, messages wait in new/ and do not block replies."""
    async with (
        ea_bridge(tmp_path, Counter()) as ea,
        FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py,
    ):
        await ea.send("event", {"n": 1})
        await ea.send("event", {"n": 2})
        first = await py.request("order", {}, timeout=10)
        second = await py.request("order", {}, timeout=10)
        assert first.status is ReplyStatus.EXECUTED
        assert second.status is ReplyStatus.EXECUTED
        assert len(files(tmp_path / "ea2py" / "new")) == 2

        seen: list[int] = []

        async def consume() -> None:
            async for message in py.messages():
                seen.append(message.body["n"])
                if len(seen) == 2:
                    break

        await asyncio.wait_for(consume(), 10)
    assert seen == [1, 2]


async def test_watch_wakes_the_reader_before_its_idle_poll(tmp_path: Path) -> None:
    """With watch=True a new file is handled although the reader's poll interval is an hour:
    only the watcher can have woken it."""
    pytest.importorskip("watchfiles", reason="the [watch] extra is not installed")
    handler = Counter()
    never = PollConfig(busy=3600.0, idle=3600.0, busy_window=0.0)
    async with (
        ea_bridge(tmp_path, handler, poll=never, watch=True) as ea,
        FileBridge(tmp_path, receive=False, heartbeat_interval=None) as py,
    ):
        await wait_until(lambda: ea._reader.parked)  # the reader is parked for an hour
        deadline = time.monotonic() + timeout(10)
        while not handler.calls:
            assert time.monotonic() < deadline, "not woken by the watcher"
            await py.send("note", {})
            await asyncio.sleep(0.05)  # pacing the sends while the watcher starts
    assert handler.calls


async def test_interim_accepted_reply_does_not_end_a_final_wait(tmp_path: Path) -> None:
    """With final=True an 'accepted' reply is consumed and the request waits for 'executed'."""
    async with (
        FileBridge(tmp_path, local="ea", peer="py", poll=FAST, heartbeat_interval=None) as ea,
        FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py,
    ):
        task = asyncio.create_task(py.request("order", {}, id="acc-1", timeout=10))
        async for message in ea.messages():
            # Answer by hand: first an interim reply, then the final one.
            for status, rid in (("accepted", "acc-r1"), ("executed", "acc-r2")):
                payload = {
                    "type": "reply",
                    "kind": "order",
                    "sender": "ea",
                    "sent_at": 1.0,
                    "body": {},
                    "in_reply_to": message.id,
                    "status": status,
                    "details": {},
                }
                await ea._writer.send_reply(rid, canonical_json(payload))
            ea.reply(message, "executed")
            break
        reply = await asyncio.wait_for(task, 10)
    assert reply.status is ReplyStatus.EXECUTED
    assert reply.id == "acc-r2"


async def test_sync_wrapper_loses_nothing_it_did_not_finish(tmp_path: Path) -> None:
    """One-way messages not yet moved past with get() are delivered again after a restart."""
    async with FileBridge(tmp_path, local="ea", peer="py", poll=FAST) as ea:
        for n in range(5):
            await ea.send("note", {"n": n})

        def first_run() -> int:
            with SyncFileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as bridge:
                return int(bridge.get(timeout=10).body["n"])  # closes while working on it

        def second_run() -> list[int]:
            with SyncFileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as bridge:
                return [int(bridge.get(timeout=10).body["n"]) for _ in range(5)]

        assert await asyncio.to_thread(first_run) == 0
        assert await asyncio.to_thread(second_run) == [0, 1, 2, 3, 4]
