"""FileBridge latency and throughput vs the fixed-slot file pattern, in one run.

Ours: a send-only FileBridge writes into ``py2ea/new`` and an EA-side FileBridge
handles each message (claim, journal, acknowledge), for durability none / flush /
fsync. Figures: one-way latency p50/p99 at 100 msg/s, and the maximum throughput
(messages sent back to back until the last one is handled).

The anchor is the pattern the issue describes (the best-known connector): the writer
rewrites one command file in place, the reader polls it every 25 ms, and takes a
command when its id changed. Its figures: latency p50/p99 of what it delivered, the
share of commands it lost (overwritten before the reader looked) and the torn reads it
saw (a half-written JSON file), at 100 msg/s, and its delivered throughput when the
writer writes flat out.

Ours runs the writer and the reader in two processes, as Python and the EA are; the
anchor runs in one process (its reader sleeps 25 ms between looks, so it is not
CPU-bound). Run: ``python benchmarks/bench_file_bridge.py [--quick] [--json]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Report, log, now, parse_args, percentile
from fokha_integration.bridge import FileBridge, Message


async def _reader(root: Path, count: int, durability: str) -> None:
    """The EA side, in its own process: handle ``count`` messages, print what it saw."""
    latencies: list[float] = []
    done = asyncio.Event()

    async def handler(message: Message) -> None:
        latencies.append(time.time() - message.body["t"])
        if len(latencies) >= count:
            done.set()

    async with FileBridge(
        root,
        local="ea",
        peer="py",
        handler=handler,
        durability=durability,  # type: ignore[arg-type]
        heartbeat_interval=None,
    ):
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), 600)
        print(json.dumps({"latencies": latencies, "last": time.time()}), flush=True)


async def _ours(root: Path, durability: str, count: int, rate: float | None) -> dict[str, Any]:
    """Send ``count`` messages (at ``rate`` per second, or flat out) to a reader process."""
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--reader",
        str(root),
        str(count),
        durability,
        stdout=asyncio.subprocess.PIPE,
    )
    assert reader.stdout is not None
    line = await asyncio.wait_for(reader.stdout.readline(), 60)
    assert line.strip() == b"ready", line
    async with FileBridge(
        root,
        receive=False,
        durability=durability,  # type: ignore[arg-type]
        heartbeat_interval=None,
    ) as writer:
        first = time.time()
        start = now()
        for i in range(count):
            if rate is not None:
                delay = start + i / rate - now()
                if delay > 0:
                    await asyncio.sleep(delay)
            await writer.send("tick", {"t": time.time(), "i": i})
        result = json.loads(await asyncio.wait_for(reader.stdout.readline(), 600))
    await reader.wait()
    result["throughput"] = count / (result["last"] - first)
    return result


async def _fixed_slot(root: Path, count: int, rate: float | None) -> dict[str, float]:
    """The anchor: one command file rewritten in place, read every 25 ms."""
    slot = root / "command.json"
    seen: dict[int, float] = {}
    torn = 0
    last_id = -1
    writing = True

    async def reader() -> None:
        nonlocal torn, last_id
        while writing or last_id < count - 1:
            try:
                text = slot.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            if text:
                try:
                    command = json.loads(text)
                except ValueError:
                    torn += 1
                else:
                    if command["id"] != last_id:
                        last_id = command["id"]
                        seen[last_id] = now() - command["t"]
            if not writing and last_id == count - 1:
                return
            await asyncio.sleep(0.025)

    task = asyncio.create_task(reader())
    start = now()
    for i in range(count):
        if rate is not None:
            delay = start + i / rate - now()
            if delay > 0:
                await asyncio.sleep(delay)
        # In place: truncate, then write (a reader can see the empty or partial file).
        with open(slot, "w", encoding="utf-8") as f:  # noqa: ASYNC230 - the anchor's own I/O
            f.write(json.dumps({"id": i, "t": now(), "cmd": "BUY", "pad": "x" * 100}))
        if rate is None and i % 32 == 31:
            await asyncio.sleep(0)
    writing = False
    await asyncio.wait_for(task, 30)
    elapsed = now() - start
    latencies = list(seen.values())
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "lost_pct": 100.0 * (count - len(seen)) / count,
        "torn_reads": float(torn),
        "delivered_per_s": len(seen) / elapsed,
    }


def _fs_floor_us(folder: Path, count: int) -> float:
    """Microseconds for the bare file operations of one message, for scale.

    One message costs at least: create+write+close, move to new/, move to cur/, unlink.
    """
    folder.mkdir(parents=True, exist_ok=True)
    start = now()
    for i in range(count):
        path = folder / f"f{i}"
        with open(path, "wb") as f:
            f.write(b"x" * 200)
        os.replace(path, folder / f"g{i}")
        os.replace(folder / f"g{i}", folder / f"h{i}")
        os.unlink(folder / f"h{i}")
    return (now() - start) / count * 1e6


async def main() -> None:
    args = parse_args(__doc__ or "")
    quick = args.quick
    lat_count = 200 if quick else 1000
    thr_count = 2000 if quick else 10000
    report = Report("bench_file_bridge")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fokha-bench-") as tmp:
        floor = _fs_floor_us(Path(tmp), 300 if quick else 2000)
    report.figure("fs_floor_us_per_message_ops", floor)
    report.figure("fs_floor_max_msg_per_s", 1e6 / floor)
    for durability in ("none", "flush", "fsync"):
        with tempfile.TemporaryDirectory(prefix="fokha-bench-") as tmp:
            log(args, f"ours, durability={durability}: latency at 100 msg/s ({lat_count} msgs)")
            paced = await _ours(Path(tmp) / "lat", durability, lat_count, 100.0)
            lat = paced["latencies"]
            n = thr_count if durability != "fsync" else max(200, thr_count // 10)
            log(args, f"ours, durability={durability}: throughput ({n} msgs)")
            thr = (await _ours(Path(tmp) / "thr", durability, n, None))["throughput"]
        results[durability] = (lat, thr)
        report.figure(f"ours_{durability}_p50_ms", percentile(lat, 50) * 1000)
        report.figure(f"ours_{durability}_p99_ms", percentile(lat, 99) * 1000)
        report.figure(f"ours_{durability}_throughput_per_s", thr)
    with tempfile.TemporaryDirectory(prefix="fokha-bench-") as tmp:
        log(args, f"fixed slot at 100 msg/s ({lat_count} msgs)")
        base = await _fixed_slot(Path(tmp), lat_count, 100.0)
        log(args, f"fixed slot flat out ({thr_count} msgs)")
        flat = await _fixed_slot(Path(tmp), thr_count, None)
    report.figure("fixed_slot_p50_ms", base["p50_ms"])
    report.figure("fixed_slot_p99_ms", base["p99_ms"])
    report.figure("fixed_slot_lost_pct_at_100_per_s", base["lost_pct"])
    report.figure("fixed_slot_torn_reads_at_100_per_s", base["torn_reads"])
    report.figure("fixed_slot_delivered_per_s_flat_out", flat["delivered_per_s"])
    report.figure("fixed_slot_lost_pct_flat_out", flat["lost_pct"])
    lat_flush, thr_flush = results["flush"]
    p50 = percentile(lat_flush, 50) * 1000
    if p50 > 0:
        report.figure("p50_ratio_fixed_slot_over_ours_flush", base["p50_ms"] / p50)
    report.target("flush p50 latency", p50, 5.0, "<=", "ms")
    report.target("flush p99 latency", percentile(lat_flush, 99) * 1000, 20.0, "<=", "ms")
    report.target("flush throughput", thr_flush, 2000.0, ">=", "msg/s")
    report.notes.append(
        f"writer and reader in two processes; cpu count {os.cpu_count()}; fsync throughput "
        "measured on fewer messages"
    )
    report.emit(args.json)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--reader":
        asyncio.run(_reader(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(main())
