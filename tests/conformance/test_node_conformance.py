"""Run the Node conformance script (``ws`` package) against real servers.

The script (``conformance.mjs``) is written from ``docs/protocols/websocket.md`` alone;
it is installed with ``npm ci`` from the committed lockfile. Without node/npm the test
skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fokha_integration.clock import ManualClock
from fokha_integration.ws import Limits, LocalBroker, TokenAuthenticator, WebSocketServer
from tests.support import TIMEOUT_SCALE, timeout

HERE = Path(__file__).resolve().parent
SECRET = "conformance-secret-0123456789abcdef0123"


def _node_ready() -> str:
    """The node binary, with the script's dependencies installed (npm ci)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are needed for the conformance script")
        pytest.skip("node/npm not installed")
    lock = HERE / "package-lock.json"
    stamp = HERE / "node_modules" / ".fokha-installed"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            check=True,
            timeout=timeout(300),
        )
        stamp.touch()
    return node


async def test_node_conformance_script_passes_every_case() -> None:
    """A Node client written from the spec passes every case (auth, tokens, resume,
    bad input, flood, oversized frame, drain, heartbeat shape)."""
    node = _node_ready()
    auth = TokenAuthenticator(SECRET)
    old = TokenAuthenticator(SECRET, clock=ManualClock(wall=1_000_000_000.0))
    other = TokenAuthenticator("another-secret-0123456789abcdef0123456")
    good = auth.issue("alice", ttl=600)
    forged = other.issue("mallory", ttl=600).rsplit(".", 1)[0] + "." + good.rsplit(".", 1)[1]
    servers = [
        WebSocketServer(
            authenticator=auth,
            allow_publish=True,
            broker=LocalBroker(history=5),
            limits=Limits(max_channels=3, max_frame_bytes=1024, rate=1000.0, burst=1000),
            heartbeat=0.5,
        ),
        WebSocketServer(limits=Limits(rate=2.0, burst=3), heartbeat=0.3),
        WebSocketServer(),
    ]
    for srv in servers:
        await srv.start()
    auth_srv, open_srv, drain_srv = servers
    config = {
        "auth": auth_srv.url,
        "open": open_srv.url,
        "drain": drain_srv.url,
        "scale": TIMEOUT_SCALE,
        "tokens": {
            "valid": good,
            "restricted": auth.issue("bob", ttl=600, channels=["prices.*"]),
            "expired": old.issue("alice", ttl=60),
            "forged": forged,
        },
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        str(HERE / "conformance.mjs"),
        json.dumps(config),
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout(60))
            if not raw:
                break
            line = raw.decode().rstrip()
            lines.append(line)
            if line == "DRAIN-NOW":
                await drain_srv.close(drain=timeout(2), retry_after=1.5)
        code = await asyncio.wait_for(proc.wait(), timeout(10))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for srv in servers:
            await srv.close()
    output = "\n".join(lines)
    failures = [line for line in lines if line.startswith("not ok")]
    assert code == 0 and not failures, output
    summary = lines[-1]
    passed = int(summary.split(" passed")[0])
    assert passed >= 20, output
