"""``fokha serve [CONFIG] [--demo]`` and ``fokha init [PATH]``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["STARTER_CONFIG", "add_parsers", "run_init", "run_serve"]

STARTER_CONFIG = """\
# fokha serve configuration. Every key is optional; the values shown are the defaults.
# Secrets may come from the environment: secret = "${FOKHA_SECRET}".

[server]
host = "127.0.0.1"        # listen here only; anything else needs a secret
http_port = 8080          # REST API, console (/console), /health, /metrics
ws_port = 8765            # WebSocket protocol v1
state_dir = ".fokha"      # SQLite files and the instance lock
secret = "${FOKHA_SECRET}" # HMAC secret for tokens (fokha ws token mints them)
shutdown_deadline = 10.0  # seconds SIGTERM waits for the drain

[websocket]
heartbeat = 15.0
allow_publish = false

[bridge]
enabled = true
path = "auto"             # the MT5 terminal's MQL5/Files/fokha, found automatically
fail_after = 10.0         # seconds without an EA heartbeat before the EA check fails

[queue]
store = "sqlite"          # sqlite | memory | redis
fail_mode = "closed"      # dedup when its backend is down: refuse (closed) or pass (open)

[[sinks]]
kind = "websocket"
name = "app"
channel = "signals"

[[sinks]]
kind = "bridge"
name = "ea"

# [[sinks]]
# kind = "webhook"
# name = "n8n"
# url = "http://127.0.0.1:5678/webhook/fokha"
# secret = "${N8N_WEBHOOK_SECRET}"

[health]
interval = 2.0

[console]
enabled = true
"""


def add_parsers(sub: Any) -> None:
    """Register ``fokha serve`` and ``fokha init``."""
    serve = sub.add_parser("serve", help="run the integration hub from a config file")
    serve.add_argument("config", nargs="?", metavar="CONFIG", help="fokha.toml")
    serve.add_argument(
        "--demo", action="store_true", help="embedded defaults, EA emulator, price feed"
    )
    init = sub.add_parser("init", help="write a commented starter config")
    init.add_argument("path", nargs="?", default="fokha.toml", metavar="PATH")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")


def run_init(args: argparse.Namespace) -> int:
    """Write the starter config; refuses to overwrite without ``--force``."""
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"fokha init: {path} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    path.write_text(STARTER_CONFIG, encoding="utf-8")
    print(f"wrote {path}; edit it, then: fokha serve {path}")
    return 0


def preflight(config: Any) -> None:
    """Checks that need the network, before anything starts: a fail-closed Redis must answer.

    Raises a ServeConfigError naming the file, line and key.
    """
    from ._config import ServeConfigError

    if config.queue.store != "redis":
        return
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(config.queue.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.settimeout(2.0)
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        answer = f"{exc}".encode()
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        line = config.line_of("queue.url") or config.line_of("queue.store")
        reason = f"Redis at {host}:{port} does not answer ({answer[:60].decode(errors='replace')})"
        if config.queue.fail_mode == "closed":
            raise ServeConfigError(
                config.source, line, "queue.url", reason + "; fail_mode is closed"
            )


def run_serve(args: argparse.Namespace) -> int:
    """Validate the config, start the hub, run until SIGTERM/SIGINT; exit code 2 on bad config."""
    from ..errors import ConfigError
    from ._config import ServeConfig, ServerSection, SinkSection, load_config
    from ._hub import Hub, HubAlreadyRunningError

    if args.demo:
        state = Path(tempfile.mkdtemp(prefix="fokha-demo-"))
        config = ServeConfig(
            server=ServerSection(http_port=0, ws_port=0, state_dir=str(state)),
            sinks=(
                SinkSection(kind="websocket", name="app"),
                SinkSection(kind="bridge", name="ea"),
            ),
        )
        config = dataclasses.replace(
            config, bridge=dataclasses.replace(config.bridge, path="emulator")
        )
    elif args.config is None:
        print("fokha serve: give a config file (fokha init writes one) or --demo", file=sys.stderr)
        return 2
    else:
        try:
            config = load_config(args.config)
            preflight(config)
        except ConfigError as exc:
            print(f"fokha serve: {exc}", file=sys.stderr)
            return 2

    async def main() -> int:
        hub = Hub(config, demo=args.demo)
        try:
            await hub.start()
        except HubAlreadyRunningError as exc:
            print(f"fokha serve: {exc}", file=sys.stderr)
            return 2
        except ConfigError as exc:
            print(f"fokha serve: {config.source}: {exc}", file=sys.stderr)
            return 2
        host = config.server.host
        print(f"console:   http://{host}:{hub.http_port}/console", flush=True)
        print(f"websocket: {hub.ws_url}", flush=True)
        print(f"token:     {hub.console_token(ttl=12 * 3600)}", flush=True)
        if hub.metrics_token is not None:
            print(f"metrics:   Authorization: Bearer {hub.metrics_token}", flush=True)

        def reload() -> None:
            if args.config is None:
                print("reload: the demo has no config file", flush=True)
                return
            try:
                new = load_config(args.config)
            except ConfigError as exc:
                print(f"reload refused, still running the old config: {exc}", flush=True)
                return
            report = hub.reload(new)
            print(
                "reload: applied "
                + (", ".join(report.applied) or "nothing")
                + "; needs a restart: "
                + (", ".join(report.needs_restart) or "nothing"),
                flush=True,
            )

        hub.install_signal_handlers(on_reload=reload)
        await hub.wait_ready(timeout=30.0)
        print("ready", flush=True)
        await hub.run_until_stopped()
        return 0

    return asyncio.run(main())
