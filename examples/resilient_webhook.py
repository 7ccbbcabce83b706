"""Post signals to a webhook (e.g. n8n) with retry and a circuit breaker.

Run: ``python examples/resilient_webhook.py http://127.0.0.1:5678/webhook/signals``

Each signal is posted with retries (full jitter, honouring Retry-After); when the
receiver keeps failing, the breaker opens and the program stops hammering it,
reporting when it will try again.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from fokha_integration import CircuitBreaker, CircuitOpenError, RetryPolicy, Signal


async def main(url: str) -> None:
    breaker = CircuitBreaker("webhook", failure_threshold=3, open_duration=15)
    retry = RetryPolicy(attempts=4, initial=0.2, max_delay=3, deadline=10)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def post(signal: Signal) -> None:
            body = signal.to_json().encode()
            headers = {"content-type": "application/json", "idempotency-key": signal.id}
            async with session.post(url, data=body, headers=headers) as resp:
                resp.raise_for_status()

        for symbol in ("EURUSD", "GBPUSD", "XAUUSD"):
            signal = Signal(symbol=symbol, direction="BUY", volume=0.1, strategy="example")
            try:
                await retry.call(breaker.call, post, signal)
                print(f"sent {signal.id} {symbol}")
            except CircuitOpenError as exc:
                print(f"not sent {symbol}: receiver unhealthy, retry in {exc.retry_after:.0f}s")
            except (aiohttp.ClientError, TimeoutError) as exc:
                print(f"not sent {symbol}: {exc!r}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    asyncio.run(main(sys.argv[1]))
