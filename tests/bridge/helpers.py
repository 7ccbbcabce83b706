"""Helpers for the file-bridge tests: bounded polling of real conditions, folder listings,
a loop-lag sampler and fault injectors (a full disk at the write boundary, a FIFO watchdog)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import timeout


async def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll a real external condition (files on disk) until true, within a bounded deadline."""
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout(seconds)}s")
        await asyncio.sleep(0.005)


def wait_until_sync(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Blocking variant of :func:`wait_until` for subprocess-driven tests."""
    deadline = time.monotonic() + timeout(seconds)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout(seconds)}s")
        time.sleep(0.01)


def files(folder: Path) -> list[str]:
    """Sorted file names in ``folder`` (empty when it does not exist)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir())


def _runqueue_wait() -> float | None:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


class LoopLagSampler:
    """The event loop's worst lag while it runs: a task wakes every ``interval`` seconds
    and records how late it woke (a blocked loop wakes it late by the blocked time).

    ``async with LoopLagSampler() as lag: ...`` then read ``lag.max``.

    On a shared machine a process also wakes late because other processes hold the
    CPUs. Where Linux reports it (``/proc/thread-self/schedstat``), the time the loop's
    thread spent *runnable but waiting for a CPU* is subtracted: what remains is time
    the loop was blocked by its own code (a blocking call or a long computation).
    ``raw_max`` keeps the uncorrected figure.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.max = 0.0
        self.raw_max = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            waited_before = _runqueue_wait()
            await asyncio.sleep(self.interval)
            late = loop.time() - before - self.interval
            waited_after = _runqueue_wait()
            starved = 0.0
            if waited_before is not None and waited_after is not None:
                starved = waited_after - waited_before
            self.samples += 1
            self.raw_max = max(self.raw_max, late)
            self.max = max(self.max, late - starved)

    async def __aenter__(self) -> LoopLagSampler:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class FifoUnblocker:
    """A watchdog thread for tests that put a FIFO where a reader looks: if a reader
    blocks opening it, the thread opens the write end after ``after`` seconds (so a
    blocking reader is released and the test fails on the measured lag instead of
    hanging). ``released`` tells whether it had to."""

    def __init__(self, path: Path, after: float) -> None:
        self.path = path
        self.after = after
        self.released = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self._stop.wait(self.after):
            return
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader has it open (ENXIO) or it was moved away
                if self._stop.wait(0.01):
                    return
                continue
            self.released = True
            os.close(fd)
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> FifoUnblocker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def full_disk_at(
    folder: Path, *, after: int = 16, when: Callable[[str], bool] | None = None
) -> Iterator[list[str]]:
    """Inject ``OSError(ENOSPC)`` at the write boundary for files inside ``folder``.

    Every ``os.write`` to a file under ``folder`` (for which ``when(path)`` is true, if
    given) writes at most ``after`` bytes and then fails as a full disk does (so a
    partial file is left behind if the caller does not clean up). Yields the list of
    paths that failed.
    """
    real_write = os.write
    prefix = str(folder.resolve()) + os.sep
    failed: list[str] = []

    def write(fd: int, data: Any) -> int:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(prefix) and (when is None or when(target)):
            failed.append(target)
            view = memoryview(data)
            if len(view) > after:
                real_write(fd, view[:after])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", write)
        yield failed
