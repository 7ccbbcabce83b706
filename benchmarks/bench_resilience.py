"""Per-call overhead of our breaker and retry policy, next to a direct await and pybreaker.

Each variant awaits the same trivial coroutine N times in a loop; we report the time
per call, the overhead over a direct await, and ours / pybreaker ratios. pybreaker's
own async path needs tornado, so its anchor is ``with breaker.calling(): await f()``,
the way an asyncio user would guard a call with it.

Run: ``python benchmarks/bench_resilience.py [--quick] [--json]``
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pybreaker

from _harness import Report, log, parse_args
from fokha_integration.resilience import CircuitBreaker, RetryPolicy


async def target() -> int:
    return 1


def loop_of(n: int, body: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        start = time.perf_counter()
        for _ in range(n):
            await body()
        return time.perf_counter() - start

    return run


async def main() -> None:
    args = parse_args(__doc__ or "")
    logging.disable(logging.CRITICAL)
    n = 20_000 if args.quick else 200_000
    rounds = 5 if args.quick else 9

    ours = CircuitBreaker("bench", failure_threshold=5)
    retry = RetryPolicy(attempts=3)
    theirs = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    async def via_breaker_call() -> int:
        return await ours.call(target)

    async def via_breaker_ctx() -> int:
        async with ours:
            return await target()

    async def via_retry() -> int:
        return await retry.call(target)

    async def via_retry_and_breaker() -> int:
        return await retry.call(ours.call, target)

    async def via_pybreaker() -> int:
        with theirs.calling():
            return await target()

    variants = {
        "direct await": target,
        "ours: breaker.call": via_breaker_call,
        "ours: async with breaker": via_breaker_ctx,
        "ours: retry.call": via_retry,
        "ours: retry + breaker": via_retry_and_breaker,
        "pybreaker: with calling()": via_pybreaker,
    }
    # Interleave rounds so drift on a shared machine hits every variant alike.
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        for name, body in variants.items():
            samples[name].append(await loop_of(n, body)())
        log(args, f"round {r + 1}/{rounds} done")
    per_call = {k: sorted(v)[len(v) // 2] / n * 1e9 for k, v in samples.items()}

    report = Report("bench_resilience")
    direct = per_call["direct await"]
    for name, ns in per_call.items():
        report.figure(f"{name} ns/call", round(ns, 1))
    overhead = {k: max(v - direct, 1e-9) for k, v in per_call.items() if k != "direct await"}
    for name, ns in overhead.items():
        report.figure(f"{name} overhead ns", round(ns, 1))
    pyb = per_call["pybreaker: with calling()"]
    ratio_call = pyb / per_call["ours: breaker.call"]
    ratio_ctx = pyb / per_call["ours: async with breaker"]
    report.figure("speed vs pybreaker (breaker.call)", round(ratio_call, 2))
    report.figure("speed vs pybreaker (async with)", round(ratio_ctx, 2))
    report.target("breaker.call speed vs pybreaker", round(ratio_call, 2), 1.0, ">=", "x")
    retry_overhead = round(overhead["ours: retry.call"], 1)
    report.target("retry.call overhead over direct await", retry_overhead, 2000, "<=", "ns")
    report.notes.append(f"{n} calls per round, median of {rounds} interleaved rounds")
    report.emit(args.json)


if __name__ == "__main__":
    asyncio.run(main())
