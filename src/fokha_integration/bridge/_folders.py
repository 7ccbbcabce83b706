"""The folder layout and file names of the file bridge (spec sections 2, 3, 6.1).

``tmp/ new/ cur/ bad/ done/ snap/`` under one folder per direction, sortable unique
names ``<seq>-<sender>-<id>.fkb``, and the few blocking file operations the bridge
does (write-then-move, fsync of a folder, move with retry on a sharing violation).
These functions block; the bridge keeps them short or runs them in a thread.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import BackendError

__all__ = [
    "SUBDIRS",
    "DirectionPaths",
    "Durability",
    "MessageName",
    "fsync_dir",
    "message_name",
    "move_file",
    "parse_message_name",
    "parse_snapshot_name",
    "snapshot_name",
    "valid_sender",
    "write_file",
]

Durability = Literal["none", "flush", "fsync"]
"""``none``: no flush/fsync; ``flush``: survives a process crash; ``fsync``: also power loss."""

SUBDIRS = ("tmp", "new", "cur", "bad", "done", "snap")

_NAME_RE = re.compile(r"(\d{20})-([A-Za-z0-9_]{1,32})-([A-Za-z0-9_-]{1,64})\.fkb")
_SNAP_RE = re.compile(r"([a-z0-9_]{1,32})\.(\d{20})\.fkb")
_SENDER_RE = re.compile(r"[A-Za-z0-9_]{1,32}")
_SNAPNAME_RE = re.compile(r"[a-z0-9_]{1,32}")


def valid_sender(value: object) -> bool:
    """Whether ``value`` is a valid sender name (1..32 of ``[A-Za-z0-9_]``)."""
    return isinstance(value, str) and _SENDER_RE.fullmatch(value) is not None


def valid_snapshot_name(value: object) -> bool:
    """Whether ``value`` is a valid snapshot name (1..32 of ``[a-z0-9_]``)."""
    return isinstance(value, str) and _SNAPNAME_RE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class MessageName:
    """The parts of a message file name."""

    seq: int
    sender: str
    id: str


def message_name(seq: int, sender: str, message_id: str) -> str:
    """The file name of a message: ``<20-digit seq>-<sender>-<id>.fkb``."""
    return f"{seq:020d}-{sender}-{message_id}.fkb"


def parse_message_name(name: str) -> MessageName | None:
    """The parts of a message file name, or ``None`` when the whole name does not match."""
    m = _NAME_RE.fullmatch(name)
    if m is None:
        return None
    return MessageName(int(m.group(1)), m.group(2), m.group(3))


def snapshot_name(name: str, seq: int) -> str:
    """The file name of a snapshot version: ``<name>.<20-digit seq>.fkb``."""
    return f"{name}.{seq:020d}.fkb"


def parse_snapshot_name(file_name: str) -> tuple[str, int] | None:
    """``(name, seq)`` of a snapshot file name, or ``None``."""
    m = _SNAP_RE.fullmatch(file_name)
    if m is None:
        return None
    return m.group(1), int(m.group(2))


@dataclass(frozen=True, slots=True)
class DirectionPaths:
    """The folders of one direction (e.g. ``root/py2ea``)."""

    base: Path

    @property
    def tmp(self) -> Path:
        """Frames being written."""
        return self.base / "tmp"

    @property
    def new(self) -> Path:
        """Complete frames waiting for the reader."""
        return self.base / "new"

    @property
    def cur(self) -> Path:
        """Frames claimed by the reader, not yet acknowledged."""
        return self.base / "cur"

    @property
    def bad(self) -> Path:
        """Frames that failed the checks, each with a reason file."""
        return self.base / "bad"

    @property
    def done(self) -> Path:
        """Acknowledged frames kept for inspection (optional)."""
        return self.base / "done"

    @property
    def snap(self) -> Path:
        """Snapshots and the heartbeat."""
        return self.base / "snap"

    def create(self) -> None:
        """Create the folders that are missing."""
        for sub in SUBDIRS:
            (self.base / sub).mkdir(parents=True, exist_ok=True)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a folder's entries durable (POSIX only; a no-op on Windows)."""
    if sys.platform == "win32":  # pragma: no cover - Windows cannot open folders
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def write_file(path: str | os.PathLike[str], data: bytes, durability: Durability) -> None:
    """Write ``data`` to a new file (truncating), fsyncing when ``durability`` says so.

    Unbuffered ``os.write`` calls: the bytes are with the OS when this returns (what
    ``flush`` promises); ``none`` differs only for the journal, which it leaves buffered.
    """
    fd = os.open(path, _WRITE_FLAGS, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durability == "fsync":
            os.fsync(fd)
    finally:
        os.close(fd)


def move_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, retry_for: float = 2.0
) -> None:
    """Move ``src`` over ``dst``, retrying with a growing back-off on a sharing violation.

    On Windows a move fails while another process has the file open; that is a
    :class:`PermissionError` and is retried for up to ``retry_for`` seconds.
    :class:`FileNotFoundError` is not retried (the caller decides what it means).
    """
    delay = 0.001
    deadline = time.monotonic() + retry_for
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError as exc:
            if time.monotonic() + delay > deadline:
                raise BackendError("file-bridge", f"cannot move {src} to {dst}: {exc}") from exc
            # A short blocking back-off: the sharing violation lasts as long as the
            # other process keeps the file open (an MQL5 FileOpen..FileClose).
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
