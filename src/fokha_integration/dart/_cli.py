"""``fokha dart generate OUT_DIR`` and ``fokha dart check DIR``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``fokha dart`` on the top-level subparsers."""
    dart = sub.add_parser("dart", help="generate and check the Dart package for Flutter apps")
    dart_sub = dart.add_subparsers(dest="dart_command", metavar="ACTION", required=True)
    gen = dart_sub.add_parser("generate", help="write the Dart package into OUT_DIR")
    gen.add_argument("out_dir", metavar="OUT_DIR")
    gen.add_argument("--package", default="fokha_client", help="Dart package name")
    gen.add_argument("--no-check", action="store_true", help="skip the syntax and structure gates")
    chk = dart_sub.add_parser("check", help="run the syntax and structure gates on DIR")
    chk.add_argument("dir", metavar="DIR")
    chk.add_argument("--package", default="fokha_client", help="Dart package name")


def run(args: argparse.Namespace) -> int:
    """Run ``fokha dart ...``; 0 when the package was written/checked clean, 1 on findings."""
    from ..errors import ConfigError
    from ._check import check
    from ._generate import generate

    try:
        if args.dart_command == "generate":
            files = generate(args.out_dir, package=args.package)
            print(f"wrote {len(files)} files to {args.out_dir}")
            if args.no_check:
                return 0
            target = args.out_dir
        else:
            target = args.dir
        problems = check(target, package=args.package)
    except ConfigError as exc:
        print(f"fokha dart: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("syntax and structure gates passed (dart analyze / dart test not run here)")
    return 0
