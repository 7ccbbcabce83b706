"""The clarified spec cases (issue 14): file names and message-level checks, as vectors
that the Python reader and the independent EA emulator must both agree with."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fokha_integration.bridge import FileBridge, Message, PollConfig
from fokha_integration.bridge._folders import parse_message_name, parse_snapshot_name
from fokha_integration.bridge._frame import decode_frame
from tests.bridge import ea_emulator
from tests.bridge.helpers import files, wait_until

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "file-bridge"
MESSAGES = sorted((VECTORS / "messages").glob("*.fkb"))
NAMES = json.loads((VECTORS / "names.json").read_text("utf-8"))
FAST = PollConfig(busy=0.001, idle=0.01)


def test_message_vectors_exist() -> None:
    """The message-level vectors cover ok cases and both message reason codes."""
    verdicts = {json.loads(p.with_suffix(".json").read_text())["code"] for p in MESSAGES}
    assert {"", "bad_message", "name_mismatch"} <= verdicts
    assert len(MESSAGES) >= 20


@pytest.mark.parametrize("entry", NAMES, ids=lambda e: e["file"][:40])
def test_names_python_and_emulator_agree(entry: dict[str, object]) -> None:
    """Each name vector is taken or skipped alike by the Python reader and the emulator."""
    name = str(entry["file"])
    expected = entry["parsed"]
    if entry["kind"] == "message":
        parsed = parse_message_name(name)
        got = (
            None
            if parsed is None
            else {"seq": parsed.seq, "sender": parsed.sender, "id": parsed.id}
        )
        m = ea_emulator.NAME.match(name)
        emu = None if m is None else {"seq": int(m[1]), "sender": m[2], "id": m[3]}
    else:
        snap = parse_snapshot_name(name)
        got = None if snap is None else {"name": snap[0], "seq": snap[1]}
        s = ea_emulator.SNAP_NAME.match(name)
        emu = None if s is None else {"name": s[1], "seq": int(s[2])}
    assert got == expected
    assert emu == expected


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.stem)
def test_message_vectors_emulator(path: Path) -> None:
    """The emulator's checks after the claim give each message vector's verdict."""
    expected = json.loads(path.with_suffix(".json").read_text("utf-8"))
    result, _, parsed = ea_emulator.check_frame(path.read_bytes())
    assert result == "ok", "message vectors are complete frames"
    ident, seq, obj = parsed  # type: ignore[misc]
    assert ea_emulator.check_message(expected["name"], ident, seq, obj) == expected["code"]


@pytest.mark.parametrize("path", MESSAGES, ids=lambda p: p.stem)
async def test_message_vectors_python(path: Path, tmp_path: Path) -> None:
    """The Python reader hands an "ok" vector to its handler and sends a "bad" one to bad/
    with the vector's reason code."""
    expected = json.loads(path.with_suffix(".json").read_text("utf-8"))
    seen: list[Message] = []

    async def handler(message: Message) -> None:
        seen.append(message)

    bad = tmp_path / "py2ea" / "bad" / f"{expected['name']}.reason.json"
    async with FileBridge(
        tmp_path, local="ea", peer="py", handler=handler, poll=FAST, heartbeat_interval=None
    ):
        (tmp_path / "py2ea" / "new" / expected["name"]).write_bytes(path.read_bytes())
        await wait_until(lambda: bool(seen) or bad.exists(), 10)
        await wait_until(lambda: files(tmp_path / "py2ea" / "cur") == [], 10)
    if expected["result"] == "ok":
        assert [m.id for m in seen] == [decode_frame(path.read_bytes()).id]
        assert not bad.exists()
    else:
        assert seen == []
        assert json.loads(bad.read_text())["code"] == expected["code"]


def test_unparseable_snapshot_name_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot with an unpadded seq is skipped with one log line, not silently."""
    bridge = FileBridge(tmp_path, heartbeat_interval=None)
    bridge.incoming.create()
    snap = bridge.incoming.snap / "heartbeat.123.fkb"
    snap.write_bytes(b"irrelevant")
    with caplog.at_level(logging.WARNING, logger="fokha_integration.bridge"):
        assert bridge.read_snapshot("heartbeat") is None
        assert bridge.read_snapshot("heartbeat") is None
        assert bridge.peer_alive() is False
    lines = [r for r in caplog.records if "heartbeat.123.fkb" in r.getMessage()]
    assert len(lines) == 1


def test_unpadded_snapshot_is_ignored_by_the_emulator_pattern() -> None:
    """The emulator's snapshot pattern needs the 20-digit seq too (spec section 7)."""
    assert ea_emulator.SNAP_NAME.match("heartbeat.123.fkb") is None
