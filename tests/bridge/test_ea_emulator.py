"""The Python bridge against the independent EA emulator, tick by tick in one process."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from fokha_integration.bridge import FileBridge, PollConfig, ReplyStatus
from tests.bridge.ea_emulator import EA, make_frame
from tests.bridge.helpers import files, wait_until

FAST = PollConfig(busy=0.001, idle=0.01)


async def test_emulator_answers_and_skips_short_name_matches(tmp_path: Path) -> None:
    """The emulator executes a request from FileBridge once, ignores an 8.3-mask decoy,
    sends garbage to bad/ with a reason, and its copy-based moves leave nothing behind."""
    ea = EA(tmp_path, move="copy", grace=0.0, tick=0.016)
    ea.start()
    decoy = tmp_path / "py2ea" / "new" / "00000000000000000001-py-decoy.fkbak"
    decoy.write_bytes(b"matches *.fkb only by its short name")
    junk = tmp_path / "py2ea" / "new" / "00000000000000000002-py-junk.fkb"
    junk.write_bytes(b"not a frame")
    async with FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py:
        task = asyncio.create_task(py.request("order", {"v": 1}, id="emu-1", timeout=10))
        await wait_until(lambda: len(files(tmp_path / "py2ea" / "new")) == 3)
        ea.on_timer()  # first look: junk is "not ready yet"
        ea.on_timer()  # unchanged past the (zero) grace: to bad/
        reply = await asyncio.wait_for(task, 10)

        async def timer() -> None:
            while True:
                ea.on_timer()
                await asyncio.sleep(ea.tick)  # the EA's timer period

        ticking = asyncio.create_task(timer())
        again = await py.request("order", {"v": 1}, id="emu-1", timeout=10, resend_after=None)
        ticking.cancel()
        assert again.status is ReplyStatus.EXECUTED
    assert reply.status is ReplyStatus.EXECUTED
    assert reply.ticket == again.ticket == 100000
    assert (tmp_path / "effects.log").read_text() == "emu-1 100000\n"
    assert files(tmp_path / "py2ea" / "new") == [decoy.name]
    reason = json.loads((tmp_path / "py2ea" / "bad" / f"{junk.name}.reason.json").read_text())
    assert reason["code"] == "bad_magic"
    for sub in ("tmp", "cur"):
        assert files(tmp_path / "py2ea" / sub) == []
        assert files(tmp_path / "ea2py" / sub) == []


def _request_file(
    root: Path, ident: str, seq: int, kind: str = "order", type_: str = "request"
) -> str:
    """Write a request from "py" straight into py2ea/new (as FileBridge would), return its name."""
    text = json.dumps(
        {"body": {"v": 1}, "kind": kind, "sender": "py", "sent_at": 1.0, "type": type_},
        separators=(",", ":"),
    )
    name = f"{seq:020d}-py-{ident}.fkb"
    (root / "py2ea" / "new" / name).write_bytes(make_frame(ident, seq, text))
    return name


def _journal(root: Path) -> list[str]:
    return (root / "state" / "ea.journal").read_text().splitlines()


def test_in_doubt_cur_waits_for_the_trade_server(tmp_path: Path) -> None:
    """An id begun before a crash stays in cur/ until the trade server is ready, then runs
    once as a redelivery (a second order after a restart is what the wait prevents)."""
    first = EA(tmp_path, move="rename", grace=5.0, tick=0.016)
    first.start()
    name = _request_file(tmp_path, "doubt-1", 7)
    os.replace(tmp_path / "py2ea" / "new" / name, tmp_path / "py2ea" / "cur" / name)
    (tmp_path / "state" / "ea.journal").write_text("B 1.0 doubt-1\n")
    (tmp_path / "effects.log").write_text("doubt-1 100000\n")  # it did execute before the crash
    ea = EA(tmp_path, move="rename", grace=5.0, tick=0.016, connect_delay=3600, ready_wait=3600)
    ea.start()
    for _ in range(3):
        ea.on_timer()
    assert files(tmp_path / "py2ea" / "cur") == [name]
    assert "reconciled" not in ea.log
    ea.started_at -= 3600  # the terminal connected and loaded its history
    ea.on_timer()
    assert ea.log[0] == "reconciled"
    assert files(tmp_path / "py2ea" / "cur") == []
    assert (tmp_path / "effects.log").read_text() == "doubt-1 100000\n"
    replies = files(tmp_path / "ea2py" / "new")
    assert len(replies) == 1 and "executed" in (tmp_path / "ea2py" / "new" / replies[0]).read_text()


def test_bounded_wait_then_new_messages_but_not_in_doubt_ones(tmp_path: Path) -> None:
    """Past the bounded wait new messages are taken while an in-doubt id stays in cur/."""
    EA(tmp_path, move="rename", grace=5.0, tick=0.016).start()
    doubt = _request_file(tmp_path, "doubt-2", 7)
    os.replace(tmp_path / "py2ea" / "new" / doubt, tmp_path / "py2ea" / "cur" / doubt)
    (tmp_path / "state" / "ea.journal").write_text("B 1.0 doubt-2\n")
    ea = EA(tmp_path, move="rename", grace=5.0, tick=0.016, connect_delay=7200, ready_wait=60)
    ea.start()
    fresh = _request_file(tmp_path, "fresh-1", 8, kind="echo")
    ea.on_timer()
    assert files(tmp_path / "py2ea" / "new") == [fresh]  # still inside the bounded wait
    ea.started_at -= 120  # past the wait, the trade server still not ready
    ea.on_timer()
    assert "ready_wait_expired" in ea.log
    assert files(tmp_path / "py2ea" / "new") == []
    assert files(tmp_path / "py2ea" / "cur") == [doubt]
    assert not (tmp_path / "effects.log").exists()


def test_journal_shared_with_a_reader_and_failed_append_skips_the_handler(tmp_path: Path) -> None:
    """A reader holding the journal with sharing (doctor) does not stop appends; an exclusive
    holder makes the B append fail, and then the order is not executed until it can be."""
    ea = EA(tmp_path, move="rename", grace=5.0, tick=0.016)
    ea.start()
    ea.fs.hold("state/ea.journal", share=True)
    _request_file(tmp_path, "shared-1", 7)
    ea.on_timer()
    assert (tmp_path / "effects.log").read_text() == "shared-1 100000\n"
    ea.fs.hold("state/ea.journal", share=False)
    name = _request_file(tmp_path, "locked-1", 8)
    ea.on_timer()
    assert "append_failed locked-1" in ea.log
    assert "locked-1" not in (tmp_path / "effects.log").read_text()
    assert files(tmp_path / "py2ea" / "cur") == [name]
    ea.fs.release("state/ea.journal")
    ea.recheck_cur = True
    ea.on_timer()
    assert (tmp_path / "effects.log").read_text().count("locked-1") == 1
    assert files(tmp_path / "py2ea" / "cur") == []
    states = [line.split(" ")[0] + line.split(" ")[2] for line in _journal(tmp_path)]
    assert states.index("Blocked-1") < states.index("Elocked-1") < states.index("Dlocked-1")


def test_handler_error_one_way_to_bad_request_failed(tmp_path: Path) -> None:
    """A failing handler sends a one-way message to bad/ (handler_error, no D record) and
    answers a request "failed"."""
    ea = EA(tmp_path, move="rename", grace=5.0, tick=0.016)
    ea.start()
    one_way = _request_file(tmp_path, "fail-1", 7, kind="fail", type_="message")
    _request_file(tmp_path, "fail-2", 8, kind="fail")
    ea.on_timer()
    reason = json.loads((tmp_path / "py2ea" / "bad" / f"{one_way}.reason.json").read_text())
    assert reason["code"] == "handler_error"
    records = [(r.split(" ")[0], r.split(" ")[2]) for r in _journal(tmp_path)]
    assert ("B", "fail-1") in records and ("D", "fail-1") not in records
    assert ("D", "fail-2") in records
    (reply,) = files(tmp_path / "ea2py" / "new")
    assert '"status":"failed"' in (tmp_path / "ea2py" / "new" / reply).read_text()


def test_locked_cur_file_is_kept_not_sent_to_bad(tmp_path: Path) -> None:
    """A file in cur/ that cannot be opened at start-up stays and is processed later."""
    EA(tmp_path, move="rename", grace=5.0, tick=0.016).start()
    name = _request_file(tmp_path, "held-1", 7)
    os.replace(tmp_path / "py2ea" / "new" / name, tmp_path / "py2ea" / "cur" / name)
    ea = EA(tmp_path, move="rename", grace=5.0, tick=0.016)
    ea.start()
    ea.fs.hold(f"py2ea/cur/{name}", share=False)
    ea.on_timer()
    assert files(tmp_path / "py2ea" / "bad") == []
    assert files(tmp_path / "py2ea" / "cur") == [name]
    ea.fs.release(f"py2ea/cur/{name}")
    ea.on_timer()
    assert files(tmp_path / "py2ea" / "cur") == []
    assert (tmp_path / "effects.log").read_text() == "held-1 100000\n"
