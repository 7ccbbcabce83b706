"""Models: validation names the field; the canonical codec round-trips exactly."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fokha_integration.errors import ValidationError
from fokha_integration.models import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    SYMBOL_CHARACTERS,
    Direction,
    Envelope,
    Model,
    Notification,
    PriceTick,
    Priority,
    Signal,
    canonical_json,
    format_datetime,
    model_fields,
    new_id,
    parse_datetime,
)

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# -- strategies -------------------------------------------------------------

prices = st.floats(min_value=1e-6, max_value=1e7, allow_nan=False, allow_infinity=False)
aware = st.datetimes(
    min_value=datetime(1980, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-5, minutes=-30))]
    ),
)
symbols = st.text(
    alphabet=st.sampled_from(SYMBOL_CHARACTERS),
    min_size=1,
    max_size=20,
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@st.composite
def signals(draw: st.DrawFn) -> Signal:
    direction = draw(st.sampled_from(list(Direction)))
    entry = draw(st.none() | prices)
    sl = draw(st.none() | prices)
    tp = draw(st.none() | prices)
    if entry is not None and direction in (Direction.BUY, Direction.SELL):
        below, above = entry * 0.9, entry * 1.1
        if direction is Direction.BUY:
            sl = None if sl is None else below
            tp = None if tp is None else above
        else:
            sl = None if sl is None else above
            tp = None if tp is None else below
    created = draw(aware)
    expires = draw(
        st.none() | st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=30))
    )
    return Signal(
        id=new_id(),
        symbol=draw(symbols),
        direction=direction,
        volume=draw(st.floats(min_value=0.01, max_value=1000)),
        entry_price=entry,
        stop_loss=sl,
        take_profit=tp,
        confidence=draw(st.none() | st.floats(min_value=0, max_value=1)),
        strategy=draw(st.text(max_size=30)),
        created_at=created,
        expires_at=None if expires is None else created + expires,
        metadata=draw(json_objects),
    )


@st.composite
def ticks(draw: st.DrawFn) -> PriceTick:
    bid = draw(prices)
    spread = draw(st.floats(min_value=0, max_value=10))
    return PriceTick(
        symbol=draw(symbols),
        bid=bid,
        ask=bid + spread,
        last=draw(st.none() | prices),
        volume=draw(st.none() | st.floats(min_value=0, max_value=1e9)),
        ts=draw(aware),
    )


notifications = st.builds(
    Notification,
    title=st.text(min_size=1, max_size=50),
    body=st.text(max_size=200),
    priority=st.sampled_from(list(Priority)),
    channel=st.text(min_size=1, max_size=20),
)
envelopes = st.builds(
    Envelope,
    type=st.from_regex(r"\A[a-z0-9][a-z0-9_.\-]{0,20}\Z"),
    key=st.text(min_size=1, max_size=60),
    payload=json_objects,
    created_at=aware,
    attempt=st.integers(min_value=0, max_value=1000),
)

ALL_MODELS = st.one_of(signals(), ticks(), notifications, envelopes)


@settings(max_examples=300)
@given(ALL_MODELS)
def test_codec_round_trips_every_model(model: Model) -> None:
    """from_json(to_json(m)) == m, and the text is canonical (re-encoding is identical)."""
    text = model.to_json()
    back = type(model).from_json(text)
    assert back == model
    assert back.to_json() == text
    assert text == canonical_json(json.loads(text))


@given(signals())
def test_floats_round_trip_exactly(signal: Signal) -> None:
    """Every float field comes back bit-for-bit."""
    back = Signal.from_json(signal.to_json())
    for name in ("volume", "entry_price", "stop_loss", "take_profit", "confidence"):
        a, b = getattr(signal, name), getattr(back, name)
        assert (a is None and b is None) or float(a).hex() == float(b).hex()


def test_canonical_form() -> None:
    """Keys sorted, no spaces, UTC datetimes with microseconds and Z."""
    tick = PriceTick(symbol="EURUSD", bid=1.1, ask=1.2, ts=T0)
    assert tick.to_json() == (
        '{"ask":1.2,"bid":1.1,"last":null,"symbol":"EURUSD",'
        '"ts":"2026-11-23T12:00:00.000000Z","volume":null}'
    )
    local = datetime(2026, 11, 23, 15, 0, tzinfo=timezone(timedelta(hours=3)))
    assert format_datetime(local) == "2026-11-23T12:00:00.000000Z"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"symbol": ""}, "symbol"),
        ({"symbol": "EUR USD"}, "symbol"),
        ({"direction": "HOLD"}, "direction"),
        ({"volume": 0}, "volume"),
        ({"volume": float("nan")}, "volume"),
        ({"volume": True}, "volume"),
        ({"volume": "1"}, "volume"),
        ({"entry_price": 1.1, "stop_loss": 1.2}, "stop_loss"),
        ({"entry_price": 1.1, "take_profit": 1.0}, "take_profit"),
        ({"direction": "SELL", "entry_price": 1.1, "stop_loss": 1.0}, "stop_loss"),
        ({"confidence": 1.5}, "confidence"),
        ({"created_at": datetime(2026, 1, 1)}, "created_at"),
        ({"created_at": T0, "expires_at": T0}, "expires_at"),
        ({"metadata": {"x": float("inf")}}, "metadata"),
        ({"metadata": {1: "x"}}, "metadata"),
        ({"metadata": {"x": object()}}, "metadata"),
        ({"id": "has space"}, "id"),
        ({"strategy": "x" * 200}, "strategy"),
    ],
)
def test_signal_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    """Each invalid value raises ValidationError whose .field is the offending field."""
    base: dict[str, object] = {"symbol": "EURUSD", "direction": "BUY", "volume": 0.1}
    with pytest.raises(ValidationError) as info:
        Signal(**{**base, **kwargs})  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (PriceTick, {"symbol": "X", "bid": 2.0, "ask": 1.0}, "ask"),
        (PriceTick, {"symbol": "X", "bid": -1.0, "ask": 1.0}, "bid"),
        (PriceTick, {"symbol": "X", "bid": 1.0, "ask": 1.0, "volume": -1}, "volume"),
        (Notification, {"title": ""}, "title"),
        (Notification, {"title": "t", "priority": "urgent"}, "priority"),
        (Notification, {"title": "t", "body": "x" * 5000}, "body"),
        (Envelope, {"type": "Signal", "key": "k", "payload": {}}, "type"),
        (Envelope, {"type": "signal", "key": "", "payload": {}}, "key"),
        (Envelope, {"type": "signal", "key": "k", "payload": []}, "payload"),
        (Envelope, {"type": "signal", "key": "k", "payload": {}, "attempt": -1}, "attempt"),
    ],
)
def test_other_models_validation_names_the_field(
    cls: type[Model], kwargs: dict[str, object], field: str
) -> None:
    """PriceTick, Notification and Envelope name the bad field too."""
    with pytest.raises(ValidationError) as info:
        cls(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"symbol": "EURUSD", "direction": "BUY"}, "volume"),
        ({"symbol": 5, "direction": "BUY", "volume": 1}, "symbol"),
        ({"symbol": "EURUSD", "direction": "BUY", "volume": 1, "bogus": 1}, "bogus"),
        ({"symbol": "EURUSD", "direction": "BUY", "volume": 1, "created_at": 17}, "created_at"),
        (
            {"symbol": "EURUSD", "direction": "BUY", "volume": 1, "created_at": "yesterday"},
            "created_at",
        ),
        (
            {
                "symbol": "EURUSD",
                "direction": "BUY",
                "volume": 1,
                "created_at": "2026-01-01T00:00:00",
            },
            "created_at",
        ),
    ],
)
def test_from_dict_errors_name_the_field(data: dict[str, object], field: str) -> None:
    """Decoding bad outside data raises ValidationError naming the field."""
    with pytest.raises(ValidationError) as info:
        Signal.from_dict(data)
    assert info.value.field == field


def test_from_dict_can_ignore_unknown_fields() -> None:
    """ignore_unknown=True accepts newer peers' extra fields."""
    s = Signal.from_dict(
        {"symbol": "EURUSD", "direction": "BUY", "volume": 1, "new": 1}, ignore_unknown=True
    )
    assert s.volume == 1.0


def test_from_json_rejects_non_json() -> None:
    """Malformed JSON is a ValidationError, not a JSONDecodeError."""
    with pytest.raises(ValidationError):
        Signal.from_json("{nope")
    with pytest.raises(ValidationError):
        Signal.from_json(b"\xff\xfe")


def test_ids_are_sortable_and_unique() -> None:
    """new_id() values are 26 characters, unique and strictly increasing in a process."""
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)


def test_metadata_is_copied() -> None:
    """Changing the caller's dict afterwards does not change the model."""
    meta = {"a": [1]}
    s = Signal(symbol="EURUSD", direction="BUY", volume=1, metadata=meta)
    meta["a"].append(2)
    assert s.metadata == {"a": [1]}


def test_models_are_frozen_and_hashable() -> None:
    """Models cannot be mutated; they hash (metadata and payload excluded)."""
    s = Signal(symbol="EURUSD", direction="BUY", volume=1, created_at=T0)
    with pytest.raises(AttributeError):
        s.volume = 2  # type: ignore[misc]
    assert hash(s) == hash(
        Signal(id=s.id, symbol="EURUSD", direction="BUY", volume=1, created_at=T0)
    )
    e = Envelope(type="signal", key="k", payload={"x": 1})
    assert isinstance(hash(e), int)


def test_model_fields_describe_the_wire_shape() -> None:
    """model_fields gives kinds, optionality, requiredness and enums for generators."""
    by_name = {f.name: f for f in model_fields(Signal)}
    assert by_name["symbol"].kind == "str" and by_name["symbol"].required
    assert by_name["direction"].kind == "enum" and by_name["direction"].enum is Direction
    assert by_name["stop_loss"].kind == "float" and by_name["stop_loss"].optional
    assert by_name["created_at"].kind == "datetime" and not by_name["created_at"].required
    assert by_name["metadata"].kind == "object"
    assert by_name["volume"].doc
    assert [f.name for f in Envelope.fields()] == [
        "type",
        "key",
        "payload",
        "id",
        "created_at",
        "attempt",
    ]
    assert {f.kind for f in model_fields(Envelope)} == {"str", "object", "datetime", "int"}


def test_signal_expiry_and_envelope_wrap() -> None:
    """is_expired compares with expires_at; Envelope.wrap keeps the signal's id."""
    s = Signal(
        symbol="EURUSD",
        direction="BUY",
        volume=1,
        created_at=T0,
        expires_at=T0 + timedelta(minutes=5),
    )
    assert not s.is_expired(T0 + timedelta(minutes=4))
    assert s.is_expired(T0 + timedelta(minutes=5))
    env = Envelope.wrap(s, key="EURUSD_BUY_1")
    assert env.id == s.id and env.type == "signal"
    assert Signal.from_dict(env.payload) == s


def test_parse_datetime_accepts_offsets() -> None:
    """ISO text with Z or an offset parses to aware UTC."""
    assert parse_datetime("2026-11-23T15:00:00+03:00") == T0
    assert parse_datetime("2026-11-23T12:00:00Z").tzinfo == UTC


@settings(max_examples=300)
@given(value=aware)
def test_format_datetime_is_the_strftime_layout(value: datetime) -> None:
    """The canonical text is exactly ``%Y-%m-%dT%H:%M:%S.%fZ`` of the UTC time."""
    expected = value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert format_datetime(value) == expected
    assert parse_datetime(expected) == value


# -- hostile values (issue 13 weak spots): always ValidationError, never a crash ----


def test_a_float_field_beyond_float_range_is_a_validation_error() -> None:
    """``volume=10**400`` raises ValidationError naming the field, not OverflowError."""
    with pytest.raises(ValidationError) as info:
        Signal(symbol="EURUSD", direction="BUY", volume=10**400)
    assert info.value.field == "volume"


def test_deeply_nested_metadata_is_a_validation_error() -> None:
    """Metadata nested past MAX_JSON_DEPTH (or 100,000 levels) never raises RecursionError."""
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        meta: dict[str, object] = {}
        inner = meta
        for _ in range(depth):
            inner["a"] = {}
            inner = inner["a"]  # type: ignore[assignment]
        with pytest.raises(ValidationError) as info:
            Signal(symbol="EURUSD", direction="BUY", volume=1, metadata=meta)
        assert info.value.field == "metadata"


def test_nesting_up_to_the_limit_is_accepted() -> None:
    """MAX_JSON_DEPTH levels of objects are fine."""
    meta: dict[str, object] = {}
    inner = meta
    for _ in range(MAX_JSON_DEPTH - 1):
        inner["a"] = {}
        inner = inner["a"]  # type: ignore[assignment]
    Signal(symbol="EURUSD", direction="BUY", volume=1, metadata=meta)


def test_oversized_metadata_is_a_validation_error() -> None:
    """50 MB of metadata (or just over MAX_JSON_BYTES) is refused."""
    for size in (MAX_JSON_BYTES, 50 * 1024 * 1024):
        with pytest.raises(ValidationError) as info:
            Signal(symbol="EURUSD", direction="BUY", volume=1, metadata={"x": "a" * size})
        assert info.value.field == "metadata"


def test_deeply_nested_json_text_is_a_validation_error() -> None:
    """from_json on 100,000 nested arrays raises ValidationError, not RecursionError."""
    text = '{"symbol":"EURUSD","direction":"BUY","volume":1,"metadata":{"a":' + "[" * 100_000
    with pytest.raises(ValidationError):
        Signal.from_json(text + "]" * 100_000 + "}}")


@pytest.mark.parametrize("symbol", ["\u0415URUSD", "EUR\u00a0USD", "EURUSD\u200b", "\U0001f4b0"])
def test_symbols_outside_the_documented_character_set_are_refused(symbol: str) -> None:
    """A Cyrillic look-alike, a no-break space, a zero-width space or an emoji is refused."""
    with pytest.raises(ValidationError) as info:
        PriceTick(symbol=symbol, bid=1.0, ask=1.1)
    assert info.value.field == "symbol"


@pytest.mark.parametrize("symbol", ["EURUSD", "EURUSD.m", "XAUUSD#", "BTC/USD", "GER40+", "US_30"])
def test_usual_broker_symbols_are_accepted(symbol: str) -> None:
    """Broker suffixes and separators in SYMBOL_CHARACTERS pass."""
    assert PriceTick(symbol=symbol, bid=1.0, ask=1.1).symbol == symbol
