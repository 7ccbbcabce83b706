"""The HTTP layer next to its anchors, measured side by side in one run.

Rows:

* ``bare_session`` vs ``api_client``: GET of a tiny JSON document from a local
  aiohttp server (a separate process), 16 requests in flight; the ``ApiClient`` runs
  its whole middleware chain (metrics, breaker, retry policy; no retries happen).
  Throughput ratio and p99 latency ratio.
* ``app_plain`` vs ``app_idempotent``: POSTs with a fresh ``Idempotency-Key`` each
  to the same handler without and with ``idempotency_middleware`` (memory
  ``DedupCache``), through a bare session; throughput ratio.
* ``verify_webhook``: Standard Webhooks verification of a 200-byte body including
  header lookup in aiohttp's case-insensitive header mapping; verifications/s.

Rounds alternate the two sides so machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Report, free_port, log, parse_args, percentile

CONCURRENCY = 16


def serve(port: int) -> None:
    """The server process: /ping, /plain and /idem (with idempotency_middleware)."""
    from aiohttp import web

    from fokha_integration.dedup import DedupCache, MemoryDedupBackend
    from fokha_integration.http import idempotency_middleware, idempotent

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def order(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"accepted": True}, status=201)

    async def main() -> None:
        plain = web.Application()
        plain.router.add_get("/ping", ping)
        plain.router.add_post("/plain", order)
        cache = DedupCache(MemoryDedupBackend(max_entries=10**7))
        idem = web.Application(middlewares=[idempotency_middleware(cache)])
        idem.router.add_post("/idem", idempotent(order))
        plain.add_subapp("/i", idem)
        runner = web.AppRunner(plain, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


Call = Callable[[], Awaitable[None]]


async def _drive(n: int, one: Call) -> tuple[float, list[float]]:
    """Run ``n`` calls of ``one()`` with CONCURRENCY in flight; (seconds, latencies)."""
    latencies: list[float] = []
    counter = itertools.count()

    async def worker() -> None:
        while next(counter) < n:
            started = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started, latencies


async def client_rows(base: str, n: int, rounds: int, report: Report) -> None:
    import aiohttp

    from fokha_integration.http import ApiClient

    session = aiohttp.ClientSession()
    client = ApiClient(base)

    async def bare() -> None:
        async with session.get(base + "/ping") as resp:
            await resp.read()
            assert resp.status == 200

    async def ours() -> None:
        response = await client.get("/ping")
        assert response.status == 200

    results: dict[str, list[tuple[float, list[float]]]] = {"bare": [], "ours": []}
    await _drive(200, bare)
    await _drive(200, ours)  # warm both connection pools
    for _ in range(rounds):
        results["bare"].append(await _drive(n, bare))
        results["ours"].append(await _drive(n, ours))
    await client.close()
    await session.close()

    def summary(side: str) -> tuple[float, float]:
        runs = results[side]
        rate = sorted(n / seconds for seconds, _ in runs)[len(runs) // 2]
        p99 = sorted(percentile(lat, 99) for _, lat in runs)[len(runs) // 2]
        return rate, p99

    bare_rate, bare_p99 = summary("bare")
    our_rate, our_p99 = summary("ours")
    report.figure("bare_session req/s", round(bare_rate))
    report.figure("api_client req/s", round(our_rate))
    report.figure("bare_session p99 ms", round(bare_p99 * 1000, 3))
    report.figure("api_client p99 ms", round(our_p99 * 1000, 3))
    report.target(
        "ApiClient throughput vs bare session", round(our_rate / bare_rate, 3), 0.9, ">=", "x"
    )
    report.target("ApiClient p99 vs bare session", round(our_p99 / bare_p99, 3), 1.15, "<=", "x")


async def idempotency_rows(base: str, n: int, rounds: int, report: Report) -> None:
    import aiohttp

    session = aiohttp.ClientSession()
    keys = itertools.count()
    body = b'{"symbol":"EURUSD","direction":"BUY","volume":0.1}'

    def poster(path: str, keyed: bool) -> Call:
        async def one() -> None:
            headers = {"Content-Type": "application/json"}
            if keyed:
                headers["Idempotency-Key"] = f"k{next(keys)}"
            async with session.post(base + path, data=body, headers=headers) as resp:
                await resp.read()
                assert resp.status == 201

        return one

    plain, idem = poster("/plain", False), poster("/i/idem", True)
    await _drive(200, plain)
    await _drive(200, idem)
    plain_rates, idem_rates = [], []
    for _ in range(rounds):
        plain_rates.append(n / (await _drive(n, plain))[0])
        idem_rates.append(n / (await _drive(n, idem))[0])
    await session.close()
    plain_rate = sorted(plain_rates)[rounds // 2]
    idem_rate = sorted(idem_rates)[rounds // 2]
    report.figure("app_plain req/s", round(plain_rate))
    report.figure("app_idempotent req/s", round(idem_rate))
    report.target(
        "idempotency_middleware throughput vs plain app",
        round(idem_rate / plain_rate, 3),
        0.8,
        ">=",
        "x",
    )


def webhook_row(n: int, report: Report) -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from fokha_integration.http import generate_webhook_secret, verify_webhook, webhook_headers

    secret = generate_webhook_secret()
    body = b'{"symbol":"EURUSD","direction":"BUY","volume":0.1,"id":"' + b"x" * 140 + b'"}'
    now = int(time.time())
    raw = webhook_headers("msg_2x8f7Yh3", body, secret, timestamp=now)
    headers = CIMultiDictProxy(
        CIMultiDict(
            {
                "Host": "127.0.0.1",
                "Content-Type": "application/json",
                "Webhook-Id": raw["webhook-id"],
                "Webhook-Timestamp": raw["webhook-timestamp"],
                "Webhook-Signature": raw["webhook-signature"],
            }
        )
    )
    verify_webhook(headers, body, secret, now=now)
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            verify_webhook(headers, body, secret, now=now)
        rates.append(n / (time.perf_counter() - started))
    rate = sorted(rates)[1]
    report.figure("verify_webhook /s", round(rate))
    report.target("verify_webhook with header parsing", round(rate), 50_000, ">=", "/s")


async def network_rows(base: str, n: int, rounds: int, report: Report, args: Any) -> None:
    log(args, f"client rows: {n} requests x {rounds} rounds, {CONCURRENCY} in flight")
    await client_rows(base, n, rounds, report)
    log(args, "idempotency rows")
    await idempotency_rows(base, n, rounds, report)


def main() -> None:
    args = parse_args(__doc__ or "")
    n, rounds = (1_000, 3) if args.quick else (5_000, 5)
    report = Report("bench_http")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        asyncio.run(network_rows(f"http://127.0.0.1:{port}", n, rounds, report, args))
    finally:
        server.kill()
        server.wait()
    log(args, "verify_webhook row")
    webhook_row(20_000 if args.quick else 100_000, report)
    report.notes.append(f"median of {rounds} alternating rounds; server in its own process")
    report.emit(args.json)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        main()
