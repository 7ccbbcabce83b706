"""The sending side of the file bridge: frames into ``tmp/``, then moved into ``new/``.

A :class:`Writer` owns this side's outgoing folder (``root/<local>2<peer>``): the
sequence numbers, the write-then-move of messages, requests, replies and snapshots,
the pruning of old snapshot versions, and the start-up recovery of what a crash left
in ``tmp/`` (spec 6.1). It does not wait for replies (the facade does) and does not
read incoming folders (``_reader.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..clock import Clock
from ..errors import ConfigError, FrameError, map_backend_errors
from ..models import canonical_json
from ._folders import (
    BadFolder,
    DirectionPaths,
    Durability,
    OddEntry,
    fsync_dir,
    is_odd,
    message_name,
    move_file,
    parse_message_name,
    parse_snapshot_name,
    read_regular,
    snapshot_name,
    write_file,
)
from ._frame import decode_frame, encode_frame
from ._types import KIND_RE, Counters

__all__ = ["Writer", "blocking"]

T = TypeVar("T")


async def blocking(durability: Durability, fn: Callable[..., T], *args: Any) -> T:
    """Run a short file operation: inline, or in a thread when fsyncs make it slow."""
    if durability == "fsync":
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _publish_tmp(tmp: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    # The move that publishes a written frame; when it fails, the frame is removed
    # from tmp/ too, so a send that raised has sent nothing (not even after a restart).
    try:
        move_file(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Writer:
    """Writes this side's frames into ``outgoing`` (see the module docstring).

    A failed write (a full disk) raises :class:`~fokha_integration.errors.BackendUnavailableError`
    through the ``"os"`` error table and leaves no file behind.
    """

    def __init__(
        self,
        outgoing: DirectionPaths,
        *,
        sender: str,
        durability: Durability,
        max_frame_bytes: int,
        clock: Clock,
        counters: Counters,
        bad: BadFolder,
    ) -> None:
        self.outgoing = outgoing
        self.sender = sender
        self.durability: Durability = durability
        self.max_frame_bytes = max_frame_bytes
        self._clock = clock
        self._counters = counters
        self._bad = bad
        self._out_tmp = str(outgoing.tmp)
        self._out_new = str(outgoing.new)
        self._last_seq = 0
        self._lock = asyncio.Lock()

    def recover(self, log_info: Callable[[str, str], None]) -> None:
        """Start-up recovery of this writer's tmp/ (spec 6.1 step 4) and its seq floor.

        Complete frames are published, partial ones deleted, odd entries named like
        this writer's files moved to ``bad/``. ``log_info`` gets a message and a name.
        """
        floor = 0
        for folder in (self.outgoing.tmp, self.outgoing.new):
            for entry in os.scandir(folder):
                parsed = parse_message_name(entry.name)
                if parsed is not None and parsed.sender == self.sender:
                    floor = max(floor, parsed.seq)
        self._last_seq = floor
        for entry in os.scandir(self.outgoing.tmp):
            path = Path(entry.path)
            own_snap = entry.name.endswith(f".{self.sender}.snap")
            parsed = parse_message_name(entry.name)
            if not own_snap and (parsed is None or parsed.sender != self.sender):
                continue
            odd = is_odd(entry)
            if odd is not None:
                self._bad.move(path, entry.name, "not_a_file", odd, self.outgoing.bad)
                continue
            if own_snap:
                path.unlink(missing_ok=True)
                continue
            try:
                decode_frame(
                    read_regular(path, self.max_frame_bytes + 1),
                    max_frame_bytes=self.max_frame_bytes,
                )
            except OddEntry as exc:
                self._bad.move(path, entry.name, exc.code, exc.detail, self.outgoing.bad)
                continue
            except FrameError:
                path.unlink(missing_ok=True)
                log_info("discarded unfinished %s from tmp/", entry.name)
                continue
            move_file(path, self.outgoing.new / entry.name)
            self._counters.recovered_tmp += 1
            log_info("published complete %s left in tmp/ by a crash", entry.name)

    def _next_seq(self) -> int:
        self._last_seq = max(self._last_seq + 1, int(self._clock.time() * 1_000_000))
        return self._last_seq

    def _publish(self, name: str, data: bytes, dest_dir: str) -> None:
        # Plain string paths on the hot path: pathlib costs more than the syscalls here.
        tmp = os.path.join(self._out_tmp, name)
        with map_backend_errors("os", f"write {name}"):
            write_file(tmp, data, self.durability)  # removes its partial file on failure
            _publish_tmp(tmp, os.path.join(dest_dir, name))
            if self.durability == "fsync":
                fsync_dir(dest_dir)

    def payload(self, type_: str, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON object of a frame this side sends (checks ``kind`` and ``body``)."""
        if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
            raise ConfigError("kind", "must be 1..64 of [A-Za-z0-9_.-]", kind)
        if not isinstance(body, Mapping):
            raise ConfigError("body", "must be a JSON object", body)
        return {
            "type": type_,
            "kind": kind,
            "sender": self.sender,
            "sent_at": round(self._clock.time(), 6),
            "body": dict(body),
        }

    async def send(self, msg_id: str, payload: Mapping[str, Any]) -> None:
        """Write the frame ``msg_id`` carrying ``payload`` into ``new/``."""
        body = canonical_json(payload).encode("utf-8")
        async with self._lock:
            seq = self._next_seq()
            name = message_name(seq, self.sender, msg_id)
            data = encode_frame(msg_id, seq, body)
            if len(data) > self.max_frame_bytes:
                raise ConfigError("body", f"frame of {len(data)} bytes exceeds max_frame_bytes")
            await blocking(self.durability, self._publish, name, data, self._out_new)

    async def send_reply(self, reply_id: str, reply_text: str) -> None:
        """Write a reply frame (new, or a stored one again with the same reply id)."""
        body = reply_text.encode("utf-8")
        async with self._lock:
            seq = self._next_seq()
            name = message_name(seq, self.sender, reply_id)
            await blocking(
                self.durability,
                self._publish,
                name,
                encode_frame(reply_id, seq, body),
                self._out_new,
            )
        self._counters.replies_sent += 1

    async def write_snapshot(self, name: str, body: Mapping[str, Any]) -> None:
        """Publish the latest value ``body`` under ``name`` (atomic for readers)."""
        text = canonical_json(self.payload("snapshot", name, body)).encode("utf-8")
        async with self._lock:
            seq = self._next_seq()
            data = encode_frame(f"{name}-{seq}", seq, text)
            await blocking(self.durability, self._write_snapshot, name, data, seq)

    def _write_snapshot(self, name: str, data: bytes, seq: int) -> None:
        snap = self.outgoing.snap
        tmp = self.outgoing.tmp / f"{name}.{seq:020d}.{self.sender}.snap"
        with map_backend_errors("os", f"write snapshot {name}"):
            write_file(tmp, data, self.durability)  # removes its partial file on failure
            _publish_tmp(tmp, snap / snapshot_name(name, seq))
            if self.durability == "fsync":
                fsync_dir(snap)
        versions = []
        for entry in os.scandir(snap):
            parsed = parse_snapshot_name(entry.name)
            if parsed is not None and parsed[0] == name:
                odd = is_odd(entry)
                if odd is not None:
                    self._bad.move(entry.path, entry.name, "not_a_file", odd, self.outgoing.bad)
                    continue
                versions.append(parsed[1])
        versions.sort()
        for old in versions[:-2]:
            with contextlib.suppress(FileNotFoundError):
                (snap / snapshot_name(name, old)).unlink()
