"""``fokha sync``: look at a sync server store, its conflicts, and compact it.

``fokha sync status|conflicts|resolve|compact (--sqlite PATH | --postgres DSN)``.
``resolve ID --choose server|client|result`` (or ``--data JSON``) writes the chosen
version as a new one; ``compact --horizon SECONDS`` drops tombstones every client
seen within the horizon has acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from ..errors import FokhaError
from ._service import SyncConfig, SyncService
from ._store import SyncStore

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``sync`` subcommand to the ``fokha`` parser."""
    p = sub.add_parser("sync", help="inspect a sync store: status, conflicts, resolve, compact")
    p.add_argument("action", choices=["status", "conflicts", "resolve", "compact"])
    p.add_argument("conflict_id", nargs="?", type=int, help="with resolve: the conflict id")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", metavar="PATH", help="an SQLite sync store file")
    where.add_argument("--postgres", metavar="DSN", help="a PostgreSQL DSN ([postgres] extra)")
    p.add_argument("--choose", choices=["server", "client", "result"], help="with resolve")
    p.add_argument("--data", metavar="JSON", help="with resolve: the data to keep")
    p.add_argument(
        "--force", action="store_true", help="with resolve: even if the record changed since"
    )
    p.add_argument("--horizon", type=float, default=30 * 86400.0, help="with compact (seconds)")
    p.add_argument("--all", action="store_true", help="with conflicts: include resolved ones")
    p.add_argument("--limit", type=int, default=100, help="with conflicts: how many")


def _open(args: argparse.Namespace) -> SyncStore:
    if args.sqlite:
        from .sqlite import SQLiteSyncStore

        return SQLiteSyncStore(args.sqlite)
    from .postgres import PostgresSyncStore

    return PostgresSyncStore(args.postgres)


async def _run(args: argparse.Namespace) -> int:
    # The service is opened only to read and settle; "cli" is a placeholder collection.
    svc = SyncService(_open(args), ["cli"], config=SyncConfig(horizon=args.horizon))
    await svc.start()
    try:
        if args.action == "status":
            s = await svc.status()
            out: Any = {
                "records": s.records, "tombstones": s.tombstones, "high_seq": s.high_seq,
                "floor": s.floor, "unresolved_conflicts": s.unresolved_conflicts,
                "clients": [
                    {"client_id": c.client_id, "last_mutation_id": c.last_mutation_id,
                     "ack_seq": c.ack_seq, "lag": s.high_seq - c.ack_seq,
                     "last_seen_ms": c.last_seen_ms}
                    for c in s.clients
                ],
            }  # fmt: skip
        elif args.action == "conflicts":
            entries = await svc.conflicts(include_resolved=args.all, limit=args.limit)
            out = [e.to_dict() for e in entries]
        elif args.action == "resolve":
            if args.conflict_id is None or (args.choose is None) == (args.data is None):
                print("resolve needs a conflict id and one of --choose / --data")
                return 2
            choice = args.choose if args.data is None else json.loads(args.data)
            out = (await svc.resolve(args.conflict_id, choice, force=args.force)).to_wire()
        else:
            out = {"removed_tombstones": await svc.compact()}
        print(json.dumps(out, indent=2))
        return 0
    except (FokhaError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    finally:
        await svc.close()


def run(args: argparse.Namespace) -> int:
    """Run ``fokha sync``; the exit code."""
    return asyncio.run(_run(args))
