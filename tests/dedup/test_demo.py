"""The dedup section of ``fokha demo`` runs and shows duplicates rejected."""

from __future__ import annotations

import pytest

from fokha_integration._demo import run_demo


async def test_demo_section_rejects_duplicates(capsys: pytest.CaptureFixture[str]) -> None:
    """`fokha demo --only dedup` succeeds and prints the rejected re-emissions."""
    assert await run_demo(only=["dedup"]) == 0
    out = capsys.readouterr().out
    assert out.count("DUPLICATE, rejected") == 3
    assert "CONFLICT" in out
    assert "IN_FLIGHT" in out
