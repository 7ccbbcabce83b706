"""A small EA stand-in for the demo and the CLI: answers orders like the example EA.

It is a :class:`FileBridge` on the EA side (``local="ea"``) with a handler that
"executes" ``order`` requests on an in-memory trade server (tickets, one position
per ticket) and publishes ``positions`` and ``account`` snapshots. It reuses the
Python bridge, so it is **not** the independent protocol check: the tests use
``tests/bridge/ea_emulator.py``, written from the spec alone, for that.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from .. import _validate as check
from ._bridge import FileBridge, Message, Reply, ReplyStatus

__all__ = ["EAEmulator"]


@dataclass
class _TradeServer:
    tickets: itertools.count[int] = field(default_factory=lambda: itertools.count(1001))
    positions: dict[int, dict[str, Any]] = field(default_factory=dict)
    by_request: dict[str, int] = field(default_factory=dict)
    balance: float = 10_000.0


class EAEmulator:
    """An EA-side bridge that executes ``order`` requests and answers ``ping``.

    ``order`` bodies: ``{"symbol": str, "direction": "BUY"|"SELL", "volume": float}``;
    a volume above ``max_volume`` is ``rejected`` (retcode 10014, invalid volume as
    MT5 says). The request id is kept with the position (as a real EA puts it in
    the order comment), so a redelivered request is not executed twice.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_volume: float = 10.0, **kwargs: Any):
        kwargs.setdefault("local", "ea")
        kwargs.setdefault("peer", "py")
        self.server = _TradeServer()
        self.max_volume = check.positive("max_volume", max_volume)
        self.executed = 0
        self.bridge = FileBridge(root, handler=self._handle, **kwargs)

    async def __aenter__(self) -> EAEmulator:
        await self.bridge.start()
        await self._publish()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bridge.close()

    async def _publish(self) -> None:
        await self.bridge.write_snapshot(
            "positions",
            {"positions": [dict(p, ticket=t) for t, p in self.server.positions.items()]},
        )
        await self.bridge.write_snapshot(
            "account", {"balance": self.server.balance, "positions": len(self.server.positions)}
        )

    async def _handle(self, message: Message) -> Reply | None:
        if message.kind == "ping":
            return Reply(ReplyStatus.EXECUTED, {"message": "pong"})
        if message.kind != "order":
            return Reply(ReplyStatus.REJECTED, {"message": f"unknown kind {message.kind!r}"})
        body = message.body
        existing = self.server.by_request.get(message.id)
        if existing is not None:  # redelivered after a crash: the effect already exists
            return Reply(ReplyStatus.EXECUTED, {"ticket": existing, "retcode": 10009})
        volume = body.get("volume")
        if not isinstance(volume, (int, float)) or not 0 < volume <= self.max_volume:
            return Reply(
                ReplyStatus.REJECTED, {"retcode": 10014, "message": f"invalid volume {volume!r}"}
            )
        ticket = next(self.server.tickets)
        self.server.by_request[message.id] = ticket
        self.server.positions[ticket] = {
            "symbol": str(body.get("symbol", "")),
            "direction": str(body.get("direction", "")),
            "volume": float(volume),
            "comment": message.id,
        }
        self.executed += 1
        await self._publish()
        return Reply(ReplyStatus.EXECUTED, {"ticket": ticket, "retcode": 10009, "message": "done"})
