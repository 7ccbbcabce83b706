"""1,000 HTTP checks at a 1 s interval on loopback: scheduling drift and CPU per check.

Ours: a :class:`HealthMonitor` with 1,000 ``http_check``s (interval 1 s, jitter 10 %,
timeout 2 s), each its own task. The anchor, in the same run: what common health
checkers do — one loop that requests the same 1,000 URLs one after another with no
timeout, then sleeps for what is left of the second.

Drift is how late a check starts against its own schedule (ours: the jittered slot;
the loop: ``t0 + k * interval``, the same for every check of round k). CPU per check
is ``time.process_time()`` of this process divided by the checks run. The target
server runs in a child process so its CPU is not counted.

Run: ``python benchmarks/bench_health.py [--quick] [--json]``
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import subprocess
import sys
import time

import aiohttp

from _harness import Report, free_port, log, parse_args, percentile
from fokha_integration.health import CheckResult, HealthMonitor, http_check

CHECKS = 1000
INTERVAL = 1.0

_SERVER = r"""
import asyncio, sys

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
            b"Connection: keep-alive\r\n\r\nok")

async def handle(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


async def run_ours(urls: list[str], seconds: float) -> dict[str, float]:
    drifts: list[float] = []
    steady: list[float] = []
    failures = 0
    warm = time.monotonic() + 2 * INTERVAL

    def on_result(key: str, result: CheckResult) -> None:
        nonlocal failures
        drifts.append(result.started - result.scheduled)
        if result.scheduled >= warm:
            steady.append(result.started - result.scheduled)
        if result.status.value != "pass":
            failures += 1

    checks = [
        http_check(u, component=f"svc{i}", interval=INTERVAL, jitter=0.1, timeout=2.0)
        for i, u in enumerate(urls)
    ]
    monitor = HealthMonitor(checks, http_limit=256, seed=1)
    monitor.add_result_listener(on_result)
    cpu0 = time.process_time()
    async with monitor:
        await asyncio.sleep(seconds)  # the measurement window itself
    cpu = time.process_time() - cpu0
    runs = len(drifts)
    return {
        "runs": runs,
        "failures": failures,
        "p50_drift_ms": percentile(drifts, 50) * 1000,
        "p99_drift_ms": percentile(drifts, 99) * 1000,
        "p99_drift_after_warmup_ms": percentile(steady, 99) * 1000,
        "max_drift_ms": max(drifts, default=0.0) * 1000,
        "cpu_per_check_us": cpu / max(1, runs) * 1e6,
        "checks_per_s": runs / seconds,
    }


async def run_bare_tasks(urls: list[str], seconds: float) -> dict[str, float]:
    """A task per URL with a timeout and nothing else: what our monitor adds to that."""
    drifts: list[float] = []
    connector = aiohttp.TCPConnector(limit=256)
    rng = random.Random(1)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> None:
            slot = time.monotonic() + rng.uniform(0, INTERVAL)
            while True:
                await asyncio.sleep(slot - time.monotonic())
                drifts.append(max(0.0, time.monotonic() - slot))
                try:
                    async with asyncio.timeout(2.0), session.get(url) as resp:
                        await resp.read()
                except (aiohttp.ClientError, TimeoutError):
                    pass
                slot += INTERVAL

        cpu0 = time.process_time()
        tasks = [asyncio.create_task(one(u)) for u in urls]
        await asyncio.sleep(seconds)  # the measurement window itself
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        cpu = time.process_time() - cpu0
    runs = len(drifts)
    return {
        "runs": runs,
        "p99_drift_ms": percentile(drifts, 99) * 1000,
        "cpu_per_check_us": cpu / max(1, runs) * 1e6,
    }


async def run_sequential(urls: list[str], seconds: float) -> dict[str, float]:
    drifts: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=256)
    cpu0 = time.process_time()
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        t0 = time.monotonic()
        end = t0 + seconds
        k = 0
        while time.monotonic() < end:
            nominal = t0 + k * INTERVAL
            for u in urls:
                drifts.append(max(0.0, time.monotonic() - nominal))
                async with session.get(u) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures += 1
                if time.monotonic() >= end:
                    break
            k += 1
            wait = t0 + k * INTERVAL - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
    cpu = time.process_time() - cpu0
    runs = len(drifts)
    return {
        "runs": runs,
        "failures": failures,
        "p50_drift_ms": percentile(drifts, 50) * 1000,
        "p99_drift_ms": percentile(drifts, 99) * 1000,
        "max_drift_ms": max(drifts, default=0.0) * 1000,
        "cpu_per_check_us": cpu / max(1, runs) * 1e6,
        "checks_per_s": runs / seconds,
    }


async def main() -> None:
    args = parse_args(__doc__ or "")
    logging.disable(logging.CRITICAL)
    seconds = 5.0 if args.quick else 20.0
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SERVER,
        str(port),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        assert server.stdout is not None
        line = await asyncio.wait_for(server.stdout.readline(), 10)
        if line.strip() != b"ready":
            raise RuntimeError("target server did not start")
        urls = [f"http://127.0.0.1:{port}/svc/{i}" for i in range(CHECKS)]
        log(args, f"ours: {CHECKS} checks every {INTERVAL:g}s for {seconds:g}s ...")
        ours = await run_ours(urls, seconds)
        log(args, f"bare task per URL for {seconds:g}s ...")
        bare = await run_bare_tasks(urls, seconds)
        log(args, f"sequential loop for {seconds:g}s ...")
        seq = await run_sequential(urls, seconds)
    finally:
        server.kill()
        await server.wait()

    report = Report("bench_health")
    for name, figures in (("ours", ours), ("bare_tasks", bare), ("sequential", seq)):
        for key, value in figures.items():
            report.figure(f"{name}_{key}", round(value, 3))
    report.figure(
        "drift_p99_ratio_sequential_over_ours",
        round(seq["p99_drift_ms"] / max(ours["p99_drift_ms"], 1e-3), 1),
    )
    report.figure(
        "cpu_ratio_ours_over_bare_tasks",
        round(ours["cpu_per_check_us"] / max(bare["cpu_per_check_us"], 1e-3), 2),
    )
    report.figure(
        "cpu_ratio_ours_over_sequential",
        round(ours["cpu_per_check_us"] / max(seq["cpu_per_check_us"], 1e-3), 2),
    )
    report.target("ours p99 scheduling drift", ours["p99_drift_ms"], 100.0, "<=", "ms")
    report.target("ours CPU per check", ours["cpu_per_check_us"], 1000.0, "<=", "us")
    report.target("ours check failures", ours["failures"], 0, "<=", "")
    report.target(
        "ours checks per second (1,000 at 1 s)", ours["checks_per_s"], 0.95 * CHECKS, ">=", "/s"
    )
    report.notes.append(
        "the sequential loop has no timeouts: one hanging target would stop every check"
    )
    report.notes.append(
        "drift is not measured alike: ours is each run's start minus its own scheduled slot,"
        " and the monitor re-anchors a check that overran (no burst), so lateness does not"
        " accumulate in ours; the sequential loop is measured against a fixed grid. The"
        " checks-per-second target is what catches the monitor falling behind."
    )
    report.emit(args.json)


if __name__ == "__main__":
    asyncio.run(main())
