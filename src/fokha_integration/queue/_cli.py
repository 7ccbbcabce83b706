"""``fokha queue``: look at an outbox store and replay its dead letters.

``fokha queue stats|dead-letters|replay (--sqlite PATH | --redis URL) [--sink NAME]``.
The store is opened without registering sinks, so the command never changes what
producers fan out to.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._store import OutboxStore

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Add the ``queue`` subcommand to the ``fokha`` parser."""
    p = sub.add_parser("queue", help="inspect an outbox store; list and replay dead letters")
    p.add_argument("action", choices=["stats", "dead-letters", "replay"])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", metavar="PATH", help="an SQLite outbox file")
    where.add_argument("--redis", metavar="URL", help="a Redis URL (needs the [redis] extra)")
    p.add_argument("--prefix", default="fokha:queue", help="Redis key prefix")
    p.add_argument("--sink", help="only this sink")
    p.add_argument("--limit", type=int, default=50, help="dead letters to list (max 10000)")


def _open(args: argparse.Namespace) -> OutboxStore:
    if args.sqlite:
        from ._sqlite import SQLiteOutboxStore

        return SQLiteOutboxStore(args.sqlite)
    from .redis import RedisStreamsStore

    return RedisStreamsStore(args.redis, prefix=args.prefix)


async def _sinks(store: OutboxStore, args: argparse.Namespace) -> list[str]:
    if args.sink:
        return [args.sink]
    names: list[str] = []
    for letter in await store.dead_letters(limit=10_000):
        if letter.sink not in names:
            names.append(letter.sink)
    listed = getattr(store, "registered_sinks", None)
    if listed is not None:
        for name in await listed():
            if name not in names:
                names.append(name)
    return names


async def run(args: argparse.Namespace) -> int:
    """Carry out one ``fokha queue`` action; prints JSON lines; returns the exit code."""
    store = _open(args)
    await store.open([])
    try:
        if args.action == "stats":
            for name in await _sinks(store, args):
                pending, oldest = await store.stats(name)
                dead = len(await store.dead_letters(name, limit=10_000))
                print(
                    json.dumps(
                        {
                            "sink": name,
                            "pending": pending,
                            "oldest_enqueued_at": oldest,
                            "dead_letters": dead,
                        }
                    )
                )
        elif args.action == "dead-letters":
            limit = max(1, min(args.limit, 10_000))
            for letter in await store.dead_letters(args.sink, limit=limit):
                print(
                    json.dumps(
                        {
                            "ref": letter.ref,
                            "sink": letter.sink,
                            "id": letter.envelope.id,
                            "reason": letter.reason,
                            "detail": letter.detail,
                            "attempts": len(letter.attempts),
                            "dead_at": letter.dead_at,
                        }
                    )
                )
        else:
            count = await store.replay(args.sink)
            print(json.dumps({"replayed": count}))
    finally:
        await store.close()
    return 0
