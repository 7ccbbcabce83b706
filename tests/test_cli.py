"""The `fokha` command: the demo runs end to end and exits 0."""

from __future__ import annotations

import subprocess
import sys

from tests.support import timeout


def test_demo_runs_and_reports() -> None:
    """`fokha demo` exits 0 and prints an account of each section."""
    proc = subprocess.run(
        [sys.executable, "-m", "fokha_integration.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== resilience" in proc.stdout
    assert "breaker" in proc.stdout
    assert "demo finished: every section did what it said." in proc.stdout


def test_unknown_section_is_refused() -> None:
    """`fokha demo --only nope` exits non-zero naming the known sections."""
    proc = subprocess.run(
        [sys.executable, "-m", "fokha_integration.cli", "demo", "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=False,
    )
    assert proc.returncode == 2
    assert "resilience" in proc.stdout
