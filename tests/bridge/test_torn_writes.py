"""A writer that writes frames byte by byte into new/ never gets a torn frame handled."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from fokha_integration.bridge import FileBridge, Message, PollConfig, encode_frame
from fokha_integration.models import canonical_json
from tests.bridge.helpers import files, wait_until
from tests.support import timeout

HERE = Path(__file__).resolve().parent


async def test_byte_by_byte_writer_never_causes_a_torn_frame(tmp_path: Path) -> None:
    """Frames written slowly straight into new/ are handled once each, complete, never torn."""
    root = tmp_path / "bridge"
    src = tmp_path / "src"
    src.mkdir()
    expected = {}
    for i in range(4):
        msg_id = f"slow-{i}"
        body = {"n": i, "text": "é" * (20 + 15 * i)}  # multi-byte UTF-8 split across writes
        payload: dict[str, object] = {
            "type": "message",
            "kind": "note",
            "sender": "rogue",
            "sent_at": 1.0,
            "body": body,
        }
        (src / f"{i + 1:020d}-rogue-{msg_id}.fkb").write_bytes(
            encode_frame(msg_id, i + 1, canonical_json(payload).encode())
        )
        expected[msg_id] = body
    handled: list[Message] = []
    finished: set[str] = set()

    async def handler(message: Message) -> None:
        # When a message is handled, its claimed file holds the whole frame.
        name = f"{message.seq:020d}-rogue-{message.id}.fkb"
        on_disk = (root / "py2ea" / "cur" / name).read_bytes()
        assert on_disk == (src / name).read_bytes()
        handled.append(message)

    poll = PollConfig(busy=0.001, idle=0.005, busy_window=1.0)
    async with FileBridge(
        root, local="ea", peer="py", handler=handler, poll=poll, grace=2.0, heartbeat_interval=None
    ):
        new = root / "py2ea" / "new"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "slow_writer.py"),
            str(src),
            str(new),
            "0.0005",
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        while line := await asyncio.wait_for(proc.stdout.readline(), timeout(30)):
            finished.add(line.decode().split()[1])
        assert await proc.wait() == 0
        await wait_until(lambda: len(handled) == 4, 10)
        await wait_until(lambda: files(new) == [] and files(root / "py2ea" / "cur") == [])
    assert {m.id: m.body for m in handled} == expected
    assert [m.id for m in handled] == [f"slow-{i}" for i in range(4)]
    assert files(root / "py2ea" / "bad") == []
    assert len(finished) == 4
