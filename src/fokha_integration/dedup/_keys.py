"""Key builders: what makes two messages "the same" for dedup.

* :func:`signal_key` — ``{symbol}_{direction}_{bucket}`` for trading signals, with
  two window meanings (``mode="tumbling"`` or ``"sliding"``).
* :func:`content_key` — the SHA-256 of a payload's canonical JSON, for "the same
  content" whatever produced it.

Pure functions: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal

from ..errors import ValidationError
from ..models import Model, canonical_json

__all__ = ["WindowMode", "content_key", "signal_key"]

WindowMode = Literal["tumbling", "sliding"]
"""``"tumbling"``: fixed buckets aligned to the epoch; ``"sliding"``: ``window`` from the first."""


def _epoch_seconds(ts: datetime | float | int) -> float:
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValidationError("ts", "must be timezone-aware", ts)
        return ts.timestamp()
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise ValidationError("ts", "must be an aware datetime or Unix seconds", ts)
    return float(ts)


def signal_key(
    symbol: str,
    direction: str | Enum,
    ts: datetime | float | int,
    window: int = 60,
    *,
    mode: WindowMode = "tumbling",
) -> str:
    """The dedup key of a trading signal.

    ``mode="tumbling"`` (the default) puts the window bucket into the key: time is
    cut into fixed ``window``-second buckets aligned to the Unix epoch (for
    ``window=60``: calendar minutes, UTC), and the key ends with the bucket's start,
    ``EURUSD_BUY_202611231953``. Two signals in the same bucket are duplicates; two
    signals either side of a bucket boundary are *not*, even one second apart
    (12:00:59 and 12:01:00 give ``..._1200`` and ``..._1201``). Use it with the
    type's TTL (``signal``: 300 s) so a restarted producer re-emitting the last
    minute's signals is still caught.

    ``mode="sliding"`` leaves time out of the key (``EURUSD_BUY``): any repeat
    within ``window`` seconds of the *first* sighting is a duplicate, across bucket
    boundaries (12:00:59 then 12:01:00 is a duplicate), and the first signal after
    the window is FIRST again. The window is the claim's TTL, so claim with
    ``ttl=window``::

        await cache.claim(signal_key("EURUSD", "BUY", now, 60, mode="sliding"), ttl=60)

    ``ts`` is an aware datetime or Unix seconds; ``direction`` a string or a
    :class:`~fokha_integration.models.Direction`.
    """
    if not isinstance(symbol, str) or not 1 <= len(symbol) <= 64 or not symbol.isprintable():
        raise ValidationError("symbol", "must be 1..64 printable characters", symbol)
    side = direction.value if isinstance(direction, Enum) else direction
    if not isinstance(side, str) or not 1 <= len(side) <= 32:
        raise ValidationError("direction", "must be a non-empty string", direction)
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValidationError("window", "must be a positive whole number of seconds", window)
    if mode == "sliding":
        _epoch_seconds(ts)  # still validate it: a caller passing garbage has a bug
        return f"{symbol}_{side}"
    if mode != "tumbling":
        raise ValidationError("mode", "must be 'tumbling' or 'sliding'", mode)
    seconds = _epoch_seconds(ts)
    start = math.floor(seconds / window) * window
    moment = datetime.fromtimestamp(start, tz=timezone.utc)
    pattern = "%Y%m%d%H%M" if window % 60 == 0 else "%Y%m%d%H%M%S"
    return f"{symbol}_{side}_{moment.strftime(pattern)}"


def content_key(payload: Any, *, exclude: Collection[str] = ()) -> str:
    """The SHA-256 hex digest of ``payload``'s canonical JSON.

    ``payload`` is a model (:class:`~fokha_integration.models.Signal`, ...), a JSON
    object or any JSON value; ``bytes`` are hashed as they are. Equal content gives
    the same key in every process. ``exclude`` drops top-level fields first — use it
    for fields that differ between re-emissions of the same thing, e.g.
    ``content_key(signal, exclude=("id", "created_at"))``.
    """
    if type(payload) is not dict:  # a plain JSON object, the usual case, needs neither
        if isinstance(payload, (bytes, bytearray, memoryview)):
            return hashlib.sha256(payload).hexdigest()
        if isinstance(payload, Model):
            payload = payload.to_dict()
    if exclude:
        if not isinstance(payload, Mapping):
            raise ValidationError("exclude", "needs a JSON object or a model payload", exclude)
        payload = {k: v for k, v in payload.items() if k not in exclude}
    try:
        text = canonical_json(payload)
    except (TypeError, ValueError) as exc:
        raise ValidationError("payload", f"must be JSON-serialisable ({exc})", None) from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
