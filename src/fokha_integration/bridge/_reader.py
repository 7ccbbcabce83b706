"""The receiving side of the file bridge: listing, reading and claiming incoming files.

A :class:`Reader` scans ``root/<peer>2<local>/new`` (adaptively, optionally woken by
a file watcher), checks each file, claims it into ``cur/`` and carries out what the
sans-I/O :class:`~._receiver.Receiver` decides (journal records, delivery, replies,
acknowledgement). It also reconciles ``cur/`` at start-up, sweeps ``done/`` and reads
snapshots. Odd entries (a directory, FIFO, symlink, unreadable or unclaimable file)
never block the loop: they go to ``bad/`` through :class:`~._folders.BadFolder`.

It makes no exactly-once decision itself (``_receiver.py`` does) and writes no frame
(``_writer.py`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from ..clock import Clock
from ..errors import FrameError
from ..models import new_id
from ._folders import (
    BadFolder,
    DirectionPaths,
    Durability,
    OddEntry,
    move_file,
    parse_message_name,
    parse_snapshot_name,
    read_regular,
    snapshot_name,
)
from ._frame import Frame, IncompleteFrameError, decode_frame
from ._journal import Journal
from ._receiver import Ack, Action, Begin, Deliver, Done, Quarantine, Receiver, Resolve, SendReply
from ._types import Message, PendingRequests, PollConfig, Reply, Snapshot
from ._writer import Writer, blocking

__all__ = ["Reader"]


@dataclass(slots=True)
class _NotReady:
    size: int
    mtime_ns: int
    since: float


def _wake_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Reader:
    """Reads ``incoming`` for one bridge (see the module docstring).

    ``deliver`` hands a message to the application and returns its reply;
    ``has_consumer`` tells whether anybody takes messages right now (a handler or a
    running ``messages()`` loop).
    """

    def __init__(
        self,
        incoming: DirectionPaths,
        *,
        journal: Journal,
        receiver: Receiver,
        writer: Writer,
        pending: PendingRequests,
        bad: BadFolder,
        deliver: Callable[[Message], Awaitable[Reply | None]],
        has_consumer: Callable[[], bool],
        poll: PollConfig,
        durability: Durability,
        grace: float,
        max_frame_bytes: int,
        keep_done: bool,
        done_retention: float,
        clock: Clock,
        log: logging.Logger,
    ) -> None:
        self.incoming = incoming
        self.journal = journal
        self.poll = poll
        self._receiver = receiver
        self._writer = writer
        self._pending = pending
        self._bad = bad
        self._deliver = deliver
        self._has_consumer = has_consumer
        self._durability: Durability = durability
        self._grace = grace
        self._max_frame_bytes = max_frame_bytes
        self._keep_done = keep_done
        self._done_retention = done_retention
        self._clock = clock
        self._log = log
        self._skipped_snapshots: set[str] = set()
        self._in_new = str(incoming.new)
        self._in_cur = str(incoming.cur)
        self._not_ready: dict[str, _NotReady] = {}
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        self._busy_until = 0.0
        self._last_done_sweep = 0.0
        self._stopping = False

    # -- state the facade asks for ---------------------------------------------------

    @property
    def waiting(self) -> int:
        """Files in ``new/`` waited for right now (incomplete or not yet claimable)."""
        return len(self._not_ready)

    @property
    def parked(self) -> bool:
        """Whether the loop is waiting for its next poll (or a wake-up)."""
        return self._waiter is not None

    def stop(self) -> None:
        """Finish the message in hand, then leave the loop."""
        self._stopping = True
        self.mark_busy()

    def mark_busy(self) -> None:
        """Scan at the busy rate for a while, starting now (a send or a watcher event)."""
        self._busy_until = self._clock.monotonic() + self.poll.busy_window
        self._woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the loops ---------------------------------------------------------------------

    async def _wait_poll(self, interval: float) -> None:
        # A plain future and a timer: cheaper than wait_for() on an Event, and it
        # cannot swallow a cancellation that races with the timeout.
        if self._woken:
            self._woken = False
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(interval, _wake_up, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._woken = False

    async def run(self) -> None:
        """The reader loop: reconcile ``cur/``, then scan ``new/`` until stopped."""
        try:
            await self._reconcile_cur()
        except Exception:
            self._log.exception("reconciling cur/ failed")
        interval = self.poll.busy
        idle_since = self._clock.monotonic()
        recheck_cur = False
        failing = ""  # the error of the last failed pass, logged once while it repeats
        while not self._stopping:
            try:
                if recheck_cur:
                    # A failed pass may have left a claimed file in cur/: take it up again.
                    recheck_cur = False
                    await self._reconcile_cur()
                progressed = await self._scan_once()
                if failing:
                    failing = ""
                    self._log.warning("file bridge reader passes succeed again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if repr(exc) != failing:
                    failing = repr(exc)
                    self._log.exception("file bridge reader pass failed; retrying")
                progressed = False
                recheck_cur = True
            now = self._clock.monotonic()
            if progressed:
                idle_since = now
                interval = self.poll.busy
            elif now < self._busy_until or now - idle_since < self.poll.busy_window:
                interval = self.poll.busy
            else:
                interval = min(self.poll.idle, interval * self.poll.backoff)
            if now - self._last_done_sweep > 10.0:
                self._last_done_sweep = now
                self._sweep_done()
            await self._wait_poll(interval)

    async def watch(self) -> None:
        """Wake the loop on file-system events in ``new/`` (the ``[watch]`` extra)."""
        try:
            import watchfiles
        except ImportError:
            self._log.error(
                "watch=True needs the 'watch' extra: pip install 'fokha-integration[watch]'"
            )
            return
        async for _ in watchfiles.awatch(self.incoming.new, debounce=1, step=1):
            self.mark_busy()

    def _sweep_done(self) -> None:
        if not self._keep_done:
            return
        cutoff = time.time() - self._done_retention
        for entry in os.scandir(self.incoming.done):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)

    # -- one pass --------------------------------------------------------------------

    def _read(self, path: str | Path) -> bytes:
        # One byte over the limit, so an oversized frame is seen as such.
        return read_regular(path, self._max_frame_bytes + 1)

    def _to_bad(self, path: str | Path, name: str, code: str, detail: str) -> None:
        self._bad.move(path, name, code, detail, self.incoming.bad)

    async def _scan_once(self) -> bool:
        try:
            names = sorted(e.name for e in os.scandir(self._in_new) if parse_message_name(e.name))
        except FileNotFoundError:
            self.incoming.create()
            return False
        progressed = False
        stuck = self._bad.stuck
        for name in names:
            if self._stopping:
                break
            if name in stuck:
                continue
            path = os.path.join(self._in_new, name)
            try:
                data = self._read(path)
            except FileNotFoundError:
                continue
            except OddEntry as exc:
                if exc.transient:
                    self._not_ready_yet(name, path, exc.code, exc.detail)
                else:
                    self._not_ready.pop(name, None)
                    self._to_bad(path, name, exc.code, exc.detail)
                continue
            try:
                frame = decode_frame(data, max_frame_bytes=self._max_frame_bytes)
            except FrameError as exc:
                self._not_ready_yet(name, path, exc.code, exc.detail)
                continue
            if not self._wanted(frame):
                self._not_ready.pop(name, None)
                continue
            claimed = os.path.join(self._in_cur, name)
            try:
                os.replace(path, claimed)
            except FileNotFoundError:
                continue
            except OSError as exc:
                # Refused (on Windows while a writer holds the file; elsewhere a
                # permission problem): waited for like an incomplete frame, then bad/.
                self._not_ready_yet(name, path, "unclaimable", str(exc))
                continue
            self._not_ready.pop(name, None)
            await self._handle(claimed, name, frame)
            progressed = True
        if self._not_ready or stuck:
            present = set(names)
            for gone in [n for n in self._not_ready if n not in present]:
                del self._not_ready[gone]
            stuck &= present
        return progressed

    def _wanted(self, frame: Frame) -> bool:
        if self._has_consumer():  # the common case: no journal look-up needed
            return True
        in_reply_to = frame.data.get("in_reply_to")
        waiter = self._pending.view(in_reply_to) if isinstance(in_reply_to, str) else None
        return self._receiver.wanted(
            frame,
            consumer=False,
            waiter=waiter,
            entry=self.journal.get(frame.id),
        )

    def _not_ready_yet(self, name: str, path: str, code: str, detail: str) -> None:
        # Not (yet) usable: waited for while it changes, moved to bad/ after ``grace``
        # seconds unchanged.
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._not_ready.pop(name, None)
            return
        now = self._clock.monotonic()
        seen = self._not_ready.get(name)
        if seen is None or seen.size != st.st_size or seen.mtime_ns != st.st_mtime_ns:
            self._not_ready[name] = _NotReady(st.st_size, st.st_mtime_ns, now)
            return
        if now - seen.since >= self._grace:
            del self._not_ready[name]
            self._to_bad(path, name, code, detail)

    async def _reconcile_cur(self) -> None:
        """Start-up: process what a previous run claimed and did not acknowledge."""
        for name in sorted(os.listdir(self.incoming.cur)):
            if parse_message_name(name) is None:
                continue
            path = self.incoming.cur / name
            if (self.incoming.new / name).exists():
                # An interrupted non-atomic claim: new/ holds the original.
                path.unlink(missing_ok=True)
                continue
            try:
                frame = decode_frame(self._read(path), max_frame_bytes=self._max_frame_bytes)
            except FileNotFoundError:
                continue
            except OddEntry as exc:
                self._to_bad(path, name, exc.code, exc.detail)
                continue
            except FrameError as exc:
                code = "incomplete" if isinstance(exc, IncompleteFrameError) else exc.code
                self._to_bad(path, name, code, exc.detail)
                continue
            self._receiver.counters.reconciled_cur += 1
            await self._handle(path, name, frame)

    # -- carrying out the receiver's decisions ----------------------------------------

    async def _handle(self, path: str | Path, name: str, frame: Frame) -> None:
        in_reply_to = frame.data.get("in_reply_to")
        waiter = None
        if frame.data.get("type") == "reply" and isinstance(in_reply_to, str):
            waiter = self._pending.view(in_reply_to)
        actions = self._receiver.seen(name, frame, self.journal.get(frame.id), waiter)
        await self._carry_out(path, name, actions)

    async def _carry_out(self, path: str | Path, name: str, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                await self._carry_out(path, name, await self._delivered(action.message))
            elif isinstance(action, Begin):
                await blocking(
                    self._durability, self.journal.begin, action.message_id, self._clock.time()
                )
            elif isinstance(action, Done):
                await blocking(
                    self._durability,
                    self.journal.done,
                    action.message_id,
                    self._clock.time(),
                    action.reply_id,
                    action.reply,
                )
            elif isinstance(action, SendReply):
                await self._writer.send_reply(action.reply_id, action.reply)
            elif isinstance(action, Ack):
                await blocking(self._durability, self._ack, path, name)
            elif isinstance(action, Resolve):
                self._pending.resolve(action.request_id, action.reply)
            elif isinstance(action, Quarantine):
                self._to_bad(path, name, action.code, action.detail)

    async def _delivered(self, message: Message) -> list[Action]:
        outcome: Reply | Exception | None
        try:
            outcome = await self._deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log.exception("handler failed on %s (%s)", message.id, message.kind)
            outcome = exc
        reply_id = new_id() if message.is_request else ""
        return self._receiver.handled(message, outcome, now=self._clock.time(), reply_id=reply_id)

    def _ack(self, path: str | Path, name: str) -> None:
        if self._keep_done:
            with contextlib.suppress(FileNotFoundError):
                move_file(path, self.incoming.done / name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- snapshots ---------------------------------------------------------------------

    def read_snapshot(self, folder: Path, bad_dir: Path, name: str) -> Snapshot | None:
        """The newest complete snapshot ``name`` in ``folder``, or ``None``.

        Versions are read newest first; one that is incomplete (being copied in) is
        skipped in favour of the previous one; an odd entry (not a file) goes to
        ``bad_dir``. Blocks briefly (lists and reads a file).
        """
        entries = []
        try:
            for e in os.scandir(folder):
                if (p := parse_snapshot_name(e.name)) is not None:
                    if p[0] == name:
                        entries.append(p[1])
                elif e.name.startswith(f"{name}.") and e.name not in self._skipped_snapshots:
                    # e.g. an unpadded seq from a peer that misread the spec: say so once
                    self._skipped_snapshots.add(e.name)
                    self._log.warning(
                        "file bridge: skipped %s in snap/ (not <name>.<20-digit seq>.fkb)", e.name
                    )
        except FileNotFoundError:
            return None
        for seq in sorted(entries, reverse=True):
            path = folder / snapshot_name(name, seq)
            try:
                raw = self._read(path)  # bounded: the peer writes it
                frame = decode_frame(raw, max_frame_bytes=self._max_frame_bytes)
            except OddEntry as exc:
                if not exc.transient:
                    self._bad.move(path, path.name, exc.code, exc.detail, bad_dir)
                continue
            except (OSError, FrameError):
                continue
            data = frame.data
            body = data.get("body")
            if data.get("type") != "snapshot" or not isinstance(body, dict):
                continue
            sent_at = data.get("sent_at")
            return Snapshot(
                name,
                seq,
                str(data.get("sender", "")),
                float(sent_at) if isinstance(sent_at, (int, float)) else 0.0,
                body,
            )
        return None
