"""Key builders: tumbling and sliding signal keys, content keys."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fokha_integration import Direction, ManualClock, Signal, ValidationError
from fokha_integration.dedup import ClaimStatus, DedupCache, content_key, signal_key

T0 = datetime(2026, 11, 23, 12, 0, 59, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 23, 12, 1, 0, tzinfo=timezone.utc)


def test_tumbling_key_names_the_minute() -> None:
    """The tumbling key is {symbol}_{direction}_{YYYYMMDDHHMM} of the bucket start, UTC."""
    assert signal_key("EURUSD", "BUY", T0) == "EURUSD_BUY_202611231200"
    assert signal_key("EURUSD", Direction.SELL, T1) == "EURUSD_SELL_202611231201"
    assert signal_key("EURUSD", "BUY", T0.timestamp()) == "EURUSD_BUY_202611231200"
    assert signal_key("EURUSD", "BUY", T0, 15) == "EURUSD_BUY_20261123120045"


def test_tumbling_boundary_is_not_a_duplicate_sliding_is() -> None:
    """12:00:59 and 12:01:00 differ in tumbling mode and are the same key in sliding mode."""
    assert signal_key("EURUSD", "BUY", T0) != signal_key("EURUSD", "BUY", T1)
    assert signal_key("EURUSD", "BUY", T0, mode="sliding") == signal_key(
        "EURUSD", "BUY", T1, mode="sliding"
    )


async def test_sliding_window_counts_from_the_first_sighting() -> None:
    """Sliding: a repeat within the window of the first is a duplicate, after it is FIRST."""
    clock = ManualClock()
    cache = DedupCache(clock=clock)
    key = signal_key("EURUSD", "BUY", T0, 60, mode="sliding")
    assert (await cache.claim(key, ttl=60)).status is ClaimStatus.FIRST
    clock.advance(1)  # 12:01:00: across the minute boundary
    assert (await cache.claim(key, ttl=60)).status is ClaimStatus.DUPLICATE
    clock.advance(59)  # 60 s after the first
    assert (await cache.claim(key, ttl=60)).status is ClaimStatus.FIRST


async def test_tumbling_window_with_the_cache() -> None:
    """Tumbling: either side of the boundary are two FIRSTs; a repeat in the bucket is not."""
    cache = DedupCache(clock=ManualClock())
    assert (await cache.claim(signal_key("EURUSD", "BUY", T0))).status is ClaimStatus.FIRST
    assert (await cache.claim(signal_key("EURUSD", "BUY", T1))).status is ClaimStatus.FIRST
    later = T1 + timedelta(seconds=30)
    assert (await cache.claim(signal_key("EURUSD", "BUY", later))).status is ClaimStatus.DUPLICATE


@given(
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.floats(min_value=0, max_value=4e9, allow_nan=False),
    st.sampled_from([1, 15, 60, 300, 3600]),
)
def test_tumbling_keys_equal_exactly_within_one_bucket(a: float, b: float, window: int) -> None:
    """Two timestamps give the same tumbling key iff they fall in the same bucket."""
    same = math.floor(a / window) == math.floor(b / window)
    assert (signal_key("X", "BUY", a, window) == signal_key("X", "BUY", b, window)) == same


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("", "BUY", 0), {}),
        (("EURUSD", "", 0), {}),
        (("EURUSD", "BUY", datetime(2026, 1, 1)), {}),  # naive datetime
        (("EURUSD", "BUY", float("nan")), {}),
        (("EURUSD", "BUY", 0, 0), {}),
        (("EURUSD", "BUY", 0), {"mode": "hopping"}),
        (("EURUSD", "BUY", "12:00"), {"mode": "sliding"}),
    ],
)
def test_signal_key_rejects_bad_input(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    """Bad symbols, directions, timestamps, windows and modes raise ValidationError."""
    with pytest.raises(ValidationError):
        signal_key(*args, **kwargs)  # type: ignore[arg-type]


def test_content_key_is_sha256_of_canonical_json() -> None:
    """content_key hashes canonical JSON: key order and spacing do not matter."""
    a = content_key({"symbol": "EURUSD", "volume": 0.1, "side": "BUY"})
    b = content_key({"side": "BUY", "volume": 0.1, "symbol": "EURUSD"})
    assert a == b
    assert len(a) == 64
    canonical = b'{"side":"BUY","symbol":"EURUSD","volume":0.1}'
    assert a == hashlib.sha256(canonical).hexdigest()
    assert content_key({"volume": 0.2, "side": "BUY", "symbol": "EURUSD"}) != a
    assert content_key(b"raw") == content_key(memoryview(b"raw"))


def test_content_key_of_models_and_exclude() -> None:
    """Re-emissions of a signal share a content key once id and created_at are excluded."""
    one = Signal(symbol="EURUSD", direction=Direction.BUY, volume=0.1)
    two = Signal(symbol="EURUSD", direction=Direction.BUY, volume=0.1)
    assert content_key(one) != content_key(two)  # different ids
    assert content_key(one, exclude=("id", "created_at")) == content_key(
        two, exclude=("id", "created_at")
    )
    with pytest.raises(ValidationError):
        content_key([1, 2], exclude=("id",))
    with pytest.raises(ValidationError):
        content_key({"x": float("nan")})


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=6))
def test_content_key_ignores_insertion_order(data: dict[str, object]) -> None:
    """The same mapping built in reverse order has the same content key."""
    reverse = dict(reversed(list(data.items())))
    assert content_key(data) == content_key(reverse)
