"""`fokha health` and its TOML target file: parsing, errors, table and exit codes."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fokha_integration import ConfigError
from fokha_integration.health import load_targets, parse_targets
from tests.support import free_port, timeout


def test_parse_targets_builds_checks_with_defaults() -> None:
    """[defaults] apply to every [[check]]; per-check keys override; types are checked."""
    checks = parse_targets(
        {
            "defaults": {"interval": 5, "timeout": 2},
            "check": [
                {"type": "http", "url": "http://127.0.0.1:1/h", "name": "api", "timeout": 1},
                {"type": "tcp", "host": "127.0.0.1", "port": 6379, "critical": False},
                {"type": "file", "path": "/tmp/hb", "max_age": 30, "groups": ["live"]},
                {"type": "redis", "url": "redis://127.0.0.1:6379/0"},
                {"type": "websocket", "url": "ws://127.0.0.1:1/ws", "ping": False},
            ],
        }
    )
    api, tcp, hb, redis, ws = checks
    assert (api.key, api.interval, api.timeout) == ("api:responseTime", 5.0, 1.0)
    assert tcp.critical is False
    assert tcp.timeout == 2.0
    assert hb.groups == frozenset({"live"})
    assert redis.key == "redis:pingTime"
    assert ws.key == "127.0.0.1:connectTime"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"check": []}, "check"),
        ({"checks": [{}]}, "checks"),
        ({"check": [{"type": "gopher"}]}, "check[0].type"),
        ({"check": [{"type": "tcp", "host": "h"}]}, "check[0].port"),
        ({"check": [{"type": "tcp", "host": "h", "port": "80"}]}, "check[0].port"),
        ({"check": [{"type": "tcp", "host": "h", "port": 1, "critcal": True}]}, "check[0].critcal"),
        ({"defaults": {"intervl": 1}, "check": [{"type": "tcp", "host": "h", "port": 1}]},
         "defaults.intervl"),
        ({"check": [{"type": "tcp", "host": "h", "port": 1}] * 2}, "check"),
    ],
)  # fmt: skip
def test_bad_targets_name_the_field(doc: dict[str, object], field: str) -> None:
    """Typos, missing keys, wrong types and duplicates are ConfigErrors naming the field."""
    with pytest.raises(ConfigError) as info:
        parse_targets(doc)
    assert info.value.field == field


def test_load_targets_rejects_bad_toml(tmp_path: Path) -> None:
    """A file that is not TOML is a ConfigError, not a crash."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[[check]\ntype=")
    with pytest.raises(ConfigError, match="TOML"):
        load_targets(bad)


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A plain listening socket: the kernel completes TCP handshakes into its backlog."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def fokha(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fokha_integration.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=False,
    )


def test_cli_exit_codes_and_table(tmp_path: Path, listening_port: int) -> None:
    """`fokha health`: 0 when all pass, 1 when an optional check fails, 2 when a critical fails."""
    closed = free_port()
    up = f'[[check]]\ntype = "tcp"\nhost = "127.0.0.1"\nport = {listening_port}\nname = "up"\n'
    down = f'[[check]]\ntype = "tcp"\nhost = "127.0.0.1"\nport = {closed}\nname = "down"\n'
    cfg = tmp_path / "t.toml"

    cfg.write_text("[defaults]\ntimeout = 2\n" + up)
    done = fokha("health", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "PASS" in done.stdout
    assert "up:connectTime" in done.stdout
    assert "overall: PASS" in done.stdout

    cfg.write_text("[defaults]\ntimeout = 2\n" + up + down + "critical = false\n")
    done = fokha("health", str(cfg))
    assert done.returncode == 1, done.stdout
    assert "down:connectTime (optional)" in done.stdout

    cfg.write_text("[defaults]\ntimeout = 2\n" + up + down)
    done = fokha("health", str(cfg))
    assert done.returncode == 2, done.stdout
    assert "overall: FAIL" in done.stdout

    done = fokha("health", "--watch", "--every", "0.2", "--for", "0.5", str(cfg))
    assert done.returncode == 2
    assert done.stdout.count("overall: FAIL") >= 2


def test_cli_bad_file_exit_code(tmp_path: Path) -> None:
    """A bad targets file exits 3 with the field named on stderr."""
    cfg = tmp_path / "t.toml"
    cfg.write_text('[[check]]\ntype = "tcp"\nhost = "x"\n')
    done = fokha("health", str(cfg))
    assert done.returncode == 3
    assert "check[0].port" in done.stderr
