"""Fault injection: odd entries in every folder a FileBridge reads or prunes.

A directory, a FIFO, a symbolic link and an unreadable file, each named like what the
folder holds, in the incoming ``new/``, ``cur/`` and ``snap/`` and in this side's own
``tmp/`` and ``snap/``. Each case asserts the invariant, not the symptom:

- every real message around the odd entry is handled exactly once;
- the odd entry ends in the direction's ``bad/`` with a reason (or, where the
  bridge only skips it, is never read as data);
- exactly one log line names it;
- the event loop is never blocked longer than 100 ms (a loop-lag sampler runs
  throughout; a watchdog thread releases a FIFO a blocking reader would hang on).

As root (where a mode of 000 does not stop a read) "unreadable" is a permission
error injected at ``os.open`` for that one path.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.bridge import FileBridge, encode_frame
from fokha_integration.models import canonical_json
from tests.bridge.helpers import FifoUnblocker, LoopLagSampler, files, wait_until
from tests.bridge.test_bridge import Counter, ea_bridge, name_of, request_frame
from tests.support import timeout

LAG_BOUND = 0.1
KINDS = ["directory", "fifo", "symlink", "unreadable"]


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Makes one path unreadable: mode 000 for a normal user, an injected EACCES at
    ``os.open`` as root (root reads through any mode)."""
    denied: set[str] = set()
    real_open = os.open

    def guarded_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if os.fspath(path) in denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, flags, *args, **kw)

    def make(path: Path) -> None:
        path.write_bytes(b"FOKHA 1 secret")
        if os.geteuid() == 0:
            denied.add(os.fspath(path))
            monkeypatch.setattr(os, "open", guarded_open)
        else:
            path.chmod(0)

    return make


def make_odd(kind: str, path: Path, make_unreadable: Callable[[Path], None]) -> None:
    """Create an odd entry of ``kind`` at ``path``."""
    if kind == "directory":
        path.mkdir()
        (path / "inside.txt").write_text("x")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        # A link to a perfectly valid frame outside the folder: following it would run
        # whatever the link points at.
        target = path.parent.parent.parent / "outside.fkb"
        target.write_bytes(request_frame("linked-1", 1))
        path.symlink_to(target)
    else:
        make_unreadable(path)


def log_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("fokha_integration.bridge") and name in r.getMessage()
    ]


def reason_code(bad: Path, name: str) -> str:
    code: str = json.loads((bad / f"{name}.reason.json").read_text())["code"]
    return code


@pytest.fixture
def watched(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the bridge's log lines from INFO up."""
    caplog.set_level(logging.INFO, logger="fokha_integration.bridge")


def expected_code(kind: str) -> str:
    return "unreadable" if kind == "unreadable" else "not_a_file"


@pytest.mark.usefixtures("watched")
@pytest.mark.parametrize("kind", KINDS)
async def test_odd_entry_in_new(
    tmp_path: Path,
    kind: str,
    caplog: pytest.LogCaptureFixture,
    unreadable: Callable[[Path], None],
) -> None:
    """An odd entry in the incoming new/: the messages around it are each handled once, it
    goes to bad/ with a reason and one log line, and the loop is never blocked."""
    new = tmp_path / "py2ea" / "new"
    new.mkdir(parents=True)
    (new / name_of("good-0", 1)).write_bytes(request_frame("good-0", 1))
    odd = name_of("odd-1", 2)
    make_odd(kind, new / odd, unreadable)
    handler = Counter()
    with FifoUnblocker(new / odd, after=0.5) as unblocker:
        async with LoopLagSampler() as lag, ea_bridge(tmp_path, handler, grace=0.05) as ea:
            for i in range(3, 6):
                (new / name_of(f"good-{i}", i)).write_bytes(request_frame(f"good-{i}", i))
            await wait_until(lambda: len(handler.calls) == 4, 5)
            await wait_until(lambda: odd in files(tmp_path / "py2ea" / "bad"), 5)
    assert sorted(m.id for m in handler.calls) == ["good-0", "good-3", "good-4", "good-5"]
    assert not unblocker.released
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"
    assert reason_code(tmp_path / "py2ea" / "bad", odd) == expected_code(kind)
    assert files(new) == []
    assert len(log_lines(caplog, odd)) == 1
    assert ea.stats().bad == 1


@pytest.mark.usefixtures("watched")
@pytest.mark.parametrize("kind", KINDS)
async def test_odd_entry_in_cur(
    tmp_path: Path,
    kind: str,
    caplog: pytest.LogCaptureFixture,
    unreadable: Callable[[Path], None],
) -> None:
    """An odd entry in cur/ found by start-up reconciliation goes to bad/ (one log line);
    a real claimed message beside it is handled once, and the loop is never blocked."""
    cur = tmp_path / "py2ea" / "cur"
    cur.mkdir(parents=True)
    (tmp_path / "py2ea" / "new").mkdir()
    (cur / name_of("claimed-1", 1)).write_bytes(request_frame("claimed-1", 1))
    odd = name_of("odd-2", 2)
    make_odd(kind, cur / odd, unreadable)
    handler = Counter()
    with FifoUnblocker(cur / odd, after=0.5) as unblocker:
        async with LoopLagSampler() as lag, ea_bridge(tmp_path, handler, grace=0.05):
            (tmp_path / "py2ea" / "new" / name_of("good-3", 3)).write_bytes(
                request_frame("good-3", 3)
            )
            await wait_until(lambda: len(handler.calls) == 2, 5)
            await wait_until(lambda: odd in files(tmp_path / "py2ea" / "bad"), 5)
    assert sorted(m.id for m in handler.calls) == ["claimed-1", "good-3"]
    assert not unblocker.released
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"
    assert reason_code(tmp_path / "py2ea" / "bad", odd) == expected_code(kind)
    assert files(cur) == []
    assert len(log_lines(caplog, odd)) == 1


def snapshot_frame(name: str, seq: int, body: dict[str, Any]) -> bytes:
    payload = {"type": "snapshot", "kind": name, "sender": "py", "sent_at": 1.0, "body": body}
    return encode_frame(f"{name}-{seq}", seq, canonical_json(payload).encode())


@pytest.mark.usefixtures("watched")
@pytest.mark.parametrize("kind", KINDS)
async def test_odd_entry_in_the_peers_snap(
    tmp_path: Path,
    kind: str,
    caplog: pytest.LogCaptureFixture,
    unreadable: Callable[[Path], None],
) -> None:
    """An odd newest version in the peer's snap/ is never read as data: read_snapshot
    returns the previous version without blocking; a non-file goes to bad/ with one log
    line (an unreadable file is only skipped: the peer may still be writing it)."""
    snap = tmp_path / "py2ea" / "snap"
    snap.mkdir(parents=True)
    (snap / f"positions.{5:020d}.fkb").write_bytes(snapshot_frame("positions", 5, {"n": 5}))
    odd = f"positions.{9:020d}.fkb"
    make_odd(kind, snap / odd, unreadable)
    with FifoUnblocker(snap / odd, after=0.5) as unblocker:
        async with LoopLagSampler() as lag, ea_bridge(tmp_path, Counter()) as ea:
            first = ea.read_snapshot("positions")
            second = ea.read_snapshot("positions")
    assert not unblocker.released
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"
    assert first is not None and first.body == {"n": 5}
    assert second is not None and second.body == {"n": 5}
    if kind == "unreadable":
        assert odd in files(snap)
        assert log_lines(caplog, odd) == []
    else:
        assert reason_code(tmp_path / "py2ea" / "bad", odd) == "not_a_file"
        assert len(log_lines(caplog, odd)) == 1


@pytest.mark.usefixtures("watched")
@pytest.mark.parametrize("kind", KINDS)
async def test_odd_entry_in_own_tmp(
    tmp_path: Path,
    kind: str,
    caplog: pytest.LogCaptureFixture,
    unreadable: Callable[[Path], None],
) -> None:
    """An odd entry named like this writer's frame in its own tmp/ does not stop start-up
    recovery: it goes to the direction's bad/ (one log line) and a complete frame left
    beside it is still published once."""
    tmp = tmp_path / "py2ea" / "tmp"
    tmp.mkdir(parents=True)
    left = name_of("left-1", 1)
    (tmp / left).write_bytes(request_frame("left-1", 1))
    odd = name_of("odd-2", 2)
    make_odd(kind, tmp / odd, unreadable)
    with FifoUnblocker(tmp / odd, after=0.5) as unblocker:
        async with (
            LoopLagSampler() as lag,
            FileBridge(tmp_path, receive=False, heartbeat_interval=None) as py,
        ):
            await py.send("note", {})
    assert not unblocker.released
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"
    assert files(tmp) == []
    new = files(tmp_path / "py2ea" / "new")
    assert left in new and len(new) == 2
    assert reason_code(tmp_path / "py2ea" / "bad", odd) == expected_code(kind)
    assert len(log_lines(caplog, odd)) == 1


@pytest.mark.usefixtures("watched")
@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink"])
async def test_odd_entry_in_own_snap(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An odd entry named like an old version in this side's snap/ does not break
    write_snapshot's pruning: it goes to bad/ with one log line, the new version is
    written, and the loop is never blocked."""
    snap = tmp_path / "py2ea" / "snap"
    snap.mkdir(parents=True)
    odd = f"heartbeat.{1:020d}.fkb"
    make_odd(kind, snap / odd, lambda p: None)
    async with (
        LoopLagSampler() as lag,
        FileBridge(tmp_path, receive=False, heartbeat_interval=None) as py,
    ):
        for _ in range(3):
            await py.heartbeat()
        own = py.read_snapshot("heartbeat", own=True)
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"
    assert own is not None and own.body["instance"] == py.instance
    assert reason_code(tmp_path / "py2ea" / "bad", odd) == "not_a_file"
    assert len(log_lines(caplog, odd)) == 1
    assert len(files(snap)) == 2


async def test_the_loop_lag_sampler_sees_a_blocked_loop() -> None:
    """The sampler the invariants rely on reports a 300 ms blocking call and 300 ms of
    CPU-bound work on the loop, even on a loaded machine."""
    import time

    async with LoopLagSampler() as lag:
        await asyncio.sleep(0.02)
        time.sleep(0.3)  # the fault under test: a blocking call on the loop
        await asyncio.sleep(0.02)
    assert lag.max >= 0.25
    async with LoopLagSampler() as busy:
        await asyncio.sleep(0.02)
        end = time.thread_time() + 0.3
        while time.thread_time() < end:  # a CPU-bound block: 300 ms of CPU work
            pass
        await asyncio.sleep(0.02)
    assert busy.max >= 0.25
