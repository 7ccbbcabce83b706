"""``fokha ws``: token, serve --feed and tail, as real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from fokha_integration.ws import TokenAuthenticator
from tests.support import free_port, timeout

SECRET = "cli-secret-0123456789abcdef-0123456789"
FOKHA = [sys.executable, "-m", "fokha_integration.cli"]


def test_token_command_prints_a_valid_token() -> None:
    """`fokha ws token` signs with FOKHA_WS_SECRET and honours --channel."""
    env = {**os.environ, "FOKHA_WS_SECRET": SECRET}
    out = subprocess.run(
        [*FOKHA, "ws", "token", "phone", "--ttl", "60", "--channel", "prices.*"],
        env=env, capture_output=True, text=True, timeout=timeout(30), check=True,
    )  # fmt: skip
    principal = TokenAuthenticator(SECRET).verify(out.stdout.strip())
    assert (principal.subject, principal.channels) == ("phone", ("prices.*",))


def test_token_command_needs_the_secret() -> None:
    """Without FOKHA_WS_SECRET the token command refuses with exit code 2."""
    env = {k: v for k, v in os.environ.items() if k != "FOKHA_WS_SECRET"}
    out = subprocess.run(
        [*FOKHA, "ws", "token", "x"], env=env, capture_output=True, text=True,
        timeout=timeout(30), check=False,
    )  # fmt: skip
    assert out.returncode == 2


def test_serve_with_feed_and_tail() -> None:
    """`fokha ws serve --feed` streams prices that `fokha ws tail --count 3` prints."""
    port = free_port()
    env = {**os.environ, "FOKHA_WS_SECRET": SECRET}
    server = subprocess.Popen(
        [*FOKHA, "ws", "serve", "--port", str(port), "--feed"],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        assert server.stdout.readline().startswith(f"serving ws://127.0.0.1:{port}/")
        token = TokenAuthenticator(SECRET).issue("cli", ttl=60)
        tail = subprocess.run(
            [*FOKHA, "ws", "tail", f"ws://127.0.0.1:{port}/", "prices.EURUSD",
             "--token", token, "--count", "3"],
            capture_output=True, text=True, timeout=timeout(30), check=True,
        )  # fmt: skip
        lines = tail.stdout.strip().splitlines()
        assert len(lines) == 3
        assert all(line.startswith("prices.EURUSD #") for line in lines)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout(15)) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
