"""``fokha bridge send | tail | stats | doctor``: operate a file-bridge folder by hand.

``send`` writes a message (or a request, waiting for its reply) as the Python side;
``tail`` prints frames as they appear, without claiming them; ``stats`` counts files
per folder; ``doctor`` checks the layout and reports problems (exit code 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import FokhaError, FrameError
from ._bridge import FileBridge
from ._folders import SUBDIRS, parse_message_name
from ._frame import decode_frame

__all__ = ["add_bridge_parser", "run_bridge_command"]


def add_bridge_parser(sub: Any) -> None:
    """Add the ``bridge`` subcommand to the ``fokha`` parser's subparsers."""
    bridge = sub.add_parser("bridge", help="operate a file-bridge folder (MT5 EA link)")
    bsub = bridge.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)

    send = bsub.add_parser("send", help="send a message, or a request with --request")
    send.add_argument("root", type=Path, help="the bridge folder")
    send.add_argument("kind", help="message kind, e.g. order, ping")
    send.add_argument("body", nargs="?", default="{}", help="JSON object (default {})")
    send.add_argument("--request", action="store_true", help="wait for the reply")
    send.add_argument("--id", default=None, help="message id (resend = same id)")
    send.add_argument("--timeout", type=float, default=30.0, help="reply timeout, seconds")
    send.add_argument("--local", default="py", help="this side's name (default py)")
    send.add_argument("--peer", default="ea", help="the other side's name (default ea)")

    tail = bsub.add_parser("tail", help="print frames as they appear (read-only)")
    tail.add_argument("root", type=Path)
    tail.add_argument("--seconds", type=float, default=None, help="stop after this long")
    tail.add_argument("--interval", type=float, default=0.05, help="poll interval")

    stats = bsub.add_parser("stats", help="files per folder, oldest waiting, heartbeats")
    stats.add_argument("root", type=Path)
    stats.add_argument("--json", action="store_true", help="print JSON")

    doctor = bsub.add_parser("doctor", help="check the folders and report problems")
    doctor.add_argument("root", type=Path)
    doctor.add_argument("--stale", type=float, default=60.0, help="cur/ age that is stale")


def _directions(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and "2" in p.name and p.name != "state")


def _describe(path: Path) -> str:
    try:
        frame = decode_frame(path.read_bytes())
    except FrameError as exc:
        return f"{path.parent.parent.name}/{path.parent.name}/{path.name}  [{exc.code}]"
    except OSError:
        return f"{path.parent.parent.name}/{path.parent.name}/{path.name}  [gone]"
    d = frame.data
    extra = f" {d.get('status')} to {d.get('in_reply_to')}" if d.get("type") == "reply" else ""
    body = json.dumps(d.get("body", {}), ensure_ascii=False)[:200]
    return (
        f"{path.parent.parent.name}/{path.parent.name} {frame.id} {d.get('type')} "
        f"{d.get('kind')}{extra} {body}"
    )


def _send(args: argparse.Namespace) -> int:
    body = json.loads(args.body)
    if not isinstance(body, dict):
        print("body must be a JSON object")
        return 2

    async def go() -> int:
        async with FileBridge(
            args.root,
            local=args.local,
            peer=args.peer,
            receive=args.request,
            heartbeat_interval=None,
        ) as bridge:
            if args.request:
                reply = await bridge.request(args.kind, body, id=args.id, timeout=args.timeout)
                print(
                    json.dumps(
                        {
                            "id": reply.id,
                            "in_reply_to": reply.in_reply_to,
                            "status": reply.status.value,
                            "details": dict(reply.details),
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                print(await bridge.send(args.kind, body, id=args.id))
        return 0

    return asyncio.run(go())


def _tail(args: argparse.Namespace) -> int:
    seen: set[Path] = set()
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            for direction in _directions(args.root):
                for sub in ("new", "cur", "bad"):
                    folder = direction / sub
                    if not folder.is_dir():
                        continue
                    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                        path = Path(entry.path)
                        if path in seen or not entry.name.endswith(".fkb"):
                            continue
                        seen.add(path)
                        print(_describe(path), flush=True)
            if len(seen) > 100_000:
                seen.clear()
            time.sleep(args.interval)  # a read-only observer polling the folders
    except KeyboardInterrupt:
        pass
    return 0


def _collect_stats(root: Path) -> dict[str, Any]:
    now = time.time()
    out: dict[str, Any] = {"root": str(root), "directions": {}}
    for direction in _directions(root):
        info: dict[str, Any] = {}
        for sub in SUBDIRS:
            folder = direction / sub
            names = sorted(os.listdir(folder)) if folder.is_dir() else []
            frames = [n for n in names if n.endswith(".fkb")]
            entry: dict[str, Any] = {"files": len(frames)}
            if frames and sub in ("new", "cur"):
                oldest = min((folder / n).stat().st_mtime for n in frames)
                entry["oldest_age_s"] = round(now - oldest, 3)
            info[sub] = entry
        beat = direction / "snap"
        beats = sorted(p for p in beat.glob("heartbeat.*.fkb")) if beat.is_dir() else []
        for path in reversed(beats):
            try:
                body = decode_frame(path.read_bytes()).data.get("body", {})
            except (FrameError, OSError):
                continue
            info["heartbeat_age_s"] = round(now - float(body.get("time", 0)), 3)
            info["heartbeat_instance"] = body.get("instance")
            break
        out["directions"][direction.name] = info
    journals = root / "state"
    if journals.is_dir():
        out["journals"] = {p.name: p.stat().st_size for p in sorted(journals.glob("*.journal"))}
    return out


def _stats(args: argparse.Namespace) -> int:
    data = _collect_stats(args.root)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"bridge {data['root']}")
    for name, info in data["directions"].items():
        counts = "  ".join(
            f"{sub}={info[sub]['files']}"
            + (f" (oldest {info[sub]['oldest_age_s']}s)" if "oldest_age_s" in info[sub] else "")
            for sub in SUBDIRS
        )
        beat = info.get("heartbeat_age_s")
        print(f"  {name}: {counts}" + (f"  heartbeat {beat}s ago" if beat is not None else ""))
    for journal, size in data.get("journals", {}).items():
        print(f"  journal {journal}: {size} bytes")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    root: Path = args.root
    problems: list[str] = []
    notes: list[str] = []
    directions = _directions(root)
    if not directions:
        print(f"FAIL {root}: no direction folders (e.g. py2ea/, ea2py/); start a bridge first")
        return 1
    devices = set()
    now = time.time()
    for direction in directions:
        for sub in SUBDIRS:
            folder = direction / sub
            if not folder.is_dir():
                problems.append(f"{direction.name}/{sub}/ is missing")
                continue
            devices.add(folder.stat().st_dev)
        tmp = direction / "tmp"
        if tmp.is_dir():
            probe = tmp / f"doctor-{uuid.uuid4().hex}.probe"
            try:
                probe.write_bytes(b"probe")
                os.replace(probe, direction / "cur" / probe.name)
                (direction / "cur" / probe.name).unlink()
            except OSError as exc:
                problems.append(f"{direction.name}: cannot write and move files ({exc})")
        cur = direction / "cur"
        if cur.is_dir():
            for name in sorted(os.listdir(cur)):
                age = now - (cur / name).stat().st_mtime
                if age > args.stale:
                    problems.append(
                        f"{direction.name}/cur/{name} is {age:.0f}s old: claimed, never "
                        "acknowledged (is the reader running?)"
                    )
        bad = direction / "bad"
        if bad.is_dir():
            for name in sorted(os.listdir(bad)):
                if name.endswith(".reason.json"):
                    continue
                reason_file = bad / f"{name}.reason.json"
                try:
                    code = json.loads(reason_file.read_text("utf-8")).get("code", "?")
                except (OSError, ValueError):
                    code = "no reason file"
                problems.append(f"{direction.name}/bad/{name}: {code}")
        new = direction / "new"
        if new.is_dir():
            odd = [n for n in os.listdir(new) if parse_message_name(n) is None]
            if odd:
                notes.append(f"{direction.name}/new/ has {len(odd)} file(s) with foreign names")
    if len(devices) > 1:
        problems.append("the folders are on more than one volume: moves would be copies")
    stats = _collect_stats(root)
    for name, info in stats["directions"].items():
        age = info.get("heartbeat_age_s")
        if age is not None and age > 10:
            notes.append(f"{name}: last heartbeat {age:.0f}s ago (writer not running?)")
    for note in notes:
        print(f"note {note}")
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print(f"ok   {root}: {len(directions)} direction(s), folders writable, one volume")
    return 1 if problems else 0


def run_bridge_command(args: argparse.Namespace) -> int:
    """Run a parsed ``fokha bridge ...`` command; returns the exit code."""
    try:
        if args.bridge_command == "send":
            return _send(args)
        if args.bridge_command == "tail":
            return _tail(args)
        if args.bridge_command == "stats":
            return _stats(args)
        return _doctor(args)
    except (FokhaError, ValueError, OSError) as exc:
        print(f"error: {exc}")
        return 1
