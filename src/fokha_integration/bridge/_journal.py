"""The reader's persistent record of processed message ids (spec section 6.3).

An append-only text file, one record per line: ``B`` (handling begun) and ``D``
(done, with the reply that was sent, so a duplicate gets the same reply again). It is
what makes a crash between "handled" and "acknowledged" harmless. The file is
compacted (rewritten and moved over the old one) when it holds many stale records;
retention drops ids older than ``retention`` seconds or beyond ``max_entries``.

The methods block (a write, maybe an fsync); the bridge calls them from a thread when
durability is ``fsync``. Not thread-safe: one caller at a time.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ..errors import ClosedError, ValidationError
from ._folders import Durability

__all__ = ["Journal", "JournalEntry"]

_log = logging.getLogger("fokha_integration.bridge")

State = Literal["begun", "done"]


@dataclass(slots=True)
class JournalEntry:
    """What the journal knows of one id."""

    at: float
    state: State
    reply_id: str | None = None
    reply: str | None = None


def _crc(msg_id: str, reply_id: str, reply: str) -> str:
    return "%08x" % (zlib.crc32(f"{msg_id} {reply_id} {reply}".encode()) & 0xFFFFFFFF)


class Journal:
    """Processed ids on disk, with their replies; bounded by age and count."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = "flush",
        retention: float = 7 * 86400.0,
        max_entries: int = 100_000,
    ) -> None:
        self.path = path
        self.durability = durability
        self.retention = retention
        self.max_entries = max_entries
        self._entries: OrderedDict[str, JournalEntry] = OrderedDict()
        self._lines = 0
        self._file: BinaryIO | None = None
        self.skipped_lines = 0

    # -- loading -------------------------------------------------------------------

    def open(self, now: float) -> None:
        """Load the file (ignoring a torn last record) and open it for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        lines = data.split(b"\n")
        # The last element is b"" when the file ends with LF; otherwise a torn record.
        if lines and lines[-1]:
            self.skipped_lines += 1
        for raw in lines[:-1]:
            self._lines += 1
            if not self._apply(raw):
                self.skipped_lines += 1
        if self.skipped_lines:
            _log.warning("journal %s: ignored %d damaged record(s)", self.path, self.skipped_lines)
        self._prune(now)
        if data and not data.endswith(b"\n"):
            # Cut the torn tail so the next record starts on its own line.
            self._rewrite()
        elif self._lines > 2 * len(self._entries) + 1000:
            self._rewrite()
        if self._file is None:
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for appends

    def _apply(self, raw: bytes) -> bool:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return False
        parts = text.split(" ", 5)
        try:
            at = float(parts[1])
        except (IndexError, ValueError):
            return False
        if parts[0] == "B" and len(parts) == 3:
            if parts[2] not in self._entries:
                self._entries[parts[2]] = JournalEntry(at, "begun")
            return True
        if parts[0] == "D" and len(parts) == 6:
            _, _, msg_id, reply_id, crc, reply = parts
            if crc != _crc(msg_id, reply_id, reply):
                return False
            self._entries.pop(msg_id, None)
            self._entries[msg_id] = JournalEntry(
                at,
                "done",
                None if reply_id == "-" else reply_id,
                None if reply == "-" else reply,
            )
            return True
        return False

    # -- queries -------------------------------------------------------------------

    def get(self, msg_id: str) -> JournalEntry | None:
        """The entry of ``msg_id``, or ``None`` when it was never seen (or expired)."""
        return self._entries.get(msg_id)

    def __len__(self) -> int:
        return len(self._entries)

    # -- appends -------------------------------------------------------------------

    def _append(self, line: str) -> None:
        if self._file is None:
            raise ClosedError("the bridge journal is not open")
        self._file.write(line.encode("utf-8"))
        if self.durability != "none":
            self._file.flush()
        if self.durability == "fsync":
            os.fsync(self._file.fileno())
        self._lines += 1

    def begin(self, msg_id: str, now: float) -> None:
        """Record that handling of ``msg_id`` begins.

        The entry is recorded in memory first: when the write fails (a full disk) this
        process still knows the state, and the buffered record is written by a later
        flush.
        """
        self._entries[msg_id] = JournalEntry(now, "begun")
        self._append(f"B {now:.3f} {msg_id}\n")

    def done(self, msg_id: str, now: float, reply_id: str | None, reply: str | None) -> None:
        """Record that ``msg_id`` was handled, with the reply sent (if any)."""
        rid = reply_id or "-"
        text = reply or "-"
        if "\n" in text:
            raise ValidationError("reply", "a journalled reply must be one line of JSON", text)
        # In memory first (see begin): a failed write must not make this process
        # hand the message to the handler again.
        self._entries.pop(msg_id, None)
        self._entries[msg_id] = JournalEntry(now, "done", reply_id, reply)
        self._append(f"D {now:.3f} {msg_id} {rid} {_crc(msg_id, rid, text)} {text}\n")
        self._prune(now)
        if self._lines > 2 * len(self._entries) + 1000:
            self._rewrite()

    # -- retention -----------------------------------------------------------------

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if len(self._entries) > self.max_entries or entry.at < cutoff:
                del self._entries[key]
            else:
                break

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            for msg_id, e in self._entries.items():
                if e.state == "begun":
                    f.write(f"B {e.at:.3f} {msg_id}\n".encode())
                else:
                    rid = e.reply_id or "-"
                    text = e.reply or "-"
                    f.write(
                        f"D {e.at:.3f} {msg_id} {rid} {_crc(msg_id, rid, text)} {text}\n".encode()
                    )
            f.flush()
            if self.durability == "fsync":
                os.fsync(f.fileno())
        if self._file is not None:
            self._file.close()
            self._file = None
        os.replace(tmp, self.path)
        self._lines = len(self._entries)
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for appends

    def close(self) -> None:
        """Flush and close the file."""
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None
