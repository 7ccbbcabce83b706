"""``fokha db migrate|status`` against a private PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fokha_integration.cli import main
from tests.support import free_port, timeout

pytest.importorskip("asyncpg")

CLI = "from fokha_integration.cli import main; raise SystemExit(main())"


def test_three_processes_migrating_at_once_apply_each_step_once(postgres_dsn: str) -> None:
    """Three `fokha db migrate` processes started together: one applies, the others find
    nothing to do; status then says up to date."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLI, "db", "migrate", "--dsn", postgres_dsn, "--prefix", "m_"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=timeout(60)) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    texts = sorted(out for out, _ in outs)
    assert texts[0].startswith("applied: 1, 2;")
    assert all(t.startswith("applied: nothing") for t in texts[1:])
    status = subprocess.run(
        [sys.executable, "-c", CLI, "db", "status", "--dsn", postgres_dsn, "--prefix", "m_"],
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=True,
    )
    assert "up to date" in status.stdout


def test_unreachable_server_and_bad_prefix_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """A server that is not there, or a bad prefix, is a clear message and exit code 1."""
    dsn = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/none"
    assert main(["db", "migrate", "--dsn", dsn, "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "[postgres]" in err and "secret" not in err
    assert main(["db", "migrate", "--dsn", dsn, "--prefix", "Bad-Prefix"]) == 1
    assert "prefix" in capsys.readouterr().err
