"""A separate process for the cross-process and restart tests (run as a script).

    _worker.py claim  sqlite|redis|postgres TARGET NAMESPACE COUNT SEED single|batch
        prints "ready", waits for a line on stdin, claims k0..k{COUNT-1} in a shuffled
        order, prints the JSON list of the indices it won (FIRST).
    _worker.py hold   sqlite|redis|postgres TARGET NAMESPACE COUNT
        claims k0..k{COUNT-1}, prints "claimed", then waits on stdin until killed.

TARGET is the SQLite file, the Redis URL or the PostgreSQL DSN.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

from fokha_integration.dedup import ClaimStatus, DedupBackend, DedupCache, SQLiteDedupBackend


def backend(kind: str, target: str, namespace: str) -> DedupBackend:
    if kind == "sqlite":
        return SQLiteDedupBackend(target, busy_timeout=30)
    if kind == "postgres":
        from fokha_integration.dedup.postgres import PostgresDedupBackend

        return PostgresDedupBackend(target)
    from fokha_integration.dedup.redis import RedisDedupBackend

    return RedisDedupBackend(target, namespace=namespace, socket_timeout=30)


async def claim(kind: str, target: str, namespace: str, count: int, seed: int, mode: str) -> None:
    keys = [f"k{i}" for i in range(count)]
    random.Random(seed).shuffle(keys)
    async with DedupCache(backend(kind, target, namespace)) as cache:
        await cache.seen("warm-up")  # open the connection before the start line
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        won: list[int] = []
        if mode == "single":
            for key in keys:
                if (await cache.claim(key)).status is ClaimStatus.FIRST:
                    won.append(int(key[1:]))
        else:
            for start in range(0, count, 50):
                results = await cache.claim_many(keys[start : start + 50])
                won.extend(int(r.key[1:]) for r in results if r.status is ClaimStatus.FIRST)
        print(json.dumps(won), flush=True)


async def hold(kind: str, target: str, namespace: str, count: int) -> None:
    cache = DedupCache(backend(kind, target, namespace))
    results = await cache.claim_many([f"k{i}" for i in range(count)])
    assert all(r.status is ClaimStatus.FIRST for r in results)
    leased = await cache.claim("order-1", lease=300)
    assert leased.status is ClaimStatus.FIRST
    assert await cache.commit("order-1", b"ticket-42", token=leased.token)
    print("claimed", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def main() -> None:
    command, kind, target, namespace, count = sys.argv[1:6]
    if command == "claim":
        asyncio.run(claim(kind, target, namespace, int(count), int(sys.argv[6]), sys.argv[7]))
    else:
        asyncio.run(hold(kind, target, namespace, int(count)))


if __name__ == "__main__":
    main()
