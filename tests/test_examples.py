"""The examples run as documented (each in a fresh interpreter, in a temp folder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import timeout

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=True,
    )
    return proc.stdout


def test_trading_spine_second_run_sends_nothing_again(tmp_path: Path) -> None:
    """A rerun of trading_spine.py answers duplicate and delivers nothing (stable ids)."""
    first = _run("trading_spine.py", tmp_path)
    assert "EURUSD BUY: accepted" in first and "sink file_bridge: 2 delivered" in first
    assert "ws://127.0.0.1:" in first and ":8765" not in first
    second = _run("trading_spine.py", tmp_path)
    assert "EURUSD BUY: duplicate" in second and "XAUUSD SELL: duplicate" in second
    assert "sink file_bridge: 0 delivered" in second and "sink websocket: 0 delivered" in second
