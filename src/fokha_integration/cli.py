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

from ._version import __version__

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
    # --- queue (issue 6) -------------------------------------------------------
    from .queue._cli import add_parser as add_queue_parser

    add_queue_parser(sub)
    # --- end queue -------------------------------------------------------------
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
    # --- queue (issue 6) -------------------------------------------------------
    if args.command == "queue":
        from .queue._cli import run as run_queue

        return asyncio.run(run_queue(args))
    # --- end queue -------------------------------------------------------------
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
