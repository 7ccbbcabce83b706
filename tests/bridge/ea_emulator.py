"""An EA emulator written from ``docs/protocols/file-bridge.md`` alone.

It does not import ``fokha_integration``: it has its own frame checker, journal and
folder handling, so the protocol is checked by a second, independent implementation
(the role the shipped MQL5 include plays in a real terminal). It follows MQL5's
documented file behaviour:

- a timer that fires at best every 16 ms (``--tick``); each tick handles what is there;
- ``FileOpen`` creates the file at once, writes stay buffered until ``FileFlush`` /
  ``FileClose`` (a kill in between leaves an empty or short file);
- no atomic rename: with ``--move copy`` ``FileMove`` copies in small flushed chunks and
  then deletes the source (a kill mid-way leaves a partial copy and the source);
- ``FileFindFirst/Next`` masks also match 8.3 short names (``*.fkb`` returns
  ``x.fkbak``), so the full name is checked after each match;
- reads open the file shared (``FILE_SHARE_READ|FILE_SHARE_WRITE``) after checking its
  size; a file another process holds without sharing (``--hold``/:meth:`MQL5Files.hold`)
  cannot be opened: a claimed file in ``cur/`` stays there, a journal append fails and
  then the handler is not called (as the fixed include);
- the trade server is "ready" ``--connect-delay`` seconds after start: ``cur/`` is
  reconciled only then (a bounded wait, ``--ready-wait``, after which new messages are
  taken and in-doubt ids stay in ``cur/``), as the include does with
  ``TerminalInfoInteger(TERMINAL_CONNECTED)`` and the history;
- an ``order`` is recorded as an effect in the journal (``E`` record) before the reply's
  ``D`` record, and a ``fail`` message makes the handler fail (``handler_error``).

The "trade server" is ``effects.log`` in the root: one line ``<request id> <ticket>``
per executed order. The journal is ``state/ea.journal``. Run it as a process::

    python tests/bridge/ea_emulator.py ROOT [--move copy] [--tick 0.016]

It can also be imported to check the test vectors (:func:`check_frame`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import zlib
from pathlib import Path

NAME = re.compile(r"^([0-9]{20})-([A-Za-z0-9_]{1,32})-([A-Za-z0-9_-]{1,64})\.fkb$")
IDENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FRAME = 1048576
SENDER = "ea"
SNAP_NAME = re.compile(r"^([a-z0-9_]{1,32})\.([0-9]{20})\.fkb$")
KIND = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SENDER_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")
MAX_DEPTH = 256  # the include's FOKHA_JSON_MAX_DEPTH (spec 5: 256 levels MUST be accepted)


# ---------------------------------------------------------------------------
# Frame check (spec 4.1), written independently of the library's codec.


def check_frame(data: bytes, max_frame: int = MAX_FRAME) -> tuple[str, str, object]:
    """Classify a file's bytes: ``("ok", "", (id, seq, obj))``, ``("incomplete", code, None)``
    or ``("corrupt", code, None)``."""
    if len(data) > max_frame:
        return "corrupt", "too_large", None
    lf = -1
    for i in range(min(len(data), 128)):
        if data[i] == 10:
            lf = i
            break
    if lf < 0:
        magic = b"FOKHA "
        n = min(len(data), len(magic))
        if data[:n] != magic[:n]:
            return "corrupt", "bad_magic", None
        if len(data) >= 128:
            return "corrupt", "bad_header", None
        return "incomplete", "incomplete", None
    parts = data[:lf].split(b" ")
    if parts[0] != b"FOKHA":
        return "corrupt", "bad_magic", None
    if len(parts) < 2 or parts[1] != b"1":
        return "corrupt", "unsupported_version", None
    if len(parts) != 6:
        return "corrupt", "bad_header", None
    ident, seq, length, crc = (p.decode("latin-1") for p in parts[2:])
    if not IDENT.match(ident):
        return "corrupt", "bad_header", None
    if not (seq.isdigit() and seq.isascii() and 1 <= len(seq) <= 20):
        return "corrupt", "bad_header", None
    if not (length.isdigit() and length.isascii() and 1 <= len(length) <= 10):
        return "corrupt", "bad_header", None
    if len(crc) != 8 or any(c not in "0123456789abcdef" for c in crc):
        return "corrupt", "bad_header", None
    size = lf + 1 + int(length) + 5
    if size > max_frame:
        return "corrupt", "too_large", None
    if len(data) < size:
        return "incomplete", "incomplete", None
    body = data[lf + 1 : lf + 1 + int(length)]
    covered = data[: lf - 8] + body
    if "%08x" % (zlib.crc32(covered) & 0xFFFFFFFF) != crc:
        return "corrupt", "bad_crc", None
    if data[lf + 1 + int(length) : size] != b"\nEND\n":
        return "corrupt", "bad_end_marker", None
    if len(data) != size:
        return "corrupt", "trailing_data", None
    if body.startswith(b"\xef\xbb\xbf"):
        return "corrupt", "bad_utf8", None
    try:
        text = body.decode("utf-8")  # CharArrayToString(..., CP_UTF8)
    except UnicodeDecodeError:
        return "corrupt", "bad_utf8", None
    try:
        obj = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return "corrupt", "bad_json", None
    if not isinstance(obj, dict) or _depth(obj) > MAX_DEPTH:
        return "corrupt", "bad_json", None
    return "ok", "", (ident, int(seq), obj)


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def check_message(name: str, ident: str, seq: int, obj: dict[str, object]) -> str:
    """The checks after the claim (spec 5), in the spec's order: "" or the reason code."""
    m = NAME.match(name)
    if m is None or m.group(3) != ident or int(m.group(1)) != seq:
        return "name_mismatch"
    kind, sender, sent_at = obj.get("kind"), obj.get("sender"), obj.get("sent_at")
    if obj.get("type") not in ("message", "request", "reply"):
        return "bad_message"
    if not isinstance(kind, str) or not KIND.match(kind):
        return "bad_message"
    if not isinstance(sender, str) or not SENDER_RE.match(sender):
        return "bad_message"
    if sender != m.group(2):
        return "name_mismatch"
    if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)):
        return "bad_message"
    if not isinstance(obj.get("body"), dict):
        return "bad_message"
    if obj.get("type") == "reply":
        in_reply_to = obj.get("in_reply_to")
        if not isinstance(in_reply_to, str) or not IDENT.match(in_reply_to):
            return "bad_message"
        if obj.get("status") not in ("accepted", "executed", "rejected", "failed"):
            return "bad_message"
        if not isinstance(obj.get("details", {}), dict):
            return "bad_message"
    return ""


def _no_constants(name: str) -> object:
    raise ValueError(name)


def make_frame(ident: str, seq: int, text: str) -> bytes:
    body = text.encode("utf-8")  # StringToCharArray(..., CP_UTF8) minus the final 0
    head = f"FOKHA 1 {ident} {seq} {len(body)} ".encode("ascii")
    crc = zlib.crc32(head + body) & 0xFFFFFFFF
    return head + b"%08x\n" % crc + body + b"\nEND\n"


# ---------------------------------------------------------------------------
# MQL5 file functions as documented (sandboxed under one root).


class MQL5Files:
    """FileOpen/FileLoad/FileMove/FileDelete/FileFind* with MQL5's documented behaviour."""

    def __init__(self, sandbox: Path, *, move: str = "rename") -> None:
        self.sandbox = sandbox
        self.move_mode = move
        self.held: dict[str, bool] = {}  # path -> held by another process with sharing?

    def hold(self, name: str, *, share: bool) -> None:
        """Another process opens ``name`` (``share``: with read/write sharing, as
        ``fokha bridge doctor`` or an editor does; without: exclusively)."""
        self.held[name] = share

    def release(self, name: str) -> None:
        """The other process closes ``name``."""
        self.held.pop(name, None)

    def _can_open(self, name: str, *, shared: bool) -> bool:
        # Windows sharing: an exclusive holder blocks everyone; a sharing holder blocks an
        # open that does not share in turn (FileOpen without FILE_SHARE_* flags).
        if name not in self.held:
            return True
        return self.held[name] and shared

    def path(self, name: str) -> Path:
        return self.sandbox / name.replace("\\", "/")

    def file_find(self, folder: str, mask_ext: str) -> list[str]:
        """Names in ``folder`` matching ``*.<mask_ext>``, including 8.3 short-name matches."""
        out = []
        try:
            names = os.listdir(self.path(folder))
        except FileNotFoundError:
            return out
        for name in names:
            ext = name.rsplit(".", 1)[-1] if "." in name else ""
            # The 8.3 alias keeps the first three characters of the last extension.
            if ext.lower() == mask_ext or (len(ext) > 3 and ext[:3].lower() == mask_ext):
                out.append(name)
        return out

    def file_load(self, name: str) -> bytes | None:
        """FileOpen(READ|BIN|SHARE_READ|SHARE_WRITE), FileSize, FileReadArray, FileClose."""
        if not self._can_open(name, shared=True):
            return None
        try:
            with open(self.path(name), "rb") as f:
                return f.read(MAX_FRAME + 1)
        except OSError:
            return None

    def file_save(self, name: str, chunks: list[bytes]) -> None:
        """FileOpen(FILE_WRITE|FILE_BIN), FileWriteArray..., FileFlush, FileClose."""
        with open(self.path(name), "wb") as f:  # FileOpen creates/truncates at once
            f.flush()
            pending = b"".join(chunks)  # buffered inside the terminal until FileFlush
            f.write(pending)
            f.flush()

    def file_append_line(self, name: str, line: str, *, shared: bool = True) -> bool:
        """FileOpen(READ|WRITE|BIN|SHARE_READ|SHARE_WRITE), FileSeek(END), FileWriteArray,
        FileFlush, FileClose; False when the open fails (the caller must not act)."""
        if not self._can_open(name, shared=shared):
            return False
        with open(self.path(name), "ab") as f:
            f.write(line.encode("utf-8"))
            f.flush()
        return True

    def file_exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def file_delete(self, name: str) -> bool:
        try:
            os.unlink(self.path(name))
            return True
        except OSError:
            return False

    def file_move(self, src: str, dst: str, rewrite: bool) -> bool:
        s, d = self.path(src), self.path(dst)
        if not s.exists():
            return False
        if d.exists() and not rewrite:
            return False
        if self.move_mode == "rename":
            os.replace(s, d)
            return True
        # No atomicity assumed: copy in flushed chunks, then delete the source.
        data = s.read_bytes()
        with open(d, "wb") as f:
            for i in range(0, len(data), 64):
                f.write(data[i : i + 64])
                f.flush()
        os.unlink(s)
        return True


# ---------------------------------------------------------------------------
# The EA.


class HandlerError(Exception):
    """The application handler failed (OnMessage returned false)."""


class EA:
    def __init__(
        self,
        root: Path,
        *,
        move: str,
        grace: float,
        tick: float,
        connect_delay: float = 0.0,
        ready_wait: float = 60.0,
    ) -> None:
        self.fs = MQL5Files(root, move=move)
        self.started_at = time.monotonic()
        self.connect_delay = connect_delay
        self.ready_wait = ready_wait
        self.reconciled = False
        self.recheck_cur = False
        self.log: list[str] = []
        self.root = root
        self.grace = grace
        self.tick = tick
        self.instance = os.urandom(8).hex()
        self.journal: dict[str, tuple[str, str, str]] = {}  # id -> (state, reply id, reply)
        self.effects: dict[str, int] = {}
        self.not_ready: dict[str, tuple[int, float]] = {}
        self.last_seq = 0
        self.last_beat = 0.0

    # -- start-up -------------------------------------------------------------------

    def start(self) -> None:
        for d in ("py2ea", "ea2py"):
            for sub in ("tmp", "new", "cur", "bad", "done", "snap"):
                os.makedirs(self.fs.path(f"{d}/{sub}"), exist_ok=True)
        os.makedirs(self.fs.path("state"), exist_ok=True)
        self.load_journal()
        self.load_effects()
        for folder in ("ea2py/tmp", "ea2py/new"):
            for name in self.fs.file_find(folder, "fkb"):
                m = NAME.match(name)
                if m and m.group(2) == SENDER:
                    self.last_seq = max(self.last_seq, int(m.group(1)))
        # Recover tmp/: publish complete frames, delete the rest (spec 6.1 step 4);
        # unfinished snapshots (<name>.<seq>.<sender>.snap) are simply deleted.
        for name in self.fs.file_find("ea2py/tmp", "snap"):
            if name.endswith(f".{SENDER}.snap"):
                self.fs.file_delete(f"ea2py/tmp/{name}")
        for name in sorted(self.fs.file_find("ea2py/tmp", "fkb")):
            m = NAME.match(name)
            if not m or m.group(2) != SENDER:
                continue
            data = self.fs.file_load(f"ea2py/tmp/{name}") or b""
            if check_frame(data)[0] == "ok":
                self.fs.file_move(f"ea2py/tmp/{name}", f"ea2py/new/{name}", True)
            else:
                self.fs.file_delete(f"ea2py/tmp/{name}")
        # cur/ is reconciled from the timer once the trade server is ready (6.2 step 1).

    def trade_server_ready(self) -> bool:
        """TERMINAL_CONNECTED, logged in, history selectable: here, a delay after start."""
        return time.monotonic() - self.started_at >= self.connect_delay

    def reconcile_cur(self) -> None:
        """Spec 6.2 step 1: leftovers in cur/ are processed, never discarded unprocessed."""
        for name in sorted(self.fs.file_find("py2ea/cur", "fkb")):
            if not NAME.match(name):
                continue
            if self.fs.file_exists(f"py2ea/new/{name}"):
                self.fs.file_delete(f"py2ea/cur/{name}")
                continue
            data = self.fs.file_load(f"py2ea/cur/{name}")
            if data is None:  # locked (or vanished): look again, never to bad/
                self.recheck_cur = True
                continue
            result, code, parsed = check_frame(data)
            if result != "ok":
                self.to_bad("cur", name, "incomplete" if result == "incomplete" else code)
                continue
            if not self.process(name, parsed):
                self.recheck_cur = True

    def load_journal(self) -> None:
        try:
            raw = self.fs.path("state/ea.journal").read_bytes()
        except FileNotFoundError:
            return
        if raw and not raw.endswith(b"\n"):
            # a torn last record: the next append must not be glued onto it
            self.fs.file_append_line("state/ea.journal", "\n")
        for line in raw.split(b"\n")[:-1]:  # a last line without LF is torn: ignored
            parts = line.decode("utf-8", "replace").split(" ", 5)
            if parts[0] == "E" and len(parts) >= 5:
                _, _, ident, crc, evidence = line.decode("utf-8", "replace").split(" ", 4)
                if "%08x" % (zlib.crc32(f"{ident} {evidence}".encode()) & 0xFFFFFFFF) == crc:
                    self.effects.setdefault(ident, json.loads(evidence)["ticket"])
            elif parts[0] == "B" and len(parts) == 3:
                self.journal.setdefault(parts[2], ("B", "", ""))
            elif parts[0] == "D" and len(parts) == 6:
                _, _, ident, rid, crc, reply = parts
                check = "%08x" % (zlib.crc32(f"{ident} {rid} {reply}".encode()) & 0xFFFFFFFF)
                if check == crc:
                    self.journal[ident] = ("D", rid, reply)

    def load_effects(self) -> None:
        try:
            raw = self.fs.path("effects.log").read_text("utf-8")
        except FileNotFoundError:
            return
        for line in raw.split("\n")[:-1]:
            ident, ticket = line.split(" ")
            self.effects[ident] = int(ticket)

    # -- the timer --------------------------------------------------------------------

    def next_seq(self) -> int:
        self.last_seq = max(self.last_seq + 1, int(time.time() * 1_000_000))
        return self.last_seq

    def on_timer(self) -> None:
        now = time.time()
        if now - self.last_beat >= 0.5:
            self.last_beat = now
            self.heartbeat(now)
        if not self.reconciled:
            if self.trade_server_ready():
                self.reconciled = True
                self.log.append("reconciled")
                self.reconcile_cur()
            elif time.monotonic() - self.started_at < self.ready_wait:
                return  # bounded wait: nothing is taken before the trade server is known
            else:
                if "ready_wait_expired" not in self.log:
                    self.log.append("ready_wait_expired")
                    print("ea: trade server not ready: in-doubt ids wait", file=sys.stderr)
                self.recheck_cur = True
        if self.recheck_cur:
            self.recheck_cur = False
            self.reconcile_cur()
        names = [n for n in self.fs.file_find("py2ea/new", "fkb") if NAME.match(n)]
        for name in sorted(names):
            data = self.fs.file_load(f"py2ea/new/{name}")
            if data is None:
                continue
            result, code, parsed = check_frame(data)
            if result != "ok":
                seen = self.not_ready.get(name)
                if seen is None or seen[0] != len(data):
                    self.not_ready[name] = (len(data), time.monotonic())
                elif time.monotonic() - seen[1] >= self.grace:
                    del self.not_ready[name]
                    self.to_bad("new", name, code)
                continue
            self.not_ready.pop(name, None)
            if not self.fs.file_move(f"py2ea/new/{name}", f"py2ea/cur/{name}", False):
                continue
            if not self.process(name, parsed):
                self.recheck_cur = True

    def to_bad(self, folder: str, name: str, code: str) -> None:
        self.fs.file_move(f"py2ea/{folder}/{name}", f"py2ea/bad/{name}", True)
        reason = json.dumps({"code": code, "detail": "", "at": time.time(), "reader": "ea"})
        self.fs.file_save(f"py2ea/bad/{name}.reason.json", [reason.encode()])
        print(f"ea: moved {name} to bad/ ({code})", file=sys.stderr, flush=True)

    # -- one message --------------------------------------------------------------------

    def process(self, name: str, parsed: object) -> bool:
        """Spec 6.2 steps 4-7; False when the file stays in cur/ to be looked at again."""
        ident, seq, obj = parsed  # type: ignore[misc]
        code = check_message(name, ident, seq, obj)
        if code:
            self.to_bad("cur", name, code)
            return True
        entry = self.journal.get(ident)
        if entry is not None and entry[0] == "D":
            if entry[1] != "-":
                self.write_reply(entry[1], entry[2])
            self.fs.file_delete(f"py2ea/cur/{name}")
            return True
        if entry is not None and not self.trade_server_ready():
            return False  # in doubt: the handler must see the trade server as it is
        if entry is None:
            if not self.fs.file_append_line("state/ea.journal", f"B {time.time():.3f} {ident}\n"):
                self.log.append(f"append_failed {ident}")
                return False  # the handler is not called without its B record
            self.journal[ident] = ("B", "", "")
        try:
            status, details = self.execute(ident, obj)
        except HandlerError as exc:
            if obj.get("type") != "request":
                self.to_bad("cur", name, "handler_error")  # no D record (spec 6.2)
                return True
            status, details = "failed", {"message": f"handler error: {exc}"}
        rid, reply = "-", "-"
        if obj.get("type") == "request":
            rid = f"R{self.next_seq()}"  # unique per EA across restarts (as the include)
            reply = json.dumps(
                {
                    "type": "reply",
                    "kind": obj.get("kind", ""),
                    "sender": SENDER,
                    "sent_at": time.time(),
                    "body": {},
                    "in_reply_to": ident,
                    "status": status,
                    "details": details,
                },
                separators=(",", ":"),
                ensure_ascii=False,
            )
        crc = "%08x" % (zlib.crc32(f"{ident} {rid} {reply}".encode()) & 0xFFFFFFFF)
        if not self.fs.file_append_line(
            "state/ea.journal", f"D {time.time():.3f} {ident} {rid} {crc} {reply}\n"
        ):
            self.log.append(f"append_failed {ident}")
            return False
        self.journal[ident] = ("D", rid, reply)
        if rid != "-":
            self.write_reply(rid, reply)
        self.fs.file_delete(f"py2ea/cur/{name}")
        return True

    def execute(self, ident: str, obj: dict[str, object]) -> tuple[str, dict[str, object]]:
        kind = obj.get("kind")
        body = obj.get("body") if isinstance(obj.get("body"), dict) else {}
        assert isinstance(body, dict)
        if kind == "order":
            # In doubt or not, the trade server is asked first (the real EA looks its
            # journaled effect record up, then its orders by magic number and tag); so an
            # order never runs twice. effects.log is the trade server; the E record is the
            # EA's own evidence, written before the D record.
            ticket = self.effects.get(ident)
            if ticket is None:
                ticket = 100000 + len(self.effects)
                self.fs.file_append_line("effects.log", f"{ident} {ticket}\n")
                self.effects[ident] = ticket
            evidence = json.dumps({"stage": "done", "ticket": ticket}, separators=(",", ":"))
            crc = "%08x" % (zlib.crc32(f"{ident} {evidence}".encode()) & 0xFFFFFFFF)
            self.fs.file_append_line(
                "state/ea.journal", f"E {time.time():.3f} {ident} {crc} {evidence}\n"
            )
            return "executed", {"ticket": ticket, "retcode": 10009, "message": "done"}
        if kind == "fail":
            raise HandlerError("the handler failed on purpose")
        if kind == "echo":
            return "executed", {"echo": body}
        return "rejected", {"message": f"unknown kind {kind!r}"}

    def write_reply(self, rid: str, text: str) -> None:
        seq = self.next_seq()
        name = f"{seq:020d}-{SENDER}-{rid}.fkb"
        self.fs.file_save(f"ea2py/tmp/{name}", [make_frame(rid, seq, text)])
        self.fs.file_move(f"ea2py/tmp/{name}", f"ea2py/new/{name}", True)

    def heartbeat(self, now: float) -> None:
        seq = self.next_seq()
        text = json.dumps(
            {
                "type": "snapshot",
                "kind": "heartbeat",
                "sender": SENDER,
                "sent_at": now,
                "body": {"instance": self.instance, "time": now},
            },
            separators=(",", ":"),
        )
        tmp = f"ea2py/tmp/heartbeat.{seq:020d}.{SENDER}.snap"
        self.fs.file_save(tmp, [make_frame(f"heartbeat-{seq}", seq, text)])
        self.fs.file_move(tmp, f"ea2py/snap/heartbeat.{seq:020d}.fkb", True)
        old = sorted(
            n for n in os.listdir(self.fs.path("ea2py/snap")) if n.startswith("heartbeat.")
        )
        for n in old[:-2]:
            self.fs.file_delete(f"ea2py/snap/{n}")

    def run(self) -> None:
        self.start()
        print("ea: ready", flush=True)
        while True:
            started = time.monotonic()
            self.on_timer()
            # The millisecond timer cannot fire faster than its floor.
            time.sleep(max(0.0, self.tick - (time.monotonic() - started)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--move", choices=("rename", "copy"), default="rename")
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--tick", type=float, default=0.016)
    parser.add_argument("--connect-delay", type=float, default=0.0)
    parser.add_argument("--ready-wait", type=float, default=60.0)
    args = parser.parse_args()
    EA(
        args.root,
        move=args.move,
        grace=args.grace,
        tick=args.tick,
        connect_delay=args.connect_delay,
        ready_wait=args.ready_wait,
    ).run()


if __name__ == "__main__":
    main()
