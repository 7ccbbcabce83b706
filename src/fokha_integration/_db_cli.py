"""``fokha db``: create or upgrade the PostgreSQL tables the backends use.

``fokha db migrate --dsn URL [--prefix P]`` applies the missing migrations (one
transaction under an advisory lock: safe to run from several processes at once)
and prints what it applied; ``fokha db status --dsn URL`` prints the schema
version. Needs the ``[postgres]`` extra. The DSN is never printed (it may carry a
password).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from .errors import FokhaError

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``db`` subcommand to the ``fokha`` parser."""
    p = sub.add_parser("db", help="create or upgrade the PostgreSQL tables (needs [postgres])")
    p.add_argument("action", choices=["migrate", "status"])
    p.add_argument("--dsn", required=True, help="libpq URL, e.g. postgresql://user@host/db")
    p.add_argument("--prefix", default="fokha_", help="table name prefix (default fokha_)")
    p.add_argument("--timeout", type=float, default=30.0, help="connect and lock wait, seconds")


async def _run(args: argparse.Namespace) -> int:
    from . import _postgres as pg

    pg.check_prefix(args.prefix)
    conn = await pg.connect(args.dsn, timeout=args.timeout)
    try:
        if args.action == "migrate":
            applied = await pg.migrate(conn, args.prefix)
            version = await pg.schema_version(conn, args.prefix)
            done = ", ".join(str(v) for v in applied) if applied else "nothing (up to date)"
            print(f"applied: {done}; schema version {version}")
        else:
            version = await pg.schema_version(conn, args.prefix)
            newest = pg.MIGRATIONS[-1][0]
            state = "up to date" if version == newest else f"{newest - version} behind"
            print(f"schema version {version} of {newest} ({state})")
    finally:
        await conn.close()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``fokha db``; exit code 0 on success, 1 on a database error, 2 without the extra."""
    try:
        return asyncio.run(_run(args))
    except ImportError as exc:
        print(f"fokha db: {exc}", file=sys.stderr)
        return 2
    except FokhaError as exc:
        print(f"fokha db: {exc}", file=sys.stderr)
        return 1
