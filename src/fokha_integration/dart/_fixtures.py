"""JSON fixtures for the generated Dart tests, written by the Python codec itself.

Each valid example is the Python model's own ``to_dict()``, so a Dart round trip
that reproduces it proves the two codecs agree on keys, nulls, timestamps and
numbers. Invalid examples name the field the decoder must blame.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..models import (
    Direction,
    Envelope,
    Model,
    Notification,
    PriceTick,
    Priority,
    Signal,
)

__all__ = ["model_fixtures"]

_T0 = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
_T1 = datetime(2026, 1, 2, 4, 0, 0, tzinfo=timezone.utc)


def _examples() -> dict[str, dict[str, list[Any]]]:
    signal_min = Signal(
        id="01HZX0000000000000000000AA",
        symbol="EURUSD",
        direction=Direction.BUY,
        volume=0.1,
        created_at=_T0,
    )
    signal_full = Signal(
        id="01HZX0000000000000000000AB",
        symbol="XAUUSD",
        direction=Direction.SELL,
        volume=1e-07,
        entry_price=2400.5,
        stop_loss=2410.0,
        take_profit=2300.25,
        confidence=1.0,
        strategy="trend-v2 ✓ ünïcode",
        created_at=_T0,
        expires_at=_T1,
        metadata={"nested": {"list": [1, 2.5, None, "x"]}, "big": 9007199254740991},
    )
    tick = PriceTick(symbol="EURUSD", bid=1.0842, ask=1.0843, ts=_T0)
    tick_full = PriceTick(
        symbol="BTCUSD", bid=65000.0, ask=65001.5, last=65000.75, volume=0.0, ts=_T1
    )
    note = Notification(title="Filled", body="", priority=Priority.HIGH, channel="telegram")
    envelope = Envelope(
        id="01HZX0000000000000000000AC",
        type="signal",
        key="EURUSD:BUY:1",
        payload=signal_min.to_dict(),
        created_at=_T0,
        attempt=3,
    )
    unknown_direction = dict(signal_min.to_dict(), direction="HEDGE")
    return {
        "Signal": {
            "valid": [signal_min.to_dict(), signal_full.to_dict()],
            "unknown_enum": [{"json": unknown_direction, "field": "direction"}],
            "invalid": [
                {
                    "json": {k: v for k, v in signal_min.to_dict().items() if k != "symbol"},
                    "field": "symbol",
                },
                {"json": dict(signal_min.to_dict(), volume="0.1"), "field": "volume"},
                {
                    "json": dict(signal_min.to_dict(), created_at="2026-01-02T03:04:05"),
                    "field": "created_at",
                },
            ],
        },
        "PriceTick": {
            "valid": [tick.to_dict(), tick_full.to_dict()],
            "unknown_enum": [],
            "invalid": [{"json": dict(tick.to_dict(), bid=None), "field": "bid"}],
        },
        "Notification": {
            "valid": [note.to_dict()],
            "unknown_enum": [
                {"json": dict(note.to_dict(), priority="urgent"), "field": "priority"}
            ],
            "invalid": [{"json": dict(note.to_dict(), title=5), "field": "title"}],
        },
        "Envelope": {
            "valid": [envelope.to_dict()],
            "unknown_enum": [],
            "invalid": [{"json": dict(envelope.to_dict(), attempt=1.5), "field": "attempt"}],
        },
    }


def model_fixtures(models: Sequence[type[Model]]) -> str:
    """The fixtures file's text (canonical JSON, one model per key) for ``models``."""
    examples = _examples()
    chosen = {
        cls.__name__: examples.get(cls.__name__, {"valid": [], "unknown_enum": [], "invalid": []})
        for cls in models
    }
    return json.dumps(chosen, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
