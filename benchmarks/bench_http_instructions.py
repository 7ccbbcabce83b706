"""ApiClient vs a bare aiohttp session in machine instructions: a ratio the host cannot blur.

``bench_http.py`` times ``ApiClient`` against a bare ``aiohttp.ClientSession`` on the
wall clock, which a shared 2-core host moves by tens of percent from one run to the
next. This companion runs the same two clients (GET of a tiny JSON document from
``bench_http.py``'s server, in its own process, 16 requests in flight) under
valgrind's callgrind and counts the instructions the client process executes per
request: that count barely moves from run to run, so it shows what a change to the
client costs or saves.

For each side it runs one process with N requests and one with N / 3 (both after
the same warm-up); the difference over the extra requests is the count per request.
The ratio bare / ApiClient is the throughput ratio a host where the client is the
bottleneck and every instruction costs the same would show.

Needs ``valgrind`` on PATH (skips with a note otherwise). Four processes under
callgrind: about three minutes with ``--quick`` (900 requests), six without
(2,700). Run: ``python benchmarks/bench_http_instructions.py [--quick] [--json]``
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

from _harness import Report, callgrind_instructions, free_port, log, parse_args

HERE = Path(__file__).resolve().parent
CONCURRENCY = 16
WARM_UP = 200


async def inner(side: str, n: int, base: str) -> None:
    """What one measured process does: warm up, then ``n`` GETs with ``side``'s client."""
    import aiohttp

    from fokha_integration.http import ApiClient

    session = aiohttp.ClientSession()
    client = ApiClient(base)

    async def bare() -> None:
        async with session.get(base + "/ping") as resp:
            await resp.read()

    async def ours() -> None:
        await client.get("/ping")

    one = bare if side == "bare" else ours

    async def drive(count: int) -> None:
        counter = itertools.count()

        async def worker() -> None:
            while next(counter) < count:
                await one()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    await drive(WARM_UP)
    await drive(n)
    await client.close()
    await session.close()


def instructions(valgrind: str, side: str, n: int, base: str) -> int:
    """Instructions callgrind counted for one client process making n requests."""
    return callgrind_instructions(valgrind, __file__, side, str(n), base)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--inner":
        asyncio.run(inner(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
        return
    args = parse_args(__doc__ or "")
    report = Report("bench_http_instructions")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        report.notes.append("skipped: valgrind is not installed")
        report.emit(args.json)
        return
    n = 900 if args.quick else 2700
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "bench_http.py"), "--serve", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    per: dict[str, float] = {}
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        base = f"http://127.0.0.1:{port}"
        for side in ("bare", "api_client"):
            log(args, f"{side}: callgrind with {n} requests and with {n // 3}")
            many = instructions(valgrind, side, n, base)
            few = instructions(valgrind, side, n // 3, base)
            per[side] = (many - few) / (n - n // 3)
    finally:
        server.kill()
        server.wait()
    report.figure("bare_session_instructions_per_request", round(per["bare"]))
    report.figure("api_client_instructions_per_request", round(per["api_client"]))
    ratio = round(per["bare"] / per["api_client"], 3)
    report.target("ApiClient cost vs bare session (instructions)", ratio, 0.9, ">=", "x")
    report.notes.append(
        "the bare session pays its default 300 s timeout (about 27k instructions per "
        "request); the client's session sets none and bounds each attempt itself"
    )
    report.emit(args.json)


if __name__ == "__main__":
    main()
