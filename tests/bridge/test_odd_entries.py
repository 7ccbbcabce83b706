"""Regression tests (issue 13): odd entries in bridge folders, unclaimable frames, a full
disk on send, and non-finite or wrong-typed settings.

Each names the defect or weak spot it pins down. The broader fault-injection sweep over
every watched folder is ``tests/faults/test_bridge_odd_entries.py``.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fokha_integration.bridge import FileBridge, PollConfig, SyncFileBridge
from fokha_integration.errors import BackendUnavailableError, ConfigError, FokhaError
from tests.bridge.helpers import (
    FifoUnblocker,
    LoopLagSampler,
    files,
    full_disk_at,
    wait_until,
)
from tests.bridge.test_bridge import FAST, Counter, ea_bridge, name_of, request_frame
from tests.support import timeout

LAG_BOUND = 0.1  # the event loop must never be blocked longer than this (issue 13)


def bridge_log_lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("fokha_integration.bridge") and needle in r.getMessage()
    ]


def reason_of(bad: Path, name: str) -> dict[str, Any]:
    reasons = [p for p in bad.iterdir() if p.name.startswith(name) and p.suffix == ".json"]
    assert len(reasons) == 1, sorted(p.name for p in bad.iterdir())
    loaded: dict[str, Any] = json.loads(reasons[0].read_text())
    return loaded


async def test_defect_8_a_directory_named_like_a_message_goes_to_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 8: a directory named like a message in new/ is moved to bad/ with a reason and
    one log line, and the messages after it are still handled."""
    new = tmp_path / "py2ea" / "new"
    new.mkdir(parents=True)
    odd = name_of("dir-1", 1)
    (new / odd).mkdir()
    (new / name_of("good-1", 2)).write_bytes(request_frame("good-1", 2))
    handler = Counter()
    caplog.set_level(logging.INFO, logger="fokha_integration.bridge")
    async with LoopLagSampler() as lag, ea_bridge(tmp_path, handler, grace=0.05) as ea:
        await wait_until(lambda: [m.id for m in handler.calls] == ["good-1"], 5)
        await wait_until(lambda: odd in files(tmp_path / "py2ea" / "bad"), 5)
    assert files(new) == []
    assert reason_of(tmp_path / "py2ea" / "bad", odd)["code"] == "not_a_file"
    assert len(bridge_log_lines(caplog, odd)) == 1
    assert ea.stats().bad == 1
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"


async def test_defect_9_a_fifo_named_like_a_message_does_not_block_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 9: a FIFO named like a message in new/ never blocks the event loop; it goes
    to bad/ with a reason and one log line, and later messages are handled."""
    new = tmp_path / "py2ea" / "new"
    new.mkdir(parents=True)
    odd = name_of("fifo-1", 1)
    os.mkfifo(new / odd)
    (new / name_of("good-1", 2)).write_bytes(request_frame("good-1", 2))
    handler = Counter()
    caplog.set_level(logging.INFO, logger="fokha_integration.bridge")
    with FifoUnblocker(new / odd, after=0.5) as unblocker:
        async with LoopLagSampler() as lag, ea_bridge(tmp_path, handler, grace=0.05):
            await wait_until(lambda: [m.id for m in handler.calls] == ["good-1"], 5)
            await wait_until(lambda: odd in files(tmp_path / "py2ea" / "bad"), 5)
    assert not unblocker.released, "the reader blocked opening the FIFO"
    assert lag.max < timeout(LAG_BOUND), f"event loop blocked {lag.max:.3f}s"
    assert reason_of(tmp_path / "py2ea" / "bad", odd)["code"] == "not_a_file"
    assert len(bridge_log_lines(caplog, odd)) == 1


async def test_weak_spot_a_frame_that_cannot_be_claimed_goes_to_bad_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame whose claim (the move new/ -> cur/) keeps failing with a permission error is
    moved to bad/ after the grace period, with a reason and one log line."""
    new = tmp_path / "py2ea" / "new"
    new.mkdir(parents=True)
    stuck = name_of("stuck-1", 1)
    (new / stuck).write_bytes(request_frame("stuck-1", 1))
    (new / name_of("good-1", 2)).write_bytes(request_frame("good-1", 2))
    real_replace = os.replace

    def replace(src: Any, dst: Any, **kw: Any) -> None:
        # The injected fault: the claim of this one frame is refused, as a file owned by
        # someone else in a sticky folder (or locked by another process) is.
        if os.fspath(src).endswith(stuck) and os.sep + "cur" + os.sep in os.fspath(dst):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(src))
        real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "replace", replace)
    handler = Counter()
    caplog.set_level(logging.INFO, logger="fokha_integration.bridge")
    async with ea_bridge(tmp_path, handler, grace=0.05):
        await wait_until(lambda: stuck in files(tmp_path / "py2ea" / "bad"), 5)
        await wait_until(lambda: [m.id for m in handler.calls] == ["good-1"], 5)
    assert reason_of(tmp_path / "py2ea" / "bad", stuck)["code"] == "unclaimable"
    assert len(bridge_log_lines(caplog, stuck)) == 1


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made immutable with ``chattr +i`` (a real EPERM on rename, even for root);
    made mutable again afterwards so the temp folder can be removed."""
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def make_immutable(path: Path, made: list[Path]) -> None:
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root (a privilege, not a missing part)")
    chattr = shutil.which("chattr")
    result = (
        subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
        if chattr
        else None
    )
    if result is None or result.returncode != 0:
        # A file-system feature, not an installable part: skipped (also under CI) with
        # the reason; the injected-EPERM test above covers the same path everywhere.
        pytest.skip("chattr +i not supported here (no chattr, or not on this file system)")
    made.append(path)


async def test_weak_spot_a_frame_that_cannot_be_moved_at_all_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, immutable: list[Path]
) -> None:
    """A frame that can neither be claimed nor moved to bad/ (a real EPERM: an immutable
    file) stays in new/ with one error log line, is not retried in a hot loop, and the
    messages after it are still handled."""
    new = tmp_path / "py2ea" / "new"
    new.mkdir(parents=True)
    stuck = name_of("stuck-1", 1)
    (new / stuck).write_bytes(request_frame("stuck-1", 1))
    make_immutable(new / stuck, immutable)
    handler = Counter()
    caplog.set_level(logging.INFO, logger="fokha_integration.bridge")
    async with ea_bridge(tmp_path, handler, grace=0.05) as ea:
        await wait_until(lambda: len(bridge_log_lines(caplog, stuck)) == 1, 5)
        for i in range(2, 5):
            (new / name_of(f"good-{i}", i)).write_bytes(request_frame(f"good-{i}", i))
        await wait_until(lambda: len(handler.calls) == 3, 5)
    assert [m.id for m in handler.calls] == ["good-2", "good-3", "good-4"]
    assert files(new) == [stuck]
    lines = bridge_log_lines(caplog, stuck)
    assert len(lines) == 1, lines
    assert "unclaimable" in lines[0]
    assert ea.stats().stuck == 1


async def test_weak_spot_send_on_a_full_disk_raises_a_library_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """A send that meets a full disk (ENOSPC injected at the write) raises
    BackendUnavailableError, leaves no partial file in tmp/ or new/, and the next send
    works once there is space again."""
    async with FileBridge(tmp_path, receive=False, heartbeat_interval=None) as py:
        with (
            full_disk_at(tmp_path / "py2ea" / "tmp") as failed,
            pytest.raises(BackendUnavailableError) as info,
        ):
            await py.send("note", {"text": "x" * 200})
        assert failed, "the injected fault was not hit"
        assert isinstance(info.value, FokhaError)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.ENOSPC
        assert files(tmp_path / "py2ea" / "tmp") == []
        assert files(tmp_path / "py2ea" / "new") == []
        sent = await py.send("note", {"text": "again"})
    assert [n.endswith(f"-{sent}.fkb") for n in files(tmp_path / "py2ea" / "new")] == [True]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for the test (root only); skipped with a reason otherwise."""
    target = tmp_path / "tmpfs"
    target.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not allowed here: {result.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


async def test_weak_spot_send_on_a_real_full_tmpfs(small_tmpfs: Path) -> None:
    """On a real 64 KiB tmpfs, a frame that does not fit raises BackendUnavailableError and
    leaves no partial file; a small frame afterwards is sent."""
    async with FileBridge(small_tmpfs, receive=False, heartbeat_interval=None) as py:
        with pytest.raises(BackendUnavailableError):
            await py.send("note", {"text": "x" * 200_000})
        assert files(small_tmpfs / "py2ea" / "tmp") == []
        assert files(small_tmpfs / "py2ea" / "new") == []
        await py.send("note", {"text": "small"})
    assert len(files(small_tmpfs / "py2ea" / "new")) == 1


BAD_SETTINGS: list[tuple[str, Any]] = [
    ("grace", math.nan),
    ("grace", math.inf),
    ("grace", "5"),
    ("grace", True),
    ("max_frame_bytes", 4096.0),
    ("max_frame_bytes", True),
    ("done_retention", math.nan),
    ("journal_retention", math.inf),
    ("journal_max_entries", 10.5),
    ("heartbeat_interval", math.nan),
    ("heartbeat_interval", math.inf),
    ("heartbeat_interval", 0),
    ("close_timeout", math.nan),
    ("close_timeout", -1),
    ("keep_done", "yes"),
    ("receive", 1),
    ("watch", 1),
    ("local", 5),
    ("peer", None),
    ("sender", 7),
    ("durability", None),
    ("encoding", 8),
]


@pytest.mark.parametrize(("setting", "value"), BAD_SETTINGS)
def test_file_bridge_refuses_non_finite_and_wrong_typed_settings(
    tmp_path: Path, setting: str, value: Any
) -> None:
    """FileBridge refuses NaN, infinities and wrong types with ConfigError naming the setting."""
    with pytest.raises(ConfigError) as info:
        FileBridge(tmp_path, **{setting: value})
    assert info.value.field == setting


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("busy", math.nan),
        ("idle", math.inf),
        ("busy_window", math.nan),
        ("backoff", math.nan),
        ("backoff", math.inf),
        ("busy", "0.01"),
    ],
)
def test_poll_config_refuses_non_finite_and_wrong_typed_settings(setting: str, value: Any) -> None:
    """PollConfig refuses NaN, infinities and wrong types with ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        PollConfig(**{setting: value})
    assert info.value.field == setting


@pytest.mark.parametrize(
    ("setting", "value"),
    [("timeout", math.nan), ("timeout", math.inf), ("resend_after", math.nan), ("final", 1)],
)
async def test_request_refuses_non_finite_and_wrong_typed_arguments(
    tmp_path: Path, setting: str, value: Any
) -> None:
    """request() refuses NaN/inf timeouts and wrong types with ConfigError naming the argument."""
    async with FileBridge(tmp_path, poll=FAST, heartbeat_interval=None) as py:
        with pytest.raises(ConfigError) as info:
            await py.request("order", {}, **{setting: value})
    assert info.value.field == setting
    assert files(tmp_path / "py2ea" / "new") == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"inbox_size": 1.5}, "inbox_size"), ({"grace": math.nan}, "grace")],
)
def test_sync_file_bridge_refuses_bad_settings(
    tmp_path: Path, kwargs: dict[str, Any], field: str
) -> None:
    """SyncFileBridge refuses bad settings with ConfigError (and starts no thread)."""
    with pytest.raises(ConfigError) as info:
        SyncFileBridge(tmp_path, **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("value", [math.nan, math.inf, 0, "10", True])
def test_ea_emulator_refuses_bad_max_volume(tmp_path: Path, value: Any) -> None:
    """EAEmulator refuses a NaN, infinite, zero or wrong-typed max_volume with ConfigError."""
    from fokha_integration.bridge.emulator import EAEmulator

    with pytest.raises(ConfigError) as info:
        EAEmulator(tmp_path, max_volume=value)
    assert info.value.field == "max_volume"
