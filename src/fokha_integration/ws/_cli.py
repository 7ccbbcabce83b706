"""``fokha ws``: serve channels, issue tokens, tail a channel from the command line.

* ``fokha ws serve [--host 127.0.0.1] [--port 8765] [--redis URL] [--feed]``: a
  WebSocketServer; with ``FOKHA_WS_SECRET`` set, hello tokens are required;
  ``--feed`` publishes a synthetic ``prices.EURUSD``/``prices.GBPUSD`` feed.
* ``fokha ws token SUBJECT [--ttl 3600] [--channel PATTERN ...]``: print a token
  signed with ``FOKHA_WS_SECRET``.
* ``fokha ws tail URL CHANNEL... [--token T] [--count N]``: print messages.

The secret comes from the environment, never from the command line (where other
users could read it in the process list).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys

from ._auth import TokenAuthenticator
from ._client import WebSocketClient
from ._server import WebSocketServer
from .brokers import Broker, LocalBroker

__all__ = ["add_parser", "run"]

SECRET_ENV = "FOKHA_WS_SECRET"  # noqa: S105 - the name of the variable, not a secret


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ws`` and its subcommands to the ``fokha`` parser."""
    ws = sub.add_parser("ws", help="WebSocket streaming: serve, token, tail")
    cmds = ws.add_subparsers(dest="ws_command", metavar="WS_COMMAND")
    serve = cmds.add_parser("serve", help=f"run a WebSocketServer (auth when ${SECRET_ENV})")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--redis", metavar="URL", help="use a RedisBroker (scale-out)")
    serve.add_argument("--feed", action="store_true", help="publish a synthetic price feed")
    token = cmds.add_parser("token", help=f"print a token signed with ${SECRET_ENV}")
    token.add_argument("subject")
    token.add_argument("--ttl", type=float, default=3600.0)
    token.add_argument("--channel", action="append", metavar="PATTERN")
    tail = cmds.add_parser("tail", help="print the messages of channels")
    tail.add_argument("url")
    tail.add_argument("channels", nargs="+")
    tail.add_argument("--token")
    tail.add_argument("--count", type=int, default=0, help="stop after N messages")


def _secret() -> str | None:
    return os.environ.get(SECRET_ENV) or None


async def _serve(args: argparse.Namespace) -> int:
    secret = _secret()
    auth = TokenAuthenticator(secret) if secret else None
    broker: Broker
    if args.redis:
        from .brokers.redis import RedisBroker

        broker = RedisBroker(args.redis)
    else:
        broker = LocalBroker()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with WebSocketServer(
        host=args.host, port=args.port, broker=broker, authenticator=auth
    ) as server:
        print(f"serving {server.url} (auth: {'on' if auth else 'off'})", flush=True)
        feeder = asyncio.create_task(_feed(server)) if args.feed else None
        await stop.wait()
        if feeder is not None:
            feeder.cancel()
        await server.close(drain=2.0, retry_after=1.0)
    return 0


async def _feed(server: WebSocketServer) -> None:
    rng = random.Random()
    mids = {"EURUSD": 1.0842, "GBPUSD": 1.2671}
    while True:
        for symbol in mids:
            mids[symbol] = mid = round(mids[symbol] + rng.gauss(0, 0.0002), 5)
            data = {"symbol": symbol, "bid": round(mid - 5e-5, 5), "ask": round(mid + 5e-5, 5)}
            await server.publish(f"prices.{symbol}", data)
        await asyncio.sleep(0.1)


async def _tail(args: argparse.Namespace) -> int:
    async with WebSocketClient(args.url, token=args.token) as client:
        await client.subscribe(*args.channels)
        seen = 0
        async for msg in client:
            print(f"{msg.channel} #{msg.seq} {msg.kind} {msg.data}", flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen ``fokha ws`` subcommand; the exit code."""
    if args.ws_command == "serve":
        return asyncio.run(_serve(args))
    if args.ws_command == "token":
        secret = _secret()
        if secret is None:
            print(f"set {SECRET_ENV} (at least 32 bytes) first", file=sys.stderr)
            return 2
        print(TokenAuthenticator(secret).issue(args.subject, ttl=args.ttl, channels=args.channel))
        return 0
    if args.ws_command == "tail":
        return asyncio.run(_tail(args))
    print("usage: fokha ws {serve,token,tail} ...", file=sys.stderr)
    return 2
