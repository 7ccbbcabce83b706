"""The messages that move between systems, and their canonical JSON codec.

:class:`Signal`, :class:`PriceTick`, :class:`Notification` and :class:`Envelope` are
frozen, slotted dataclasses, validated when constructed: a bad value raises
:class:`~fokha_integration.errors.ValidationError` naming the field.

The codec is canonical: one value has exactly one JSON text. Keys are sorted,
there is no insignificant white space, datetimes are UTC ISO-8601 with six
fractional digits and a ``Z`` (``2026-11-23T19:53:37.000000Z``), floats are written
with Python's shortest round-tripping ``repr`` and NaN/Infinity are refused. So
``Model.from_json(m.to_json()) == m`` for every valid model, and a hash of the text
(see ``content_key`` in the dedup package) is stable across processes.

:func:`model_fields` describes each model's fields and types for code generators
(the Dart generator uses it); it is the single source of truth for the wire shape.

Limits, so a hostile or mistaken value fails with :class:`ValidationError` and
never with ``OverflowError``, ``RecursionError`` or an out-of-memory: a symbol is
1..64 characters of :data:`SYMBOL_CHARACTERS` (ASCII letters, digits and
``._#/+-``; a Cyrillic letter that looks like a Latin ``E`` is refused);
JSON-object fields (``metadata``, ``payload``, ...) nest at most
:data:`MAX_JSON_DEPTH` levels and hold at most :data:`MAX_JSON_BYTES` of
canonical JSON; numbers too large for a float are refused.

This module does no I/O and knows nothing of queues, sockets or files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ValidationError

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "SYMBOL_CHARACTERS",
    "Direction",
    "Envelope",
    "FieldInfo",
    "JSONObject",
    "Model",
    "Notification",
    "PriceTick",
    "Priority",
    "Signal",
    "canonical_json",
    "format_datetime",
    "model_fields",
    "new_id",
    "parse_datetime",
]

JSONObject = Mapping[str, Any]
"""A JSON object: string keys, values that :func:`canonical_json` can write."""

M = TypeVar("M", bound="Model")


class Direction(str, Enum):
    """What a signal asks the execution side to do."""

    BUY = "BUY"
    SELL = "SELL"
    CLOSE_BUY = "CLOSE_BUY"
    CLOSE_SELL = "CLOSE_SELL"
    CLOSE_ALL = "CLOSE_ALL"


class Priority(str, Enum):
    """How urgent a notification is."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


# ---------------------------------------------------------------------------
# Sortable unique ids (ULID layout: 48-bit millisecond time + 80 random bits,
# Crockford base32, 26 characters). Ids made in one process are strictly
# increasing even within one millisecond.

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class _IdGenerator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self, now_ms: int | None = None) -> str:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            if ms <= self._last_ms:
                # Same (or earlier: wall clock stepped back) millisecond: keep order.
                ms = self._last_ms
                rand = self._last_rand + 1
                if rand >= 1 << 80:
                    ms += 1
                    rand = int.from_bytes(os.urandom(10), "big") >> 1
            else:
                # Leave headroom so increments within the millisecond do not overflow.
                rand = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | rand
        chars = []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        return "".join(reversed(chars))


_IDS = _IdGenerator()


def new_id() -> str:
    """A new 26-character sortable unique id (ULID layout).

    Lexicographic order is creation order within a process, and across processes
    to the millisecond.
    """
    return _IDS.new()


# ---------------------------------------------------------------------------
# Datetimes and canonical JSON


def format_datetime(value: datetime) -> str:
    """The canonical text of an aware datetime: UTC, microseconds, ``Z``.

    ``2026-01-02T03:04:05.000006Z``: always four year digits and six fraction
    digits (``isoformat``, a fifth of the cost of ``strftime``).
    """
    if value.tzinfo is not timezone.utc:  # models keep UTC: this is the rare path
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError("datetime", "must be timezone-aware", value)
        value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def parse_datetime(text: str, *, field_name: str = "datetime") -> datetime:
    """Parse ISO-8601 text with an offset (``Z`` or ``+hh:mm``) into an aware UTC datetime."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        raise ValidationError(field_name, "must be an ISO-8601 string with a UTC offset", text)
    candidate = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValidationError(field_name, "is not a valid ISO-8601 datetime", text) from None
    if parsed.tzinfo is None:
        raise ValidationError(field_name, "must carry a UTC offset (e.g. 'Z')", text)
    return parsed.astimezone(timezone.utc)


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, frozenset, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value`` (sorted keys, compact, no NaN).

    Models, datetimes and enums inside ``value`` are converted as the codec does.
    Raises :class:`ValueError` for NaN/Infinity and :class:`TypeError` for values
    JSON cannot hold.
    """
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


# ---------------------------------------------------------------------------
# Field description (for validation of decoded data and for code generators)


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One model field as the wire sees it.

    ``kind`` is one of ``"str"``, ``"int"``, ``"float"``, ``"datetime"``,
    ``"enum"`` or ``"object"`` (a JSON object). ``enum`` holds the enum class for
    ``kind == "enum"``. ``required`` is false when the field has a default.
    """

    name: str
    kind: str
    optional: bool
    required: bool
    enum: type[Enum] | None = None
    doc: str = ""


def _describe(tp: Any) -> tuple[str, bool, type[Enum] | None]:
    optional = False
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) != len(get_args(tp))
        if len(args) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        tp = args[0]
        origin = get_origin(tp)
    if tp is str:
        return "str", optional, None
    if tp is int:
        return "int", optional, None
    if tp is float:
        return "float", optional, None
    if tp is datetime:
        return "datetime", optional, None
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "enum", optional, tp
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        return "object", optional, None
    raise TypeError(f"unsupported field type {tp!r}")


def model_fields(cls: type[Model]) -> tuple[FieldInfo, ...]:
    """Describe the wire fields of a model class, in declaration order."""
    cached = cls.__dict__.get("_fields_cache")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    hints = get_type_hints(cls, globalns=globals())
    infos = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind, optional, enum = _describe(hints[f.name])
        has_default = (
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        )
        doc = cls._FIELD_DOCS.get(f.name, "")
        infos.append(FieldInfo(f.name, kind, optional, not has_default, enum, doc))
    result = tuple(infos)
    type.__setattr__(cls, "_fields_cache", result)
    return result


# ---------------------------------------------------------------------------
# Validation helpers (each names the field it checks)

SYMBOL_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._#/+-"
"""The characters a symbol may use (ASCII only: no look-alike letters from other scripts)."""
MAX_JSON_DEPTH = 32
"""How deeply a JSON-object field (``metadata``, ``payload``, ...) may nest."""
MAX_JSON_BYTES = 256 * 1024
"""The largest canonical JSON text of one JSON-object field, in bytes (UTF-8)."""
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9._#/+\-]{1,64}$")
_ID_RE = re.compile(r"^[0-9A-Za-z_.:\-]{1,64}$")
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _check_str(obj: object, name: str, *, min_len: int = 0, max_len: int) -> str:
    value = getattr(obj, name)
    if not isinstance(value, str):
        raise ValidationError(name, "must be a string", value)
    if not min_len <= len(value) <= max_len:
        raise ValidationError(name, f"length must be {min_len}..{max_len}", value)
    return value


def _check_symbol(obj: object) -> None:
    value = _check_str(obj, "symbol", min_len=1, max_len=64)
    if not _SYMBOL_RE.match(value):
        raise ValidationError("symbol", "must be 1..64 characters of [A-Za-z0-9._#/+-]", value)


def _check_id(obj: object, name: str = "id") -> None:
    value = getattr(obj, name)
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValidationError(name, "must be 1..64 characters of [0-9A-Za-z_.:-]", value)


def _check_float(
    obj: object,
    name: str,
    *,
    optional: bool = False,
    positive: bool = False,
    non_negative: bool = False,
    lo: float | None = None,
    hi: float | None = None,
) -> float | None:
    value = getattr(obj, name)
    if value is None:
        if optional:
            return None
        raise ValidationError(name, "is required", value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(name, "must be a number", value)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range, e.g. 10**400
        raise ValidationError(name, "must be finite", value) from None
    if not math.isfinite(number):
        raise ValidationError(name, "must be finite", value)
    if positive and number <= 0:
        raise ValidationError(name, "must be > 0", value)
    if non_negative and number < 0:
        raise ValidationError(name, "must be >= 0", value)
    if lo is not None and number < lo:
        raise ValidationError(name, f"must be >= {lo}", value)
    if hi is not None and number > hi:
        raise ValidationError(name, f"must be <= {hi}", value)
    _set(obj, name, number)
    return number


def _check_datetime(obj: object, name: str, *, optional: bool = False) -> datetime | None:
    value = getattr(obj, name)
    if value is None:
        if optional:
            return None
        raise ValidationError(name, "is required", value)
    if isinstance(value, str):
        value = parse_datetime(value, field_name=name)
    if not isinstance(value, datetime):
        raise ValidationError(name, "must be a datetime", value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(name, "must be timezone-aware", value)
    value = value.astimezone(timezone.utc)
    _set(obj, name, value)
    return value


def _check_enum(obj: object, name: str, enum: type[Enum]) -> None:
    value = getattr(obj, name)
    if isinstance(value, enum):
        return
    try:
        _set(obj, name, enum(value))
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)
        raise ValidationError(name, f"must be one of {allowed}", value) from None


def _check_json_bounds(name: str, value: object) -> None:
    """Refuse a value nested deeper than MAX_JSON_DEPTH or obviously over MAX_JSON_BYTES.

    Iterative (no recursion to overflow) and cheap: it counts string lengths and
    containers without serialising, so 50 MB of metadata is refused before any copy.
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    budget = MAX_JSON_BYTES
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (Mapping, list, tuple, set, frozenset)):
            if depth > MAX_JSON_DEPTH:
                raise ValidationError(name, f"must nest at most {MAX_JSON_DEPTH} levels", None)
            budget -= 2 + len(item)
            children = item.items() if isinstance(item, Mapping) else ((None, v) for v in item)
            for key, child in children:
                if isinstance(key, str):
                    budget -= len(key)
                stack.append((child, depth + 1))
        elif isinstance(item, str):
            budget -= len(item)
        else:
            budget -= 1
        if budget < 0:
            raise ValidationError(name, f"must be at most {MAX_JSON_BYTES} bytes of JSON", None)


def _check_object(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, Mapping):
        raise ValidationError(name, "must be a JSON object", value)
    if not all(isinstance(k, str) for k in value):
        raise ValidationError(name, "keys must be strings", value)
    _check_json_bounds(name, value)
    try:
        text = canonical_json(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationError(name, f"must be JSON-serialisable ({exc})", None) from None
    if len(text) > MAX_JSON_BYTES and len(text.encode("utf-8")) > MAX_JSON_BYTES:
        raise ValidationError(name, f"must be at most {MAX_JSON_BYTES} bytes of JSON", None)
    # Own a plain JSON copy, so later changes to the caller's dict cannot reach us.
    _set(obj, name, json.loads(text))


# ---------------------------------------------------------------------------
# Models


class Model:
    """Base of the wire models: validation on construction and the canonical codec."""

    __slots__ = ()
    _FIELD_DOCS: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as canonical strings, enums as values)."""
        out: dict[str, Any] = {}
        # Validation has fixed every field's type: convert by the field's kind, without
        # isinstance checks (an ABC check such as Mapping is slow on every value).
        for info in model_fields(type(self)):
            value = getattr(self, info.name)
            if value is not None:
                kind = info.kind
                if kind == "datetime":
                    value = format_datetime(value)
                elif kind == "enum":
                    value = value.value
                elif kind == "object":
                    value = dict(value)
            out[info.name] = value
        return out

    def to_json(self) -> str:
        """The canonical JSON text of this model."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any], *, ignore_unknown: bool = False) -> M:
        """Build and validate a model from decoded JSON.

        Unknown keys raise :class:`ValidationError` unless ``ignore_unknown`` is true
        (use that for forward compatibility with newer peers).
        """
        if not isinstance(data, Mapping):
            raise ValidationError(cls.__name__, "must be a JSON object", data)
        infos = model_fields(cls)
        known = {i.name for i in infos}
        unknown = [k for k in data if k not in known]
        if unknown and not ignore_unknown:
            raise ValidationError(str(unknown[0]), f"is not a field of {cls.__name__}", None)
        kwargs: dict[str, Any] = {}
        for info in infos:
            if info.name not in data:
                if info.required:
                    raise ValidationError(info.name, "is required", None)
                continue
            value = data[info.name]
            if info.kind == "str" and value is not None and not isinstance(value, str):
                raise ValidationError(info.name, "must be a string", value)
            if (
                info.kind == "int"
                and value is not None
                and (isinstance(value, bool) or not isinstance(value, int))
            ):
                raise ValidationError(info.name, "must be an integer", value)
            if info.kind == "datetime" and value is not None and not isinstance(value, str):
                raise ValidationError(info.name, "must be an ISO-8601 string", value)
            kwargs[info.name] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[M], text: str | bytes, *, ignore_unknown: bool = False) -> M:
        """Parse JSON text and validate it as this model."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValidationError(cls.__name__, f"is not valid JSON ({exc})", None) from None
        return cls.from_dict(data, ignore_unknown=ignore_unknown)

    @classmethod
    def fields(cls) -> tuple[FieldInfo, ...]:
        """Describe this model's wire fields (see :func:`model_fields`)."""
        return model_fields(cls)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal(Model):
    """A trading signal: what to do, on which symbol, with which risk limits.

    For ``BUY`` with an ``entry_price`` the stop loss must be below and the take
    profit above the entry; for ``SELL`` the other way round.
    """

    symbol: str
    direction: Direction
    volume: float
    id: str = field(default_factory=new_id)
    entry_price: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    confidence: float | None = None
    strategy: str = ""
    created_at: datetime = field(default_factory=_now)
    expires_at: datetime | None = None
    metadata: JSONObject = field(default_factory=dict, hash=False)

    _FIELD_DOCS: ClassVar[dict[str, str]] = {
        "id": "Sortable unique id (ULID layout); stable across retries.",
        "symbol": "Instrument name as the broker spells it, e.g. EURUSD.",
        "direction": "What to do.",
        "volume": "Lots, > 0.",
        "entry_price": "Limit/expected entry; none for market orders.",
        "stop_loss": "Stop-loss price, > 0.",
        "take_profit": "Take-profit price, > 0.",
        "confidence": "Model confidence in 0..1.",
        "strategy": "Name of the strategy that produced the signal.",
        "created_at": "When the signal was made (UTC).",
        "expires_at": "After this instant the signal must not be executed (UTC).",
        "metadata": "Free-form JSON object.",
    }

    def __post_init__(self) -> None:
        _check_id(self)
        _check_symbol(self)
        _check_enum(self, "direction", Direction)
        _check_float(self, "volume", positive=True)
        entry = _check_float(self, "entry_price", optional=True, positive=True)
        sl = _check_float(self, "stop_loss", optional=True, positive=True)
        tp = _check_float(self, "take_profit", optional=True, positive=True)
        _check_float(self, "confidence", optional=True, lo=0.0, hi=1.0)
        _check_str(self, "strategy", max_len=128)
        created = _check_datetime(self, "created_at")
        expires = _check_datetime(self, "expires_at", optional=True)
        _check_object(self, "metadata")
        if expires is not None and created is not None and expires <= created:
            raise ValidationError("expires_at", "must be after created_at", expires)
        if entry is not None:
            if self.direction is Direction.BUY:
                if sl is not None and sl >= entry:
                    raise ValidationError("stop_loss", "must be below entry_price for BUY", sl)
                if tp is not None and tp <= entry:
                    raise ValidationError("take_profit", "must be above entry_price for BUY", tp)
            elif self.direction is Direction.SELL:
                if sl is not None and sl <= entry:
                    raise ValidationError("stop_loss", "must be above entry_price for SELL", sl)
                if tp is not None and tp >= entry:
                    raise ValidationError("take_profit", "must be below entry_price for SELL", tp)

    def is_expired(self, now: datetime) -> bool:
        """Whether ``now`` (an aware datetime) is at or past ``expires_at``."""
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTick(Model):
    """A quote: best bid and ask (``ask >= bid``), optional last price and volume."""

    symbol: str
    bid: float
    ask: float
    last: float | None = None
    volume: float | None = None
    ts: datetime = field(default_factory=_now)

    _FIELD_DOCS: ClassVar[dict[str, str]] = {
        "symbol": "Instrument name.",
        "bid": "Best bid, > 0.",
        "ask": "Best ask, >= bid.",
        "last": "Last traded price, if known.",
        "volume": "Traded volume, if known, >= 0.",
        "ts": "Quote time (UTC).",
    }

    def __post_init__(self) -> None:
        _check_symbol(self)
        bid = _check_float(self, "bid", positive=True)
        ask = _check_float(self, "ask", positive=True)
        _check_float(self, "last", optional=True, positive=True)
        _check_float(self, "volume", optional=True, non_negative=True)
        _check_datetime(self, "ts")
        if bid is not None and ask is not None and ask < bid:
            raise ValidationError("ask", "must be >= bid", ask)

    @property
    def mid(self) -> float:
        """``(bid + ask) / 2``."""
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> float:
        """``ask - bid``."""
        return self.ask - self.bid


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification(Model):
    """A human-facing message (e.g. for Telegram through n8n)."""

    title: str
    body: str = ""
    priority: Priority = Priority.NORMAL
    channel: str = "default"

    _FIELD_DOCS: ClassVar[dict[str, str]] = {
        "title": "One line, 1..256 characters.",
        "body": "Text, up to 4096 characters (Telegram's message limit).",
        "priority": "low, normal, high or critical.",
        "channel": "Where to route it (a name the receiver knows).",
    }

    def __post_init__(self) -> None:
        _check_str(self, "title", min_len=1, max_len=256)
        _check_str(self, "body", max_len=4096)
        _check_enum(self, "priority", Priority)
        _check_str(self, "channel", min_len=1, max_len=64)


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope(Model):
    """What queues and sinks carry: a typed payload with a stable id and a dedup key.

    ``id`` stays the same across every retry and every hop, so any receiver can
    deduplicate on it; ``attempt`` counts deliveries tried so far.
    """

    type: str
    key: str
    payload: JSONObject = field(hash=False)
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=_now)
    attempt: int = 0

    _FIELD_DOCS: ClassVar[dict[str, str]] = {
        "id": "Stable id for receiver-side dedup.",
        "type": "Message type, e.g. signal, notification, webhook.",
        "key": "Dedup key the producer chose.",
        "payload": "The message itself, a JSON object.",
        "created_at": "When the envelope was made (UTC).",
        "attempt": "Delivery attempts so far (0 before the first).",
    }

    def __post_init__(self) -> None:
        _check_id(self)
        if not isinstance(self.type, str) or not _TYPE_RE.match(self.type):
            raise ValidationError("type", "must match [a-z0-9][a-z0-9_.-]{0,63}", self.type)
        _check_str(self, "key", min_len=1, max_len=512)
        _check_object(self, "payload")
        _check_datetime(self, "created_at")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int):
            raise ValidationError("attempt", "must be an integer", self.attempt)
        if self.attempt < 0:
            raise ValidationError("attempt", "must be >= 0", self.attempt)

    @classmethod
    def wrap(cls, model: Model, *, key: str, type: str | None = None) -> Envelope:
        """An envelope carrying ``model`` (its type defaults to the lower-cased class name).

        A :class:`Signal`'s own id becomes the envelope id, so the signal keeps one
        identity end to end.
        """
        kind = type if type is not None else model.__class__.__name__.lower()
        ident = getattr(model, "id", None)
        if isinstance(ident, str):
            return cls(id=ident, type=kind, key=key, payload=model.to_dict())
        return cls(type=kind, key=key, payload=model.to_dict())
