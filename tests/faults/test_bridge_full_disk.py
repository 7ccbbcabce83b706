"""Fault injection: a full disk under a FileBridge, on the sending and on the replying side.

``OSError(ENOSPC)`` is injected at the write boundary (``os.write`` on files in one
folder, after a few bytes, as a filling disk does); as root a real size-limited tmpfs
is used too. The invariant: every message the caller saw accepted (or retried with
the same id after a ``BackendUnavailableError``) is handled exactly once, every
request is executed once and answered, no partial file stays in ``tmp/``, the error
log does not storm, and the event loop is never blocked longer than 100 ms.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections import Counter as Tally
from collections.abc import Iterator
from pathlib import Path

import pytest

from fokha_integration.bridge import FileBridge
from fokha_integration.errors import BackendUnavailableError
from tests.bridge.helpers import LoopLagSampler, files, full_disk_at, wait_until
from tests.bridge.test_bridge import FAST, Counter, ea_bridge
from tests.support import timeout

LAG_BOUND = 0.1


async def test_sends_on_an_intermittently_full_disk_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    """Every third frame write fails with ENOSPC: each failed send raises
    BackendUnavailableError and leaves nothing; retried with the same id, every message
    is handled exactly once."""
    writes = 0

    def every_third(_: str) -> bool:
        nonlocal writes
        writes += 1
        return writes % 3 == 0

    handler = Counter()
    n = 30
    failures = 0
    async with (
        LoopLagSampler() as lag,
        ea_bridge(tmp_path, handler) as _,
        FileBridge(tmp_path, receive=False, heartbeat_interval=None, poll=FAST) as py,
    ):
        with full_disk_at(tmp_path / "py2ea" / "tmp", when=every_third) as failed:
            for i in range(n):
                for _attempt in range(5):
                    try:
                        await py.send("note", {"n": i}, id=f"m{i:03d}")
                        break
                    except BackendUnavailableError:
                        failures += 1
                        assert files(tmp_path / "py2ea" / "tmp") == []
        await wait_until(lambda: len(handler.calls) >= n, 10)
    assert failures == len(failed) > 0
    seen = Tally(m.id for m in handler.calls)
    assert sorted(seen) == [f"m{i:03d}" for i in range(n)]
    assert [k for k, c in seen.items() if c != 1] == []
    assert files(tmp_path / "py2ea" / "tmp") == []
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"


async def test_replies_on_a_full_disk_run_each_request_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The replying side's disk is full for its first reply writes: each request is still
    executed exactly once and gets its reply once space returns, with no error-log storm."""
    remaining = 6

    def first_six(_: str) -> bool:
        nonlocal remaining
        remaining -= 1
        return remaining >= 0

    caplog.set_level(logging.INFO, logger="fokha_integration.bridge")
    handler = Counter()
    n = 5
    async with (
        LoopLagSampler() as lag,
        ea_bridge(tmp_path, handler) as ea,
        FileBridge(tmp_path, heartbeat_interval=None, poll=FAST) as py,
    ):
        with full_disk_at(tmp_path / "ea2py" / "tmp", when=first_six) as failed:
            replies = [
                await py.request("order", {"n": i}, id=f"r{i}", timeout=10, resend_after=0.2)
                for i in range(n)
            ]
        stats = ea.stats()
    assert len(failed) == 6
    assert [r.ticket is not None for r in replies] == [True] * n
    executed = Tally(m.id for m in handler.calls if not m.redelivered)
    assert executed == {f"r{i}": 1 for i in range(n)}
    assert [m.id for m in handler.calls if m.redelivered] == []
    assert stats.handler_errors == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) <= len(failed), [r.getMessage() for r in errors]
    assert files(tmp_path / "ea2py" / "tmp") == []
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"


@pytest.fixture
def tmpfs_root(tmp_path: Path) -> Iterator[Path]:
    """A 128 KiB tmpfs (root only; skipped with a reason when mount is not allowed)."""
    target = tmp_path / "small"
    target.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not allowed here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


async def test_a_real_full_tmpfs_then_space_again(tmpfs_root: Path) -> None:
    """On a real tmpfs filled by a ballast file, sends fail with BackendUnavailableError and
    leave nothing in tmp/; after the ballast is removed the same ids are sent and each
    message is handled exactly once."""
    handler = Counter()
    async with (
        LoopLagSampler() as lag,
        ea_bridge(tmpfs_root, handler) as _,
        FileBridge(tmpfs_root, receive=False, heartbeat_interval=None, poll=FAST) as py,
    ):
        ballast = tmpfs_root / "ballast"
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 1024):
                pass
        except OSError:
            pass  # full: what the ballast is for
        finally:
            os.close(fd)
        refused = 0
        for i in range(5):
            try:
                await py.send("note", {"pad": "x" * 3000}, id=f"m{i}")
            except BackendUnavailableError:
                refused += 1
        assert refused > 0
        assert files(tmpfs_root / "py2ea" / "tmp") == []
        ballast.unlink()
        for i in range(5):
            await py.send("note", {"pad": "x" * 3000}, id=f"m{i}")
        await wait_until(lambda: len({m.id for m in handler.calls}) == 5, 10)
    seen = Tally(m.id for m in handler.calls)
    # A send that succeeded before the disk filled is sent again above with the same id:
    # the journal answers it as a duplicate, so each is still handled once.
    assert seen == {f"m{i}": 1 for i in range(5)}
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"
