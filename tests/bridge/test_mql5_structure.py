"""The structural MQL5 check passes on the shipped sources and fails on broken copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bridge import mql5_check

INCLUDE_TEXT = mql5_check.INCLUDE.read_text(encoding="utf-8")
EXAMPLE_TEXT = mql5_check.EXAMPLE.read_text(encoding="utf-8")


def _problems(include: str = INCLUDE_TEXT, example: str = EXAMPLE_TEXT) -> list[str]:
    return mql5_check.check(include_text=include, example_text=example)


def _replace(text: str, old: str, new: str, count: int = 1) -> str:
    assert text.count(old) >= count, f"{old!r} not in the source any more: update the test"
    return text.replace(old, new, count)


def test_shipped_sources_pass() -> None:
    """The include and the example EA pass every structural check."""
    assert _problems() == []


def test_parser_sees_the_sources() -> None:
    """The parser finds the functions and calls the checks rely on (a blind parser passes all)."""
    inc = mql5_check.parse(mql5_check.preprocess(mql5_check.INCLUDE))
    ex = mql5_check.parse(mql5_check.preprocess(mql5_check.EXAMPLE))
    for name in (
        "CFokhaBridge::Process",
        "CFokhaBridge::OnTimer",
        "CFokhaBridge::Init",
        "CFokhaBridge::AppendJournal",
        "CFokhaJsonObject::Parse",
        "FokhaJsonValue",
    ):
        assert name in inc.functions
    assert "CExampleBridge::Order" in ex.functions
    names = {c.name for c in inc.calls}
    assert {"FileOpen", "FileMove", "AppendJournal", "OnMessage", "MathSrand"} <= names
    assert len([c for c in inc.calls if c.name == "FileOpen"]) >= 5
    sigs, consts = mql5_check.load_signatures()
    assert "FileMove" in sigs and "CHashMap::TryGetValue" in sigs
    assert "FILE_SHARE_WRITE" in consts


BROKEN = {
    "journal open without share flags": (
        "include",
        "FileOpen(m_journal, FILE_READ | FILE_WRITE | FILE_BIN | FOKHA_SHARE | m_common)",
        "FileOpen(m_journal, FILE_READ | FILE_WRITE | FILE_BIN | m_common)",
        "without FILE_SHARE_READ",
    ),
    "begin record not checked": (
        "include",
        'if(!AppendJournal("B " + IntegerToString(at) + " " + id))',
        'AppendJournal("B " + IntegerToString(at) + " " + id);\n      if(false)',
        "AppendJournal",
    ),
    "handler result ignored": (
        "include",
        "bool handled = OnMessage(msg, status, details);",
        "OnMessage(msg, status, details);\n   bool handled = true;",
        "result of OnMessage() is ignored",
    ),
    "sort by StringCompare": (
        "include",
        "if(FokhaLess(a[j], a[i]))",
        "if(StringCompare(a[j], a[i], true) < 0)",
        "StringCompare",
    ),
    "Sleep in the timer": (
        "include",
        "   RetryMoves();\n",
        "   RetryMoves();\n   Sleep(5);\n",
        "Sleep",
    ),
    "MathSrand twice": (
        "include",
        "   RetryMoves();\n",
        "   RetryMoves();\n   MathSrand(1);\n",
        "MathSrand",
    ),
    "reconcile in Init": (
        "include",
        "   RecoverTmp();\n   m_init_tick",
        "   RecoverTmp();\n   ReconcileCur();\n   m_init_tick",
        "ReconcileCur",
    ),
    "misspelt API function": (
        "include",
        "FileFindClose(h);",
        "FileFindClosed(h);",
        "FileFindClosed",
    ),
    "wrong argument count": (
        "include",
        "FileDelete(tmp, m_common);\n      return false;",
        "FileDelete(tmp, m_common, 1);\n      return false;",
        "FileDelete() called with 3 arguments",
    ),
    "unknown constant": (
        "include",
        "TerminalInfoInteger(TERMINAL_CONNECTED)",
        "TerminalInfoInteger(TERMINAL_IS_CONNECTED)",
        "TERMINAL_IS_CONNECTED",
    ),
    "FileLoad back": (
        "include",
        "   if(h == INVALID_HANDLE)\n      return FOKHA_CHECK_LOCKED;",
        "   if(FileLoad(path, buf, m_common) < 0)\n      return FOKHA_CHECK_LOCKED;",
        "FileLoad",
    ),
    "no handler_error": (
        "include",
        '"handler_error"',
        '"handler_failed"',
        "handler_error",
    ),
    "rewrite on every send": (
        "include",
        "if(FileMove(tmp, m_common, dst, m_common))",
        "if(FileMove(tmp, m_common, dst, FILE_REWRITE | m_common))",
        "Publish moves with FILE_REWRITE",
    ),
    "order before its intent record": (
        "example",
        '      bool ok = (direction == "BUY")',
        '      g_trade.Buy(volume, symbol);\n      bool ok = (direction == "BUY")',
        "preceded by its own",
    ),
    "JSON not checked": (
        "include",
        "   if(!obj.Parse(buf, p, e))\n",
        "   if(false)\n",
        "UTF-8 is checked before JSON",
    ),
    "in-doubt id not held back": (
        "include",
        "      if(!TradeServerReady())\n         return false;\n      msg.redelivered = true;",
        "      msg.redelivered = true;",
        "waits for the trade server",
    ),
    "read before the size check": (
        "include",
        "   size = (long)FileSize(h);\n",
        "   size = 0;\n",
        "size is checked before reading",
    ),
    "start without the journal": (
        "include",
        "   if(!LoadJournal())\n",
        "   LoadJournal();\n   if(false)\n",
        "journal cannot be read",
    ),
    "method not in the library": (
        "example",
        "g_trade.ResultDeal()",
        "g_trade.ResultDealTicket()",
        "ResultDealTicket",
    ),
    "comment cut from the id": (
        "example",
        "tag = NewTag();",
        "tag = StringSubstr(msg.id, 0, 31);",
        "cut from the id",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN), ids=lambda c: c.replace(" ", "_"))
def test_broken_copy_fails(case: str, tmp_path: Path) -> None:
    """A deliberately broken copy of the include or example is refused with the right message."""
    where, old, new, expected = BROKEN[case]
    include, example = INCLUDE_TEXT, EXAMPLE_TEXT
    if where == "include":
        include = _replace(include, old, new)
    else:
        example = _replace(example, old, new)
    broken = tmp_path / ("FokhaBridge.mqh" if where == "include" else "FokhaBridgeExample.mq5")
    broken.write_text(include if where == "include" else example, encoding="utf-8")
    problems = _problems(include, example)
    assert problems, f"{case}: the broken copy passed"
    assert any(expected in p for p in problems), problems


def test_command_line_exit_status(tmp_path: Path) -> None:
    """The script exits 0 on the shipped files and 1 on a broken copy (as make test runs it)."""
    assert mql5_check.main(["mql5_check"]) == 0
    broken = tmp_path / "FokhaBridge.mqh"
    broken.write_text(_replace(INCLUDE_TEXT, "FileFindClose(h);", "FileFindClosed(h);"), "utf-8")
    assert mql5_check.main(["mql5_check", str(broken), str(mql5_check.EXAMPLE)]) == 1
