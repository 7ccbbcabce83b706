"""Test support: timeouts scaled for slow machines, free ports, a private redis-server.

``FOKHA_TEST_TIMEOUT_SCALE`` multiplies every timeout the tests wait with (default 1).
Sizes: long tests run small by default and at full size under ``make test-all``
(``FOKHA_FULL_SIZE=1``), or at the size one variable names (:func:`size`,
:func:`examples`); docs/topics/testing.md lists them.
The ``redis_server`` fixture starts its own ``redis-server`` on a free port for the
session (never the machine's shared one); without the binary, Redis tests skip with
a reason locally and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_SCALE = float(os.environ.get("FOKHA_TEST_TIMEOUT_SCALE", "1"))
FULL_SIZE = os.environ.get("FOKHA_FULL_SIZE", "") not in ("", "0")


def size(variable: str, default: int, full: int) -> int:
    """A size: ``$variable`` when set, else ``full`` under make test-all, else ``default``."""
    value = os.environ.get(variable)
    if value:
        return int(value)
    return full if FULL_SIZE else default


def examples(full: int, default: int | None = None) -> int:
    """Hypothesis ``max_examples``: ``full`` under make test-all, else ``default`` (full / 5)."""
    if FULL_SIZE:
        return full
    return default if default is not None else max(10, full // 5)


def timeout(seconds: float) -> float:
    """A wait bound for tests, scaled by FOKHA_TEST_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_redis(*, client: bool = True) -> None:
    """Skip the calling test (locally) or fail it (under ``CI=true``) when
    ``redis-server`` is not on PATH, or, with ``client``, the redis extra is missing."""
    import pytest

    ci = os.environ.get("CI") == "true"
    if shutil.which("redis-server") is None:
        if ci:
            pytest.fail("redis-server is not installed; .ci/run should have installed it")
        pytest.skip("redis-server binary not found on PATH")
    if client:
        try:
            import redis  # noqa: F401
        except ImportError:
            if ci:
                pytest.fail("the redis extra is not installed (the Makefile's TEST_EXTRAS has it)")
            pytest.skip("the redis extra is not installed")


@dataclass
class RedisServer:
    """A private redis-server process the tests control (stop/start for outage tests)."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    # Nothing on disk by default; a crash test passes AOF settings instead.
    persistence: tuple[str, ...] = ("--save", "", "--appendonly", "no")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *self.persistence,
                "--dir",
                str(self.workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout(10)
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)  # polling a subprocess's port: no event to wait on
        raise RuntimeError("redis-server did not answer PING in time")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server (SIGSTOP/SIGCONT to pause it)."""
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused server cannot terminate
            self.proc.terminate()
            try:
                self.proc.wait(timeout(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def flushall(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(16).startswith(b"+OK")


def postgres_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or None when PostgreSQL is not installed.

    Debian keeps the server binaries off PATH, in ``/usr/lib/postgresql/<version>/bin``;
    the newest version found there wins, then PATH.
    """
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class PostgresServer:
    """A private PostgreSQL server in a temp dir on a free port (never the shared one).

    ``initdb`` refuses to run as root, so as root every server command runs as the
    ``postgres`` user (``runuser``), and the data directory is handed to that user.
    Authentication is ``trust`` on 127.0.0.1 only; ``fsync`` is off because the tests
    kill clients, never the server, and the OS keeps what was written.
    """

    port: int
    workdir: Path
    bin_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    _databases: int = 0

    @property
    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection URL for ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster (``initdb``)."""
        self.data_dir.mkdir(parents=True)
        (self.workdir / "sock").mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(self.data_dir, "postgres")
            shutil.chown(self.workdir / "sock", "postgres")
        subprocess.run(
            [
                *self._as_owner,
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout(120),
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.proc = subprocess.Popen(
            [
                *self._as_owner,
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.workdir / "sock"),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout(30)
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}")
            time.sleep(0.05)  # polling a subprocess's port: no event to wait on
        raise RuntimeError("postgres did not accept connections in time")

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql and return its unaligned output."""
        psql = shutil.which("psql") or str(self.bin_dir / "psql")
        out = subprocess.run(
            [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database)],
            input=sql.encode(),
            check=True,
            capture_output=True,
            timeout=timeout(60),
        )
        return out.stdout.decode()

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown; SIGKILL if it does not go)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout(30))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
