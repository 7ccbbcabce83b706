"""Helpers for the file-bridge tests: bounded polling of real conditions, folder listings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

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
