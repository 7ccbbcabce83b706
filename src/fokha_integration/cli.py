"""The ``fokha`` command.

``fokha demo`` runs the library end to end on embedded defaults (no setup, only
127.0.0.1) and prints a readable account of what happened. Later subcommands
(``serve``, ``bridge``, ``health``, ``dart``) are added by their primitives.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .health import HealthReport, HealthStatus

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fokha", description="fokha-integration: integration primitives for trading setups."
    )
    parser.add_argument("--version", action="version", version=f"fokha {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the whole library on embedded defaults")
    demo.add_argument(
        "--only", action="append", default=None, metavar="SECTION", help="run only these sections"
    )
    demo.add_argument("--list", action="store_true", help="list the demo sections and exit")
    # --- ws (issue 5): fokha ws serve | token | tail ---
    from .ws._cli import add_parser as _add_ws_parser

    _add_ws_parser(sub)
    # --- end ws ---
    _add_health_parser(sub)
    # --- bridge (FileBridge, issue 4) -------------------------------------------------
    from .bridge._cli import add_bridge_parser

    add_bridge_parser(sub)
    # --- end bridge -------------------------------------------------------------------
    # --- queue (issue 6) -------------------------------------------------------
    from .queue._cli import add_parser as add_queue_parser

    add_queue_parser(sub)
    # --- end queue -------------------------------------------------------------
    from .dart._cli import add_parser as add_dart_parser

    add_dart_parser(sub)
    from .serve._cli import add_parsers as add_serve_parsers

    add_serve_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fokha`` console script; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        from ._demo import SECTIONS, run_demo

        if args.list:
            for name, _ in SECTIONS:
                print(name)
            return 0
        return asyncio.run(run_demo(only=args.only))
    # --- ws (issue 5) ---
    if args.command == "ws":
        from .ws._cli import run as _run_ws

        return _run_ws(args)
    # --- end ws ---
    if args.command == "health":
        return _run_health(args)
    # --- bridge (FileBridge, issue 4) -------------------------------------------------
    if args.command == "bridge":
        from .bridge._cli import run_bridge_command

        return run_bridge_command(args)
    # --- end bridge -------------------------------------------------------------------
    # --- queue (issue 6) -------------------------------------------------------
    if args.command == "queue":
        from .queue._cli import run as run_queue

        return asyncio.run(run_queue(args))
    # --- end queue -------------------------------------------------------------
    if args.command == "dart":
        from .dart._cli import run as run_dart

        return run_dart(args)
    if args.command == "serve":
        from .serve._cli import run_serve

        return run_serve(args)
    if args.command == "init":
        from .serve._cli import run_init

        return run_init(args)
    parser.print_help()
    return 2


# -- fokha health ---------------------------------------------------------------
# Checks targets listed in a TOML file (see fokha_integration.health._config), once
# or continuously; the exit code is the status: 0 pass, 1 warn, 2 fail.


def _add_health_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = sub.add_parser(
        "health",
        help="check targets from a TOML file; exit 0 pass, 1 warn, 2 fail",
        description="Check the targets in a TOML file ([[check]] tables) and print a table. "
        "Exit code: 0 pass, 1 warn, 2 fail (3 for a bad file).",
    )
    health.add_argument("config", help="TOML file with [[check]] tables")
    health.add_argument("--watch", action="store_true", help="keep checking; Ctrl-C to stop")
    health.add_argument(
        "--every", type=float, default=5.0, metavar="SECONDS", help="table refresh with --watch"
    )
    health.add_argument(
        "--for", dest="duration", type=float, default=None, metavar="SECONDS",
        help="with --watch, stop after this long",
    )  # fmt: skip


def _health_table(report: HealthReport) -> str:
    rows = [("STATUS", "CHECK", "VALUE", "TIME (ms)", "OUTPUT")]
    for check, view in report.checks:
        r = view.result
        value = "" if r is None or r.observed_value is None else str(r.observed_value)
        if r is not None and r.observed_unit and value:
            value += f" {r.observed_unit}"
        took = "" if r is None else f"{r.duration * 1000:.1f}"
        out = "no result yet" if r is None else r.output
        if view.stale:
            out = "stale; " + out
        crit = "" if check.critical else " (optional)"
        rows.append((view.status.value.upper(), check.key + crit, value, took, out[:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    lines.append(f"overall: {report.status.value.upper()}")
    return "\n".join(line.rstrip() for line in lines)


def _exit_code(status: HealthStatus) -> int:
    from .health import HealthStatus

    if status is HealthStatus.PASS:
        return 0
    return 2 if status is HealthStatus.FAIL else 1


def _run_health(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .health import HealthMonitor, load_targets

    try:
        checks = load_targets(args.config)
    except ConfigError as exc:
        print(f"fokha health: {exc}", file=sys.stderr)
        return 3

    async def once() -> int:
        async with HealthMonitor(checks) as monitor:
            report = await monitor.run_once()
            print(_health_table(report))
            return _exit_code(report.status)

    async def watch() -> int:
        loop = asyncio.get_running_loop()
        deadline = None if args.duration is None else loop.time() + args.duration
        monitor = HealthMonitor(checks, spread_start=False)
        async with monitor:
            report = await monitor.run_once()
            while True:
                print(_health_table(report), flush=True)
                if deadline is not None and loop.time() >= deadline:
                    return _exit_code(report.status)
                wait = args.every if deadline is None else min(args.every, deadline - loop.time())
                await asyncio.sleep(max(0.0, wait))
                report = monitor.report()
                print()

    try:
        return asyncio.run(watch() if args.watch else once())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
