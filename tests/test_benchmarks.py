"""Benchmarks keep the common --json output shape (checked on the fast one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import timeout

ROOT = Path(__file__).resolve().parents[1]


def test_resilience_benchmark_json_shape() -> None:
    """bench_resilience --quick --json prints one object with figures and well-formed targets."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_resilience.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=True,
    )
    out = json.loads(proc.stdout)
    assert out["benchmark"] == "bench_resilience"
    assert all(isinstance(v, (int, float)) for v in out["figures"].values())
    assert out["targets"]
    for target in out["targets"]:
        assert set(target) == {"name", "value", "target", "op", "unit", "met"}
        assert target["op"] in (">=", "<=")
        expected = (
            target["value"] >= target["target"]
            if target["op"] == ">="
            else target["value"] <= target["target"]
        )
        assert target["met"] == expected
