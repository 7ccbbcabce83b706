"""``fokha api openapi [-o FILE]``: print or write the REST API's OpenAPI 3.1 document."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Register ``fokha api`` on the top-level subparsers."""
    api = sub.add_parser("api", help="the REST API app").add_subparsers(dest="api_command")
    openapi = api.add_parser("openapi", help="print or write the OpenAPI 3.1 document")
    openapi.add_argument("-o", "--output", default=None, help="write here instead of stdout")


def run(args: argparse.Namespace) -> int:
    """Run ``fokha api ...``; 2 without an action."""
    if args.api_command != "openapi":
        print("fokha api: choose an action (openapi)", file=sys.stderr)
        return 2
    from .openapi import openapi_json

    text = openapi_json(health=True)
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0
