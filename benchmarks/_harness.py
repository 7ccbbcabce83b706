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
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A redis-server on a free port of 127.0.0.1 for one benchmark (never the shared one).

    Raises RuntimeError when the binary is missing or the server does not answer
    PING within 10 s. Use as a context manager, or call stop().
    """

    def __init__(self, workdir: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found")
        self.port = free_port()
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", workdir]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)  # polling a subprocess's port: there is no event to wait on

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrivatePostgres:
    """A PostgreSQL cluster in a temp dir of its own on a free port, started the way
    the test fixture starts it (``tests.support.PostgresServer``: initdb as the
    postgres user, trust on 127.0.0.1, ``fsync=off``); never the machine's shared
    server.

    Raises RuntimeError when the server binaries are missing or it does not start.
    Call stop() when done (it also removes the temp dir).
    """

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        if root not in sys.path:
            sys.path.insert(0, root)
        from tests.support import PostgresServer, postgres_bin_dir

        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb) not found")
        # A folder of its own: as root the cluster runs as the postgres user, who
        # must be able to reach it (a caller's private temp dir would not do).
        self._workdir = tempfile.mkdtemp(prefix="fokha-bench-pg-")
        self._server = PostgresServer(
            port=free_port(), workdir=Path(self._workdir), bin_dir=bin_dir
        )
        try:
            self._server.init()
            self._server.start()
            self._server.psql("CREATE DATABASE bench")
        except (subprocess.SubprocessError, OSError) as exc:
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {exc}") from exc
        self.dsn = self._server.dsn("bench")

    def stop(self) -> None:
        self._server.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)


def callgrind_instructions(valgrind: str, script: str, *args: str) -> int:
    """Instructions ``valgrind --tool=callgrind`` counted for ``python script --inner
    *args`` (the count does not depend on the machine's load)."""
    done = subprocess.run(
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            str(Path(script).resolve()),
            "--inner",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
        # A fixed hash seed: dict layouts, and so the counts, are the same every run.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output: {done.stderr[-500:]}")
    return int(found.group(1))
