"""The folder layout and file names of the file bridge (spec sections 2, 3, 6.1).

``tmp/ new/ cur/ bad/ done/ snap/`` under one folder per direction, sortable unique
names ``<seq>-<sender>-<id>.fkb``, and the few blocking file operations the bridge
does (write-then-move, fsync of a folder, move with retry on a sharing violation).
These functions block; the bridge keeps them short or runs them in a thread.

Anything in a folder that is not a regular file (a directory, a FIFO, a socket, a
device, a symbolic link) is an *odd entry*: :func:`read_regular` refuses it without
ever blocking (the open is non-blocking and does not follow links, and the type is
checked on the open descriptor before a byte is read), and :func:`quarantine` moves
it to ``bad/`` in one attempt.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import BackendError

__all__ = [
    "SUBDIRS",
    "BadFolder",
    "DirectionPaths",
    "Durability",
    "MessageName",
    "OddEntry",
    "fsync_dir",
    "is_odd",
    "message_name",
    "move_file",
    "parse_message_name",
    "parse_snapshot_name",
    "quarantine",
    "read_regular",
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
    When a write fails (a full disk), the partial file is removed before the error
    propagates: a failed write leaves nothing behind.
    """
    fd = os.open(path, _WRITE_FLAGS, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durability == "fsync":
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


# Non-blocking (a FIFO opens at once instead of waiting for a writer) and never through
# a symbolic link (ELOOP instead); the type is then checked on the descriptor itself,
# so an entry swapped between listing and opening cannot slip through.
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOFOLLOW", 0)
)
_LINK_ERRNOS = frozenset({errno.ELOOP, getattr(errno, "EMLINK", errno.ELOOP)})


class OddEntry(Exception):
    """A folder entry the reader will not read (internal; never leaves the bridge).

    ``code`` is the reason written to ``bad/``: ``not_a_file`` (a directory, FIFO,
    socket, device or symbolic link: it will never become a frame) or ``unreadable``
    (a permission error: on Windows a writer may still hold the file, so the bridge
    waits ``grace`` before giving up on it). ``transient`` says which.
    """

    def __init__(self, code: str, detail: str, *, transient: bool = False) -> None:
        self.code = code
        self.detail = detail
        self.transient = transient
        super().__init__(f"{code}: {detail}")


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file ``path``; never blocks on an odd entry.

    Raises :class:`OddEntry` for anything that is not a regular file or cannot be
    read, and :class:`FileNotFoundError` when the entry is gone.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS:
            raise OddEntry("not_a_file", "a symbolic link") from None
        if isinstance(exc, PermissionError):
            raise OddEntry("unreadable", str(exc), transient=True) from None
        raise OddEntry("unreadable", str(exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OddEntry("not_a_file", _kind_of(mode))
        chunks = []
        size = 0
        while size < limit:
            try:
                chunk = os.read(fd, limit - size)
            except OSError as exc:
                raise OddEntry("unreadable", str(exc), transient=True) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_odd(entry: os.DirEntry[str]) -> str | None:
    """What an entry is when it is not a regular file (``None`` for a regular file).

    Uses the type the listing already returned (no extra system call on Linux).
    """
    try:
        if entry.is_symlink():
            return "a symbolic link"
        if entry.is_file(follow_symlinks=False):
            return None
        return _kind_of(entry.stat(follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return None


def quarantine(src: str | os.PathLike[str], bad_dir: str | os.PathLike[str], name: str) -> str:
    """Move ``src`` (a file or an odd entry) into ``bad_dir`` in one attempt.

    It goes in as ``name``, or ``name.1``, ``name.2``... when an entry that cannot be
    replaced (a directory) holds the name. Returns the name used. Raises
    :class:`OSError` when the move is refused (the caller logs and leaves it) and
    :class:`FileNotFoundError` when ``src`` is gone. Never sleeps.
    """
    target = name
    for n in range(1, 1000):
        try:
            os.replace(src, os.path.join(bad_dir, target))
            return target
        except (IsADirectoryError, NotADirectoryError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        target = f"{name}.{n}"
    raise OSError(errno.EEXIST, f"no free name for {name} in {bad_dir}")


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


class BadFolder:
    """The one way anything the bridge will not handle leaves a folder: corrupt frames
    and odd entries (a directory, FIFO, symlink, unreadable or unclaimable file).

    :meth:`move` puts it in ``bad/`` in one attempt (never a blocking wait) with a
    ``<name>.reason.json`` and one log line. When even that move is refused, the entry
    is left where it is, logged once and remembered in :attr:`stuck` (the reader
    skips those names while they stay).
    """

    def __init__(
        self,
        reader: str,
        now: Callable[[], float],
        log: logging.Logger,
        on_moved: Callable[[], None],
        on_stuck: Callable[[], None],
    ) -> None:
        self.reader = reader
        self.stuck: set[str] = set()
        self._now = now
        self._log = log
        self._on_moved = on_moved
        self._on_stuck = on_stuck

    def move(
        self, path: str | os.PathLike[str], name: str, code: str, detail: str, bad_dir: Path
    ) -> None:
        """Move ``path`` (named ``name``) to ``bad_dir`` with the reason ``code: detail``."""
        try:
            stored = quarantine(path, bad_dir, name)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.stuck.add(name)
            self._on_stuck()
            self._log.error(
                "file bridge: %s (%s: %s) cannot be moved to bad/ either (%s); left in place",
                name,
                code,
                detail,
                exc,
            )
            return
        reason = {"code": code, "detail": detail, "at": self._now(), "reader": self.reader}
        with contextlib.suppress(OSError):  # a full disk: the log line still says why
            (bad_dir / f"{stored}.reason.json").write_text(
                json.dumps(reason, sort_keys=True), encoding="utf-8"
            )
        self._on_moved()
        self._log.warning("file bridge: moved %s to bad/ (%s: %s)", name, code, detail)
