"""The Python bridge against the independent EA emulator, tick by tick in one process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fokha_integration.bridge import FileBridge, PollConfig, ReplyStatus
from tests.bridge.ea_emulator import EA
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
