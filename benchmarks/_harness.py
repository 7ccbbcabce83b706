"""Shared plumbing for the benchmarks: arguments, timing and the one output shape.

Every benchmark takes ``--quick`` (finish in under 30 s) and ``--json`` (print one
JSON object of the shape below and nothing else on stdout)::

    {"benchmark": name,
     "figures": {name: number, ...},
     "targets": [{"name", "value", "target", "op", "unit", "met"}, ...]}

Without ``--json`` it prints a readable table. Benchmarks compare ours with an
anchor measured side by side in the same run; ratios matter, absolute times on a
shared machine are noise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Target:
    """A figure with a goal: ``value op target`` must hold (op is ">=" or "<=")."""

    name: str
    value: float
    target: float
    op: str
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "target": self.target,
            "op": self.op,
            "unit": self.unit,
            "met": self.met,
        }


@dataclass
class Report:
    """Figures and targets of one benchmark run."""

    benchmark: str
    figures: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def figure(self, name: str, value: float) -> float:
        self.figures[name] = value
        return value

    def target(self, name: str, value: float, target: float, op: str, unit: str = "") -> None:
        if op not in (">=", "<="):
            raise ValueError("op must be '>=' or '<='")
        self.targets.append(Target(name, value, target, op, unit))

    def emit(self, as_json: bool) -> None:
        if as_json:
            out = {
                "benchmark": self.benchmark,
                "figures": self.figures,
                "targets": [t.as_dict() for t in self.targets],
            }
            json.dump(out, sys.stdout)
            sys.stdout.write("\n")
            return
        print(f"\n{self.benchmark}")
        width = max((len(k) for k in self.figures), default=10)
        for key, value in self.figures.items():
            print(f"  {key:<{width}}  {value:>14,.3f}")
        if self.targets:
            print("  targets:")
            for t in self.targets:
                mark = "met" if t.met else "MISSED"
                print(f"    {t.name}: {t.value:,.3f} {t.op} {t.target:,.3f} {t.unit}  [{mark}]")
        for note in self.notes:
            print(f"  note: {note}")


def parse_args(description: str) -> argparse.Namespace:
    """The common arguments: --quick and --json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short run (< 30 s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args()


def log(args: argparse.Namespace, text: str) -> None:
    """Progress output: to stderr, so --json keeps stdout clean."""
    print(text, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def best_of(rounds: int, fn: Callable[[], float]) -> float:
    """Run ``fn`` (which returns a duration) ``rounds`` times; the median duration."""
    return statistics.median(fn() for _ in range(rounds))


now = time.perf_counter
