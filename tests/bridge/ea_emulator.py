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
- ``FileLoad`` reads a whole file as bytes; the payload is decoded as UTF-8.

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
    if not isinstance(obj, dict):
        return "corrupt", "bad_json", None
    return "ok", "", (ident, int(seq), obj)


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

    def file_append_line(self, name: str, line: str) -> None:
        """FileOpen(READ|WRITE|TXT|ANSI), FileSeek(END), FileWriteString, FileFlush."""
        with open(self.path(name), "ab") as f:
            f.write(line.encode("utf-8"))
            f.flush()

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


class EA:
    def __init__(self, root: Path, *, move: str, grace: float, tick: float) -> None:
        self.fs = MQL5Files(root, move=move)
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
        # Reconcile cur/ (spec 6.2 step 1).
        for name in sorted(self.fs.file_find("py2ea/cur", "fkb")):
            if not NAME.match(name):
                continue
            if self.fs.file_exists(f"py2ea/new/{name}"):
                self.fs.file_delete(f"py2ea/cur/{name}")
                continue
            data = self.fs.file_load(f"py2ea/cur/{name}") or b""
            result, code, parsed = check_frame(data)
            if result != "ok":
                self.to_bad("cur", name, code)
                continue
            self.process(name, parsed)

    def load_journal(self) -> None:
        try:
            raw = self.fs.path("state/ea.journal").read_bytes()
        except FileNotFoundError:
            return
        for line in raw.split(b"\n")[:-1]:  # a last line without LF is torn: ignored
            parts = line.decode("utf-8", "replace").split(" ", 5)
            if parts[0] == "B" and len(parts) == 3:
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
            if not self.fs.file_move(f"py2ea/new/{name}", f"py2ea/cur/{name}", True):
                continue
            self.process(name, parsed)

    def to_bad(self, folder: str, name: str, code: str) -> None:
        self.fs.file_move(f"py2ea/{folder}/{name}", f"py2ea/bad/{name}", True)
        reason = json.dumps({"code": code, "detail": "", "at": time.time(), "reader": "ea"})
        self.fs.file_save(f"py2ea/bad/{name}.reason.json", [reason.encode()])
        print(f"ea: moved {name} to bad/ ({code})", file=sys.stderr, flush=True)

    # -- one message --------------------------------------------------------------------

    def process(self, name: str, parsed: object) -> None:
        ident, seq, obj = parsed  # type: ignore[misc]
        m = NAME.match(name)
        assert m is not None
        if m.group(3) != ident or int(m.group(1)) != seq or not isinstance(obj, dict):
            self.to_bad("cur", name, "name_mismatch")
            return
        entry = self.journal.get(ident)
        if entry is not None and entry[0] == "D":
            if entry[1] != "-":
                self.write_reply(entry[1], entry[2])
            self.fs.file_delete(f"py2ea/cur/{name}")
            return
        if entry is None:
            self.fs.file_append_line("state/ea.journal", f"B {time.time():.3f} {ident}\n")
            self.journal[ident] = ("B", "", "")
        status, details = self.execute(ident, obj)
        rid, reply = "-", "-"
        if obj.get("type") == "request":
            rid = "R" + ident[:63]
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
        self.fs.file_append_line(
            "state/ea.journal", f"D {time.time():.3f} {ident} {rid} {crc} {reply}\n"
        )
        self.journal[ident] = ("D", rid, reply)
        if rid != "-":
            self.write_reply(rid, reply)
        self.fs.file_delete(f"py2ea/cur/{name}")

    def execute(self, ident: str, obj: dict[str, object]) -> tuple[str, dict[str, object]]:
        kind = obj.get("kind")
        body = obj.get("body") if isinstance(obj.get("body"), dict) else {}
        assert isinstance(body, dict)
        if kind == "order":
            # In doubt or not, the trade server is asked first (the real EA looks for a
            # deal whose comment carries the id); so an order never runs twice.
            ticket = self.effects.get(ident)
            if ticket is None:
                ticket = 100000 + len(self.effects)
                self.fs.file_append_line("effects.log", f"{ident} {ticket}\n")
                self.effects[ident] = ticket
            return "executed", {"ticket": ticket, "retcode": 10009, "message": "done"}
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
    args = parser.parse_args()
    EA(args.root, move=args.move, grace=args.grace, tick=args.tick).run()


if __name__ == "__main__":
    main()
