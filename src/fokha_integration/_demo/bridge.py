"""Demo section: the file bridge to an MT5 EA, with the EA emulator answering."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..bridge import FileBridge, PollConfig, ReplyStatus, encode_frame
from ..bridge.emulator import EAEmulator
from ..models import canonical_json, new_id

if TYPE_CHECKING:
    from . import DemoContext


async def _until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the demo waited too long")
        await asyncio.sleep(0.005)


async def run(ctx: DemoContext) -> None:
    """Orders through files: replies, a resend executed once, a torn file, a bad file."""
    poll = PollConfig(busy=0.001, idle=0.01)
    with tempfile.TemporaryDirectory(prefix="fokha-demo-bridge-") as tmp:
        root = Path(tmp)
        async with (
            EAEmulator(root, poll=poll, grace=0.3) as ea,
            FileBridge(root, poll=poll) as py,
        ):
            ctx.say(f"bridge folder {root}: py2ea/ and ea2py/, each with tmp/ new/ cur/ bad/")
            order = {"symbol": "EURUSD", "direction": "BUY", "volume": 0.1}
            order_id = new_id()
            started = time.perf_counter()
            reply = await py.request("order", order, id=order_id, timeout=10)
            ms = (time.perf_counter() - started) * 1000
            ctx.say(
                f"order {order_id[-6:]} -> {reply.status.value}, ticket {reply.ticket}, "
                f"retcode {reply.retcode} ({ms:.1f} ms round trip through files)"
            )
            again = await py.request("order", order, id=order_id, timeout=10)
            ctx.say(
                f"the same order id sent again -> {again.status.value}, ticket {again.ticket}: "
                f"answered from the EA's journal, executed {ea.executed} time"
            )
            assert again.ticket == reply.ticket
            assert ea.executed == 1
            too_big = await py.request("order", dict(order, volume=50), timeout=10)
            ctx.say(f"an order of 50 lots -> {too_big.status.value}: {too_big.message}")
            assert too_big.status is ReplyStatus.REJECTED

            # A misbehaving writer: half a frame straight into new/, completed later.
            payload: dict[str, object] = {
                "type": "request",
                "kind": "ping",
                "sender": "rogue",
                "sent_at": 0.0,
                "body": {},
            }
            frame = encode_frame("torn-1", 1, canonical_json(payload).encode())
            torn = root / "py2ea" / "new" / f"{1:020d}-rogue-torn-1.fkb"
            torn.write_bytes(frame[: len(frame) // 2])
            await _until(
                lambda: ea.bridge.stats().received == 3 and ea.bridge.stats().incomplete > 0
            )
            ctx.say("half a frame written straight into new/: the EA waits, nothing handled")
            torn.write_bytes(frame)
            await _until(lambda: ea.bridge.stats().received == 4)
            ctx.say("the writer finishes the file: the EA handles it once, complete")

            garbage = root / "py2ea" / "new" / f"{2:020d}-rogue-junk.fkb"
            garbage.write_bytes(b'{"action": "BUY"}  (not a frame)')
            reason_file = root / "py2ea" / "bad" / f"{garbage.name}.reason.json"
            await _until(reason_file.exists)
            reason = json.loads(reason_file.read_text())
            ctx.say(f"a garbage file -> bad/ with reason {reason['code']!r}; the EA kept going")

            positions = py.read_snapshot("positions")
            assert positions is not None
            ctx.say(
                f"positions snapshot from the EA: {len(positions.body['positions'])} position(s); "
                f"EA alive (heartbeat): {py.peer_alive(5)}"
            )
            assert py.peer_alive(5)
