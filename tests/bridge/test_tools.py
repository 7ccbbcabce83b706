"""The journal, MT5 folder discovery, the ``fokha bridge`` CLI and the demo section."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from fokha_integration.bridge import (
    PollConfig,
    common_files_folders,
    find_mt5_data_folders,
    mql5_files,
)
from fokha_integration.bridge._journal import Journal
from fokha_integration.bridge.emulator import EAEmulator
from fokha_integration.cli import main

FAST = PollConfig(busy=0.001, idle=0.01)


# -- journal ---------------------------------------------------------------------------


def test_journal_survives_reopen_and_ignores_a_torn_last_record(tmp_path: Path) -> None:
    """Records persist; a half-written last line (a crash mid-append) is ignored and cut."""
    path = tmp_path / "j.journal"
    now = time.time()
    j = Journal(path)
    j.open(now)
    j.begin("a", now)
    j.done("a", now, "ra", '{"status":"executed"}')
    j.begin("b", now)
    j.close()
    with open(path, "ab") as f:
        f.write(b"D 1.0 c - 0000")  # torn: no LF
    j2 = Journal(path)
    j2.open(now)
    entry = j2.get("a")
    assert entry is not None
    assert (entry.state, entry.reply_id, entry.reply) == ("done", "ra", '{"status":"executed"}')
    b = j2.get("b")
    assert b is not None
    assert b.state == "begun"
    assert j2.get("c") is None
    assert j2.skipped_lines == 1
    j2.close()
    assert path.read_bytes().endswith(b"\n")


def test_journal_rejects_a_damaged_record(tmp_path: Path) -> None:
    """A D record whose crc does not match is not trusted."""
    path = tmp_path / "j.journal"
    now = time.time()
    path.write_text(f"D {now:.3f} x rx deadbeef {{}}\n")
    j = Journal(path)
    j.open(now)
    assert j.get("x") is None
    j.close()


def test_journal_retention_bounds_it_by_count_and_age(tmp_path: Path) -> None:
    """Old ids and ids beyond max_entries are dropped, and the file is compacted."""
    path = tmp_path / "j.journal"
    now = 1_000_000.0
    j = Journal(path, retention=100.0, max_entries=50)
    j.open(now)
    j.done("old", now - 500, None, None)
    for i in range(3000):
        j.done(f"id{i}", now + i * 0.001, None, None)
    assert j.get("old") is None
    assert len(j) == 50
    assert j.get("id2999") is not None
    j.close()
    assert len(path.read_text().splitlines()) < 1200


# -- discovery ---------------------------------------------------------------------------


def _terminal(appdata: Path, terminal_id: str, origin: str | None = None) -> Path:
    data = appdata / "MetaQuotes" / "Terminal" / terminal_id
    (data / "MQL5" / "Files").mkdir(parents=True)
    if origin is not None:
        (data / "origin.txt").write_bytes(origin.encode("utf-16"))
    return data


def test_finds_windows_terminals_and_common_files(tmp_path: Path) -> None:
    """Terminal data folders under %APPDATA% are found with their origin.txt."""
    appdata = tmp_path / "Roaming"
    _terminal(appdata, "D0E8209F77C8CF37AD8BF550E51FF075", r"C:\Program Files\MetaTrader 5")
    (appdata / "MetaQuotes" / "Terminal" / "Common" / "Files").mkdir(parents=True)
    (appdata / "MetaQuotes" / "Terminal" / "not-a-terminal").mkdir()
    found = find_mt5_data_folders(env={"APPDATA": str(appdata)}, home=tmp_path, wine=False)
    assert len(found) == 1
    assert found[0].files_dir == (
        appdata / "MetaQuotes" / "Terminal" / "D0E8209F77C8CF37AD8BF550E51FF075" / "MQL5" / "Files"
    )
    assert found[0].install_path == r"C:\Program Files\MetaTrader 5"
    assert found[0].common_files_dir is not None
    assert common_files_folders(env={"APPDATA": str(appdata)}, home=tmp_path, wine=False) == [
        appdata / "MetaQuotes" / "Terminal" / "Common" / "Files"
    ]


def test_finds_terminals_in_wine_prefixes(tmp_path: Path) -> None:
    """Terminals in ~/.mt5 and $WINEPREFIX are found, each with its prefix."""
    home = tmp_path / "home"
    mt5 = home / ".mt5" / "drive_c" / "users" / "trader" / "AppData" / "Roaming"
    _terminal(mt5, "A" * 32)
    custom = tmp_path / "prefix"
    old_style = custom / "drive_c" / "users" / "bob" / "Application Data"
    _terminal(old_style, "b" * 32)
    found = find_mt5_data_folders(env={"WINEPREFIX": str(custom)}, home=home)
    assert {(f.terminal_id, f.wine_prefix) for f in found} == {
        ("B" * 32, custom),
        ("A" * 32, home / ".mt5"),
    }
    assert find_mt5_data_folders(env={}, home=tmp_path / "nobody") == []


def test_mql5_sources_are_shipped() -> None:
    """The include file and the example EA are package data."""
    names = {p.name for p in mql5_files()}
    assert names == {"FokhaBridge.mqh", "FokhaBridgeExample.mq5"}


# -- CLI ----------------------------------------------------------------------------------


async def test_cli_send_request_stats_and_doctor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fokha bridge send --request gets the EA's reply; stats and doctor report the folders."""
    async with EAEmulator(tmp_path, poll=FAST):
        code = await asyncio.to_thread(
            main,
            ["bridge", "send", str(tmp_path), "ping", "--request", "--timeout", "10"],
        )
        assert code == 0
        reply = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert reply["status"] == "executed"
        assert main(["bridge", "stats", str(tmp_path), "--json"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["directions"]["py2ea"]["new"]["files"] == 0
        assert main(["bridge", "doctor", str(tmp_path)]) == 0
        assert capsys.readouterr().out.startswith("ok")


def test_cli_doctor_reports_bad_and_stale_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """doctor fails on files in bad/ (with their reason) and stale files in cur/."""
    for d in ("py2ea", "ea2py"):
        for sub in ("tmp", "new", "cur", "bad", "done", "snap"):
            (tmp_path / d / sub).mkdir(parents=True)
    (tmp_path / "py2ea" / "bad" / "x.fkb").write_bytes(b"junk")
    (tmp_path / "py2ea" / "bad" / "x.fkb.reason.json").write_text('{"code": "bad_magic"}')
    stale = tmp_path / "py2ea" / "cur" / "y.fkb"
    stale.write_bytes(b"")
    old = time.time() - 3600
    import os

    os.utime(stale, (old, old))
    assert main(["bridge", "doctor", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad_magic" in out
    assert "y.fkb" in out
    assert main(["bridge", "tail", str(tmp_path), "--seconds", "0"]) == 0
    assert main(["bridge", "send", str(tmp_path), "note", '{"a": 1}']) == 0
    assert main(["bridge", "send", str(tmp_path), "note", "[1]"]) == 2


def test_demo_bridge_section_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """`fokha demo --only bridge` shows the exchange and succeeds."""
    assert main(["demo", "--only", "bridge"]) == 0
    out = capsys.readouterr().out
    assert "executed 1 time" in out
    assert "bad_magic" in out
